"""Quarantine replay against real Kafka, HDFS and Spark: a parser bug is fixed, the data it rejected is recovered.

The "old parser" is today's ``parse_records`` with a bug added: it rejects every value mentioning
``Buggy`` as ``malformed_json: old parser bug``. A real bounded ingest runs with it (so the
quarantine, its layout and the commit log are the ingest's own), then the bug is "fixed" (the
real parser is back) and the quarantine is replayed: the valid ``Buggy`` events land once under
their original Kafka coordinates, the invalid ones stay with today's reason, and the accounting
(landed + quarantined = produced) holds in the commit log and in the files. A second replay adds
nothing; a replay killed after its commit point is rolled forward by the next one.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from kafka import KafkaProducer

from lambdaflow import ingest_transforms, timeutil
from lambdaflow.config import REPO_ROOT, Settings
from lambdaflow.storage import commit_log
from lambdaflow.storage import quarantine as q
from lambdaflow.storage.fs import JvmFs

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)
OLD_BUG = "malformed_json: old parser bug"


def event(i: int, **changes) -> bytes:
    value = {"timestamp": NOW_MS - 3_600_000 * (i % 2), "referrer": "Internal", "action": "purchase",
             "prev_page": None, "visitor": f"Visitor-{i}", "page": "Page-1", "product": f"Kettle-{i}"}
    return json.dumps({**value, **changes}).encode()


VALID = [event(i) for i in range(9)]
BUGGY_VALID = [event(100 + i, product=f"Buggy Kettle {i}") for i in range(7)]
BUGGY_INVALID = [event(200, product="Buggy Pot", action="refund")]  # fixed parser: still invalid, new reason
MALFORMED = [b"a\tb\tc", b"\x00\xff\xfe", event(300, visitor="")]


def buggy_parser(real):
    """Today's parser with the old bug: values that mention ``Buggy`` are rejected."""
    from pyspark.sql import functions as F

    def parse_records(records):
        parsed = real(records)
        bug = F.col("value").cast("string").contains("Buggy")
        return (parsed.withColumn("reason", F.when(bug, F.lit(OLD_BUG)).otherwise(F.col("reason")))
                .withColumn("timestamp_hour", F.when(bug, F.lit(None)).otherwise(F.col("timestamp_hour"))))
    return parse_records


def produce(settings: Settings) -> dict[bytes, tuple[int, int, int]]:
    """Every value -> its (partition, offset, Kafka timestamp ms)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    futures = {v: producer.send(settings.topic, key=f"k{i}".encode(), value=v, partition=i % 3)
               for i, v in enumerate([*VALID, *BUGGY_VALID, *BUGGY_INVALID, *MALFORMED])}
    producer.flush()
    producer.close()
    return {v: (f.get().partition, f.get().offset, f.get().timestamp) for v, f in futures.items()}


def ingest_with_old_parser(settings: Settings, monkeypatch) -> None:
    from lambdaflow.ingest import run_stream

    with monkeypatch.context() as patch:
        patch.setattr(ingest_transforms, "parse_records", buggy_parser(ingest_transforms.parse_records))
        totals = run_stream(settings, available_now=True)
    assert totals["landed"] == len(VALID), totals


def landed(spark, settings: Settings) -> list:
    return spark.read.parquet(settings.uri(settings.landing_path)).collect()


def quarantined(spark, settings: Settings) -> list:
    fs = JvmFs(spark, settings.hdfs_url)
    files = q.data_files(fs, settings)
    return q.read_quarantine(spark, settings, files).collect() if files else []


def snapshot(spark, settings: Settings) -> tuple[list[str], list[str]]:
    """Every file under the landing zone (bookkeeping included) and the quarantine."""
    fs = JvmFs(spark, settings.hdfs_url)
    return (fs.list_files_recursive(settings.landing_path),
            [p for p in fs.list_files_recursive(settings.quarantine_path) if "/_replay/" not in p])


def assert_accounted(spark, settings: Settings, produced: dict) -> tuple[list, list]:
    """Each produced record exactly once over landing zone + quarantine; the commit log agrees."""
    land, quar = landed(spark, settings), quarantined(spark, settings)
    coordinates = [(r.kafka_partition, r.kafka_offset) for r in [*land, *quar]]
    assert len(coordinates) == len(set(coordinates)), "a record is in the landing zone or quarantine twice"
    assert set(coordinates) == {(p, o) for p, o, _ in produced.values()}
    totals = commit_log.totals(JvmFs(spark, settings.hdfs_url), settings.landing_path)
    assert (totals["landed_rows"], totals["quarantined_rows"]) == (len(land), len(quar)), totals
    kinds: dict[str, int] = {}
    for r in quar:
        kinds[q.reason_kind(r.reason)] = kinds.get(q.reason_kind(r.reason), 0) + 1
    assert totals["quarantine_reasons"] == dict(sorted(kinds.items())), totals
    return land, quar


@pytest.fixture
def buggy_quarantine(isolated: Settings, spark, monkeypatch) -> tuple[Settings, dict]:
    produced = produce(isolated)
    ingest_with_old_parser(isolated, monkeypatch)
    return isolated, produced


def test_replay_lands_what_the_fixed_parser_accepts_once_and_twice_adds_nothing(buggy_quarantine, spark) -> None:
    settings, produced = buggy_quarantine
    _, before = assert_accounted(spark, settings, produced)
    assert sum(r.reason == OLD_BUG for r in before) == len(BUGGY_VALID) + len(BUGGY_INVALID)
    assert all("/arrival_hour=" in r._file for r in before)  # the ingest's layout

    # list: by reason, filtered by reason prefix and by Kafka time
    listing = q.list_records(spark, settings, reason="malformed_json: old", limit=3)
    assert listing["total"] == len(BUGGY_VALID) + len(BUGGY_INVALID)
    assert listing["by_reason"] == {"malformed_json": {"count": listing["total"], "reasons": {OLD_BUG: listing["total"]}}}
    assert len(listing["records"]) == 3 and all("Buggy" in r["value"] for r in listing["records"])
    everything = q.list_records(spark, settings)
    assert everything["total"] == len(before)
    assert {r["value_encoding"] for r in everything["records"]} == {"utf-8", "base64"}
    times = sorted(t for _, _, t in produced.values())
    assert q.list_records(spark, settings, from_ms=times[-1] + 1)["total"] == 0
    assert q.list_records(spark, settings, to_ms=times[0])["total"] == 0
    assert q.list_records(spark, settings, from_ms=times[0], to_ms=times[-1] + 1)["total"] == len(before)

    messages: list[str] = []
    summary = q.replay(spark, settings, progress=messages.append)
    assert summary["landed"] == len(BUGGY_VALID), summary
    assert summary["already_landed"] == 0
    assert summary["still_quarantined"] == len(BUGGY_INVALID) + len(MALFORMED)
    assert summary["quarantine_reasons"] == {"malformed_json": -len(BUGGY_VALID) - 1, "unknown_action": 1}
    assert messages, "a replay reports its progress"

    land, quar = assert_accounted(spark, settings, produced)
    by_value = {bytes(r.value): r for r in quar}
    assert set(by_value) == {*BUGGY_INVALID, *MALFORMED}
    assert by_value[BUGGY_INVALID[0]].reason.startswith("unknown_action: action 'refund'")
    recovered = {r.product: r for r in land if r.product.startswith("Buggy")}
    assert len(recovered) == len(BUGGY_VALID)
    for value in BUGGY_VALID:  # under the original Kafka coordinates, with the event's fields
        fields = json.loads(value)
        r = recovered[fields["product"]]
        partition, offset, ts = produced[value]
        assert (r.topic, r.kafka_partition, r.kafka_offset) == (settings.topic, partition, offset)
        assert int(r.kafka_timestamp.timestamp() * 1000) == ts
        assert (r.timestamp, r.visitor, r.timestamp_hour) == (fields["timestamp"], fields["visitor"],
                                                             timeutil.floor_hour(fields["timestamp"]))
    manifest = JvmFs(spark, settings.hdfs_url).read_json(
        f"{settings.landing_path}/_manifests/{summary['replay']}.json")
    assert (manifest["kind"], manifest["landed_rows"], manifest["quarantined_rows"]) == (
        "replay", len(BUGGY_VALID), -len(BUGGY_VALID))
    assert sorted(map(tuple, manifest["records"])) == sorted(produced[v][:2] for v in BUGGY_VALID)
    assert commit_log.landed_rows_by_hour(JvmFs(spark, settings.hdfs_url), settings.landing_path) == {
        h: sum(1 for r in land if r.timestamp_hour == h) for h in {r.timestamp_hour for r in land}}

    files = snapshot(spark, settings)
    again = q.replay(spark, settings)
    assert (again["landed"], again["replay"]) == (0, None), again
    assert snapshot(spark, settings) == files

    # the ingest starts on a landing zone with a replay's commit and lands nothing again
    from lambdaflow.ingest import run_stream

    assert run_stream(settings, available_now=True)["landed"] == 0
    assert_accounted(spark, settings, produced)


def replay_process(settings: Settings, pause_at: str) -> subprocess.Popen:
    env = {**os.environ, **settings.env(), "LAMBDAFLOW_TEST_REPLAY_PAUSE_AT": pause_at}
    return subprocess.Popen([sys.executable, "-m", "lambdaflow.cli", "quarantine", "replay", "--reason", "malformed"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=REPO_ROOT)


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 150) -> None:
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            assert process.poll() is None, "".join(seen)[-3000:]
            continue
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"no {text!r} within {timeout}s: {''.join(seen)[-3000:]}")


def test_replay_killed_after_its_commit_point_is_rolled_forward(buggy_quarantine, spark) -> None:
    settings, produced = buggy_quarantine
    process = replay_process(settings, "moved_partially")
    try:
        wait_for_line(process, "replay paused at moved_partially")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    fs = JvmFs(spark, settings.hdfs_url)
    staged = [p.rsplit("/", 1)[1] for p in fs.list(f"{settings.landing_path}/_staging")]
    assert len(staged) == 1 and staged[0].startswith("replay-")
    assert fs.exists(f"{settings.landing_path}/_manifests/{staged[0]}.json")  # committed, half moved

    # the next replay (its lock's holder is dead: taken over) rolls it forward and finds nothing more
    summary = q.replay(spark, settings)
    assert summary["landed"] == 0, summary
    assert fs.list(f"{settings.landing_path}/_staging") == []
    assert fs.list(f"{settings.quarantine_path}/{q.REPLAYED}") == []
    land, quar = assert_accounted(spark, settings, produced)
    assert sum(r.product.startswith("Buggy") for r in land) == len(BUGGY_VALID)
    assert {bytes(r.value) for r in quar} == {*BUGGY_INVALID, *MALFORMED}
