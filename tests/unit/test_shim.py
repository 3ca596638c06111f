"""The finder that lets nova import ``nova.virt.ksm_inject`` from another
site directory, and the ``.pth`` line that installs it.

The end-to-end cases run a fresh interpreter (``-I -S``, then
``site.addsitedir`` as ``site`` does at start-up) over two temporary site
directories: a stand-in for nova's (a regular ``nova`` package) and ours
(a copy of :mod:`nova_ksm_inject.shim`, a marked ``nova/virt/ksm_inject``
and the ``.pth``). The real wheel in the real layouts is in
``tests/nova/test_install.py``.
"""

import ast
import json
import os
import shutil
import subprocess
import sys

from nova_ksm_inject import shim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

PROBE = r'''
import json, site, sys
before = set(sys.modules)
for d in sys.argv[1:]:
    site.addsitedir(d)
loaded = sorted(set(sys.modules) - before)
try:
    import nova.virt.ksm_inject as m
    found = m.MARK
except ImportError as err:
    found = 'ImportError: %s' % err
print(json.dumps({'found': found, 'loaded': loaded}))
'''


def _package(path, text=''):
    os.makedirs(path)
    with open(os.path.join(path, '__init__.py'), 'w') as f:
        f.write(text)


def _sites(tmp_path, pth=True, nova_has_shim=False):
    nova_site = tmp_path / 'nova-site'
    _package(nova_site / 'nova')
    _package(nova_site / 'nova' / 'virt')
    if nova_has_shim:
        _package(nova_site / 'nova' / 'virt' / 'ksm_inject', 'MARK = "nova"')
    ours = tmp_path / 'our-site'
    _package(ours / 'nova_ksm_inject')
    shutil.copy(shim.__file__, ours / 'nova_ksm_inject' / 'shim.py')
    os.makedirs(ours / 'nova' / 'virt')
    _package(ours / 'nova' / 'virt' / 'ksm_inject', 'MARK = "ours"')
    if pth:
        (ours / shim.PTH_NAME).write_text(shim.PTH_LINE + '\n')
    return str(nova_site), str(ours)


def _probe(*site_dirs):
    out = subprocess.run([sys.executable, '-I', '-S', '-c', PROBE]
                         + list(site_dirs), check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def test_pth_makes_the_shim_importable_from_another_site_dir(tmp_path):
    nova_site, ours = _sites(tmp_path)
    # Debian's order: /usr/local/... (ours) before /usr/lib/python3/...
    result = _probe(ours, nova_site)
    assert result['found'] == 'ours'
    # Cheap at start-up: the .pth loads the finder's module, nothing else.
    assert set(result['loaded']) <= {'nova_ksm_inject',
                                     'nova_ksm_inject.shim'}


def test_without_the_pth_nova_cannot_see_the_shim(tmp_path):
    nova_site, ours = _sites(tmp_path, pth=False)
    assert _probe(ours, nova_site)['found'] == (
        "ImportError: No module named 'nova.virt.ksm_inject'")


def test_nova_own_copy_comes_first(tmp_path):
    # pip into nova's own environment: the shim sits in nova's nova/virt/,
    # and the finder (last on sys.meta_path) is never asked.
    nova_site, ours = _sites(tmp_path, nova_has_shim=True)
    assert _probe(ours, nova_site)['found'] == 'nova'


def test_finder_answers_for_the_shim_only(tmp_path):
    directory = tmp_path / 'nova' / 'virt' / 'ksm_inject'
    _package(directory)
    finder = shim.ShimFinder(str(directory))
    assert finder.find_spec('nova.virt.libvirt', None) is None
    assert finder.find_spec('nova', None) is None
    spec = finder.find_spec('nova.virt.ksm_inject', ['/x'])
    assert spec.name == 'nova.virt.ksm_inject'
    assert spec.origin == str(directory / '__init__.py')
    assert spec.submodule_search_locations == [str(directory)]


def test_finder_finds_nothing_once_the_shim_is_gone(tmp_path):
    finder = shim.ShimFinder(str(tmp_path / 'missing'))
    assert finder.find_spec('nova.virt.ksm_inject', None) is None


def test_install_appends_one_finder(tmp_path):
    meta_path = [object()]
    shim.install(meta_path, directory=str(tmp_path))
    shim.install(meta_path, directory='/elsewhere')
    assert len(meta_path) == 2
    assert shim.installed(meta_path) is meta_path[-1]
    assert meta_path[-1].directory == str(tmp_path)
    assert shim.installed([object()]) is None


def test_shim_dir_is_next_to_the_package(tmp_path):
    assert shim.shim_dir(str(tmp_path)) == str(
        tmp_path / 'nova' / 'virt' / 'ksm_inject')
    assert shim.shim_dir() == os.path.join(ROOT, 'nova', 'virt',
                                           'ksm_inject')


def test_setup_py_writes_the_same_pth():
    # setup.py cannot import the package; its copy must not drift.
    with open(os.path.join(ROOT, 'setup.py')) as f:
        tree = ast.parse(f.read())
    values = {node.targets[0].id: node.value.value for node in tree.body
              if isinstance(node, ast.Assign)
              and isinstance(node.value, ast.Constant)}
    assert values['PTH_NAME'] == shim.PTH_NAME
    assert values['PTH_LINE'] == shim.PTH_LINE
