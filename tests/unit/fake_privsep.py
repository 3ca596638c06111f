"""A privsep channel that runs entrypoints in the test process.

Unit tests have no root and start no daemon, yet the unprivileged path
(``nova_ksm_inject.privileged`` -> privsep entrypoint -> library) must run
as it does in nova-compute. This channel stands in for the socket to the
daemon: the call, its answer and any error are packed and unpacked as
oslo.privsep packs them (msgpack, lists come back as tuples), the
function must be a registered entrypoint of the context, and an error is
rebuilt on the caller's side from its class and ``args`` alone, as the
real client rebuilds it.
"""

import os

import msgpack
from oslo_utils import importutils


def over_the_wire(data):
    """``data`` as the other end of a privsep channel receives it."""
    packed = msgpack.packb(data, use_bin_type=True,
                           unicode_errors='surrogateescape')
    return msgpack.unpackb(packed, use_list=False, raw=False,
                           strict_map_key=False,
                           unicode_errors='surrogateescape')


class InProcessChannel:
    """Replaces ``PrivContext.channel``; ``calls`` lists entrypoint names."""

    running = True

    def __init__(self, context, calls):
        self.context = context
        self.calls = calls

    def remote_call(self, name, args, kwargs, timeout):
        name, args, kwargs = over_the_wire((name, args, kwargs))
        func = importutils.import_class(name)
        if not self.context.is_entrypoint(func):
            raise NameError('%s is not an entrypoint of %s'
                            % (name, self.context.pypath))
        self.calls.append(name)
        umask = os.umask(0o077)  # entrypoints set the daemon's umask
        self.context.set_client_mode(False)  # as inside the daemon
        try:
            answer = func(*args, **kwargs)
        except Exception as err:
            rebuilt = importutils.import_class(
                '%s.%s' % (type(err).__module__, type(err).__name__))
            raise rebuilt(*over_the_wire(err.args)) from None
        finally:
            self.context.set_client_mode(True)
            os.umask(umask)
        return over_the_wire(answer)

    def close(self):
        self.running = False
