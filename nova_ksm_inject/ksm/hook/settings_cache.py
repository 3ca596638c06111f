"""The hook's cache of the effective ``[ksm]`` settings.

libvirt runs the hook synchronously for every lifecycle event of every
guest. Loading nova.conf through oslo.config and oslo.log costs about
0.15 s of CPU per run, mostly imports; the hook itself needs a dozen
values. So the full path (oslo.config, every option validated) stores the
values it read here, keyed by the identity of the config files (path,
device, inode, size, mtime) and of any ``OS_*`` variable oslo.config would
read; the next run finds them with stdlib code only. Any change to a
file, a file appearing or going away, or another ``NOVA_KSM_INJECT_
CONFIG_FILES`` makes the key differ and the full path runs again.

Options are still defined once, in ``nova_ksm_inject/conf/ksm.py``: the
cache holds what oslo.config computed, never defaults of its own. A cache
file that root did not write (wrong owner, writable by others, a symlink)
is ignored. This module imports only the standard library.
"""

import json
import os
import stat

#: ``nova_ksm_inject.cmd.common.config_files`` (every command) uses this
#: rule too; that module imports oslo.config, this one nothing.
CONFIG_ENV = 'NOVA_KSM_INJECT_CONFIG_FILES'
DEFAULT_CONFIG_FILE = '/etc/nova/nova.conf'
#: Where the cache lives; the environment variable is for tests and the
#: benchmark (libvirt clears the environment, the shim sets it).
CACHE_ENV = 'NOVA_KSM_INJECT_HOOK_CACHE'
DEFAULT_CACHE = '/run/nova-ksm-inject/hook-settings.json'
VERSION = 1


def config_files():
    """The config files the hook reads, in order."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return [f for f in env.split(':') if f]
    if os.path.exists(DEFAULT_CONFIG_FILE):
        return [DEFAULT_CONFIG_FILE]
    return []


def cache_path():
    return os.environ.get(CACHE_ENV) or DEFAULT_CACHE


def identity(files):
    """What the effective settings depend on, as a JSON-able list."""
    key = [VERSION]
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            key.append([path, None])
            continue
        key.append([path, st.st_dev, st.st_ino, st.st_size,
                    st.st_mtime_ns, st.st_ctime_ns])
    # oslo.config also reads OS_<GROUP>__<OPTION> from the environment.
    key.append(sorted([k, v] for k, v in os.environ.items()
                      if k.startswith('OS_')))
    return key


def load(key, path=None):
    """The cached settings for ``key``, or None (missing, stale, not
    trusted, unreadable)."""
    path = path or cache_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid()
                or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
            return None
        with os.fdopen(fd, 'rb', closefd=False) as f:
            data = json.loads(f.read(1 << 16) or b'null')
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or data.get('key') != key:
        return None
    return data.get('settings')


def store(key, settings, path=None):
    """Write ``settings`` (a JSON-able dict) for ``key``, atomically.

    :raises OSError: for the caller to log; the hook works without it.
    """
    path = path or cache_path()
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = '%s.%d.tmp' % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump({'key': key, 'settings': settings}, f, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
