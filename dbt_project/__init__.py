"""The dbt layer of the warehouse: staging views and marts, built by dbt in this process
(`python -m dbt_project build|docs|freshness|lint`; the daily run calls `step.transform`), on the
Spark engine by dbt-spark in this process's Spark session."""
