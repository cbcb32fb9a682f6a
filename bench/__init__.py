"""Benchmarks: precise figures measured outside the test suite (see each module)."""
