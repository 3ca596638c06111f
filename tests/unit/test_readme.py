"""README.rst stays valid and its two commands stay true."""

import os

import docutils.core
import docutils.nodes
import docutils.utils

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def test_readme_is_valid_restructuredtext():
    docutils.core.publish_doctree(
        read('README.rst'),
        settings_overrides={
            'halt_level': docutils.utils.Reporter.WARNING_LEVEL,
            'report_level': 5})


def _section(doctree, title):
    for section in doctree.findall(docutils.nodes.section):
        if section[0].astext() == title:
            return section
    raise AssertionError('README has no section %r' % title)


def two_commands():
    """The commands of the README's "Two commands" literal blocks, as
    printed (comments dropped)."""
    doctree = docutils.core.publish_doctree(
        read('README.rst'), settings_overrides={'report_level': 5})
    blocks = _section(doctree, 'Two commands').findall(
        docutils.nodes.literal_block)
    return [line.partition('#')[0].strip() for block in blocks
            for line in block.astext().splitlines() if line.strip()]


def test_the_two_commands_are_the_scripts_as_printed():
    # Exactly these words work for root on a fresh Debian (no sudo there)
    # and for a user with sudo (the scripts re-run themselves through it).
    assert two_commands() == ['tools/demo', 'tools/run-tests']
    for command in two_commands():
        assert os.access(os.path.join(ROOT, command), os.X_OK)


def test_no_command_is_printed_with_sudo():
    for path in ('README.rst', os.path.join('.ci', 'run'),
                 os.path.join('tools', 'demo'),
                 os.path.join('tools', 'run-tests')):
        for script in ('tools/demo', 'tools/run-tests'):
            assert 'sudo ' + script not in read(path), (path, script)


def test_ci_runs_the_test_command_as_printed():
    lines = [line for line in read('.ci', 'run').splitlines()
             if line.strip() and not line.startswith('#')]
    assert lines[-1] == 'exec tools/run-tests'


def test_links_into_the_docs_exist():
    # The README is the package's long description too: it links into
    # doc/source by relative paths, which must name real files, and shows
    # no images (a relative image breaks where PyPI renders it).
    doctree = docutils.core.publish_doctree(
        read('README.rst'), settings_overrides={'report_level': 5})
    targets = [node['refuri'] for node in
               doctree.findall(docutils.nodes.reference)
               if node.get('refuri', '').startswith('doc/')]
    assert targets
    for target in targets:
        assert os.path.isfile(os.path.join(ROOT, target)), target
    assert not list(doctree.findall(docutils.nodes.image))
