"""Quarantine replay against real Kafka, HDFS and Spark: a parser bug is fixed, the data it rejected is recovered.

The "old parser" is today's ``parse_records`` with a bug added: it rejects every value mentioning
``BuggyA``, ``BuggyK`` or ``BuggyB`` as ``malformed_json: old parser bug (a|k|b)``. A real bounded ingest runs
with it (so the quarantine, its layout and the commit log are the ingest's own), then the bug is
"fixed" (the real parser is back) and the quarantine is replayed:

1. a replay of the (a) records is killed -9 halfway through its moves; the replay's recovery
   rolls it forward; a replay of the (k) records dies right after its commit point; the ingest's
   start-up recovery rolls it forward;
2. a replay of everything rolls nothing twice and lands the valid (b) records; the invalid one
   stays with today's reason;
3. a second replay changes no file;
4. a record the landing zone already holds, found in an old flat quarantine file, is taken out of
   the quarantine and not landed again.

After each step every produced record is in the landing zone or the quarantine exactly once,
under its original Kafka coordinates, and the commit log's totals (landed + quarantined =
produced, reasons by kind) match the files.
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
BUG_A, BUG_K, BUG_B = (f"malformed_json: old parser bug ({x})" for x in "akb")


def event(i: int, **changes) -> bytes:
    value = {"timestamp": NOW_MS - 3_600_000 * (i % 2), "referrer": "Internal", "action": "purchase",
             "prev_page": None, "visitor": f"Visitor-{i}", "page": "Page-1", "product": f"Kettle-{i}"}
    return json.dumps({**value, **changes}).encode()


VALID = [event(i) for i in range(9)]
BUGGY_A = [event(100 + i, product=f"BuggyA Kettle {i}") for i in range(4)]
BUGGY_K = [event(500 + i, product=f"BuggyK Kettle {i}") for i in range(3)]
BUGGY_B = [event(200 + i, product=f"BuggyB Kettle {i}") for i in range(5)]
BUGGY_B_INVALID = [event(300, product="BuggyB Pot", action="refund")]  # fixed parser: still invalid, new reason
MALFORMED = [b"a\tb\tc", b"\x00\xff\xfe", event(400, visitor="")]


def buggy_parser(real):
    """Today's parser with the old bug: values that mention ``BuggyA``/``BuggyK``/``BuggyB`` are rejected."""
    from pyspark.sql import functions as F

    def parse_records(records):
        parsed = real(records)
        text = F.col("value").cast("string")
        bug = (F.when(text.contains("BuggyA"), F.lit(BUG_A)).when(text.contains("BuggyK"), F.lit(BUG_K))
               .when(text.contains("BuggyB"), F.lit(BUG_B)))
        return (parsed.withColumn("reason", F.coalesce(bug, F.col("reason")))
                .withColumn("timestamp_hour", F.when(bug.isNull(), F.col("timestamp_hour"))))
    return parse_records


def produce(settings: Settings) -> dict[bytes, tuple[int, int, int]]:
    """Every value -> its (partition, offset, Kafka timestamp ms)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    values = [*VALID, *BUGGY_A, *BUGGY_K, *BUGGY_B, *BUGGY_B_INVALID, *MALFORMED]
    futures = {v: producer.send(settings.topic, key=f"k{i}".encode(), value=v, partition=i % 3)
               for i, v in enumerate(values)}
    producer.flush()
    producer.close()
    return {v: (f.get().partition, f.get().offset, f.get().timestamp) for v, f in futures.items()}


def landed(spark, settings: Settings) -> list:
    return spark.read.parquet(settings.uri(settings.landing_path)).collect()


def quarantined(spark, settings: Settings) -> list:
    files = q.data_files(JvmFs(spark, settings.hdfs_url), settings)
    return q.read_quarantine(spark, settings, files).collect() if files else []


def snapshot(spark, settings: Settings) -> tuple[list[str], list[str]]:
    """Every file under the landing zone (bookkeeping included) and the quarantine (but its lock)."""
    fs = JvmFs(spark, settings.hdfs_url)
    return (fs.list_files_recursive(settings.landing_path),
            [p for p in fs.list_files_recursive(settings.quarantine_path) if f"/{q.REPLAY_LOCK}/" not in p])


def assert_accounted(spark, settings: Settings, produced: dict, commit_log_too: bool = True) -> tuple[list, list]:
    """Each produced record exactly once over landing zone + quarantine; the commit log agrees."""
    land, quar = landed(spark, settings), quarantined(spark, settings)
    coordinates = [(r.kafka_partition, r.kafka_offset) for r in [*land, *quar]]
    assert len(coordinates) == len(set(coordinates)), "a record is in the landing zone or quarantine twice"
    assert set(coordinates) == {(p, o) for p, o, _ in produced.values()}
    if commit_log_too:
        totals = commit_log.totals(JvmFs(spark, settings.hdfs_url), settings.landing_path)
        assert (totals["landed_rows"], totals["quarantined_rows"]) == (len(land), len(quar)), totals
        kinds: dict[str, int] = {}
        for r in quar:
            kinds[q.reason_kind(r.reason)] = kinds.get(q.reason_kind(r.reason), 0) + 1
        assert totals["quarantine_reasons"] == dict(sorted(kinds.items())), totals
        assert commit_log.landed_rows_by_hour(JvmFs(spark, settings.hdfs_url), settings.landing_path) == {
            h: sum(1 for r in land if r.timestamp_hour == h) for h in {r.timestamp_hour for r in land}}
    return land, quar


def assert_recovered(land: list, values: list[bytes], produced: dict, settings: Settings) -> None:
    """Each value landed once, under its original Kafka coordinates, with the event's fields."""
    by_product = {r.product: r for r in land}
    for value in values:
        fields = json.loads(value)
        r = by_product[fields["product"]]
        partition, offset, ts = produced[value]
        assert (r.topic, r.kafka_partition, r.kafka_offset) == (settings.topic, partition, offset)
        assert int(r.kafka_timestamp.timestamp() * 1000) == ts
        assert (r.timestamp, r.visitor, r.timestamp_hour) == (fields["timestamp"], fields["visitor"],
                                                             timeutil.floor_hour(fields["timestamp"]))


def replay_process(settings: Settings, reason: str, pause_at: str) -> subprocess.Popen:
    env = {**os.environ, **settings.env(), "LAMBDAFLOW_TEST_REPLAY_PAUSE_AT": pause_at}
    return subprocess.Popen([sys.executable, "-m", "lambdaflow.cli", "quarantine", "replay", "--reason", reason],
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


def inject_flat_quarantine_file(spark, settings: Settings, value: bytes, coordinates: tuple[int, int, int]) -> None:
    """An old (flat) quarantine file holding a record the landing zone already has."""
    import datetime as dt

    partition, offset, ts = coordinates
    row = (settings.topic, partition, offset, dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc), b"k", value,
           "malformed_json: injected duplicate")
    frame = spark.createDataFrame([row], "topic string, kafka_partition int, kafka_offset long, "
                                         "kafka_timestamp timestamp, key binary, value binary, reason string")
    scratch = f"{settings.root}/scratch-flat"
    frame.coalesce(1).write.parquet(settings.uri(scratch))
    fs = JvmFs(spark, settings.hdfs_url)
    [part] = [p for p in fs.list(scratch) if p.endswith(".parquet")]
    fs.rename(part, f"{settings.quarantine_path}/part-0-0-1-0.snappy.parquet")


def test_a_fixed_parser_bug_is_recovered_exactly_once(isolated: Settings, spark, monkeypatch) -> None:
    from lambdaflow.ingest import run_stream

    settings = isolated
    produced = produce(settings)
    with monkeypatch.context() as patch:  # the ingest of the past, with the parser bug
        patch.setattr(ingest_transforms, "parse_records", buggy_parser(ingest_transforms.parse_records))
        assert run_stream(settings, available_now=True)["landed"] == len(VALID)
    _, before = assert_accounted(spark, settings, produced)
    assert sorted(r.reason for r in before if "old parser bug" in r.reason) == sorted(
        [BUG_A] * len(BUGGY_A) + [BUG_K] * len(BUGGY_K) + [BUG_B] * (len(BUGGY_B) + len(BUGGY_B_INVALID)))
    assert all("/arrival_hour=" in r._file for r in before)  # the ingest's layout

    # list: by reason, filtered by reason prefix and by Kafka time, bounded
    bugs = len(BUGGY_A) + len(BUGGY_K) + len(BUGGY_B) + len(BUGGY_B_INVALID)
    listing = q.list_records(spark, settings, reason="malformed_json: old", limit=3)
    assert listing["total"] == bugs and len(listing["records"]) == 3
    assert listing["by_reason"] == {"malformed_json": {"count": bugs, "reasons": {
        BUG_B: len(BUGGY_B) + len(BUGGY_B_INVALID), BUG_A: len(BUGGY_A), BUG_K: len(BUGGY_K)}}}
    assert all("Buggy" in r["value"] and r["value_encoding"] == "utf-8" for r in listing["records"])
    everything = q.list_records(spark, settings)
    assert everything["total"] == len(before) and {r["value_encoding"] for r in everything["records"]} == {
        "utf-8", "base64"}
    times = sorted(t for _, _, t in produced.values())
    assert q.list_records(spark, settings, from_ms=times[-1] + 1)["total"] == 0
    assert q.list_records(spark, settings, from_ms=times[0], to_ms=times[-1] + 1)["total"] == len(before)

    # 1. a replay of the (a) records, killed -9 after its commit point and its first move ...
    process = replay_process(settings, BUG_A, "moved_partially")
    try:
        wait_for_line(process, "replay paused at moved_partially")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    fs = JvmFs(spark, settings.hdfs_url)
    [staged] = [p.rsplit("/", 1)[1] for p in fs.list(f"{settings.landing_path}/_staging")]
    assert staged.startswith(q.REPLAY_PREFIX) and fs.exists(f"{settings.landing_path}/_manifests/{staged}.json")
    # ... is rolled forward by the replay's recovery (what holders of the replay lock run first)
    q.recover(fs, settings)
    assert fs.list(f"{settings.landing_path}/_staging") == []
    assert fs.list(f"{settings.quarantine_path}/{q.REPLAYED}") == []
    land, _ = assert_accounted(spark, settings, produced)
    assert_recovered(land, BUGGY_A, produced, settings)

    # 1b. a replay of the (k) records that dies right after its commit point ...
    class Crash(Exception):
        pass

    def crash_at_commit(step: str) -> None:
        if step == "committed":
            raise Crash(step)
    with monkeypatch.context() as patch:
        patch.setattr(q, "_test_pause", crash_at_commit)
        with pytest.raises(Crash):
            q.replay(spark, settings, reason=BUG_K)
    [staged] = [p.rsplit("/", 1)[1] for p in fs.list(f"{settings.landing_path}/_staging")]
    assert staged.startswith(q.REPLAY_PREFIX) and fs.exists(f"{settings.landing_path}/_manifests/{staged}.json")
    # ... is rolled forward by the ingest's start-up recovery (which lands nothing else)
    assert run_stream(settings, available_now=True)["landed"] == 0
    assert fs.list(f"{settings.landing_path}/_staging") == []
    land, _ = assert_accounted(spark, settings, produced)
    assert_recovered(land, BUGGY_K, produced, settings)

    # 2. a replay of everything: the valid (b) records land, the invalid one stays with today's reason
    messages: list[str] = []
    summary = q.replay(spark, settings, progress=messages.append)
    assert summary["landed"] == len(BUGGY_B) and summary["already_landed"] == 0, summary
    assert summary["still_quarantined"] == len(BUGGY_B_INVALID) + len(MALFORMED)
    assert summary["quarantine_reasons"] == {"malformed_json": -len(BUGGY_B) - 1, "unknown_action": 1}
    assert summary["reasons_changed"] == len(BUGGY_B_INVALID)
    assert any("re-validated" in m for m in messages), messages
    assert fs.list(f"{settings.quarantine_path}/{q.REPLAYED}") == []  # the crashed replay's leftovers too
    land, quar = assert_accounted(spark, settings, produced)
    assert_recovered(land, BUGGY_B, produced, settings)
    by_value = {bytes(r.value): r for r in quar}
    assert set(by_value) == {*BUGGY_B_INVALID, *MALFORMED}
    assert by_value[BUGGY_B_INVALID[0]].reason.startswith("unknown_action: action 'refund'")
    manifest = fs.read_json(f"{settings.landing_path}/_manifests/{summary['replay']}.json")
    assert (manifest["kind"], manifest["epoch"], manifest["ranges"]) == ("replay", None, [])
    assert (manifest["landed_rows"], manifest["quarantined_rows"]) == (len(BUGGY_B), -len(BUGGY_B))
    assert sorted(map(tuple, manifest["records"])) == sorted(produced[v][:2] for v in BUGGY_B)

    # 3. a second replay changes nothing
    files = snapshot(spark, settings)
    again = q.replay(spark, settings)
    assert (again["landed"], again["replay"]) == (0, None), again
    assert snapshot(spark, settings) == files

    # 4. an old flat file quarantined a record that is in the landing zone: it leaves, it does not land twice
    inject_flat_quarantine_file(spark, settings, VALID[0], produced[VALID[0]])
    dropped = q.replay(spark, settings)
    assert (dropped["landed"], dropped["already_landed"]) == (0, 1), dropped
    land, quar = assert_accounted(spark, settings, produced, commit_log_too=False)  # that row was never committed
    assert set(bytes(r.value) for r in quar) == {*BUGGY_B_INVALID, *MALFORMED}
