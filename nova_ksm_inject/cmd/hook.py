"""``nova-ksm-libvirt-hook``: the libvirt qemu hook for KSM.

libvirt runs it as ``nova-ksm-libvirt-hook DOMAIN OP SUBOP EXTRA`` with
the domain XML on stdin and a cleared environment, so the configuration
comes from /etc/nova/nova.conf or NOVA_KSM_INJECT_CONFIG_FILES (set by
the shim ``nova-ksm-inject ksm install-hook`` writes).

libvirt waits for the hook at each of the five lifecycle events of every
guest, so it starts fast: events it ignores return before any import, and
when the config files have not changed since the last run the ``[ksm]``
values come from a cache (:mod:`nova_ksm_inject.ksm.hook.settings_cache`)
and nothing of oslo.config or oslo.log is imported. Otherwise nova.conf is
read and validated with oslo.config, as every other command does, and the
cache written for the next run.

It exits 0 whatever happens to KSM (the error is logged): a guest must
never fail to start because of KSM. ``[ksm] strict = true`` makes errors
exit 1, which makes libvirt refuse the start.

``nova-ksm-libvirt-hook --refresh-cache`` (never passed by libvirt,
which always passes four arguments) reads nova.conf as a first run would
and writes the cache, so that no guest start pays for it: without it the
first guests after a boot, an install or a change of nova.conf each spent
about 0.15 s of CPU in it, and eight guests starting together on two
cores started 0.5-0.9 s later. ``ksm install-hook`` and the tuner's systemd
unit run it.
"""

import os
import signal
import sys

PROG = 'nova-ksm-libvirt-hook'
REFRESH_CACHE = '--refresh-cache'
# Hard cap on one invocation: libvirt waits for us with locks held.
TIMEOUT_SECONDS = 10
LOG_FORMAT = '%(asctime)s %(process)d %(levelname)s %(name)s %(message)s'
SYSLOG_SOCKET = '/dev/log'


def _timeout(signum, frame):
    sys.stderr.write('%s: gave up after %ds; KSM left as it was\n'
                     % (PROG, TIMEOUT_SECONDS))
    os._exit(0)


def _log_target(settings):
    """(file path, syslog socket): ``[ksm] hook_log_file``, else syslog
    when there is one, else neither (standard error, which libvirt shows
    only when the hook fails). Never nova's own log file, which the hook
    would create owned by root if it came first."""
    if settings.hook_log_file:
        return settings.hook_log_file, None
    if os.path.exists(SYSLOG_SOCKET):
        return None, SYSLOG_SOCKET
    return None, None


def _setup_logging(settings, debug):
    """The full path: one stdlib handler, the cached path's format."""
    import logging
    path, syslog = _log_target(settings)
    if path:
        handler = logging.FileHandler(path)
    elif syslog:
        import logging.handlers
        handler = logging.handlers.SysLogHandler(address=syslog)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.set_name(PROG)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == PROG:  # an earlier run in this process
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    return logging.getLogger(PROG)


def _setup_cached_logging(settings, debug):
    """The cached path: the same lines without the logging module."""
    from nova_ksm_inject.ksm.hook import fast_start
    path, syslog = _log_target(settings)
    sink = fast_start.Sink(path, syslog, prog=PROG,
                          level='DEBUG' if debug else 'INFO')
    if not fast_start.install_logging(sink):
        # oslo.log is loaded already (tests run the hook in-process).
        return _setup_logging(settings, debug)
    return fast_start.Logger(PROG, sink)


def _cached_settings(key):
    """The :class:`KsmSettings` cached for ``key`` and the debug flag, or
    None when the cache is missing, stale or from another version."""
    import dataclasses

    from nova_ksm_inject.ksm import settings as ksm_settings
    from nova_ksm_inject.ksm.hook import settings_cache
    cached = settings_cache.load(key)
    if not isinstance(cached, dict) or not isinstance(cached.get('ksm'),
                                                      dict):
        return None
    fields = {f.name for f in dataclasses.fields(ksm_settings.KsmSettings)}
    if set(cached['ksm']) != fields:
        return None
    return ksm_settings.KsmSettings(**cached['ksm']), bool(
        cached.get('debug'))


def _load_full(key, refresh=False):
    """nova.conf through oslo.config; caches the result for next time.

    :returns: (settings, logger).
    :raises NovaKsmInjectError: with ``refresh``, the cache not written.
    """
    import dataclasses
    import logging

    from nova_ksm_inject.cmd import common
    from nova_ksm_inject.conf import CONF
    from nova_ksm_inject.ksm import settings as ksm_settings
    from nova_ksm_inject.ksm.hook import settings_cache
    root = logging.getLogger()
    before = list(root.handlers)
    common.load_config(None, prog=PROG)
    # The hook logs where [ksm] says (see _log_target), on both paths.
    for handler in list(root.handlers):
        if handler not in before:
            root.removeHandler(handler)
    settings = ksm_settings.KsmSettings.from_conf(CONF)
    log = _setup_logging(settings, CONF.debug)
    try:
        settings_cache.store(key, {'ksm': dataclasses.asdict(settings),
                                   'debug': CONF.debug})
    except OSError as err:
        if refresh:
            from nova_ksm_inject import exception
            raise exception.NovaKsmInjectError(
                'cannot write the settings cache %s: %s; run as root, or '
                'name a writable file in %s' % (
                    settings_cache.cache_path(), err.strerror or err,
                    settings_cache.CACHE_ENV)) from err
        log.debug('Settings not cached in %s: %s',
                  settings_cache.cache_path(), err)
    return settings, log


def _handle(argv, xml_text, settings):
    """Record the guest change and apply KSM; raises for the caller."""
    from nova_ksm_inject.ksm import host as ksm_host
    from nova_ksm_inject.ksm import statedir as ksm_statedir
    from nova_ksm_inject.ksm.hook import handler
    # Never a libvirt connection here: it would deadlock libvirtd.
    host = ksm_host.KsmHost(connection=None)
    statedir = ksm_statedir.KsmStateDir(settings.state_dir)
    handler.Hook(settings, host, statedir).handle(argv[0], argv[1],
                                                  argv[2], xml_text)


def run_hook(argv, xml_text):
    """Load the settings (cached or full) and handle one event; returns
    the exit code."""
    from nova_ksm_inject.ksm.hook import fast_start
    from nova_ksm_inject.ksm.hook import settings_cache
    fast_start.defer_module('inspect')
    strict, log = False, None
    try:
        key = settings_cache.identity(settings_cache.config_files())
        cached = _cached_settings(key)
        if cached is not None:
            settings, debug = cached
            log = _setup_cached_logging(settings, debug)
        else:
            settings, log = _load_full(key)
        strict = settings.strict
        _handle(argv, xml_text, settings)
        return 0
    except Exception as err:  # a hook must not fail a guest start
        _report(log, argv, err)
    return 1 if strict else 0


def _report(log, argv, err):
    from nova_ksm_inject import exception
    if log is not None and isinstance(err, exception.NovaKsmInjectError):
        log.error('KSM not adjusted for guest %s (%s %s): %s', argv[0],
                  argv[1], argv[2], err)
    elif log is not None:
        log.exception('KSM hook failed for guest %s (%s %s)', argv[0],
                      argv[1], argv[2])
    _print_error(err)


def _print_error(err):
    sys.stderr.write('%s: error: %s\n' % (PROG, ' '.join(str(err).split())))


def refresh_cache():
    """``--refresh-cache``: write the settings cache now; returns the
    exit code (2: nova.conf is bad or the cache cannot be written)."""
    from nova_ksm_inject import exception
    from nova_ksm_inject.ksm.hook import settings_cache
    files = settings_cache.config_files()
    try:
        _load_full(settings_cache.identity(files), refresh=True)
    except (exception.NovaKsmInjectError, OSError) as err:
        # OSError: [ksm] hook_log_file cannot be opened.
        _print_error(err)
        return 2
    print('Cached the [ksm] settings of %s in %s' % (
        ', '.join(files) or 'the defaults (no nova.conf)',
        settings_cache.cache_path()))
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == [REFRESH_CACHE]:
        return refresh_cache()
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(TIMEOUT_SECONDS)
    # Read all of stdin even when ignoring the event: libvirt writes the
    # XML and must not see a broken pipe.
    xml_text = sys.stdin.read()
    if len(argv) < 3:
        sys.stderr.write('usage: %s DOMAIN OP SUBOP [EXTRA] < domain.xml\n'
                         '       %s %s\n' % (PROG, PROG, REFRESH_CACHE))
        return 0
    from nova_ksm_inject.ksm.hook import events as hook_events
    if not hook_events.is_relevant(argv[1], argv[2]):
        return 0
    return run_hook(argv, xml_text)


if __name__ == '__main__':
    sys.exit(main())
