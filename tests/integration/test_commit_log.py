"""The bounded commit log against the real NameNode: the ingest rolls its manifests up, readers and
recovery work from roll-up + tail, racing roll-ups count every commit once, retention archives."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from lambdaflow import hdfs, landing
from lambdaflow.config import Settings
from lambdaflow.producer import produce
from lambdaflow.storage import commit_log
from lambdaflow.storage.fs import web_create_new
from tests.integration.test_ingest import assert_exactly_once, ingest

pytestmark = pytest.mark.integration


def test_the_ingest_rolls_up_its_log_and_recovers_from_a_rollup_without_its_checkpoint(isolated: Settings,
                                                                                      spark) -> None:
    settings = isolated.replace(rollup_every=3)
    summary = produce(settings, count=3000, rate=0, seed=41, bad_fraction=0.03, progress=False)
    result = ingest(settings, "--available-now", "--max-offsets-per-trigger", "300", "--trigger-interval", "0 seconds")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    client = hdfs.client(settings)
    manifests = commit_log.manifests_dir(settings.landing_path)
    state = commit_log.read_state(commit_log.WebLogStore(client), settings.landing_path)
    totals = commit_log.totals(client, settings.landing_path)
    assert totals["batches"] >= 9, totals  # 3,000 records at 300 per trigger
    assert state.rollup["seq"] >= 3 and len(state.tail) < 3, (state.rollup_name, state.tail)
    assert len(client.list(manifests)) < 3 and len(client.list(commit_log.rollups_dir(settings.landing_path))) <= 2
    assert totals["landed_rows"] + totals["quarantined_rows"] == 3000
    assert totals["quarantined_rows"] == sum(summary["bad_injected"].values())
    landed, quarantined = assert_exactly_once(spark, settings)
    assert (landed, quarantined) == (totals["landed_rows"], totals["quarantined_rows"])
    assert commit_log.landed_rows_by_hour(client, settings.landing_path) == {
        r["timestamp_hour"]: r["count"]
        for r in spark.read.parquet(settings.uri(settings.landing_path)).groupBy("timestamp_hour").count().collect()}
    # quarantine is partitioned by arrival hour
    assert all(n.startswith("arrival_hour=") for n in client.list(settings.quarantine_path) if not n.startswith("_"))

    # The upgrade case: the checkpoint is gone, the positions come from the roll-up (and its tail).
    produce(settings, count=700, rate=0, seed=42, progress=False)
    client.delete(settings.checkpoint_path, recursive=True)
    result = ingest(settings, "--available-now")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert sum(assert_exactly_once(spark, settings)) == 3700
    assert sum(commit_log.totals(client, settings.landing_path)[k] for k in ("landed_rows", "quarantined_rows")) == 3700


@pytest.fixture
def log_root(stack: Settings):
    path = f"/lambda-test/commit-log-{uuid.uuid4().hex[:10]}"
    yield path
    hdfs.client(stack).delete(path, recursive=True)


def test_racing_rollups_and_readers_count_every_commit_once(stack: Settings, spark, log_root: str) -> None:
    """Four roll-up processes (two over the JVM, two over WebHDFS) race while readers read totals: every
    reading equals the exact sum, and in the end one roll-up and no manifest hold the whole log."""
    from lambdaflow.storage.fs import JvmFs

    client = hdfs.client(stack)
    n = 120
    for i in range(n):
        key = f"0-{i * 10}-{i * 10 + 10}_1-{i}-{i + 1}"
        document = landing.manifest_document("t", landing.parse_commit_key(key), [], 9, 1, {3_600_000 * (i % 4): 9},
                                             1000 + i, {"malformed_json": 1}, epoch=1)
        assert web_create_new(client, f"{commit_log.manifests_dir(log_root)}/{key}.json", json.dumps(document))
    stores = [commit_log.JvmLogStore(JvmFs(spark, stack.hdfs_url)), commit_log.JvmLogStore(JvmFs(spark, stack.hdfs_url)),
              commit_log.WebLogStore(hdfs.client(stack)), commit_log.WebLogStore(hdfs.client(stack))]
    readings: list[dict] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def roll(store) -> None:
        try:
            for _ in range(3):
                commit_log.roll_up(store, log_root, keep_tail=n // 3)
                commit_log.roll_up(store, log_root)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def read() -> None:
        try:
            while not done.is_set():
                readings.append(commit_log.totals(hdfs.client(stack), log_root))
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    rollers = [threading.Thread(target=roll, args=(s,)) for s in stores]
    for t in readers + rollers:
        t.start()
    for t in rollers:
        t.join(timeout=300)
    done.set()
    for t in readers:
        t.join(timeout=60)
    assert not errors, errors
    assert readings
    for r in readings:
        assert (r["batches"], r["landed_rows"], r["quarantined_rows"]) == (n, 9 * n, n), r
        assert r["positions"] == {0: 10 * n, 1: n}
    assert [m for m in client.list(commit_log.manifests_dir(log_root)) if commit_log.is_entry_name(m)] == []
    assert len(client.list(commit_log.rollups_dir(log_root))) <= commit_log.KEEP_ROLLUPS

    # Retention archives hours before their data goes: the totals keep every row ever landed.
    hour = 3_600_000
    assert commit_log.archive_hours(client, log_root, [0, hour]) == {0: 9 * n // 4, hour: 9 * n // 4}
    assert commit_log.archive_hours(client, log_root, [0]) == {}  # twice: a no-op
    state = commit_log.current(client, log_root)
    assert state["landed_rows"] == 9 * n and state["archived_hours"] == {"0": 9 * n // 4, str(hour): 9 * n // 4}
    assert set(state["hours"]) == {str(2 * hour), str(3 * hour)}
