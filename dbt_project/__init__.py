"""The dbt layer of the warehouse: staging views and marts, built by dbt in this process.

`python -m dbt_project build|docs|freshness|lint`; the daily run calls `step.transform`. On the
Spark engine the same project builds with dbt-spark in this process's Spark session.
"""

from dbt_project.results import BuildResult, NodeResult
from dbt_project.runner import run_build, run_dbt

__all__ = ["BuildResult", "NodeResult", "run_build", "run_dbt"]
