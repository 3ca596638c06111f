"""``qemu-img info`` of one image layer, with the format stated and under
CPU and address-space limits (CVE-2015-5162: a crafted image can make it
spin or eat memory). Never ``--backing-chain``, which would open the
backing files: ``image.py`` walks the chain itself.
"""

import json
import shutil
import time

from oslo_log import log as logging

from nova_ksm_inject import exception
from nova_ksm_inject import utils
from nova_ksm_inject.conf import CONF

LOG = logging.getLogger(__name__)


def _refused(path, reason, *args):
    return exception.ImageRefused(path=path, reason=reason % args)


def info(path, source, fmt):
    """``qemu-img info -f FMT`` of one layer as a dict, under limits.

    :param path: the layer's real path, for messages.
    :param source: what qemu-img opens (``/proc/<pid>/fd/<n>``), or None.
    :raises ImageRefused: qemu-img failed, was killed by its limits or
        described something else.
    :raises ToolMissing: qemu-img is not installed.
    """
    # No -U (--force-share): an image a running qemu holds for writing must
    # fail here, as writing into it must be refused anyway.
    cmd = ('qemu-img', 'info', '--output=json', '-f', fmt, source or path)
    limits = utils.ResourceLimits(
        cpu_time=CONF.inject.qemu_img_cpu_time,
        address_space=CONF.inject.qemu_img_address_space)
    started = time.monotonic()
    try:
        out, _err = utils.execute(*cmd, action='inspecting image %s' % path,
                                  preexec_fn=limits)
    except exception.CommandFailed as err:
        raise _failed(path, fmt, err) from err
    LOG.debug('%(cmd)s took %(secs).3f s',
              {'cmd': ' '.join(cmd), 'secs': time.monotonic() - started})
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


def _failed(path, fmt, err):
    if shutil.which('qemu-img') is None:
        return exception.ToolMissing(tool='qemu-img', package='qemu-utils',
                                     action='inspecting image %s' % path)
    code = err.kwargs.get('code')
    stderr = err.kwargs.get('stderr')
    limits = ('[inject] qemu_img_cpu_time=%s s / qemu_img_address_space=%s '
              'bytes' % (CONF.inject.qemu_img_cpu_time,
                         CONF.inject.qemu_img_address_space))
    if isinstance(code, int) and code < 0:
        return _refused(path, 'qemu-img info was killed by signal %d, most '
                        'likely for exceeding its limits (%s); a crafted '
                        'image can do that on purpose (CVE-2015-5162). If '
                        'the image is trusted, raise those options',
                        -code, limits)
    # qemu's lock failure ends "Is another process using the image ...?"
    if 'another process' in (stderr or '') or 'lock' in (stderr or ''):
        return _refused(path, 'it is in use by another process (%s); stop '
                        'the guest or process using it first', stderr)
    return _refused(path, 'qemu-img info -f %s failed (exit %s: %s); check '
                    'it is a valid %s image, readable, and that %s suffice',
                    fmt, code, stderr, fmt, limits)
