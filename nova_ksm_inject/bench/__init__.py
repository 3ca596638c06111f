"""Benchmarks run by operators and CI, outside nova-compute (root).

They drive reference tools (virt-customize) directly, never through
rootwrap, and print tables for the README.
"""
