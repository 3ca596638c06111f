"""A privsep channel that runs entrypoints in the test process.

Unit tests have no root and start no daemon, yet the unprivileged path
(``nova_ksm_inject.privsep.client`` -> privsep entrypoint -> library) must run
as it does in nova-compute. This channel stands in for the socket to the
daemon: the call, its answer and any error are packed and unpacked as
oslo.privsep packs them (msgpack, lists come back as tuples), the
function must be a registered entrypoint of the context, and an error is
rebuilt on the caller's side from its class and ``args`` alone, as the
real client rebuilds it.

The daemon's check that only root could have written its configuration
(``privsep/checks.py``, tested in tests/unit/privsep) cannot pass for a
config file in a temporary directory: :class:`Wire` records each check
instead, so tests still see that every entrypoint makes it.
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


class Wire:
    """What crossed: ``calls`` (entrypoint names, in order) and, for each
    call, whether the entrypoint checked its configuration files."""

    def __init__(self):
        self.calls = []
        self.config_checked = []

    def check_config_files(self, conf=None):
        self.config_checked[-1] = True


class InProcessChannel:
    """Replaces ``PrivContext.channel``; records on a :class:`Wire`."""

    running = True

    def __init__(self, context, wire):
        self.context = context
        self.wire = wire

    def remote_call(self, name, args, kwargs, timeout):
        name, args, kwargs = over_the_wire((name, args, kwargs))
        func = importutils.import_class(name)
        if not self.context.is_entrypoint(func):
            raise NameError('%s is not an entrypoint of %s'
                            % (name, self.context.pypath))
        self.wire.calls.append(name)
        self.wire.config_checked.append(False)
        umask = os.umask(0)  # the daemon's; entrypoints set their own
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
