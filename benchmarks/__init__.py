"""Benchmarks and literal reference implementations (not part of the installed package)."""
