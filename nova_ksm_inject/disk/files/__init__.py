"""Writing files into a guest filesystem.

* :mod:`.base` -- the :class:`~.base.GuestFiles` interface injection uses,
  and the write rules, written once;
* :mod:`.host` -- a guest filesystem mounted on the host (loop, nbd, qsd,
  guestmount), paths resolved with openat2(RESOLVE_IN_ROOT);
* :mod:`.appliance` -- the libguestfs API, paths resolved in the appliance.
"""
