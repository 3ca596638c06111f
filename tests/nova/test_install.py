"""nova-compute loads the driver from a built wheel, installed the three
ways operators install it (``tox -e nova``, root).

nova imports a compute driver only as ``nova.virt.<compute_driver>``; the
wheel ships ``nova/virt/ksm_inject/`` without owning ``nova/``, and
``nova-ksm-inject-shim.pth`` (:mod:`nova_ksm_inject.shim`) for when nova
is elsewhere. Each layout runs its own interpreter doing what nova's
loader does (``importutils.import_class('nova.virt.ksm_inject.
LibvirtDriver')``) and ``nova-ksm-inject check nova``:

1. pip into nova's own virtualenv (kolla-style): a new venv of Debian's
   python3.11 whose site-packages is a hard-linked copy of this tox
   environment's (nova 34.0.0 and every dependency, without our editable
   install), then ``pip install --no-index --find-links WHEELS``.
2. A distribution's nova in the system directory, ours pip-installed in
   /usr/local: Debian's own python3.11 and its own ``site.py`` under a
   private prefix (``PYTHONHOME``), so ``site`` puts
   ``PREFIX/local/lib/python3.11/dist-packages`` before
   ``PREFIX/lib/python3/dist-packages`` exactly as it does with ``/usr``.
   nova (the same copy as in 1) is in the second; Debian's python3-nova
   (26.2.2) is older than the nova 34 the driver is built on, so it is not
   used. pip run by that interpreter installs the wheel into the first
   (and the scripts into ``PREFIX/local/bin``), as on a Debian host.
3. ``pip install --target DIR`` with DIR on ``PYTHONPATH``, beside the
   same Debian-style nova: not a site directory, so the ``.pth`` does not
   run and nova cannot see the shim; ``check nova`` says so with the fix,
   and the fix works.

The wheel is built from a copy of the working tree (what git tracks or
would track), so a stale ``build/`` or another build running in the tree
cannot change it. Everything lives in temporary directories removed at
the end.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# Debian's interpreter: the base of this tox environment.
DEBIAN_PYTHON = '/usr/bin/python3.11'
PTH_NAME = 'nova-ksm-inject-shim.pth'
DRIVER = 'ksm_inject.LibvirtDriver'

# What nova's loader does (nova/virt/driver.py load_compute_driver).
PROBE = r'''
import json, sys, warnings
warnings.simplefilter('ignore')
from oslo_utils import importutils
try:
    cls = importutils.import_class('nova.virt.ksm_inject.LibvirtDriver')
except ImportError as err:
    print(json.dumps({'error': str(err)}))
    sys.exit(0)
import nova, nova.virt.driver, nova_ksm_inject
from nova_ksm_inject.virt.libvirt import driver
print(json.dumps({
    'ours': cls is driver.LibvirtDriver,
    'compute_driver': issubclass(cls, nova.virt.driver.ComputeDriver),
    'nova': nova.__file__, 'package': nova_ksm_inject.__file__,
    'shim': sys.modules['nova.virt.ksm_inject'].__file__}))
'''


def _run(cmd, env, check=True, cwd=None):
    result = subprocess.run(cmd, env=env, capture_output=True, text=True,
                            timeout=120, cwd=cwd)
    if check and result.returncode:
        raise AssertionError('%s failed (%d):\n%s%s' % (
            ' '.join(cmd), result.returncode, result.stdout, result.stderr))
    return result


def _env(**extra):
    env = {'PATH': os.environ['PATH'], 'HOME': os.environ.get('HOME', '/'),
           'PYTHONDONTWRITEBYTECODE': '1', 'PYTHONNOUSERSITE': '1',
           'LANG': 'C.UTF-8'}
    env.update(extra)
    return env


def _copy_tree(src, dst):
    """Hard links where the filesystem allows (0.4 s for nova's 460 MB)."""
    if _run(['cp', '-al', src, dst], _env(), check=False).returncode:
        shutil.rmtree(dst, ignore_errors=True)
        _run(['cp', '-a', src, dst], _env())


@pytest.fixture(scope='module')
def workdir():
    path = tempfile.mkdtemp(prefix='nova-ksm-install-')
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope='module')
def wheels(workdir):
    """A wheel of the working tree, built as ``pip wheel --no-deps .``."""
    src = os.path.join(workdir, 'src')
    names = _run(['git', 'ls-files', '-z', '--cached', '--others',
                  '--exclude-standard'], _env(), cwd=ROOT).stdout
    for name in filter(None, names.split('\0')):
        path = os.path.join(ROOT, name)
        if os.path.isfile(path):
            os.makedirs(os.path.join(src, os.path.dirname(name)),
                        exist_ok=True)
            shutil.copy2(path, os.path.join(src, name))
    out = os.path.join(workdir, 'wheels')
    # This environment's setuptools when it has one: no index needed.
    isolation = ([] if importlib.util.find_spec('setuptools') is None
                 else ['--no-build-isolation'])
    _run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '-w',
          out, src] + isolation, _env())
    [wheel] = os.listdir(out)
    assert wheel.startswith('nova_ksm_inject-') and wheel.endswith('.whl')
    return out


def _ours(name):
    return name.startswith(('__editable__', 'nova_ksm_inject'))


@pytest.fixture(scope='module')
def nova_site(workdir):
    """nova 34 and every dependency, as in this tox environment, without
    the editable install of this package."""
    path = os.path.join(workdir, 'nova-site')
    _copy_tree(sysconfig.get_paths()['purelib'], path)
    _drop_ours(path)
    return path


def _drop_ours(site_dir):
    for name in os.listdir(site_dir):
        if _ours(name):
            victim = os.path.join(site_dir, name)
            (shutil.rmtree if os.path.isdir(victim) else os.unlink)(victim)


def _debian_prefix(workdir, name, nova_site):
    """A private ``/usr``: Debian's stdlib and site.py, nova in
    lib/python3/dist-packages, an empty local/lib/python3.11/dist-packages
    (Debian's python3.11 package creates it)."""
    prefix = os.path.join(workdir, name)
    os.makedirs(os.path.join(prefix, 'lib', 'python3'))
    os.makedirs(os.path.join(prefix, 'local', 'lib', 'python3.11',
                             'dist-packages'))
    os.symlink('/usr/lib/python3.11',
               os.path.join(prefix, 'lib', 'python3.11'))
    os.symlink(nova_site, os.path.join(prefix, 'lib', 'python3',
                                       'dist-packages'))
    return prefix


def _probe(python, env):
    return json.loads(_run([python, '-c', PROBE], env).stdout)


def _write_conf(workdir, name, driver):
    path = os.path.join(workdir, name + '.conf')
    with open(path, 'w') as f:
        f.write('[DEFAULT]\ncompute_driver = %s\nimg_handlers = fuse2fs\n'
                '[inject]\nuser_state_dir = %s\n'
                % (driver, os.path.join(workdir, name + '-state')))
    return path


def _check_nova(bin_dir, env, workdir, name, hook=True, driver=DRIVER):
    """``nova-ksm-inject check nova`` of one layout, its hook installed
    by its own ``ksm install-hook`` into a private hooks directory."""
    conf = _write_conf(workdir, name, driver)
    hooks = os.path.join(workdir, name + '-hooks')
    command = os.path.join(bin_dir, 'nova-ksm-inject')
    if hook:
        # The hook's settings cache in the workdir, not under /run.
        _run([command, 'ksm', 'install-hook', '--hooks-dir', hooks,
              '--hook-command', os.path.join(bin_dir,
                                             'nova-ksm-libvirt-hook')],
             dict(env, NOVA_KSM_INJECT_HOOK_CACHE=os.path.join(
                 workdir, name + '-hook-settings.json')))
    return _run([command, 'check', 'nova', '--config-file', conf,
                 '--hooks-dir', hooks], env, check=False)


def _lines(result):
    assert 'Traceback' not in result.stderr, result.stderr
    return dict(line.split(': ', 1) for line in result.stdout.splitlines())


def _assert_all_ok(result):
    lines = _lines(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(lines) == ['nova', 'compute_driver', 'libvirt hook',
                           'img_handlers fuse2fs']
    assert all(v.startswith('ok: ') for v in lines.values()), lines
    return lines


def test_pip_into_nova_virtualenv(workdir, wheels, nova_site):
    venv = os.path.join(workdir, 'venv')
    _run([DEBIAN_PYTHON, '-m', 'venv', '--without-pip', venv], _env())
    site_dir = os.path.join(venv, 'lib', 'python3.11', 'site-packages')
    os.rmdir(site_dir)
    _copy_tree(nova_site, site_dir)
    python = os.path.join(venv, 'bin', 'python')
    _run([sys.executable, '-m', 'pip', '--python', python, 'install', '-q',
          '--no-index', '--find-links', wheels, 'nova-ksm-inject[nova]'],
         _env())

    result = _probe(python, _env())
    assert result.get('ours') and result.get('compute_driver'), result
    # pip merged the shim into nova's own nova/virt/: nova finds it there.
    assert result['shim'] == os.path.join(site_dir, 'nova', 'virt',
                                          'ksm_inject', '__init__.py')
    assert result['nova'].startswith(site_dir + os.sep)
    assert os.path.isfile(os.path.join(site_dir, PTH_NAME))

    bin_dir = os.path.join(venv, 'bin')
    lines = _assert_all_ok(_check_nova(bin_dir, _env(), workdir, 'venv'))
    assert lines['nova'] == 'ok: nova 34.0.0 in %s; nova-ksm-inject 0.1.0 ' \
        'in %s' % (site_dir, site_dir)

    # Installed, but nova.conf still names nova's own driver.
    result = _check_nova(bin_dir, _env(), workdir, 'venv', hook=False,
                         driver='libvirt.LibvirtDriver')
    assert result.returncode == 1
    assert _lines(result)['compute_driver'] == (
        "FAILED: compute_driver = libvirt.LibvirtDriver is not "
        "nova-ksm-inject's driver; set compute_driver = "
        "ksm_inject.LibvirtDriver in [DEFAULT] of nova.conf")


def test_distribution_nova_with_pip_in_usr_local(workdir, wheels, nova_site):
    prefix = _debian_prefix(workdir, 'debian', nova_site)
    env = _env(PYTHONHOME=prefix)
    _run([DEBIAN_PYTHON, '-m', 'pip', 'install', '-q', '--no-index',
          '--break-system-packages', '--find-links', wheels,
          'nova-ksm-inject[nova]'], env)
    local = os.path.join(prefix, 'local', 'lib', 'python3.11',
                         'dist-packages')
    system = os.path.join(prefix, 'lib', 'python3', 'dist-packages')

    result = _probe(DEBIAN_PYTHON, env)
    assert result.get('ours') and result.get('compute_driver'), result
    assert os.path.isfile(os.path.join(local, PTH_NAME))
    assert result['nova'] == os.path.join(system, 'nova', '__init__.py')
    assert result['shim'] == os.path.join(local, 'nova', 'virt',
                                          'ksm_inject', '__init__.py')

    bin_dir = os.path.join(prefix, 'local', 'bin')
    lines = _assert_all_ok(_check_nova(bin_dir, env, workdir, 'debian'))
    assert lines['nova'] == 'ok: nova 34.0.0 in %s; nova-ksm-inject 0.1.0 ' \
        'in %s' % (system, local)

    # Without the .pth, nova-compute fails as it did before it was
    # shipped; check nova names the missing file.
    os.unlink(os.path.join(local, PTH_NAME))
    assert _probe(DEBIAN_PYTHON, env) == {
        'error': "No module named 'nova.virt.ksm_inject'"}
    result = _check_nova(bin_dir, env, workdir, 'debian', hook=False)
    assert result.returncode == 1
    assert 'is missing; reinstall nova-ksm-inject' in _lines(result)[
        'compute_driver']


def test_target_dir_on_pythonpath_refused_with_the_fix(workdir, wheels,
                                                       nova_site):
    prefix = _debian_prefix(workdir, 'target-host', nova_site)
    target = os.path.join(workdir, 'target')
    env = _env(PYTHONHOME=prefix)
    _run([DEBIAN_PYTHON, '-m', 'pip', 'install', '-q', '--no-index',
          '--no-deps', '--target', target, '--find-links', wheels,
          'nova-ksm-inject'], env)
    env['PYTHONPATH'] = target
    assert _probe(DEBIAN_PYTHON, env) == {
        'error': "No module named 'nova.virt.ksm_inject'"}

    bin_dir = os.path.join(target, 'bin')
    result = _check_nova(bin_dir, env, workdir, 'target')
    assert result.returncode == 1
    lines = _lines(result)
    failed = {k: v for k, v in lines.items() if not v.startswith('ok: ')}
    assert list(failed) == ['compute_driver']
    assert re.match(r'FAILED: nova \(in .*\) cannot import '
                    r'nova.virt.ksm_inject of nova-ksm-inject \(in %s\): '
                    r'%s is not a site directory' % (target, target),
                    failed['compute_driver'])

    # The fix it gives, as an operator would type it.
    fix = re.search(r'echo "(.*)" > (\S+)$', failed['compute_driver'])
    with open(fix.group(2), 'w') as f:
        f.write(fix.group(1) + '\n')
    assert os.path.dirname(fix.group(2)) == os.path.join(
        prefix, 'local', 'lib', 'python3.11', 'dist-packages')
    assert _probe(DEBIAN_PYTHON, env).get('ours')
    _assert_all_ok(_check_nova(bin_dir, env, workdir, 'target',
                               hook=False))
