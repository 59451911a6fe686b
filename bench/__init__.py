"""Benchmarks: each one measures oca against a peer in the same run (STYLE.md)."""
