"""``nova-ksm-inject check nova`` without nova: the hook and handler
checks, the diagnosis of a shim nova cannot see, and the command's
output and exit status. With real nova, from a real wheel, in the three
install layouts: ``tests/nova/test_install.py``."""

import os
import types

import pytest

from nova_ksm_inject import exception
from nova_ksm_inject import shim
from nova_ksm_inject.cmd import check
from nova_ksm_inject.cmd import disk as cmd_disk
from nova_ksm_inject.cmd import ksm as cmd_ksm
from nova_ksm_inject.cmd import main
from nova_ksm_inject.conf import CONF


def _executable(path):
    path.write_text('#!/bin/sh\n')
    path.chmod(0o755)
    return str(path)


def _install_hook(hooks_dir, command):
    qemu_d = hooks_dir / 'qemu.d'
    qemu_d.mkdir(parents=True)
    shim_file = qemu_d / cmd_ksm.SHIM_NAME
    shim_file.write_text(cmd_ksm.hook_shim(command))
    shim_file.chmod(0o755)
    return str(shim_file)


def test_hook_installed(tmp_path):
    command = _executable(tmp_path / 'nova-ksm-libvirt-hook')
    path = _install_hook(tmp_path / 'hooks', command)
    assert check.check_hook(str(tmp_path / 'hooks')) == (
        'libvirt hook', True, '%s runs %s' % (path, command))


def test_hook_missing_says_how_to_install_it(tmp_path):
    name, ok, detail = check.check_hook(str(tmp_path))
    assert not ok
    assert detail == (
        '%s/qemu.d/nova-ksm-inject: No such file or directory, so KSM is '
        'not set up when guests start; run nova-ksm-inject ksm '
        'install-hook as root, then restart libvirtd' % tmp_path)


def test_hook_not_executable(tmp_path):
    command = _executable(tmp_path / 'hook')
    path = _install_hook(tmp_path / 'hooks', command)
    os.chmod(path, 0o644)
    assert check.check_hook(str(tmp_path / 'hooks'))[1:] == (
        False, '%s is not executable; chmod 0755 %s' % (path, path))


def test_hook_command_gone(tmp_path):
    path = _install_hook(tmp_path / 'hooks', str(tmp_path / 'uninstalled'))
    _name, ok, detail = check.check_hook(str(tmp_path / 'hooks'))
    assert not ok
    assert detail.startswith('%s runs no nova-ksm-libvirt-hook; run '
                             'nova-ksm-inject ksm install-hook' % path)


def test_hand_copied_hook_found_on_its_path(tmp_path):
    # etc/libvirt/hooks/qemu.d/nova-ksm-inject: "exec nova-ksm-libvirt-hook"
    # found on the PATH the shim sets.
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    command = _executable(bin_dir / cmd_ksm.HOOK_SCRIPT)
    lines = ['#!/bin/sh', 'PATH=%s:/bin' % bin_dir, 'export PATH',
             '*) exec cat >/dev/null ;;', 'exec nova-ksm-libvirt-hook "$@"']
    assert check._hook_command(lines) == command
    assert check._hook_command(lines[:1] + lines[2:]) is None


def _conf_handlers(conf, names):
    conf.config(img_handlers=names)
    return CONF


def test_handlers_one_line_each(conf, monkeypatch):
    rows = {'loop': ('loop', True, 'skipped while use_cow_images', {}),
            'fuse2fs': ('fuse2fs', True, None, {}),
            'nbd': ('nbd', False, 'no nbd driver; modprobe nbd', {})}

    def report(names):
        [name] = names
        if name not in rows:
            raise exception.UnknownHandler(names=name, namespace='ns',
                                           valid='loop, nbd')
        return [rows[name]]

    monkeypatch.setattr(cmd_disk, 'handler_report', report)
    results = check.check_handlers(
        _conf_handlers(conf, ['loop', 'fuse2fs', 'nbd', 'bogus']))
    assert results[:3] == [
        ('img_handlers loop', True, 'skipped while use_cow_images'),
        ('img_handlers fuse2fs', True, 'loads and can run here'),
        ('img_handlers nbd', False, 'no nbd driver; modprobe nbd')]
    name, ok, detail = results[3]
    assert (name, ok) == ('img_handlers bogus', False)
    assert 'bogus' in detail and 'valid handlers' in detail


def test_handler_names_checked_against_entry_points(conf):
    [(name, ok, detail)] = check.check_handlers(
        _conf_handlers(conf, ['no-such-handler']))
    assert not ok and 'no-such-handler' in detail and 'loop' in detail


def test_nova_missing_names_the_interpreter():
    name, ok, detail = check.check_nova(ImportError("No module named 'nova'"))
    assert (name, ok) == ('nova', False)
    assert check.sys.executable in detail
    assert detail.endswith("run this command with the python nova-compute "
                           "runs (its virtualenv, or the distribution's "
                           "python3)")


def test_nova_found_says_where(monkeypatch, tmp_path):
    fake = types.ModuleType('nova')
    fake.__file__ = str(tmp_path / 'site' / 'nova' / '__init__.py')
    monkeypatch.setitem(check.sys.modules, 'nova', fake)
    name, ok, detail = check.check_nova(None)
    assert ok
    assert 'nova (version unknown) in %s; nova-ksm-inject ' % (
        tmp_path / 'site') in detail


def test_compute_driver_unset():
    assert check.check_driver(None) == (
        'compute_driver', False, 'compute_driver is not set; set '
        'compute_driver = ksm_inject.LibvirtDriver in [DEFAULT] of nova.conf')


def _our_site(tmp_path, pth=True):
    ours = tmp_path / 'target'
    os.makedirs(shim.shim_dir(str(ours)))
    if pth:
        (ours / shim.PTH_NAME).write_text(shim.PTH_LINE)
    return str(ours)


def test_shim_unseen_from_a_target_dir_gives_the_fix(tmp_path):
    ours = _our_site(tmp_path)
    detail = check.shim_not_found('/usr/lib/python3/dist-packages', ours,
                                  '/usr/local/lib/python3.11/dist-packages')
    assert detail == (
        'nova (in /usr/lib/python3/dist-packages) cannot import '
        'nova.virt.ksm_inject of nova-ksm-inject (in %(t)s): %(t)s is not '
        'a site directory (PYTHONPATH or pip install --target), so its '
        'nova-ksm-inject-shim.pth did not run; pip install nova-ksm-inject '
        'into a site directory (nova\'s virtualenv, or '
        '/usr/local/lib/python3.11/dist-packages), or make %(t)s one: echo '
        '"import site; site.addsitedir(\'%(t)s\')" > '
        '/usr/local/lib/python3.11/dist-packages/nova-ksm-inject-path.pth'
        % {'t': ours})


def test_shim_unseen_without_the_pth_says_reinstall(tmp_path):
    ours = _our_site(tmp_path, pth=False)
    detail = check.shim_not_found('/nova-site', ours, '/site')
    assert detail.endswith(
        '%s/%s or %s is missing; reinstall nova-ksm-inject from its wheel '
        '(pip install --force-reinstall nova-ksm-inject)'
        % (ours, shim.PTH_NAME, shim.shim_dir(ours)))


def test_other_import_errors_name_the_missing_module():
    err = ModuleNotFoundError("No module named 'libvirt'", name='libvirt')
    assert check._import_failure('ksm_inject.LibvirtDriver', err) == (
        "nova cannot import nova.virt.ksm_inject.LibvirtDriver: No module "
        "named 'libvirt'; install what is missing into %s (pip install "
        "'nova-ksm-inject[nova]')" % check.sys.prefix)


def test_command_prints_one_line_per_check_and_fails(tmp_path, capsys,
                                                     monkeypatch):
    # nova cannot be imported: the nova line fails, the compute_driver
    # check cannot run, the others still answer.
    monkeypatch.setattr(check, 'import_nova', lambda args: setattr(
        args, 'nova_error', ImportError("No module named 'nova'")))
    monkeypatch.setattr(cmd_disk, 'handler_report',
                        lambda names: [(names[0], True, None, {})])
    config = tmp_path / 'nova.conf'
    config.write_text('[DEFAULT]\nimg_handlers = fuse2fs\n')
    command = _executable(tmp_path / 'hook')
    _install_hook(tmp_path / 'hooks', command)
    try:
        code = main.main(['check', 'nova', '--config-file', str(config),
                          '--hooks-dir', str(tmp_path / 'hooks')])
    finally:
        CONF.reset()
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert [line.split(': ')[:2] for line in out] == [
        ['nova', 'FAILED'], ['libvirt hook', 'ok'],
        ['img_handlers fuse2fs', 'ok']]


def test_bad_config_is_one_line(tmp_path, capsys):
    code = main.main(['check', 'nova', '--config-file',
                      str(tmp_path / 'missing.conf')])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith('nova-ksm-inject: error: ') and err.count('\n') == 1


def test_check_needs_what(capsys):
    with pytest.raises(SystemExit) as exit_:
        main.main(['check'])
    assert exit_.value.code == 2
    assert 'nova' in capsys.readouterr().err
