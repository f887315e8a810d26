"""`airflow dags test` of every DAG, in pipeline order, on a topic and HDFS root of their own.

producer (N events) -> ingest (bounded) -> lag monitor (caught up: OK) -> batch (one hour) -> full
recompute (a new version). `weblogs_ingest` (the stack-managed stream) is tested in test_ingest_dag.py.
Each run's outcome is checked against the real services, not just its exit code.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
import uuid

import pytest

from lambdaflow import hdfs, kafka_admin, landing
from lambdaflow.config import Settings
from lambdaflow.stack import airflow_env
from lambdaflow.stack.services import airflow_command
from lambdaflow.storage import commit_log

pytestmark = pytest.mark.integration

HOUR = "2026-11-24T10:00:00+00:00"  # the producer's simulated start
BATCH_LOGICAL_DATE = "2026-11-24T11:00:00+00:00"  # a run recomputes the hour that ends at its logical date
EVENTS = 2000


@pytest.fixture(scope="module")
def pipeline(stack: Settings) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    settings = stack.replace(topic=f"weblogs-dags{suffix}", root=f"/lambda-test/dags{suffix}",
                             ingest_group=f"lambdaflow-ingest-dags{suffix}")
    kafka_admin.ensure_topic(settings)
    return settings


def dags_test(settings: Settings, dag_id: str, conf: dict | None = None, logical_date: str | None = None):
    command = airflow_command("dags", "test", dag_id, *([logical_date] if logical_date else []))
    if conf is not None:
        command += ["-c", json.dumps(conf)]
    env = {**os.environ, **airflow_env(settings), "LAMBDAFLOW_BATCH_START_DATE": "2026-11-24T00:00:00Z",
           "LAMBDAFLOW_BATCH_POKE_SECONDS": "2"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{dag_id} failed:\n{output[-6000:]}"
    return output


def test_dags_test_weblogs_producer(pipeline: Settings) -> None:
    dags_test(pipeline, "weblogs_producer", {"count": EVENTS, "rate": 0, "seed": 3, "bad_fraction": 0.02,
                                              "start": "2026-11-24T10:00:00Z", "time_multiplier": 480})
    assert sum(kafka_admin.end_offsets(pipeline).values()) == EVENTS


def test_dags_test_weblogs_ingest_bounded(pipeline: Settings) -> None:
    dags_test(pipeline, "weblogs_ingest_once")
    client = hdfs.client(pipeline)
    assert landing.positions(client, pipeline.landing_path) == kafka_admin.end_offsets(pipeline)
    totals = commit_log.totals(client, pipeline.landing_path)
    assert totals["landed_rows"] + totals["quarantined_rows"] == EVENTS


def test_dags_test_weblogs_lag_monitor_caught_up(pipeline: Settings) -> None:
    from lambdaflow import lag

    started_ms = int(time.time() * 1000)
    dags_test(pipeline, "weblogs_lag_monitor")
    # The run stored one sample in the lag history (HDFS), read back here: caught up, status OK.
    samples = lag.history(pipeline, hours=None)
    assert len(samples) == 1, f"expected the run's one sample in {lag.history_dir(pipeline)}, found {samples}"
    stored = samples[0]
    assert (stored["group"], stored["topic"]) == (pipeline.ingest_group, pipeline.topic)
    assert started_ms <= stored["sampled_at"] <= int(time.time() * 1000)
    ends = kafka_admin.end_offsets(pipeline)
    assert sum(ends.values()) == EVENTS
    assert [(p["partition"], p["log_end_offset"], p["committed_offset"], p["lag"], p["status"])
            for p in stored["partitions"]] == [(n, end, end, 0, lag.OK) for n, end in sorted(ends.items())]
    assert (stored["total_lag"], stored["status"]) == (0, lag.OK)


def test_dags_test_weblogs_batch_one_hour(pipeline: Settings) -> None:
    from lambdaflow import batch

    dags_test(pipeline, "weblogs_batch", {"allowed_lateness_seconds": 0}, logical_date=BATCH_LOGICAL_DATE)
    hour_ms = int(dt.datetime.fromisoformat(HOUR).timestamp() * 1000)
    landed = landing.landed_rows_by_hour(hdfs.client(pipeline), pipeline.landing_path)
    assert landed.get(hour_ms, 0) > 0
    summary = batch.validate_hour(pipeline, hour_ms)
    assert summary["landed_rows"] == landed[hour_ms]
    assert hour_ms in batch.recorded_hours(batch.web_store(pipeline), pipeline,
                                           batch.current_version(batch.web_store(pipeline), pipeline))


def test_dags_test_weblogs_full_recompute(pipeline: Settings) -> None:
    from lambdaflow import batch

    store = batch.web_store(pipeline)
    before = batch.current_version(store, pipeline)
    dags_test(pipeline, "weblogs_full_recompute", {"compact": False, "allowed_lateness_seconds": 0})
    after = batch.current_version(store, pipeline)
    assert after != before, "a full recomputation switches readers to a new version"
    landed = landing.landed_rows_by_hour(hdfs.client(pipeline), pipeline.landing_path)
    hour_ms = int(dt.datetime.fromisoformat(HOUR).timestamp() * 1000)
    assert hour_ms in batch.recorded_hours(store, pipeline, after)
    assert batch.validate_hour(pipeline, hour_ms)["landed_rows"] == landed[hour_ms]


def test_dags_test_weblogs_maintenance(stack: Settings) -> None:
    """On a root of its own: a quarantine arrival hour past the 30-day retention is removed, a fresh
    one kept; a lag-history day file past 7 days removed, today's kept."""
    suffix = uuid.uuid4().hex[:8]
    settings = stack.replace(topic=f"weblogs-maint{suffix}", root=f"/lambda-test/maint-dag{suffix}",
                             ingest_group=f"lambdaflow-ingest-maint{suffix}")
    client = hdfs.client(settings)
    now_hour = int(time.time() * 1000) // 3_600_000 * 3_600_000
    old, fresh = (f"{settings.quarantine_path}/arrival_hour={h}" for h in (now_hour - 40 * 24 * 3_600_000,
                                                                          now_hour - 3_600_000))
    lag_dir = f"{settings.lag_history_path}/{settings.ingest_group}/{settings.topic}"
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    for path in (f"{old}/part-a-0.snappy.parquet", f"{fresh}/part-b-0.snappy.parquet",
                 f"{lag_dir}/2020-01-01.jsonl", f"{lag_dir}/{today}.jsonl"):
        client.write(path, data=b"x")
    client.set_times(old, modification_time=now_hour - 40 * 24 * 3_600_000)  # its files written back then
    try:
        output = dags_test(settings, "weblogs_maintenance")
        assert "removed 1 arrival hour(s)" in output and "removed 1 day file(s)" in output, "each step logs it"
        assert client.status(old, strict=False) is None, "past the quarantine retention: removed"
        assert client.status(fresh, strict=False) is not None, "within the retention: kept"
        assert client.status(f"{lag_dir}/2020-01-01.jsonl", strict=False) is None
        assert client.status(f"{lag_dir}/{today}.jsonl", strict=False) is not None
    finally:
        client.delete(settings.root, recursive=True)
