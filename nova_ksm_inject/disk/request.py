"""What to inject, as plain data that crosses the privsep boundary.

The privileged side rebuilds a request with :meth:`InjectionRequest.
from_dict`, which checks every type, and checks each item's limits
itself (:func:`item_limit_error`): nothing the caller says is trusted.
"""

import dataclasses

from nova_ksm_inject import exception
from nova_ksm_inject.conf import CONF

#: The items of a request, in the order they are written (nova's order).
ITEMS = ('key', 'net', 'metadata', 'admin_password', 'files')


@dataclasses.dataclass(repr=False)
class InjectionRequest:
    """What to inject. ``files`` is a list of ``(guest_path, bytes)``.

    :ivar mandatory: items whose failure fails the whole injection, before
        anything is written when it can be known in advance; the others
        are best-effort (skipped with a warning and a per-item result).
        Default: all (the command line); nova's driver: ``('files',)``.
    """

    key: str | None = None
    net: str | None = None
    metadata: dict | None = None
    admin_password: str | None = None
    files: list = dataclasses.field(default_factory=list)
    mandatory: tuple = ITEMS

    def requested(self):
        """The items asked for, in write order."""
        return [item for item in ITEMS if getattr(self, item)]

    def describe(self):
        """Names of the requested items, never their values."""
        parts = [item for item in self.requested() if item != 'files']
        if self.files:
            count = len(self.files)
            parts.append('%d file%s' % (count, '' if count == 1 else 's'))
        return ', '.join(parts) or 'nothing'

    def is_empty(self):
        """True when nothing would be injected."""
        return not self.requested()

    def any_mandatory(self):
        """True when a requested item is mandatory."""
        return any(item in self.mandatory for item in self.requested())

    def without(self, item):
        """This request without ``item``."""
        return dataclasses.replace(
            self, **{item: [] if item == 'files' else None})

    def __repr__(self):
        # The generated repr would print the key and the password.
        return '<InjectionRequest %s>' % self.describe()

    def to_dict(self):
        data = dataclasses.asdict(self)
        data['files'] = [[path, as_bytes(content)]
                         for path, content in self.files]
        data['mandatory'] = list(self.mandatory)
        return data

    @classmethod
    def from_dict(cls, data):
        """Rebuild a request, checking the type of every field.

        :raises InjectionLimit: a field of the wrong type.
        """
        if not isinstance(data, dict) or set(data) - set(_FIELD_TYPES):
            raise _bad('the request is not a dict of %s'
                       % ', '.join(_FIELD_TYPES))
        for name, types in _FIELD_TYPES.items():
            if not isinstance(data.get(name), types):
                raise _bad('request field %s has type %s'
                           % (name, type(data.get(name)).__name__))
        files = []
        for pair in data.get('files') or []:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                    and isinstance(pair[1], (bytes, str))):
                raise _bad('each file is a [guest path, content] pair')
            files.append((pair[0], as_bytes(pair[1])))
        mandatory = tuple(data.get('mandatory') or ())
        if set(mandatory) - set(ITEMS):
            raise _bad('unknown mandatory item(s) %s'
                       % ', '.join(sorted(set(mandatory) - set(ITEMS))))
        return cls(key=data.get('key'), net=data.get('net'),
                   metadata=data.get('metadata'),
                   admin_password=data.get('admin_password'), files=files,
                   mandatory=mandatory)


_FIELD_TYPES = {'key': (str, type(None)), 'net': (str, type(None)),
                'metadata': (dict, type(None)),
                'admin_password': (str, type(None)),
                'files': (list, tuple, type(None)),
                'mandatory': (list, tuple, type(None))}


def _bad(reason):
    return exception.InjectionLimit(reason=reason)


def as_bytes(data):
    return data.encode('utf-8') if isinstance(data, str) else bytes(data)


def item_limit_error(request, item, conf=None):
    """The limit ``item`` of ``request`` breaks, as an exception, or None.

    Limits: ``[inject] max_injected_files``, ``max_injected_file_bytes``,
    ``max_injected_file_path_length``; absolute guest paths; one-line
    keys; no NUL in the password.
    """
    limits = (conf or CONF).inject
    if item == 'files':
        return _files_limit_error(request.files, limits)
    if item == 'key' and any(c in request.key.strip() for c in '\r\n\0'):
        return exception.InjectionLimit(reason=(
            'the ssh key spans several lines; give exactly one public key'))
    if item == 'admin_password' and '\0' in request.admin_password:
        return exception.InjectionLimit(
            reason='the admin password contains a NUL byte')
    if item == 'metadata' and not all(
            isinstance(k, str) for k in request.metadata):
        return exception.InjectionLimit(
            reason='metadata keys must be strings')
    return None


def _files_limit_error(files, limits):
    if len(files) > limits.max_injected_files:
        return exception.InjectionLimit(reason=(
            '%d files requested, at most %d may be injected; raise [inject] '
            'max_injected_files or send fewer files'
            % (len(files), limits.max_injected_files)))
    for path, data in files:
        if not isinstance(path, str) or not path.startswith('/') or \
                '\0' in path:
            return exception.GuestPathRefused(
                path=repr(path), reason='an injected file needs an absolute '
                                        'guest path without NUL bytes')
        if len(path) > limits.max_injected_file_path_length:
            return exception.InjectionLimit(reason=(
                'injected file path %s... is longer than %d characters '
                '([inject] max_injected_file_path_length)'
                % (path[:64], limits.max_injected_file_path_length)))
        if len(as_bytes(data)) > limits.max_injected_file_bytes:
            return exception.InjectionLimit(reason=(
                'injected file %s has %d bytes, more than %d ([inject] '
                'max_injected_file_bytes)' % (path, len(as_bytes(data)),
                                              limits.max_injected_file_bytes)))
    return None


def check_limits(request, conf=None):
    """Raise the first limit a mandatory item breaks (before anything
    starts); best-effort items are judged per item during injection."""
    for item in request.requested():
        err = item_limit_error(request, item, conf)
        if err is not None and item in request.mandatory:
            raise err
