"""Checks a privsep daemon makes on itself before any privileged work.

The daemon reads its options (``[inject] image_dirs``,
``trusted_backing_dirs``, ``[ksm]``...) from the ``--config-file``
arguments it was started with, and those arguments come from the
unprivileged caller: oslo.rootwrap admits ``privsep-helper`` with any
arguments, and a sudoers rule for it usually does too. So every
configuration file must be one only root could have written: owned by
root, not writable by group or others, in directories that are the same
all the way up. Otherwise the caller could have chosen what root writes.
"""

import os
import stat

from oslo_config import cfg

from nova_ksm_inject import exception


def _writable_by_others(path):
    info = os.stat(path)
    if info.st_uid != 0:
        return '%s belongs to uid %d' % (path, info.st_uid)
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return '%s is writable by group or others (mode %o)' % (
            path, stat.S_IMODE(info.st_mode))
    return None


def _config_paths(conf):
    paths = list(getattr(conf, 'config_file', None) or [])
    for directory in getattr(conf, 'config_dir', None) or []:
        paths.append(directory)
        paths += [os.path.join(directory, name)
                  for name in sorted(os.listdir(directory))]
    return paths


def check_config_files(conf=cfg.CONF):
    """Raise ConfigError unless only root could have written the config.

    :raises ConfigError: naming the file, why, and the fix.
    """
    for path in _config_paths(conf):
        current = os.path.realpath(path)
        while True:
            why = _writable_by_others(current)
            if why:
                raise exception.ConfigError(reason=(
                    'the privileged helper refuses configuration %s: %s, so '
                    'a user could choose what root writes; keep nova.conf '
                    'owned by root and not group- or world-writable, in '
                    'directories likewise (/etc/nova)' % (path, why)))
            if current == '/':
                break
            current = os.path.dirname(current)
