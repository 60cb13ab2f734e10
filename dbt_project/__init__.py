"""The dbt layer of the MooVitamix warehouse: staging views and marts, built by dbt in-process.

`python -m dbt_project build|docs|freshness|lint` from any directory; the daily orchestrator
calls `run_build(settings, run_id)`. The warehouse comes from the project's settings
(`WAREHOUSE_URL` or the embedded Postgres), exported to dbt as the MVX_DBT_* variables that
`profiles.yml` reads; on the Spark engine (MOOVITAMIX_ENGINE=spark) the same project builds
with dbt-spark in this process's Spark session, its sources over the Parquet lake.
"""

from dbt_project.results import BuildResult, NodeResult
from dbt_project.runner import run_build, run_docs_generate

__all__ = ["BuildResult", "NodeResult", "run_build", "run_docs_generate"]
