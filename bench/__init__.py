"""Benchmarks: `make bench` runs every bench/bench_*.py; each prints ratios against a baseline from the same run."""
