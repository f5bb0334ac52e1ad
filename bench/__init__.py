"""Benchmarks of the portal's hot paths, run with ``bin/bench <name>`` (see bench/README.md)."""
