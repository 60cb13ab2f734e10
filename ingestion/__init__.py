"""Ingestion: the MooVitamix API into schema raw of the warehouse (dlt).

`python -m ingestion` (what `make ingest` runs) or, from Python, `run_ingestion()`.
"""
