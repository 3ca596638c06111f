"""``compute_driver = ksm_inject.LibvirtDriver``: nova imports compute
drivers from ``nova.virt`` only, so this re-exports the real class."""

from nova_ksm_inject.virt.libvirt.driver import LibvirtDriver  # noqa: F401
