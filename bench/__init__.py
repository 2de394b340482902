"""Benchmark scripts (not tests): `python -m bench.retrieval`, `python -m bench.ingest`. See bench/README.md."""
