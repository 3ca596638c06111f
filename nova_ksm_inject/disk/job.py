"""One injection job as plain data, and the privileged side's checks.

The caller builds the job (:func:`build`); the privileged side rebuilds it
with :meth:`Job.from_dict`, checking every field, and when the caller is
not root (``confined``) also that:

* the image lies in ``[inject] image_dirs`` (nova's ``instances_path`` by
  default), reached without symlinks below that directory;
* backing files may only come from ``[inject] trusted_backing_dirs``: a
  caller may narrow that list, never widen it;
* the handlers are installed ones, and every item is within the
  ``[inject] max_injected_*`` limits (checked again per item).
"""

import dataclasses
import os

from nova_ksm_inject import exception
from nova_ksm_inject.disk import imagefile
from nova_ksm_inject.disk import request as disk_request
from nova_ksm_inject.disk.handlers import loader

FORMATS = (None, 'raw', 'qcow2')


def build(path, request, fmt, partition, handlers, use_cow, trusted_dirs):
    """The job for :func:`nova_ksm_inject.disk.chain.run`, as plain data."""
    return {'image': os.path.abspath(path), 'format': fmt,
            'partition': partition, 'handlers': list(handlers),
            'use_cow': use_cow,
            'trusted_dirs': list(trusted_dirs) if trusted_dirs else None,
            'request': request.to_dict()}


def _refused(reason):
    return exception.ConfigError(reason='injection job refused: ' + reason)


@dataclasses.dataclass
class Job:
    """A checked job. ``image_dirs`` is None for a root caller."""

    image: str
    format: str
    partition: int
    handlers: list
    use_cow: bool
    trusted_dirs: tuple
    request: disk_request.InjectionRequest
    image_dirs: tuple = None

    @classmethod
    def from_dict(cls, data, conf, confined):
        """Rebuild and check a job.

        :raises ConfigError: a malformed job or a widened trusted list.
        :raises InjectionLimit: a malformed request.
        """
        if not isinstance(data, dict) or set(data) != _KEYS:
            raise _refused('expected the fields %s' % ', '.join(
                sorted(_KEYS)))
        image, fmt = data['image'], data['format']
        if not isinstance(image, str) or '\0' in image or \
                not os.path.isabs(image):
            raise _refused('the image must be an absolute path')
        if fmt not in FORMATS:
            raise _refused('format %r is not raw or qcow2' % (fmt,))
        partition = data['partition']
        if not isinstance(partition, int) or isinstance(partition, bool) \
                or partition < -1:
            raise _refused('partition must be -1, 0 or N')
        handlers = data['handlers']
        if not isinstance(handlers, (list, tuple)) or \
                not all(isinstance(n, str) for n in handlers):
            raise _refused('handlers must be a list of names')
        loader.validate_handler_names(list(handlers))
        use_cow = data['use_cow']
        if use_cow is None:
            use_cow = conf.use_cow_images
        if not isinstance(use_cow, bool):
            raise _refused('use_cow must be true, false or null')
        return cls(image, fmt, partition, list(handlers), use_cow,
                   _trusted_dirs(data['trusted_dirs'], conf, confined),
                   disk_request.InjectionRequest.from_dict(data['request']),
                   tuple(conf.inject.image_dirs) if confined else None)


_KEYS = {'image', 'format', 'partition', 'handlers', 'use_cow',
         'trusted_dirs', 'request'}


def _operator_dirs(dirs):
    """Configured directories as real paths, symlinks checked
    (:func:`imagefile.resolve_operator_dir`); absent ones dropped."""
    resolved = (imagefile.resolve_operator_dir(d) for d in dirs if d)
    return tuple(d for d in resolved if d)


def _trusted_dirs(asked, conf, confined):
    if asked is not None and (
            not isinstance(asked, (list, tuple)) or
            not all(isinstance(d, str) and os.path.isabs(d) for d in asked)):
        raise _refused('trusted_dirs must be a list of absolute paths')
    if not confined:
        return tuple(asked if asked is not None else
                     [d for d in conf.inject.trusted_backing_dirs if d])
    configured = _operator_dirs(conf.inject.trusted_backing_dirs)
    if asked is None:
        return configured
    narrowed = _operator_dirs(asked)
    wider = [d for d in narrowed if not any(
        os.path.commonpath([d, c]) == c for c in configured)]
    if wider:
        raise _refused(
            'trusted backing directories %s are not inside [inject] '
            'trusted_backing_dirs (%s); only root may widen them'
            % (', '.join(wider), ', '.join(configured) or 'none'))
    return narrowed
