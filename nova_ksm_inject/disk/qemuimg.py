"""``qemu-img info`` of one image layer, with the format stated, without
privilege and under CPU and address-space limits (CVE-2015-5162: a crafted
image can make it spin or eat memory). Never ``--backing-chain``, which
would open the backing files: ``image.py`` walks the chain itself.

qemu-img runs in a sandbox (:mod:`.sandbox`) and is handed the layer as a
descriptor (it opens ``/proc/self/fd/N``: the inode inspection holds, with
its own uid's permissions, no host path resolved again). It runs as the
caller when that is not root; for a root caller (the privsep daemon) as
the file's owner, or as ``[inject] helper_user`` when root owns the file.
"""

import json
import shutil
import time
import types

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject.conf import CONF
from nova_ksm_inject.disk import sandbox

LOG = logging.getLogger(__name__)

#: The command run in the sandbox (tests may wrap it).
QEMU_IMG = ('qemu-img',)
#: bwrap exits 128 + N when the command dies of signal N.
_SIGNALLED = 128


def _refused(path, reason, *args):
    return exception.ImageRefused(path=path, reason=reason % args)


def info(path, source, fmt):
    """``qemu-img info -f FMT`` of one layer as a dict, under limits.

    :param path: the layer's real path, for messages.
    :param source: what opens the layer (``/proc/<pid>/fd/<n>``), or None
        (then ``path``); qemu-img gets a descriptor of it.
    :raises ImageRefused: qemu-img failed, was killed by its limits or
        described something else.
    :raises ToolMissing: qemu-img (or bwrap) is not installed.
    """
    if shutil.which(QEMU_IMG[0]) is None:
        raise _missing(path)
    started = time.monotonic()
    try:
        with sandbox.opened(source or path) as fd:
            box = sandbox.Sandbox(_limits(), path, *_helper_ids(fd, path))
            # No -U (--force-share): an image a running qemu holds for
            # writing must fail here, as writing into it must be refused.
            cmd = (*QEMU_IMG, 'info', '--output=json', '-f', fmt,
                   box.pass_fd(fd))
            out, _err = box.run(*cmd, action='inspecting image %s' % path)
    except exception.CommandFailed as err:
        raise _failed(path, fmt, err) from err
    LOG.debug('%(cmd)s %(path)s took %(secs).3f s',
              {'cmd': ' '.join(cmd[:-1]), 'path': path,
               'secs': time.monotonic() - started})
    try:
        data = json.loads(out)
    except ValueError as err:
        raise _refused(path, 'qemu-img info -f %s printed no valid JSON '
                       '(%s)', fmt, err) from err
    if (not isinstance(data, dict) or data.get('format') != fmt
            or not isinstance(data.get('virtual-size'), int)
            or data['virtual-size'] < 0):
        raise _refused(path, 'qemu-img info -f %s did not describe a %s '
                       'image with a virtual size', fmt, fmt)
    return data


def _limits():
    """``[inject]`` as :class:`.sandbox.Sandbox` reads its limits, with
    qemu-img's own (``qemu_img_cpu_time``, ``qemu_img_address_space``)."""
    return types.SimpleNamespace(inject=types.SimpleNamespace(
        helper_cpu_time=CONF.inject.qemu_img_cpu_time,
        helper_address_space=CONF.inject.qemu_img_address_space))


def _helper_ids(fd, path):
    """``(uid, gid)`` qemu-img runs as: the caller's own; for root the
    file's owner, or ``[inject] helper_user`` when root owns it."""
    try:
        uid, gid = sandbox.helper_ids('/proc/self/fd/%d' % fd, CONF,
                                      writes=False, name=path)
    except KeyError as err:
        raise exception.ConfigError(reason=(
            '[inject] helper_user %s does not exist; qemu-img info never '
            'runs as root: set it to an unprivileged user such as nobody'
            % CONF.inject.helper_user)) from err
    if uid == 0:
        raise exception.ConfigError(reason=(
            '[inject] helper_user %s is root; qemu-img info never runs as '
            'root: set it to an unprivileged user such as nobody'
            % CONF.inject.helper_user))
    return uid, gid


def _missing(path):
    return exception.ToolMissing(tool='qemu-img', package='qemu-utils',
                                 action='inspecting image %s' % path)


def _failed(path, fmt, err):
    if shutil.which(QEMU_IMG[0]) is None:
        return _missing(path)
    code = err.kwargs.get('code')
    stderr = err.kwargs.get('stderr')
    limits = ('[inject] qemu_img_cpu_time=%s s / qemu_img_address_space=%s '
              'bytes' % (CONF.inject.qemu_img_cpu_time,
                         CONF.inject.qemu_img_address_space))
    if isinstance(code, int) and (code < 0 or code > _SIGNALLED):
        return _refused(path, 'qemu-img info was killed by signal %d, most '
                        'likely for exceeding its limits (%s); a crafted '
                        'image can do that on purpose (CVE-2015-5162). If '
                        'the image is trusted, raise those options',
                        -code if code < 0 else code - _SIGNALLED, limits)
    # qemu's lock failure ends "Is another process using the image ...?"
    if 'another process' in (stderr or '') or 'lock' in (stderr or ''):
        return _refused(path, 'it is in use by another process (%s); stop '
                        'the guest or process using it first', stderr)
    return _refused(path, 'qemu-img info -f %s failed (exit %s: %s); check '
                    'it is a valid %s image, readable, and that %s suffice',
                    fmt, code, stderr, fmt, limits)
