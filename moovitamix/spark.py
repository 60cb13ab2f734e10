"""The Spark engine's session: one definition of its settings, used by every step that runs on
Spark (dbt-spark's `session` method, Great Expectations' Spark datasource, the recommender).

In local mode the engine runs in the pipeline's own process (pyspark starts a JVM), with a Derby
metastore and managed tables under `Settings.spark_dir`. Derby admits one JVM at a time, so a
run keeps one session for all its steps: dbt-spark's `getOrCreate()` finds the one made here.
pyspark is an optional install (`make spark-venv`), imported only when a session is asked for.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from moovitamix.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DRIVER_MEMORY = "2g"  # Spark's own SPARK_DRIVER_MEMORY overrides it (local mode: the one JVM)
SHUFFLE_PARTITIONS = 4  # local mode on a few cores: Spark's default 200 is all overhead
SPARK_LOG_LEVEL = "ERROR"
# what a Spark Connect client sets on its session (the rest is the server's)
SESSION_CONF = ("spark.sql.session.timeZone", "spark.sql.sources.partitionOverwriteMode")


class SparkUnavailable(RuntimeError):
    """pyspark (or Java) is missing: the message says how to install it."""


def spark_conf(settings: Settings) -> dict[str, str]:
    """The session's settings: the same for the pipeline, dbt's profile and the tests."""
    home = settings.spark_dir
    conf = {
        "spark.master": settings.spark_master,
        "spark.app.name": "moovitamix",
        "spark.driver.memory": os.environ.get("SPARK_DRIVER_MEMORY") or DRIVER_MEMORY,
        "spark.sql.warehouse.dir": str(home / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={home / 'metastore_db'};create=true"
        ),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={home}",
        "spark.sql.shuffle.partitions": str(SHUFFLE_PARTITIONS),
        "spark.sql.session.timeZone": "UTC",  # timestamps are UTC everywhere (docs: overview)
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        # iterative jobs (MLlib's ALS, ml/mllib) cut their lineage here every few iterations;
        # without it a long lineage overflows the stack when a task is deserialized
        "spark.checkpoint.dir": str(home / "checkpoints"),
        # ... and its files go once the job no longer references them (they would pile up)
        "spark.cleaner.referenceTracking.cleanCheckpoints": "true",
    }
    if is_connect(settings.spark_master):
        # the Connect server owns its master, metastore, warehouse and resources: a client
        # sets only what a session may change
        return {key: conf[key] for key in SESSION_CONF}
    if settings.spark_master.startswith("local"):
        # in-process: the driver listens on loopback only, not on the host's interfaces
        conf |= {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    return conf


def _quiet() -> None:
    """py4j logs every closed connection at INFO; pyspark warns that it has not been certified
    with pandas 3 (it is used here only for Arrow conversions, which the tests cover)."""
    logging.getLogger("py4j").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")


def check_spark_available() -> None:
    """Raise SparkUnavailable (one line: what to install) unless pyspark and Java are here."""
    if importlib.util.find_spec("pyspark") is None:
        raise SparkUnavailable(
            "the Spark engine needs its packages: run `make spark-venv` (pyspark, dbt-spark)"
        )
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and Path(java_home, "bin", "java").exists()) and not shutil.which("java"):
        raise SparkUnavailable(
            "the Spark engine needs Java 17+ (no `java` on PATH, no JAVA_HOME): "
            "e.g. `apt-get install openjdk-17-jre-headless`"
        )


def spark_session(settings: Settings) -> SparkSession:
    """The process's Spark session, started with `spark_conf` on first use."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailable(
            "the Spark engine needs its packages: run `make spark-venv` (pyspark, dbt-spark)"
        ) from None
    _quiet()
    if is_connect(settings.spark_master):
        # Spark Connect: the server owns the metastore, warehouse and resources; the same
        # address through SPARK_REMOTE makes dbt-spark's getOrCreate() a Connect session too.
        os.environ["SPARK_REMOTE"] = settings.spark_master
        session = SparkSession.builder.remote(settings.spark_master).getOrCreate()
        for key, value in spark_conf(settings).items():
            session.conf.set(key, value)
        return session
    settings.spark_dir.mkdir(parents=True, exist_ok=True)
    # Python UDFs (the recommender's blockwise similar tracks, ml/mllib) run in worker
    # processes started as `python3` from PATH unless PYSPARK_PYTHON says otherwise: this
    # interpreter has the packages (a cluster's executors set their own).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    session = builder.enableHiveSupport().getOrCreate()
    session.sparkContext.setLogLevel(SPARK_LOG_LEVEL)  # the JVM's warnings stay out of the summary
    return session


def is_connect(master: str) -> bool:
    """A Spark Connect endpoint (`sc://host:15002`) rather than a master URL."""
    return master.startswith("sc://")


def stop_spark_session() -> None:
    """Stop this process's Spark session, if one was started (frees the Derby metastore)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return
    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()
