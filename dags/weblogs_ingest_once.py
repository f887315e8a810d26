"""
### weblogs_ingest_once

A one-off **bounded** ingest: lands everything the Kafka topic `weblogs` holds at its start in the
HDFS landing zone (exactly once, with offset ranges, quarantine and speed views — the same job as
the stream, `spark_jobs/stream_ingest.py --mode available-now`), then finishes.

- `check_no_stream` refuses at once, with a clear message, while the streaming job that
  `weblogs_ingest` supervises runs on the same landing zone: there is one writer per landing zone,
  and the stream already lands everything. Pause `weblogs_ingest` and stop the stream
  (`lambdaflow ingest --stop`) first, if a bounded run is really what you want.
- `land_available` runs the job with SparkSubmitOperator on `spark_default`.

No schedule: trigger it from the UI or with `airflow dags test weblogs_ingest_once`. It has its own
DAG so that it never queues behind the `@continuous` run of `weblogs_ingest`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Param, task

from lambdaflow.config import REPO_ROOT
from lambdaflow.monitoring.notifier import failure_notifier


def spark_jars() -> str:
    """Spark's Kafka connector jars, resolved when the task renders (never at parse time)."""
    from lambdaflow.spark import connector_jars

    return ",".join(connector_jars())


with DAG(
    dag_id="weblogs_ingest_once",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lambdaflow", "ingest"],
    user_defined_macros={"spark_jars": spark_jars},
    default_args={"owner": "lambdaflow", "retries": 1, "retry_delay": timedelta(seconds=15),
                  "on_failure_callback": failure_notifier()},  # the one lambdaflow notifier
    params={
        "max_offsets_per_trigger": Param(0, type="integer", minimum=0, title="Max offsets per trigger",
                                         description="Records per micro-batch (0 = no limit)."),
    },
) as dag:

    @task  # a refusal is an AirflowFailException: never retried
    def check_no_stream() -> None:
        """Refuse while the streaming ingest runs on this landing zone."""
        from lambdaflow.config import Settings
        from lambdaflow.stack import ingest_service

        settings = Settings.from_env()
        state = ingest_service.state()
        if state["state"] == "running" and state["root"] in (None, settings.root):
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"the streaming ingest (pid {state['pid']}, supervised by weblogs_ingest) is running on "
                f"{settings.landing_path} and already lands everything; a bounded run would be refused by "
                f"its lock. To run one anyway: pause weblogs_ingest, then `lambdaflow ingest --stop`.")

    check_no_stream() >> SparkSubmitOperator(
        task_id="land_available",
        conn_id="spark_default",
        application=str(REPO_ROOT / "spark_jobs" / "stream_ingest.py"),
        name="lambdaflow-ingest-once",
        jars="{{ spark_jars() }}",
        driver_memory="1g",
        application_args=["--mode", "available-now",
                          "--max-offsets-per-trigger", "{{ params.max_offsets_per_trigger }}"],
        verbose=False,
    )
