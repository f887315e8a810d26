"""One way to get a SparkSession and to spark-submit a job, with the Kafka connector on the classpath.

The connector jars are resolved once by Maven (jars/spark/pom.xml) into .cache/jars/spark and
passed with ``--jars``/``spark.jars``: no ``--packages``, so no network look-up at run time.
"""

from __future__ import annotations

import os
from pathlib import Path

from lambdaflow.config import REPO_ROOT, Settings

JARS_CACHE = Path(os.environ.get("LAMBDAFLOW_JARS_CACHE", REPO_ROOT / ".cache" / "jars"))

# What every application of the pipeline needs whatever the topology. Sizing (shuffle partitions,
# parallelism, cores), the UI and the HDFS client's replication come from the topology the
# deployment runs (lambdaflow.stack.topology, LAMBDAFLOW_TOPOLOGY: "local" by default, "cluster"),
# never forced here over a cluster's own.
DEFAULT_CONF = {
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.streaming.forceDeleteTempCheckpointLocation": "true",
    # Closing a small HDFS file waits 400 ms before its first retry by default; micro-batches
    # write many small files, so start at 20 ms (measured: ~2x ingest throughput).
    "spark.hadoop.dfs.client.block.write.locateFollowingBlock.initial.delay.ms": "20",
    "spark.driver.extraJavaOptions": "-XX:+UseG1GC -XX:-DontCompileHugeMethods -Dlog4j2.configurationFile="
                                     + str(Path(__file__).parent / "stack" / "conf" / "spark-log4j2.properties"),
    # -XX:-DontCompileHugeMethods: HotSpot leaves a method of more than 8,000 bytes of bytecode to
    # its interpreter; the code Spark generates for the ingest's validation (one CASE over every
    # check of every field) is larger. 200,000 records' parse and validation: 2.3 s interpreted,
    # 1.6 s compiled (with the parse's projections kept apart: lambdaflow.ingest_transforms).
    "spark.executor.extraJavaOptions": "-XX:-DontCompileHugeMethods",
}


def connector_jars() -> list[str]:
    """The Kafka connector jars; fails with the command that fetches them when missing."""
    directory = JARS_CACHE / "spark"
    jars = sorted(str(p) for p in directory.glob("*.jar"))
    if not any("spark-sql-kafka" in j for j in jars):
        raise RuntimeError(
            f"Spark's Kafka connector is not in {directory}; run `make jars` (or `lambdaflow up`) first"
        )
    return jars


def topology_name() -> str:
    """The topology this command addresses (env LAMBDAFLOW_TOPOLOGY, else the one `up --topology` chose)."""
    from lambdaflow.config import topology_name as chosen

    return chosen()


def spark_conf(settings: Settings, app: str = "batch") -> dict[str, str]:
    """Spark settings of application ``app`` (``ingest`` or ``batch``): the topology's (master, core
    caps, sizing, HDFS replication), the pipeline's own, and the addresses of ``settings``."""
    from lambdaflow.stack import topology

    conf = dict(DEFAULT_CONF)
    conf.update({k: v for k, v in topology.spark_conf(app, topology_name()).items()
                 if k not in ("spark.master", "spark.driver.memory")})
    conf["spark.hadoop.fs.defaultFS"] = settings.hdfs_url
    conf["spark.jars"] = ",".join(connector_jars())
    return conf


def default_master() -> str:
    from lambdaflow.stack import topology

    return os.environ.get("SPARK_MASTER") or topology.spark_conf("batch", topology_name())["spark.master"]


def _app(app_name: str) -> str:
    return "ingest" if "ingest" in app_name else "batch"


def session(app_name: str, settings: Settings | None = None, master: str | None = None,
            driver_memory: str = "1g", conf: dict[str, str] | None = None):
    """A SparkSession for ``app_name`` (``conf`` on top of the defaults). Inside spark-submit, the
    submitted master wins."""
    from pyspark.sql import SparkSession

    settings = settings or Settings.from_env()
    builder = SparkSession.builder.appName(app_name)
    if master or "SPARK_ENV_LOADED" not in os.environ:
        builder = builder.master(master or default_master())
        builder = builder.config("spark.driver.memory", driver_memory)
    for key, value in {**spark_conf(settings, _app(app_name)), **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "WARN"))
    return spark


def submit_env(settings: Settings | None = None) -> dict[str, str]:
    """Environment for a spark-submit child: the settings, and this virtualenv's Python for the driver."""
    import sys

    settings = settings or Settings.from_env()
    return {**settings.env(), "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


def submit_command(script: str, args: list[str], settings: Settings | None = None,
                   master: str | None = None, driver_memory: str = "1g") -> list[str]:
    """The spark-submit command line for a job in spark_jobs/ (used by the CLI and by benchmarks);
    the master is the topology's unless given."""
    settings = settings or Settings.from_env()
    cmd = [str(Path(os.environ.get("VIRTUAL_ENV", REPO_ROOT / ".venv")) / "bin" / "spark-submit"),
           "--master", master or default_master(), "--driver-memory", driver_memory,
           "--jars", ",".join(connector_jars())]
    for key, value in spark_conf(settings, _app(script)).items():
        if key != "spark.jars":
            cmd += ["--conf", f"{key}={value}"]
    return cmd + [str(REPO_ROOT / "spark_jobs" / script), *args]


# ------------------------------------------------------------------------ the batch layer's Spark
# Runtime settings every batch session gets, whoever built it (a Spark Connect client, the
# provider's @task.pyspark, a local session): the views' and partitions' semantics depend on them.
BATCH_SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
}


def prepare_batch_session(spark) -> None:
    """Give ``spark`` the batch layer's runtime settings (:data:`BATCH_SESSION_CONF`)."""
    for key, value in BATCH_SESSION_CONF.items():
        spark.conf.set(key, value)


def connect_reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether something listens at a Spark Connect URL's ``host:port`` (``sc://host:port/;params``)."""
    import socket
    from urllib.parse import urlparse

    address = urlparse(url)
    try:
        with socket.create_connection((address.hostname or "localhost", address.port or 15002), timeout=timeout):
            return True
    except OSError:
        return False


def connect_session(settings: Settings | None = None, url: str | None = None):
    """A Spark Connect session on the batch layer's server (``settings.spark_connect``): a thin gRPC
    client, no JVM of its own. Fails with the command that starts the server when it does not answer."""
    from pyspark.sql import SparkSession

    settings = settings or Settings.from_env()
    url = url or settings.spark_connect
    if not connect_reachable(url):
        raise RuntimeError(f"no Spark Connect server answers at {url}; start it with `lambdaflow up` "
                           "(service spark-connect) or point LAMBDAFLOW_SPARK_CONNECT at one")
    spark = SparkSession.builder.remote(url).getOrCreate()
    prepare_batch_session(spark)
    return spark


def batch_session(app_name: str, settings: Settings | None = None, log=print):
    """The batch layer's session: the Spark Connect server when it answers, else (a machine without
    the deployment up) a local session started here, said so in the log."""
    settings = settings or Settings.from_env()
    if connect_reachable(settings.spark_connect):
        return connect_session(settings)
    log(f"no Spark Connect server at {settings.spark_connect}: starting a local Spark session "
        "(`lambdaflow up` starts the server, which saves the JVM start-up)")
    spark = session(app_name, settings)
    prepare_batch_session(spark)
    return spark
