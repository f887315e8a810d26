"""
### weblogs_ingest

Supervises the long-running Spark Structured Streaming job that lands the Kafka topic `weblogs`
in the HDFS landing zone exactly once (with each micro-batch's offset ranges) and keeps the speed
views (`spark_jobs/stream_ingest.py`, logic in `lambdaflow.ingest`).

- `schedule="@continuous"` with `max_active_runs=1`: there is always one run; when the job dies,
  the task retries with exponential back-off and then the next run starts it again. Every start
  resumes exactly where the landing zone ends (the checkpoint is a convenience; the offset-range
  manifests are the truth), so a restart loses and duplicates nothing.
- Param `bounded`: land everything Kafka holds now, then finish (`--available-now`); used by
  `airflow dags test weblogs_ingest -c '{"bounded": true}'` and for backfills.
- Stopping: marking the task failed kills spark-submit (SIGKILL, which the commit protocol
  survives); `lambdaflow ingest --stop` asks the job to finish its batch and exit cleanly.

Connection: `spark_default` (master, deploy mode). Kafka and HDFS addresses come from the
deployment's environment (`KAFKA_BOOTSTRAP`, `HDFS_URL`, `LAMBDAFLOW_TOPIC`, `LAMBDAFLOW_ROOT`).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Param

from lambdaflow.config import REPO_ROOT


def spark_jars() -> str:
    """Spark's Kafka connector jars, resolved when the task renders (never at parse time)."""
    from lambdaflow.spark import connector_jars

    return ",".join(connector_jars())


with DAG(
    dag_id="weblogs_ingest",
    schedule="@continuous",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lambdaflow", "ingest"],
    user_defined_macros={"spark_jars": spark_jars},
    default_args={
        "owner": "lambdaflow",
        "retries": 3,
        "retry_delay": timedelta(seconds=15),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=5),
    },
    params={
        "bounded": Param(False, type="boolean", title="Bounded run",
                         description="Land everything Kafka holds now, then finish (available-now trigger)."),
        "trigger_interval": Param("1 second", type="string", title="Trigger interval",
                                  description="Micro-batch trigger interval, e.g. '1 second', '10 seconds'.",
                                  pattern=r"^\d+ (second|seconds|minute|minutes)$"),
        "max_offsets_per_trigger": Param(0, type="integer", minimum=0, title="Max offsets per trigger",
                                         description="Rate limit per micro-batch (0 = no limit)."),
    },
) as dag:
    SparkSubmitOperator(
        task_id="run_ingest",
        conn_id="spark_default",
        application=str(REPO_ROOT / "spark_jobs" / "stream_ingest.py"),
        name="lambdaflow-ingest",
        jars="{{ spark_jars() }}",
        driver_memory="1g",
        application_args=[
            "--mode", "{{ 'available-now' if params.bounded else 'continuous' }}",
            "--trigger-interval", "{{ params.trigger_interval }}",
            "--max-offsets-per-trigger", "{{ params.max_offsets_per_trigger }}",
        ],
        verbose=False,
    )
