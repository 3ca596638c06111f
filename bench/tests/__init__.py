"""Tests of the benchmarks (not of the product: tests/)."""
