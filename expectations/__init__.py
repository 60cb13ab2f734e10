"""The monitoring layer: checks measured in SQL and validated by Great Expectations, their
results in monitoring.validation_results, alerts, data docs and the static health report.
`python -m expectations validate|report|docs`; the daily run calls `expectations.step`."""
