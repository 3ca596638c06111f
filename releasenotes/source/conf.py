# Sphinx configuration for the nova-ksm-inject release notes.
# Build: tox -e releasenotes (sphinx-build -W -b html releasenotes/source
# releasenotes/build/html). reno reads the notes from git: commit them.

project = 'nova-ksm-inject release notes'
copyright = 'nova-ksm-inject developers'
author = 'nova-ksm-inject developers'

extensions = ['reno.sphinxext']

master_doc = 'index'
exclude_patterns = ['_build']
html_theme = 'alabaster'
html_title = 'nova-ksm-inject release notes'
