"""Helpers the tests and the benchmarks share: a synthetic KSM guest,
a Debian guest image, a private libvirtd, and a zero-page reader. Not
shipped: the benchmarks (bench/) import them from here."""
