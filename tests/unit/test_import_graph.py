"""The package's import graph: no circles, no arrows back up.

Read from the source (every import, module level or inside a function),
so a lazy import counts as much as any other.
"""

import ast
import os

import pytest

import nova_ksm_inject

ROOT = os.path.dirname(os.path.abspath(nova_ksm_inject.__file__))
PACKAGE = 'nova_ksm_inject'

# (importer, what it must not import): the lower layer never reaches up.
FORBIDDEN = [
    ('nova_ksm_inject.ksm', 'nova_ksm_inject.virt'),
    ('nova_ksm_inject.ksm', 'nova_ksm_inject.cmd'),
    ('nova_ksm_inject.ksm', 'nova_ksm_inject.api'),
    # ksm/ takes its settings from the caller, never the global CONF.
    ('nova_ksm_inject.ksm', 'nova_ksm_inject.conf'),
    ('nova_ksm_inject.api', 'nova_ksm_inject.virt'),
    ('nova_ksm_inject.api', 'nova_ksm_inject.cmd'),
]


def _modules():
    """{module name: source path} for the whole package."""
    found = {}
    for directory, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        for name in files:
            if not name.endswith('.py'):
                continue
            rel = os.path.relpath(os.path.join(directory, name), ROOT)
            parts = [PACKAGE] + rel[:-3].split(os.sep)
            if parts[-1] == '__init__':
                parts.pop()
            found['.'.join(parts)] = os.path.join(directory, name)
    return found


def _imports(module, path, known):
    """The package's modules ``module`` imports."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith('__init__.py') else \
        module.rpartition('.')[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')[:len(package.split('.'))
                                            - node.level + 1]
                base = '.'.join(anchor + ([base] if base else []))
            for alias in node.names:
                full = '%s.%s' % (base, alias.name)
                targets.add(full if full in known else base)
    return {t for t in targets if t in known and t != module}


@pytest.fixture(scope='module')
def graph():
    modules = _modules()
    return {name: _imports(name, path, modules)
            for name, path in modules.items()}


def _under(module, prefix):
    return module == prefix or module.startswith(prefix + '.')


@pytest.mark.parametrize('importer,imported', FORBIDDEN)
def test_no_arrow_runs_back_up(graph, importer, imported):
    arrows = sorted('%s -> %s' % (src, dst)
                    for src, dsts in graph.items() if _under(src, importer)
                    for dst in dsts if _under(dst, imported))
    assert arrows == []


def test_no_circles(graph):
    # Tarjan's strongly connected components; any with two modules or
    # more is a circle.
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dst in graph[node]:
            if dst not in index:
                visit(dst)
                low[node] = min(low[node], low[dst])
            elif dst in on_stack:
                low[node] = min(low[node], index[dst])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert circles == []


def test_the_graph_is_read(graph):
    # A parser that found nothing would pass the tests above.
    assert 'nova_ksm_inject.ksm.control' in graph['nova_ksm_inject.ksm.apply']
    assert 'nova_ksm_inject.ksm.sharing' in \
        graph['nova_ksm_inject.api.extra_specs']
