"""``check nova``: is this compute node set up for nova-ksm-inject?

Run with nova-compute's interpreter and nova.conf, it answers what
nova-compute would find: whether nova's loader imports the driver named
by ``compute_driver`` (as ``nova.virt.<compute_driver>``, exactly as
nova does), whether the libvirt hook is in place, and whether each
``img_handlers`` entry loads and can run here. One line per check;
``FAILED`` lines name the cause and the fix.

The parser needs nothing but argparse; nova, oslo and the library are
imported when the command runs.
"""

import argparse
import logging
import os
import shlex
import shutil
import sys
import warnings

from nova_ksm_inject import exception
from nova_ksm_inject.cmd import ksm as cmd_ksm

DRIVER = 'ksm_inject.LibvirtDriver'
# What the hand-copied shim (etc/libvirt/hooks/qemu.d/) sets.
HOOK_PATH = '/usr/local/bin:/usr/bin:/bin'
NOISY_LOGGERS = ('nova', 'oslo_service')

DESCRIPTION = """\
Check, with the Python nova-compute runs and its nova.conf, that
nova-compute can load the ksm_inject driver (compute_driver), that the
libvirt hook is installed, and which img_handlers entries work here.
"""
EPILOG = """\
Prints one line per check: ok, or FAILED with the cause and the fix.
Exit status: 0 everything ok; 1 a check failed; 2 bad configuration.
"""


def add_parser(subparsers, parent):
    """Add ``check`` and its subcommand ``nova`` to the main parser."""
    check = subparsers.add_parser(
        'check', parents=[parent], help='check this compute node',
        description='Check this compute node.')
    sub = check.add_subparsers(dest='check_command', metavar='WHAT')
    sub.required = True
    p = sub.add_parser(
        'nova', parents=[parent], description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help='can nova-compute load the driver; the hook; the handlers')
    p.add_argument('--hooks-dir', default=cmd_ksm.HOOKS_DIR,
                   help='libvirt hooks directory (default %(default)s)')
    p.set_defaults(func=cmd_nova, before_config=import_nova)
    return check


def import_nova(args):
    """Register nova's options before ours, as nova-compute does; keep
    the failure for the ``nova`` line."""
    args.nova_error = None
    try:
        import nova.conf  # noqa: F401
    except Exception as err:
        args.nova_error = err


def _ok(name, detail):
    return name, True, detail


def _failed(name, detail):
    return name, False, detail


def check_nova(error):
    """Is nova importable here, from where, which version."""
    import importlib.metadata

    import nova_ksm_inject

    if error is not None:
        return _failed('nova', 'cannot import nova with %s (%s: %s); run '
                       'this command with the python nova-compute runs '
                       '(its virtualenv, or the distribution\'s python3)'
                       % (sys.executable, type(error).__name__, error))
    import nova

    versions = []
    for dist in ('nova', 'nova-ksm-inject'):
        try:
            versions.append(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            versions.append('(version unknown)')
    return _ok('nova', 'nova %s in %s; nova-ksm-inject %s in %s' % (
        versions[0], _site_of(nova), versions[1], _site_of(nova_ksm_inject)))


def _site_of(package):
    """The directory ``package`` (a regular package) was imported from."""
    return os.path.dirname(os.path.dirname(os.path.abspath(
        package.__file__)))


def check_driver(compute_driver):
    """Import ``nova.virt.<compute_driver>`` as nova's loader does."""
    from oslo_utils import importutils

    name = 'compute_driver'
    if not compute_driver:
        return _failed(name, 'compute_driver is not set; set compute_driver'
                       ' = %s in [DEFAULT] of nova.conf' % DRIVER)
    try:
        with warnings.catch_warnings():
            # nova's dependencies warn at import (eventlet): not ours.
            warnings.simplefilter('ignore')
            cls = importutils.import_class('nova.virt.%s' % compute_driver)
            ours = importutils.import_class(
                'nova_ksm_inject.virt.libvirt.driver.LibvirtDriver')
    except ImportError as err:
        return _failed(name, _import_failure(compute_driver, err))
    except Exception as err:
        return _failed(name, 'importing nova.virt.%s failed: %s: %s; fix '
                       'that module\'s installation in %s' % (
                           compute_driver, type(err).__name__, err,
                           sys.prefix))
    if not (isinstance(cls, type) and issubclass(cls, ours)):
        return _failed(name, 'compute_driver = %s is not nova-ksm-inject\'s '
                       'driver; set compute_driver = %s in [DEFAULT] of '
                       'nova.conf' % (compute_driver, DRIVER))
    import nova.virt.driver

    if not issubclass(cls, nova.virt.driver.ComputeDriver):
        # Our driver built on another nova than the one nova loads.
        return _failed(name, '%s.%s is not a subclass of this nova\'s '
                       'ComputeDriver; install nova-ksm-inject for the '
                       'nova in %s' % (cls.__module__, cls.__name__,
                                       _site_of(nova)))
    module = 'nova.virt.%s' % compute_driver.rpartition('.')[0]
    return _ok(name, '%s loads %s.%s (%s from %s)' % (
        compute_driver, cls.__module__, cls.__name__, module,
        os.path.dirname(sys.modules[module].__file__)))


def _import_failure(compute_driver, err):
    if getattr(err, 'name', None) != 'nova.virt.ksm_inject':
        return ('nova cannot import nova.virt.%s: %s; install what is '
                'missing into %s (pip install \'nova-ksm-inject[nova]\')'
                % (compute_driver, err, sys.prefix))
    import site

    import nova

    import nova_ksm_inject

    return shim_not_found(_site_of(nova), _site_of(nova_ksm_inject),
                          site.getsitepackages()[0])


def shim_not_found(nova_site, ours, first_site):
    """Why nova (in ``nova_site``) cannot import nova.virt.ksm_inject from
    our package (in ``ours``), and the fix (``first_site``: the first
    site directory of this Python)."""
    from nova_ksm_inject import shim

    pth = os.path.join(ours, shim.PTH_NAME)
    cause = ('nova (in %s) cannot import nova.virt.ksm_inject of '
             'nova-ksm-inject (in %s): ' % (nova_site, ours))
    if not os.path.isfile(pth) or not os.path.isdir(shim.shim_dir(ours)):
        return cause + ('%s or %s is missing; reinstall nova-ksm-inject '
                        'from its wheel (pip install --force-reinstall '
                        'nova-ksm-inject)' % (pth, shim.shim_dir(ours)))
    return cause + (
        '%s is not a site directory (PYTHONPATH or pip install --target), '
        'so its %s did not run; pip install nova-ksm-inject into a site '
        'directory (nova\'s virtualenv, or %s), or make %s one: echo '
        '"import site; site.addsitedir(%r)" > %s' % (
            ours, shim.PTH_NAME, first_site, ours, ours,
            os.path.join(first_site, 'nova-ksm-inject-path.pth')))


def check_hook(hooks_dir):
    """Is the qemu.d shim there, executable, and does its command exist."""
    name = 'libvirt hook'
    path = os.path.join(hooks_dir, 'qemu.d', cmd_ksm.SHIM_NAME)
    install = ('run nova-ksm-inject ksm install-hook as root, then restart '
               'libvirtd')
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as err:
        return _failed(name, '%s: %s, so KSM is not set up when guests '
                       'start; %s' % (path, err.strerror, install))
    if not os.access(path, os.X_OK):
        return _failed(name, '%s is not executable; chmod 0755 %s'
                       % (path, path))
    command = _hook_command(lines)
    if command is None:
        return _failed(name, '%s runs no %s; %s' % (
            path, cmd_ksm.HOOK_SCRIPT, install))
    return _ok(name, '%s runs %s' % (path, command))


def _hook_command(lines):
    """The executable the shim's ``exec`` line runs, if it exists."""
    search = HOOK_PATH
    command = None
    for line in lines:
        if line.startswith('PATH='):
            search = line.partition('=')[2]
        elif line.startswith('exec ') and not line.startswith('exec cat'):
            command = shlex.split(line)[1]
    return command and shutil.which(command, path=search)


def check_handlers(conf):
    """One result per ``img_handlers`` entry: it loads and can run here."""
    from nova_ksm_inject.cmd import disk as cmd_disk

    results = []
    for name in conf.img_handlers:
        label = 'img_handlers %s' % name
        try:
            [(_n, usable, reason, _caps)] = cmd_disk.handler_report([name])
        except exception.NovaKsmInjectError as err:
            results.append(_failed(label, ' '.join(str(err).split())))
            continue
        if usable:
            results.append(_ok(label, reason or 'loads and can run here'))
        else:
            results.append(_failed(label, reason))
    if not results:
        results.append(_failed('img_handlers', 'img_handlers is empty; '
                               'set img_handlers = fuse2fs, guestfs'))
    return results


def run_checks(args, conf):
    results = [check_nova(args.nova_error)]
    if args.nova_error is None:
        results.append(check_driver(conf.compute_driver))
    results.append(check_hook(args.hooks_dir))
    results.extend(check_handlers(conf))
    return results


def cmd_nova(args):
    from nova_ksm_inject.conf import CONF

    if not (getattr(args, 'verbose', False) or getattr(args, 'debug', False)):
        # What nova's imports log at INFO (oslo.service choosing its
        # backend) is not an answer to a check.
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    results = run_checks(args, CONF)
    for name, ok, detail in results:
        print('%s: %s: %s' % (name, 'ok' if ok else 'FAILED', detail))
    return 0 if all(ok for _n, ok, _d in results) else 1
