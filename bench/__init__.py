"""Benchmarks that print figures; run them with `python -m bench.<name>` from the repo root."""
