"""Hypervisor integrations: the nova compute driver (needs nova)."""
