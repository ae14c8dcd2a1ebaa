"""Benchmarks, each printing one JSON line. A package of the repository (not installed):
run them from its root as `python -m bench.<name>` (`make bench` runs them all).
"""
