"""Micro-benchmarks (run as modules, e.g. ``python -m experiments.bench.topology_update``)."""
