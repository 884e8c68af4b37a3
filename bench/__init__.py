"""Benchmarks: each module prints a table and exits non-zero when it misses its target."""
