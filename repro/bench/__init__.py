"""Benchmarks (`make bench`): speed and memory targets live here, never in unit tests.

Each benchmark returns a record with the machine named; `python -m repro.bench NAME --output
docs/benchmarks.md` rewrites that benchmark's section of the file and leaves the others.
"""
