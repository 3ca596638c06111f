"""The libvirt qemu hook operations the KSM hook acts on.

Kept free of imports so that ``nova-ksm-libvirt-hook`` can ignore the
other operations (``start``, ``stopped``, ``migrate``...) before loading
anything.
"""

# (op, subop) pairs that add a running guest: "prepare begin" before qemu
# starts, "started begin" once it runs, "reconnect begin" for guests found
# running when libvirtd restarts, "attach begin" for adopted processes.
START_EVENTS = frozenset({('prepare', 'begin'), ('started', 'begin'),
                          ('reconnect', 'begin'), ('attach', 'begin')})
# "release end" comes after every stop, failed starts included.
STOP_EVENTS = frozenset({('release', 'end')})


def is_relevant(op, subop):
    """Whether the hook has anything to do for this operation."""
    return (op, subop) in START_EVENTS or (op, subop) in STOP_EVENTS
