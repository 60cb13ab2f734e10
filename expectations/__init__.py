"""The monitoring layer: Great Expectations suites over the warehouse, their results in
monitoring.validation_results, alerts, and the static health report.

`python -m expectations validate` / `python -m expectations report`; the daily run calls
`expectations.steps`. Importing this package imports nothing heavy (GX loads on first use).
"""
