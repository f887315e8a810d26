"""
### weblogs_maintenance

Daily upkeep of a landing zone that runs for months (`lambdaflow.maintenance`), so that its
bookkeeping stays O(hours retained), not O(micro-batches), and old data goes when its retention
says so. Each task logs what it removed and what it kept, and returns its report (XCom).

1. `roll_up` folds the landing zone's offset-range manifests into a cumulative roll-up
   (`lambdaflow.storage.commit_log`); skipped with a log line when it fails while the ingest holds
   the writer lock (the ingest rolls its own commits up).
2. `apply_retention` removes landed hours past `LAMBDAFLOW_RETENTION_LANDING_DAYS` (default: keep
   forever; only hours the batch layer covers, their row counts archived in the commit log first so
   totals still add up), quarantine arrival hours past `LAMBDAFLOW_RETENTION_QUARANTINE_DAYS` (30),
   speed partials of hours the batch layer covers once `LAMBDAFLOW_RETENTION_SPEED_GRACE_HOURS` (24)
   have passed since the hour ended, and lag-history day files past `LAMBDAFLOW_RETENTION_LAG_DAYS` (7).
3. `merge_hours` rewrites every closed hour of the speed views and the quarantine that holds more
   than one file into one file (rows concatenated, so readers answer exactly as before; a local
   Spark session is started only when an hour needs it).
4. `clean_up` removes leftovers: stale batch hour locks, batch `_staging`/`_trash` runs older than
   `LAMBDAFLOW_RETENTION_LEFTOVER_HOURS` (24), and the landing zone's staging of fenced writer epochs.

What is due is decided against the run's `data_interval_end`, not the wall clock. The Param
`dry_run` logs what would be removed and merged and changes nothing. A failed task notifies through
the one lambdaflow notifier (webhook of the Connection `lambdaflow_alerts`). The same from a shell:
`lambdaflow maintenance [--dry-run] [--json]`.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import Param, dag, task

from lambdaflow.monitoring.notifier import failure_notifier

RETRY_DELAY_SECONDS = float(os.environ.get("LAMBDAFLOW_MAINTENANCE_RETRY_DELAY_SECONDS", "") or 300)


def _now_ms(data_interval_end: datetime | None) -> int:
    moment = data_interval_end or datetime.now(timezone.utc)
    return int(moment.timestamp() * 1000)


@dag(
    dag_id="weblogs_maintenance",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lambdaflow", "maintenance"],
    default_args={"owner": "lambdaflow", "retries": 2, "retry_delay": timedelta(seconds=RETRY_DELAY_SECONDS),
                  "on_failure_callback": failure_notifier()},
    params={
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Log what would be removed and merged; change nothing."),
    },
)
def weblogs_maintenance() -> None:
    @task
    def roll_up(params: dict[str, Any]) -> dict[str, Any]:
        """Fold the commit log's manifests into a roll-up (skipped while the ingest holds the writer lock)."""
        from lambdaflow import maintenance
        from lambdaflow.config import Settings

        return maintenance.roll_up(Settings.from_env(), dry_run=params["dry_run"])

    @task
    def apply_retention(params: dict[str, Any], data_interval_end: datetime | None = None) -> dict[str, Any]:
        """Landing, quarantine, speed-partial and lag-history retention."""
        from lambdaflow import maintenance
        from lambdaflow.config import Settings

        return maintenance.apply_retention(Settings.from_env(), _now_ms(data_interval_end), dry_run=params["dry_run"])

    @task
    def merge_hours(params: dict[str, Any], data_interval_end: datetime | None = None) -> dict[str, Any]:
        """One file per closed hour of the speed views and the quarantine."""
        from lambdaflow import maintenance
        from lambdaflow.config import Settings

        return maintenance.merge_hours(Settings.from_env(), _now_ms(data_interval_end), dry_run=params["dry_run"])

    @task
    def clean_up(params: dict[str, Any], data_interval_end: datetime | None = None) -> dict[str, Any]:
        """Stale batch locks, old batch staging/trash runs, fenced epochs' landing staging."""
        from lambdaflow import maintenance
        from lambdaflow.config import Settings

        return maintenance.clean_up(Settings.from_env(), _now_ms(data_interval_end), dry_run=params["dry_run"])

    roll_up() >> apply_retention() >> merge_hours() >> clean_up()


weblogs_maintenance()
