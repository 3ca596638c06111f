"""``compute_driver = ksm_inject.LibvirtDriver``: nova imports compute
drivers from ``nova.virt`` only, so this re-exports the real class.

pip into nova's own environment puts this file in nova's ``nova/virt/``;
anywhere else :mod:`nova_ksm_inject.shim` finds it for nova (``nova-ksm-inject
check nova`` says which)."""

from nova_ksm_inject.virt.libvirt.driver import LibvirtDriver  # noqa: F401
