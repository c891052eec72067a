"""Benchmarks, run with ``python -m bench`` (see the README for what each measures)."""
