"""The libvirt qemu hook's library, run by ``nova-ksm-libvirt-hook``.

* :mod:`.events`: which libvirt operations concern KSM;
* :mod:`.handler`: one invocation's work (parse the domain, record the
  guest, bring KSM in line);
* :mod:`.settings_cache`: the ``[ksm]`` values cached between runs;
* :mod:`.fast_start`: what lets the cached path start without oslo.

Deliberately empty of imports: libvirt runs the hook at every lifecycle
event of every guest, and ``nova_ksm_inject.cmd.hook`` imports
:mod:`.events` (stdlib-free) to ignore most of them before loading
anything else.
"""
