"""Backfill benchmark: Airflow's backfill API over closed hours of ``weblogs_batch``, timed from the
request to the last run's success (``batch.backfill_hours_per_min``, goal >= 12 on 2 cores).

What it runs is the deployment a user runs: the api-server, scheduler, dag-processor and triggerer
of ``lambdaflow up`` (LocalExecutor on PostgreSQL), the batch tasks on the Spark Connect server,
the DAG exactly as shipped. What it isolates, so that the deployment's own data and run history are
never touched:

- the landing zone: ``hours`` closed hours (the last one ending at the current hour's start) under
  an HDFS root of its own, every ``busy_every``-th hour holding ``rows_per_busy_hour`` events (with
  their commit in the commit log, :func:`bench.batch_bench.write_hour`), the others empty, on an
  empty topic of its own;
- Airflow's metadata: the daemons are restarted for the run with the benchmark's root and topic and
  a metadata database of their own (``LAMBDAFLOW_AIRFLOW_DB=lambdaflow_bench`` in the same
  PostgreSQL server; migrated once), then stopped; the daemons that were up before are started
  again with the deployment's settings. ``LAMBDAFLOW_BATCH_START_DATE`` is the current hour, so the
  scheduler's catch-up creates no run beside the backfill's.

The backfill is created as the UI's Backfill button creates it (``POST /api/v2/backfills``, logical
dates of the first and the last hour, ``reprocess_behavior: completed``), then the DAG is unpaused.
Every run must succeed and every hour's batch record must hold exactly the rows written for it.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

from lambdaflow import batch, kafka_admin
from lambdaflow.config import Settings

HOUR = batch.HOUR_MS
BENCH_DB = "lambdaflow_bench"
# What the benchmark's Airflow daemons run with besides the benchmark's Settings.
_ENV_KEYS = ("LAMBDAFLOW_AIRFLOW_DB", "LAMBDAFLOW_BATCH_START_DATE")


@contextlib.contextmanager
def isolated_airflow(settings: Settings, start_date_ms: int, progress=print) -> Iterator[None]:
    """The deployment's Airflow daemons, restarted on ``settings`` and a metadata DB of their own."""
    from lambdaflow import stack

    airflow = stack.AIRFLOW
    were_up = [name for name in airflow if stack.SERVICES[name].is_up()]
    keys = (*settings.env(), *_ENV_KEYS)
    saved = {key: os.environ.get(key) for key in keys}
    stack.down(services=airflow, quiet=True)
    os.environ.update({**settings.env(), "LAMBDAFLOW_AIRFLOW_DB": BENCH_DB,
                       "LAMBDAFLOW_BATCH_START_DATE": batch.iso(start_date_ms)})
    try:
        progress(f"starting Airflow on the metadata DB {BENCH_DB} (root {settings.root})")
        stack.up(services=stack.METADATA_DB + airflow, quiet=True)
        yield
    finally:
        stack.down(services=airflow, quiet=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if were_up:
            progress(f"restarting the deployment's {', '.join(were_up)}")
            stack.up(services=were_up, quiet=True)


def write_landing(spark, settings: Settings, first_hour: int, hours: int, busy_every: int,
                  rows_per_busy_hour: int, files_per_hour: int) -> dict[int, int]:
    """The closed hours' landed events (busy hours only); returns the rows written per hour."""
    from bench.batch_bench import write_hour

    written, offset = {}, 0
    for i in range(hours):
        hour = first_hour + i * HOUR
        if i % busy_every == 0:
            write_hour(spark, settings, hour, rows_per_busy_hour, files_per_hour, offset)
            offset += rows_per_busy_hour
        written[hour] = rows_per_busy_hour if i % busy_every == 0 else 0
    return written


def run(settings: Settings, spark, hours: int = 24, busy_every: int = 4, rows_per_busy_hour: int = 200_000,
        files_per_hour: int = 4, max_active_runs: int = 4, timeout_s: float = 1800, details: dict | None = None,
        progress=lambda m: print(f"[bench] backfill: {m}", flush=True)) -> dict:
    """The backfill benchmark (see the module docstring); ``settings`` must have an isolated root and topic."""
    from lambdaflow import stack

    now_ms = int(time.time() * 1000)
    end = batch.floor_hour(now_ms)
    first = end - hours * HOUR
    kafka_admin.ensure_topic(settings)
    progress(f"writing {hours} closed hours ({batch.iso(first)} .. {batch.iso(end)}), "
             f"{rows_per_busy_hour:,} events every {busy_every} hours")
    written = write_landing(spark, settings, first, hours, busy_every, rows_per_busy_hour, files_per_hour)
    with isolated_airflow(settings, start_date_ms=end, progress=progress):
        stack.wait_for_dags(["weblogs_batch"], timeout_s=300)
        for old in stack.api("GET", "/backfills?dag_id=weblogs_batch&limit=100").get("backfills", []):
            if not old.get("completed_at"):  # one backfill per DAG at a time
                stack.api("PUT", f"/backfills/{old['id']}/cancel")
        started = time.monotonic()
        created = stack.api("POST", "/backfills", {
            "dag_id": "weblogs_batch", "from_date": batch.iso(first), "to_date": batch.iso(end - HOUR),
            "reprocess_behavior": "completed", "max_active_runs": max_active_runs})
        stack.api("PATCH", "/dags/weblogs_batch", {"is_paused": False})
        query = f"logical_date_gte={batch.iso(first)}&logical_date_lte={batch.iso(end - HOUR)}&limit=100"
        try:
            while True:
                runs = stack.api("GET", f"/dags/weblogs_batch/dagRuns?{query}")["dag_runs"]
                finished = [r for r in runs if r["state"] in ("success", "failed")]
                if len(runs) >= hours and len(finished) == len(runs):
                    break
                if time.monotonic() - started > timeout_s:
                    raise TimeoutError(f"backfill {created['id']}: {len(finished)} of {hours} runs finished "
                                       f"after {timeout_s:.0f} s")
                time.sleep(1)
            elapsed = time.monotonic() - started
        finally:
            stack.api("PATCH", "/dags/weblogs_batch", {"is_paused": True})
    failed = [r["logical_date"] for r in runs if r["state"] != "success"]
    if failed:
        raise RuntimeError(f"backfill runs failed for {failed}")
    store = batch.web_store(settings)
    version = batch.current_version(store, settings)
    wrong = {batch.iso(h): (n, (batch.read_hour_record(store, settings, version, h) or {}).get("landed_rows"))
             for h, n in written.items()
             if (batch.read_hour_record(store, settings, version, h) or {}).get("landed_rows") != n}
    if wrong:
        raise RuntimeError(f"batch records differ from the rows written (written, recorded): {wrong}")
    progress(f"{hours} hours in {elapsed:.1f} s: {hours / elapsed * 60:.1f} hours per minute")
    if details is not None:
        details["backfill"] = {"hours": hours, "busy_hours": sum(1 for n in written.values() if n),
                               "rows_per_busy_hour": rows_per_busy_hour, "max_active_runs": max_active_runs,
                               "seconds": round(elapsed, 1)}
    return {"batch.backfill_hours": hours, "batch.backfill_seconds": round(elapsed, 1),
            "batch.backfill_hours_per_min": round(hours / elapsed * 60, 2)}
