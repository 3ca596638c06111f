# Sphinx configuration for the nova-ksm-inject documentation.
# Build: tox -e docs (sphinx-build -W --keep-going -b html doc/source
# doc/build/html).

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# The KSM benchmark's page (contributor/ksm-benchmark) is generated from
# bench/ksm_cli.py, which is not packaged: import it from the checkout.
sys.path.append(ROOT)

project = 'nova-ksm-inject'
copyright = 'nova-ksm-inject developers'
author = 'nova-ksm-inject developers'

extensions = [
    # .. show-options:: (the option reference, from our oslo.config opts)
    'oslo_config.sphinxext',
    # the sample configuration file, generated at build time
    'oslo_config.sphinxconfiggen',
    # .. argparse:: (the cli/ pages, from the console scripts' parsers)
    'sphinxarg.ext',
]

# oslo-config-generator's own instructions; the sample lands in
# _static/nova-ksm-inject.conf.sample (not committed: .gitignore).
config_generator_config_file = os.path.join(
    ROOT, 'etc', 'oslo-config-generator', 'nova-ksm-inject.conf')
sample_config_basename = '_static/nova-ksm-inject'

master_doc = 'index'
exclude_patterns = ['_build']
# The default theme: no network, no theme-specific warnings.
html_theme = 'alabaster'
html_static_path = ['_static']
html_title = 'nova-ksm-inject'
