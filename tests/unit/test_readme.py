"""README.rst stays valid and its two commands stay true."""

import os

import docutils.core
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


def test_the_two_commands_exist_and_ci_runs_the_test_one():
    readme = read('README.rst')
    for command in ('sudo tools/demo', 'sudo tools/run-tests'):
        assert command in readme
        assert os.access(os.path.join(ROOT, command.split()[1]), os.X_OK)
    ci = read('.ci', 'run')
    assert 'tools/run-tests' in ci
