"""KSM status and one-shot control on this hypervisor.

``status`` shows what KSM does and saves; ``enable``, ``disable``,
``apply`` and ``restore`` change it now (the hook and the tuner keep
applying ``[ksm] enabled`` at their next event); ``install-hook`` puts
the libvirt hook in place.

The parsers need nothing but argparse; each command imports the KSM
library (and, for a host with libvirt, libvirt) when it runs.
"""

import argparse
import json
import os
import shlex
import sys
import tempfile
import time

from nova_ksm_inject import exception
from nova_ksm_inject.cmd import base
from nova_ksm_inject.ksm.hook import events as hook_events
from nova_ksm_inject.ksm.hook import settings_cache
from nova_ksm_inject.privsep import client

HOOKS_DIR = '/etc/libvirt/hooks'
SHIM_NAME = 'nova-ksm-inject'
HOOK_SCRIPT = 'nova-ksm-libvirt-hook'
# The hook's PATH when refreshing its cache (libvirt's is as bare).
SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
# Seconds: nova.conf through oslo.config takes a fraction of one.
REFRESH_TIMEOUT = 60
PYTHON_ENV = ('PYTHONHOME', 'PYTHONPATH')

DESCRIPTION = """\
KSM status and one-shot control on this hypervisor. The libvirt hook
and nova-ksm-tuner keep applying [ksm] of nova.conf; these commands act
once.
"""
EPILOG = """\
Exit status: 0 done; 1 KSM missing or not writable (nothing was changed);
2 bad configuration.
"""


def add_parser(subparsers, parent=None):
    """Add ``ksm`` and its subcommands to the main parser."""
    parents = [parent or base.config_parent()]
    ksm = subparsers.add_parser(
        'ksm', parents=parents, help='Kernel Samepage Merging on this host',
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ksm.add_subparsers(dest='ksm_command', metavar='ACTION')
    sub.required = True

    p = sub.add_parser('status', parents=parents,
                       help='run state, savings, ksmd CPU, per guest')
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument('--json', action='store_true', help='JSON output')
    fmt.add_argument('--prometheus', action='store_true',
                     help='node_exporter textfile format')
    p.add_argument('--output', metavar='FILE',
                   help='write to FILE atomically (for the textfile '
                        'collector directory) instead of stdout')
    p.add_argument('--window', type=float, default=0.5, metavar='SECONDS',
                   help='measure ksmd CPU over this long (default 0.5)')
    p.set_defaults(func=cmd_status)

    for name, func, text in (
            ('enable', cmd_enable, 'start ksmd now with the policy knobs'),
            ('disable', cmd_disable, 'stop ksmd now (merged pages stay '
                                     'merged unless --unmerge)'),
            ('apply', cmd_apply, 'apply [ksm] of nova.conf now')):
        p = sub.add_parser(name, parents=parents, help=text)
        p.add_argument('--unmerge', action='store_true',
                       help='unmerge every page first when needed (disable:'
                            ' run=2; apply/enable: so merge_across_nodes or '
                            'max_page_sharing can change). Guests then need '
                            'more memory until they merge again')
        p.set_defaults(func=func)

    p = sub.add_parser('restore', parents=parents,
                       help='restore the KSM settings saved before the '
                            'first change')
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser(
        'install-hook', parents=parents,
        help='install the libvirt qemu hook',
        description='Write the qemu.d shim that runs %s at guest events. '
                    'It first runs the hook once with --refresh-cache, as '
                    'libvirt will run it, so that the first guests do not '
                    'each read nova.conf; when that fails nothing is '
                    'installed. --remove removes the shim and the hook\'s '
                    'settings cache.' % HOOK_SCRIPT)
    p.add_argument('--hooks-dir', default=HOOKS_DIR,
                   help='libvirt hooks directory (default %(default)s)')
    p.add_argument('--hook-command', metavar='PATH',
                   help='hook executable (default: %s next to this '
                        'Python)' % HOOK_SCRIPT)
    p.add_argument('--remove', action='store_true',
                   help='remove the hook instead')
    p.set_defaults(func=cmd_install_hook)
    return ksm


def _context():
    from nova_ksm_inject.conf import CONF
    from nova_ksm_inject.ksm import settings as ksm_settings
    from nova_ksm_inject.ksm import statedir as ksm_statedir

    settings = ksm_settings.KsmSettings.from_conf(CONF)
    return settings, ksm_statedir.KsmStateDir(settings.state_dir)


def cmd_status(args):
    from nova_ksm_inject.ksm import host as ksm_host
    from nova_ksm_inject.ksm import status as ksm_status

    settings, statedir = _context()
    sysfs = ksm_host.KsmHost().sysfs
    status = ksm_status.collect(sysfs, statedir, time.monotonic, time.sleep,
                                window=args.window)
    if args.json:
        text = json.dumps(status, indent=2, sort_keys=True) + '\n'
    elif args.prometheus:
        text = ksm_status.format_prometheus(status)
    else:
        text = ksm_status.format_text(status)
    if args.output:
        _write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def _write_atomic(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.%s.' %
                               os.path.basename(path))
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _apply(args, force_run=None):
    from nova_ksm_inject.conf import CONF

    result = client.ksm_apply(CONF, force_run=force_run,
                              unmerge=args.unmerge)
    if result['unmerged']:
        print('KSM stopped and every page unmerged')
        return 0
    print('KSM %s: policy=%s, %d mergeable guests' % (
        'running' if result['run'] else 'stopped', result['policy'],
        result['mergeable_guests']))
    for knob, reason in result['deferred']:
        print('note: %s unchanged: %s' % (knob, reason))
    return 0


def cmd_enable(args):
    return _apply(args, force_run=True)


def cmd_apply(args):
    return _apply(args)


def cmd_disable(args):
    return _apply(args, force_run=False)


def cmd_restore(args):
    from nova_ksm_inject.conf import CONF

    result = client.ksm_restore(CONF)
    print('KSM settings restored: %s' % ', '.join(
        '%s=%s' % item for item in sorted(result['restored'].items())))
    for knob, reason in result['deferred']:
        print('note: %s unchanged: %s' % (knob, reason))
    return 0


def hook_shim(command, config_files=(), cache=None):
    """The text of the qemu.d script that runs the hook (``cache``: its
    settings cache elsewhere than under /run, for tests and the
    benchmark)."""
    lines = ['#!/bin/sh',
             '# KSM for libvirt guests, installed by "nova-ksm-inject ksm '
             'install-hook".'] + shim_event_filter() + [
             '# libvirt clears the environment: say where nova.conf is.']
    for name, value in shim_environment(config_files, cache).items():
        lines += ['%s=%s' % (name, shlex.quote(value)), 'export %s' % name]
    lines.append('exec %s "$@"' % shlex.quote(command))
    return '\n'.join(lines) + '\n'


def shim_environment(config_files=(), cache=None):
    """What the shim exports for the hook (libvirt clears the rest)."""
    env = {}
    if config_files:
        env[settings_cache.CONFIG_ENV] = ':'.join(
            os.path.abspath(f) for f in config_files)
    if cache:
        env[settings_cache.CACHE_ENV] = cache
    return env


def refresh_hook_cache(command, config_files=(), cache=None):
    """Run ``command --refresh-cache`` as the shim runs the hook, so
    that the first guest starts do not each read nova.conf.

    :returns: what the hook printed.
    :raises NovaKsmInjectError: why it failed, in one line.
    """
    import subprocess
    env = dict(shim_environment(config_files, cache), PATH=SYSTEM_PATH)
    # Where this Python finds its packages, as the hook's own Python does
    # (a private prefix); not part of the cache's key.
    env.update((name, os.environ[name]) for name in PYTHON_ENV
               if name in os.environ)
    try:
        proc = subprocess.run([command, '--refresh-cache'], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=REFRESH_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise exception.NovaKsmInjectError(
            '%s --refresh-cache failed: %s' % (command, err)) from err
    if proc.returncode:
        why = ' '.join(proc.stderr.split()) or 'exit %d' % proc.returncode
        raise exception.NovaKsmInjectError(
            '%s --refresh-cache failed: %s' % (command, why))
    return proc.stdout.strip()


def shim_event_filter():
    """Shell lines that finish the events the hook ignores without
    starting Python (libvirt waits for the hook at every event)."""
    events = sorted(hook_events.START_EVENTS | hook_events.STOP_EVENTS)
    return ['# Only these events concern KSM; read the XML of the others.',
            'case "$2 $3" in',
            '%s) ;;' % '|'.join('"%s %s"' % event for event in events),
            '*) exec cat >/dev/null ;;',
            'esac']


def _hook_command(explicit):
    if explicit:
        command = explicit
    else:
        command = os.path.join(os.path.dirname(sys.executable), HOOK_SCRIPT)
    if not os.access(command, os.X_OK):
        raise exception.NovaKsmInjectError(
            'Hook executable %s not found; install nova-ksm-inject (which '
            'provides %s) or pass --hook-command' % (command, HOOK_SCRIPT))
    return os.path.abspath(command)


def _remove_settings_cache():
    """The hook's settings cache goes with the hook (and its directory
    under /run, when nothing else is in it)."""
    path = settings_cache.cache_path()
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as err:
        raise exception.NovaKsmInjectError(
            'Cannot remove the hook\'s settings cache %s: %s; nothing was '
            'removed. Run as the user that installed the hook (root)'
            % (path, err.strerror)) from err
    print('Removed %s' % path)
    if path == settings_cache.DEFAULT_CACHE:
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass  # the tuner's state or something else lives there


def cmd_install_hook(args):
    hook_dir = os.path.join(args.hooks_dir, 'qemu.d')
    path = os.path.join(hook_dir, SHIM_NAME)
    if args.remove:
        # The cache first: when it cannot go, the hook stays as it was.
        _remove_settings_cache()
        if os.path.exists(path):
            os.unlink(path)
        print('Removed %s' % path)
        return 0
    existed = os.path.isdir(hook_dir)
    command = _hook_command(args.hook_command)
    config_files = getattr(args, 'config_file', None) or ()
    # Tests name another cache; the hook then keeps it there too.
    cache = os.environ.get(settings_cache.CACHE_ENV)
    # The cache first: a hook that cannot read nova.conf is not installed.
    try:
        cached = refresh_hook_cache(command, config_files, cache)
    except exception.NovaKsmInjectError as err:
        raise exception.NovaKsmInjectError(
            '%s; nothing was installed' % err) from err
    os.makedirs(hook_dir, mode=0o755, exist_ok=True)
    _write_atomic(path, hook_shim(command, config_files, cache))
    os.chmod(path, 0o755)
    print('Installed %s (runs %s)' % (path, command))
    if cached:
        print(cached)
    if not existed:
        print('note: %s is new: restart libvirtd so that it runs the hook'
              % hook_dir)
    return 0
