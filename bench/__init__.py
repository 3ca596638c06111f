"""Benchmarks for developers, outside the product (root).

Not packaged (setup.cfg ships only nova_ksm_inject): run from the
repository's root, through tox (``tox -e bench-ksm``, ``bench-inject``,
``bench-hook``) or ``python -m bench.ksm_cli`` / ``bench.inject`` /
``bench.hook``. They drive reference tools (virt-customize) directly,
never through rootwrap, and print the tables of
doc/source/reference/performance.rst. Helpers they share with the tests
live in tests/lib; their own tests in bench/tests.
"""
