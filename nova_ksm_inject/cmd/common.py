"""What every console script shares: config loading and error handling."""

import logging as std_logging
import os
import sys

from oslo_config import cfg
from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject.cmd import base
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.ksm.hook import settings_cache
from nova_ksm_inject.privsep import client

DEFAULT_CONFIG_FILE = settings_cache.DEFAULT_CONFIG_FILE
CONFIG_ENV = settings_cache.CONFIG_ENV
PROG = base.PROG
# Loggers held to warnings unless --verbose: ours, and privsep's (which
# logs the start of every daemon at INFO).
QUIET_LOGGERS = ('nova_ksm_inject', 'oslo.privsep')

logging.register_options(CONF)


def config_files(explicit=None):
    """The config files to read, in order of precedence.

    ``explicit`` (``--config-file``) wins; then the colon-separated
    ``NOVA_KSM_INJECT_CONFIG_FILES`` (the hook's argv is fixed by libvirt);
    then ``/etc/nova/nova.conf`` when it exists.
    """
    if explicit:
        return list(explicit)
    # The rule the hook applies before it imports anything of oslo.
    return settings_cache.config_files()


def load_config(config_files_=None, debug=False, prog=PROG, quiet=False):
    """Parse the config files into CONF and set up logging.

    Logs go to stderr (stdout is for results, e.g. ``--json``) unless
    nova.conf names a log file. ``quiet`` shows only warnings and errors,
    for interactive commands whose own output already tells the story.

    :raises ConfigError: a file is missing or unreadable, or a value is out
        of range (the message names the option and the valid values).
    """
    files = config_files(config_files_)
    for path in files:
        if not os.access(path, os.R_OK):
            raise exception.ConfigError(
                reason='config file %s is missing or unreadable; pass '
                       '--config-file with a readable nova.conf' % path)
    try:
        CONF.set_default('use_stderr', True)
        CONF([], project='nova', prog=prog, default_config_files=files,
             default_config_dirs=[])
        if debug:
            CONF.set_override('debug', True)
        _validate_all()
    except (cfg.Error, ValueError) as err:
        raise exception.ConfigError(reason=_one_line(err)) from err
    logging.setup(CONF, prog)
    if quiet and not debug:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).logger.setLevel(std_logging.WARNING)
        # What the privsep helper prints (sudo refusing, say) ends up in
        # the one-line error instead.
        client.LOG_HELPER_OUTPUT = False
    return files


def load_config_for(args, prog=PROG, quiet=True):
    """:func:`load_config` with the options of
    :func:`nova_ksm_inject.cmd.base.config_parent` in ``args``: quiet
    (when ``quiet``) unless ``--verbose`` or ``--debug``."""
    debug = getattr(args, 'debug', False)
    return load_config(getattr(args, 'config_file', None), debug=debug,
                       prog=prog,
                       quiet=quiet and not getattr(args, 'verbose', False))


def init_privsep():
    """Commands run by a non-root user do root's work through privsep
    daemons started with ``[inject] root_helper``; root needs none. Set up
    on first use: oslo.privsep (and the eventlet it imports) costs about
    0.15 s, and the default handlers never need it."""
    if os.geteuid() != 0:
        client.INIT_PRIVSEP = True


def _validate_all():
    """Read every registered option once so bad values fail at startup."""
    for name in list(CONF):
        value = getattr(CONF, name)
        if isinstance(value, cfg.ConfigOpts.GroupAttr):
            for opt in list(value):
                getattr(value, opt)


def _one_line(err):
    return ' '.join(str(err).split())


def fail(message, code=1, prog=PROG):
    print('%s: error: %s' % (prog, message), file=sys.stderr)
    return code


def run(func, *args, prog=PROG):
    """Call ``func`` and turn expected failures into one line + exit code,
    the line starting with the command's name ``prog``."""
    try:
        return func(*args) or 0
    except exception.NovaKsmInjectError as err:
        return fail(_one_line(err), err.exit_code, prog)
    except KeyboardInterrupt:
        return fail('interrupted', 130, prog)
    except OSError as err:
        # Expected ones are ours by now; anything left is the host's
        # (a full disk, a vanished file): one line, not a traceback.
        return fail('%s: %s' % (type(err).__name__, _one_line(err)), 1,
                    prog)
