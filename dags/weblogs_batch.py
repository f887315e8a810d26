"""
### weblogs_batch

The batch layer, hour by hour: recomputes the exact batch views `activity_by_product` and
`visitors_by_product` (under `/lambda/batch/<view>`) for each hour of event time from the landing
zone, idempotently. Hourly data intervals (`CronDataIntervalTimetable("0 * * * *")`, UTC) with
catchup, so backfills work; at most 3 runs at a time.

1. `wait_for_landing` (sensor, reschedule mode: holds no worker slot between pokes) waits until the
   hour is complete: once the hour has closed (an event of a later hour has landed, or the wall
   clock is past its end plus the allowed lateness), it records the topic's log-end offsets
   (`/lambda/batch/_observations/<hour>.json`) and waits until the ingest's landing positions (the
   highest `until_offset` per partition over the committed offset-range manifests) have reached
   them, and the wall clock is past the hour's end plus the allowed lateness (an old hour: at once).
2. `recompute_hour` (`@task.pyspark` on the Connection `spark_connect_default`: a thin client of the
   deployment's Spark Connect server, so the task starts no JVM) takes the hour's lock
   (`/lambda/batch/_locks/<hour>.lock`; one recomputation of an hour at a time), compacts the hour's
   landing files, reads only that hour's partition, de-duplicates on (topic, partition, offset) if a
   Kafka record landed twice, and replaces the hour in both views. **Late data**: it also recomputes
   every recorded hour, however old, whose landed rows changed since it was recomputed (the hour
   record keeps the rows it read; the offset-range manifests say how many rows each commit landed
   in each hour). The Param `late_data: false` turns this off for a run.
   When `recompute_hour` fails for good, `record_failure` writes a failure record for the hour
   (`/lambda/batch/_failed/v<N>/<hour>.json`; the job itself also writes one for every hour it was
   recomputing): serving answers the hour from the speed layer with `"batch_failed": true` and the
   batch watermark moves on past it, until a run of the hour succeeds (which removes the record).
3. `validate_hour`: activity counts add up to the landed rows, the views agree, the landing zone
   still holds those rows (Parquet footers); fails the run otherwise.
4. `publish_views` emits an event on the Asset `weblogs_batch_views` whose extra carries the hour and
   its counts, so downstream DAGs can be data-aware.

Clearing a run recomputes the same numbers. **Full recomputation** (view logic changed) is its own
DAG, `weblogs_full_recompute`; it takes the same per-hour locks, so runs of this DAG wait. Details, the late-data rule and
the compaction protocol: `lambdaflow/batch.py`. The same from a shell:
`lambdaflow batch --hour H | --from A --to B | --all`.

Settings: Param `allowed_lateness_seconds` overrides the Airflow Variable
`lambdaflow_batch_allowed_lateness_seconds`; environment (read
when the file is parsed, no I/O): `LAMBDAFLOW_BATCH_START_DATE` (ISO 8601; default: today 00:00 UTC,
so catchup covers the day the producer simulates by default), `LAMBDAFLOW_BATCH_POKE_SECONDS` (30),
`LAMBDAFLOW_BATCH_SENSOR_TIMEOUT_SECONDS` (21600). A failed task notifies through the one lambdaflow
notifier (webhook of the Connection `lambdaflow_alerts`; see `lambdaflow.monitoring.notifier`). `airflow dags test weblogs_batch <logical date>`
recomputes the hour that ends at that logical date.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import Asset, Param, PokeReturnValue, Variable, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from lambdaflow import batch
from lambdaflow.config import Settings
from lambdaflow.monitoring.notifier import failure_notifier

# Named, not addressed by an HDFS URI: tests and other deployments move the root, the asset stays the same.
BATCH_VIEWS = Asset("weblogs_batch_views")
DEFAULT_ALLOWED_LATENESS_SECONDS = 60


def _start_date() -> datetime:
    configured = os.environ.get("LAMBDAFLOW_BATCH_START_DATE", "").strip()
    if configured:
        return batch.parse_time(configured)
    return datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def _setting(params: dict[str, Any], name: str, default: int) -> int:
    """A run's Param when given, else the Variable ``lambdaflow_batch_<name>``, else the default."""
    if params.get(name) is not None:
        return int(params[name])
    return int(Variable.get(f"lambdaflow_batch_{name}", default=default))


@dag(
    dag_id="weblogs_batch",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=_start_date(),
    catchup=True,
    max_active_runs=3,
    doc_md=__doc__,
    tags=["lambdaflow", "batch"],
    default_args={"owner": "lambdaflow", "retries": 2, "retry_delay": timedelta(seconds=20),
                  "on_failure_callback": failure_notifier()},
    params={
        "allowed_lateness_seconds": Param(None, type=["null", "integer"], minimum=0, maximum=86400,
                                          title="Allowed lateness (seconds)",
                                          description="How long after the hour's end late events may still arrive before "
                                                      "the hour is recomputed (hours older than that: at once). Empty: "
                                                      "Variable lambdaflow_batch_allowed_lateness_seconds, else "
                                                      f"{DEFAULT_ALLOWED_LATENESS_SECONDS}."),
        "late_data": Param(True, type="boolean", title="Recompute hours with late data",
                           description="Also recompute every recorded hour, however old, whose landed rows "
                                       "changed since it was recomputed (late events)."),
    },
)
def weblogs_batch() -> None:
    @task.sensor(poke_interval=float(os.environ.get("LAMBDAFLOW_BATCH_POKE_SECONDS", "30")),
                 timeout=float(os.environ.get("LAMBDAFLOW_BATCH_SENSOR_TIMEOUT_SECONDS", "21600")),
                 mode="reschedule")
    def wait_for_landing(data_interval_start: datetime, data_interval_end: datetime,
                         params: dict[str, Any]) -> PokeReturnValue:
        """Done once the landing zone has everything Kafka held for the hour (see the DAG doc)."""
        done, reason = batch.landing_complete(
            Settings.from_env(), batch.epoch_ms(data_interval_start), batch.epoch_ms(data_interval_end),
            _setting(params, "allowed_lateness_seconds", DEFAULT_ALLOWED_LATENESS_SECONDS))
        print(reason)
        return PokeReturnValue(is_done=done)

    @task.pyspark(conn_id="spark_connect_default")
    def recompute_hour(data_interval_start: datetime, data_interval_end: datetime, params: dict[str, Any],
                       spark=None) -> int:
        """Recompute the hour (and the late hours) on the Spark Connect server; returns the hours done."""
        from lambdaflow.spark import prepare_batch_session

        prepare_batch_session(spark)
        records = batch.recompute_interval(spark, Settings.from_env(), batch.epoch_ms(data_interval_start),
                                           batch.epoch_ms(data_interval_end), late=params.get("late_data", True),
                                           compact=True)
        return len(records)

    @task(trigger_rule="one_failed")
    def record_failure(data_interval_start: datetime) -> None:
        """The hour's recomputation failed for good: serving answers it from the speed layer, flagged
        `batch_failed`, and the watermark moves past it until a run of the hour succeeds."""
        batch.record_failure(Settings.from_env(), [batch.epoch_ms(data_interval_start)],
                             "recompute_hour failed (see the task log)")

    @task
    def validate_hour(data_interval_start: datetime) -> dict[str, Any]:
        """Counts in the views = landed rows of the hour; returns the hour's figures."""
        summary = batch.validate_hour(Settings.from_env(), batch.epoch_ms(data_interval_start))
        print(summary)
        return summary

    @task(outlets=[BATCH_VIEWS])
    def publish_views(summary: dict[str, Any], outlet_events=None) -> None:
        """An Asset event for downstream DAGs, carrying the hour and its counts."""
        outlet_events[BATCH_VIEWS].extra = {**summary, "batch_root": Settings.from_env().batch_root}

    recomputed = recompute_hour()
    summary = validate_hour()
    wait_for_landing() >> recomputed >> summary
    publish_views(summary)
    recomputed >> record_failure()


weblogs_batch()
