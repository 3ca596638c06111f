"""nova-ksm-inject-privsep-helper: start a privsep daemon of ours as root.

The one command the nova user may run through sudo (or nova-rootwrap).
oslo.privsep's own ``privsep-helper`` takes its configuration and logging
from its caller: ``--log-config-append FILE`` alone hands oslo.log a file
whose handler arguments are evaluated as Python, as root. This helper
accepts exactly the two arguments oslo.privsep appends to a context's
``helper_command`` (``--privsep_context NAME --privsep_sock_path PATH``),
for our two contexts only, and refuses anything else before oslo.config
or oslo.log is set up.

Its configuration files are root's choice: ``/etc/nova/nova.conf``, then
``/etc/nova/nova-compute.conf`` when it exists, unless :data:`SETTINGS`
lists others (``[privsep_helper] config_files = A, B``). Each is opened
once and checked on its descriptor, and oslo.config parses those very
descriptors (:mod:`nova_ksm_inject.privsep.checks`). The daemon is then
started as ``privsep-helper`` starts it.
"""

import os
import re
import stat
import sys

from nova_ksm_inject import exception

PROG = 'nova-ksm-inject-privsep-helper'
#: The contexts' pypaths (nova_ksm_inject.privsep; a unit test keeps
#: them equal), so that nothing is imported before the arguments pass.
CONTEXTS = ('nova_ksm_inject.privsep.inject_pctxt',
            'nova_ksm_inject.privsep.ksm_pctxt')
#: privsep's socket: privsep.sock in a fresh tempfile.mkdtemp() directory
#: (tmp + 8 characters), under any temporary directory; no . or ..
SOCK_PATH = re.compile(
    r'(?!.*/\.\.?/)(/[A-Za-z0-9_.-]+)*/tmp[a-z0-9_]{8}/privsep\.sock')
#: Root's list of configuration files, when not the default. A fixed path:
#: never taken from the arguments or the environment.
SETTINGS = '/etc/nova-ksm-inject/privsep-helper.conf'
CONFIG_FILES = ('/etc/nova/nova.conf',)
OPTIONAL_CONFIG_FILES = ('/etc/nova/nova-compute.conf',)
EXIT_REFUSED = 2
USAGE = ('takes exactly --privsep_context NAME --privsep_sock_path PATH, '
         'as oslo.privsep appends them to helper_command; configuration '
         'files are fixed (%s)' % SETTINGS)


class Refused(Exception):
    """An argument, socket or file this helper will not start with."""


def parse_args(argv):
    """``(context, socket path)`` from exactly what privsep appends.

    :raises Refused: any other argument, order or repetition.
    """
    if len(argv) != 4 or argv[0] != '--privsep_context' or \
            argv[2] != '--privsep_sock_path':
        raise Refused('refused arguments %s: this helper %s'
                      % (_shown(argv), USAGE))
    context, sock_path = argv[1], argv[3]
    if context not in CONTEXTS:
        raise Refused('refused context %s: only %s'
                      % (_shown([context]), ', '.join(CONTEXTS)))
    check_socket(sock_path)
    return context, sock_path


def _shown(args):
    text = ' '.join(repr(a) for a in args)
    return text if len(text) <= 200 else text[:200] + '...'


def check_socket(path):
    """Refuse ``path`` unless it is privsep's: a socket in a directory
    only its owner can enter, named as privsep names them."""
    if not SOCK_PATH.fullmatch(path):
        raise Refused('refused socket path %s: not DIR/tmpXXXXXXXX/'
                      'privsep.sock as oslo.privsep makes it' % _shown([path]))
    try:
        parent = os.lstat(os.path.dirname(path))
        sock = os.lstat(path)
    except OSError as err:
        raise Refused('refused socket path %s: %s'
                      % (path, err.strerror)) from err
    if not stat.S_ISDIR(parent.st_mode) or parent.st_mode & 0o077:
        raise Refused('refused socket path %s: its directory is not a '
                      'private (0700) directory' % path)
    if not stat.S_ISSOCK(sock.st_mode):
        raise Refused('refused socket path %s: not a socket' % path)


def pinned_config_files():
    """Open root's configuration files for good; a list of PinnedFile.

    :raises ConfigError: a file or a directory above it could have been
        written by someone else, is a symlink, or is missing.
    """
    from nova_ksm_inject.privsep import checks

    settings = checks.open_pinned(SETTINGS, missing_ok=True)
    if settings is None:
        required, optional = CONFIG_FILES, OPTIONAL_CONFIG_FILES
    else:
        try:
            required, optional = _listed(settings.read()), ()
        finally:
            os.close(settings.fd)
    files = [checks.open_pinned(path) for path in required]
    files += [checks.open_pinned(path, missing_ok=True) for path in optional]
    return [f for f in files if f is not None]


def _listed(text):
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, SETTINGS)
        listed = parser.get('privsep_helper', 'config_files')
    except configparser.Error as err:
        raise Refused('%s: %s; it must say [privsep_helper] config_files = '
                      '/etc/nova/nova.conf[, ...]'
                      % (SETTINGS, str(err).splitlines()[0])) from err
    paths = [p.strip() for p in listed.split(',') if p.strip()]
    if not paths:
        raise Refused('%s lists no config_files' % SETTINGS)
    return paths


def serve(context_name, sock_path, files):
    """Parse ``files`` and start the daemon as privsep-helper does
    (``oslo_privsep.daemon.helper_main``); the parent returns."""
    import socket

    from oslo_config import cfg
    from oslo_log import log as logging
    from oslo_privsep import comm
    from oslo_privsep import daemon
    from oslo_utils import importutils

    from nova_ksm_inject.privsep import checks

    checks.pin(files)
    logging.register_options(cfg.CONF)
    # These descriptors, and no directory, argument or OS_* variable.
    cfg.CONF(args=[], project='privsep', prog=PROG,
             default_config_files=[f.config_path for f in files],
             default_config_dirs=[], use_env=False)
    logging.setup(cfg.CONF, 'privsep', fix_eventlet=False)
    context = importutils.import_class(context_name)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(sock_path)
    daemon.set_cloexec(sock)
    channel = comm.ServerChannel(sock)
    if os.fork() != 0:
        return
    # The child: the daemon, logging over the channel from now on.
    daemon.replace_logging(daemon.PrivsepLogHandler(channel))
    log = logging.getLogger(__name__)
    log.info('privsep daemon starting for %s with %s', context_name,
             ', '.join(f.path for f in files))
    try:
        daemon.Daemon(channel, context).run()
    except Exception as err:
        log.exception(err)
        sys.exit(str(err))
    sys.exit(0)


def main(argv=None):
    """Console script: one line on stderr and exit 2 when refused."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        context, sock_path = parse_args(argv)
        files = pinned_config_files()
    except (Refused, exception.ConfigError) as err:
        print('%s: error: %s' % (PROG, err), file=sys.stderr)
        return EXIT_REFUSED
    try:
        serve(context, sock_path, files)
    except Exception as err:
        print('%s: error: cannot start the daemon for %s: %s'
              % (PROG, context, str(err).splitlines()[0] if str(err)
                 else type(err).__name__), file=sys.stderr)
        return 1
    return 0
