"""Every command the code runs is listed in the rootwrap filters.

Scans the package source for ``utils.execute(...)`` and ``subprocess``
calls and fails when a command is missing from
``etc/nova/rootwrap.d/nova-ksm-inject.filters`` or is not a literal (a
command name computed at run time cannot be checked, so it is refused).
"""

import ast
import configparser
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, 'nova_ksm_inject')
FILTERS = os.path.join(ROOT, 'etc', 'nova', 'rootwrap.d',
                       'nova-ksm-inject.filters')
SUBPROCESS_CALLS = {'Popen', 'run', 'check_call', 'check_output', 'call'}
# Benchmarks and their synthetic guests (ksm/workload.py starts Python
# processes) run outside nova-compute, never through rootwrap.
EXEMPT_DIRS = {os.path.join(PACKAGE, 'bench')}
EXEMPT_FILES = {os.path.join(PACKAGE, 'ksm', 'workload.py')}


def filter_commands():
    parser = configparser.ConfigParser()
    parser.read(FILTERS)
    commands = set()
    for _name, value in parser['Filters'].items():
        fields = [f.strip() for f in value.split(',')]
        commands.add(os.path.basename(fields[1]))
    return commands


def _is_command_call(node):
    func = node.func
    if not isinstance(func, ast.Attribute):
        return None
    owner = getattr(func.value, 'id', None)
    if owner == 'utils' and func.attr == 'execute':
        return 'execute'
    if owner == 'subprocess' and func.attr in SUBPROCESS_CALLS:
        return 'subprocess'
    return None


def _literal_sequences(tree):
    """name -> first string of a tuple/list literal assigned to it, so that
    ``cmd = ('qemu-img', ...); utils.execute(*cmd)`` can be checked."""
    found = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, (ast.List, ast.Tuple))
                and node.value.elts
                and isinstance(node.value.elts[0], ast.Constant)):
            found[node.targets[0].id] = node.value.elts[0].value
    return found


def _first_word(kind, node, sequences):
    if not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Starred) and isinstance(arg.value, ast.Name):
        return sequences.get(arg.value.id)
    if isinstance(arg, ast.Name) and kind == 'subprocess':
        return sequences.get(arg.id)
    if kind == 'subprocess':
        if isinstance(arg, (ast.List, ast.Tuple)) and arg.elts:
            arg = arg.elts[0]
        else:
            return None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def commands_in_code():
    found, unknown = {}, []
    for dirpath, _dirs, files in os.walk(PACKAGE):
        if any(dirpath.startswith(d) for d in EXEMPT_DIRS):
            continue
        for name in files:
            if not name.endswith('.py'):
                continue
            path = os.path.join(dirpath, name)
            if path in EXEMPT_FILES:
                continue
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            sequences = _literal_sequences(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                kind = _is_command_call(node)
                if not kind:
                    continue
                word = _first_word(kind, node, sequences)
                where = '%s:%d' % (os.path.relpath(path, ROOT), node.lineno)
                if word is None:
                    unknown.append(where)
                else:
                    found.setdefault(os.path.basename(word), where)
    return found, unknown


def test_every_command_run_is_in_the_filters():
    found, unknown = commands_in_code()
    assert found, 'the scan found no command at all: it is broken'
    missing = {cmd: where for cmd, where in found.items()
               if cmd not in filter_commands()}
    assert not missing, 'commands missing from %s: %s' % (FILTERS, missing)
    assert not unknown, ('command names must be literals so the filters '
                         'can be checked: %s' % unknown)


def test_filters_list_nothing_the_code_does_not_run():
    found, _unknown = commands_in_code()
    extra = filter_commands() - set(found)
    assert not extra, 'filters allow commands the code never runs: %s' % extra
