"""``inject``, ``handlers`` and ``cleanup`` subcommands."""

import argparse
import json
import os

from nova_ksm_inject import exception
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import api
from nova_ksm_inject.disk import network
from nova_ksm_inject.disk import request as disk_request

INJECT_EPILOG = """\
Handlers are tried in the order of --handlers (default: img_handlers in
nova.conf). A handler that cannot do copy-on-write (loop) is skipped when
--cow is in effect (use_cow_images) or the image is qcow2; a handler that
fails is logged and the next one is tried. On failure the one-line error
lists every handler with its reason.

--net-file takes either a ready network config (written as is to
/etc/network/interfaces) or JSON: a list of interfaces, or {"interfaces":
[...]}, rendered through injected_network_template. Each interface has
name, address, netmask, gateway, broadcast, dns (list) and use_dhcp.

Exit status: 0 injected; 1 nothing could be injected; 2 bad arguments or
configuration.
"""


def _partition(value):
    if value == 'inspect':
        return -1
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            'expected inspect, -1, 0 or a partition number, got %r' % value)
    if number < -1:
        raise argparse.ArgumentTypeError(
            'partition must be -1 (inspect), 0 (whole disk) or N')
    return number


def _pair(value):
    key, sep, rest = value.partition('=')
    if not sep or not key:
        raise argparse.ArgumentTypeError('expected NAME=VALUE, got %r' % value)
    return key, rest


def _handler_list(value):
    return [n.strip() for n in value.split(',') if n.strip()]


def add_parsers(sub, parent):
    p = sub.add_parser(
        'inject', parents=[parent], epilog=INJECT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help='inject data into a guest image',
        description='Inject data into guest image IMAGE.')
    p.add_argument('image', metavar='IMAGE')
    p.add_argument('--format', choices=['raw', 'qcow2'],
                   help='image format (default: detected from the header, '
                        'never by qemu probing)')
    p.add_argument('--partition', type=_partition, metavar='N',
                   help='0: the disk is one filesystem; N: partition N; '
                        'inspect or -1: find the root (guestfs only). '
                        'Default: [libvirt] inject_partition, or 0 when '
                        'that is -2 (disabled)')
    p.add_argument('--key-file', metavar='F',
                   help='ssh public key for /root/.ssh/authorized_keys')
    p.add_argument('--net-file', metavar='F', help='network config or JSON')
    p.add_argument('--metadata', action='append', type=_pair, default=[],
                   metavar='KEY=VALUE', help='metadata for /meta.js '
                   '(repeatable)')
    p.add_argument('--admin-password-file', metavar='F',
                   help='file whose first line is the root password')
    p.add_argument('--file', action='append', type=_pair, default=[],
                   dest='files', metavar='GUEST_PATH=LOCAL_PATH',
                   help='copy LOCAL_PATH to GUEST_PATH (repeatable)')
    p.add_argument('--handlers', type=_handler_list, metavar='NAME,NAME',
                   help='handler order (default: img_handlers)')
    cow = p.add_mutually_exclusive_group()
    cow.add_argument('--cow', dest='cow', action='store_true', default=None,
                     help='the image needs copy-on-write (skip loop)')
    cow.add_argument('--no-cow', dest='cow', action='store_false',
                     help='raw images may be written directly')
    p.add_argument('--trusted-backing-dir', action='append', default=[],
                   metavar='DIR', help='directory qcow2 backing files may '
                   'live in (repeatable; default [inject] '
                   'trusted_backing_dirs)')
    p.add_argument('--json', action='store_true',
                   help='print the result as JSON')
    p.set_defaults(func=cmd_inject)

    p = sub.add_parser('handlers', parents=[parent],
                       help='show the handler chain and what works here')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=cmd_handlers)

    p = sub.add_parser('cleanup', parents=[parent],
                       help='undo mounts and devices a killed run left')
    p.set_defaults(func=cmd_cleanup)


def _read(path, what):
    try:
        with open(path, 'rb') as f:
            return f.read()
    except OSError as err:
        raise exception.ConfigError(
            reason='cannot read %s %s: %s' % (what, path, err.strerror))


def _net_config(path):
    text = _read(path, '--net-file').decode()
    try:
        data = json.loads(text)
    except ValueError:
        return text
    interfaces = data.get('interfaces') if isinstance(data, dict) else data
    if not isinstance(interfaces, list):
        raise exception.ConfigError(
            reason='--net-file %s: JSON must be a list of interfaces or '
                   '{"interfaces": [...]}' % path)
    return network.render_network(interfaces)


def build_request(args):
    request = disk_request.InjectionRequest()
    if args.key_file:
        request.key = _read(args.key_file, '--key-file').decode().strip()
    if args.net_file:
        request.net = _net_config(args.net_file)
    if args.metadata:
        request.metadata = dict(args.metadata)
    if args.admin_password_file:
        text = _read(args.admin_password_file, '--admin-password-file')
        request.admin_password = text.decode().splitlines()[0] \
            if text.strip() else ''
    for guest_path, local in args.files:
        request.files.append((guest_path, _read(local, '--file')))
    if request.is_empty():
        raise exception.ConfigError(
            reason='nothing to inject; give --key-file, --net-file, '
                   '--metadata, --admin-password-file or --file')
    return request


def _default_partition():
    configured = CONF.libvirt.inject_partition
    return configured if configured >= -1 else 0


def cmd_inject(args):
    request = build_request(args)
    result = api.inject_data(
        os.path.abspath(args.image), request, fmt=args.format,
        partition=(args.partition if args.partition is not None
                   else _default_partition()),
        handler_names=args.handlers, use_cow=args.cow,
        trusted_dirs=args.trusted_backing_dir or None)
    if args.json:
        print(json.dumps(_result_dict(result), indent=2))
        return 0
    info = result.image
    print('Image %s (%s, %d MiB)' % (info.path, info.format,
                                     info.virtual_size // 2 ** 20))
    for attempt in result.attempts:
        print('  %-8s %-11s %s' % (attempt.handler, attempt.outcome,
                                   attempt.reason or
                                   '(%.3f s)' % attempt.seconds))
    print('Injected %s with handler %s' % (', '.join(result.injected),
                                           result.handler))
    return 0


def _result_dict(result):
    return {
        'image': result.image.path, 'format': result.image.format,
        'handler': result.handler, 'injected': result.injected,
        'items': [item.to_dict() for item in result.items],
        'attempts': [{'handler': a.handler, 'outcome': a.outcome,
                      'reason': a.reason, 'seconds': round(a.seconds, 4)}
                     for a in result.attempts]}


def handler_report(names):
    """[(name, usable, reason, capabilities)] for ``handlers``."""
    rows = []
    for handler in api.load_handlers(names):
        try:
            handler.check_host()
            usable, reason = True, None
        except exception.HandlerUnavailable as err:
            usable, reason = False, str(err)
        caps = {'cow': handler.cow, 'formats': sorted(handler.formats),
                'inspect': handler.can_inspect,
                'kernel_mount': handler.kernel_mount}
        if usable and CONF.use_cow_images and not handler.cow:
            reason = ('skipped while use_cow_images = True and for qcow2 '
                      'images (no copy-on-write)')
        rows.append((handler.name, usable, reason, caps))
    return rows


def cmd_handlers(args):
    names = list(CONF.img_handlers)
    rows = handler_report(names)
    others = [n for n in api.available_handlers() if n not in names]
    if args.json:
        print(json.dumps({
            'img_handlers': names, 'use_cow_images': CONF.use_cow_images,
            'handlers': [dict(name=n, usable=u, reason=r, **c)
                         for n, u, r, c in rows],
            'installed_not_configured': others}, indent=2))
    else:
        print('img_handlers = %s (use_cow_images = %s)'
              % (','.join(names), CONF.use_cow_images))
        for i, (name, usable, reason, caps) in enumerate(rows, 1):
            what = '%s%s%s' % ('/'.join(caps['formats']),
                               ', copy-on-write' if caps['cow'] else '',
                               ', inspect' if caps['inspect'] else '')
            print('  %d. %-8s %-11s [%s] %s' % (
                i, name, 'usable' if usable else 'UNAVAILABLE', what,
                reason or ''))
        if others:
            print('Installed, not in img_handlers: %s' % ', '.join(others))
    return 0 if any(u for _n, u, _r, _c in rows) else 1


def cmd_cleanup(args):
    results = api.cleanup()
    failed = 0
    for result in results:
        for step in result['undone']:
            print('undone %s %s' % (step['kind'], step.get('path') or
                                    step.get('device') or step.get('pid')))
        for error in result['errors']:
            failed += 1
            print('FAILED %s: %s' % (result['record'], error))
        if result['skipped']:
            failed += result['foreign']
            print('skipped %s: %s' % (result['record'], result['skipped']))
    if not results:
        print('nothing to clean up in %s' % CONF.inject.state_dir)
    return 1 if failed else 0
