"""
### weblogs_full_recompute

**Full recomputation** of the batch layer, for when the view logic changed: every hour of history,
from the first landed (or recorded) hour up to the completeness boundary (the newest landed hour
counts only once the wall clock is past its end plus the allowed lateness and the landing zone has
reached Kafka's log end; later hours stay with the speed layer), is recomputed into a new version
of `activity_by_product` and `visitors_by_product`; then readers switch to it with one atomic
rename of `/lambda/batch/_CURRENT`, and the older versions are deleted.

- `recompute_all` (`@task.pyspark` on the Connection `spark_connect_default`: a client of the
  deployment's Spark Connect server, no JVM of its own) runs `lambdaflow.batch.recompute_all`. It takes the per-hour locks (`/lambda/batch/_locks/<hour>.lock`) of every hour
  of history first, the same exclusion as the hourly runs, backfills, late-data recomputes and
  compactions of `weblogs_batch`: those wait while it runs and then read the new version, so
  `weblogs_batch` need not be paused.
- `report_state` prints the batch layer's state afterwards (version, covered and failed hours,
  watermark).

No schedule: trigger it from the UI (Params below) or with `airflow dags test weblogs_full_recompute`.
The same from a shell: `lambdaflow batch --all [--compact]`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import Param, dag, task

from lambdaflow import batch
from lambdaflow.config import Settings
from lambdaflow.monitoring.notifier import failure_notifier


@dag(
    dag_id="weblogs_full_recompute",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lambdaflow", "batch"],
    default_args={"owner": "lambdaflow", "retries": 1, "retry_delay": timedelta(seconds=30),
                  "on_failure_callback": failure_notifier()},  # the one lambdaflow notifier
    params={
        "compact": Param(True, type="boolean", title="Compact the landing zone first",
                         description="Rewrite each landed hour's files into fewer, larger files (same Kafka "
                                     "records) before recomputing."),
        "allowed_lateness_seconds": Param(60, type="integer", minimum=0, maximum=86400,
                                          title="Allowed lateness (seconds)",
                                          description="The newest landed hour is recomputed only this long "
                                                      "after its end (and once the landing zone has reached "
                                                      "Kafka's log end)."),
    },
)
def weblogs_full_recompute() -> None:
    recompute_all() >> report_state()


@task.pyspark(conn_id="spark_connect_default")
def recompute_all(params: dict[str, Any], spark=None) -> int:
    """Every hour of history into a new version, then the switch; returns the hours recomputed."""
    from lambdaflow.spark import prepare_batch_session

    prepare_batch_session(spark)
    records = batch.recompute_all(spark, Settings.from_env(), compact=bool(params["compact"]),
                                  allowed_lateness_s=float(params["allowed_lateness_seconds"]))
    return len(records)


@task
def report_state() -> dict[str, Any]:
    """The batch layer's version, covered and failed hours and watermark after the switch."""
    state = batch.state(batch.web_store(Settings.from_env()), Settings.from_env())
    print(state)
    return {k: state[k] for k in ("version", "watermark_iso", "failed")}


weblogs_full_recompute()
