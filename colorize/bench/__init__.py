"""Benchmarks that print measured figures, against the original report's pipeline."""
