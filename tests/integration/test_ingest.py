"""The streaming ingest's guarantees against real Kafka, HDFS and Spark.

Every record produced is accounted for exactly once (landed + quarantined = produced, each
(partition, offset) once) after a bounded run, a kill -9 mid-stream, a deleted checkpoint and a
clean SIGTERM stop; speed views equal the exact counts; a second writer is refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from kafka import KafkaProducer
from pyspark.sql import functions as F

from lambdaflow import hdfs, kafka_admin, landing
from lambdaflow.config import REPO_ROOT, Settings
from lambdaflow.monitoring import batch_profile
from lambdaflow.producer import produce
from lambdaflow.stack import kafka_tool_command

pytestmark = pytest.mark.integration


def ingest(settings: Settings, *args: str, wait: bool = True, timeout: float = 300):
    env = {**os.environ, **settings.env()}
    command = [sys.executable, "-m", "lambdaflow.cli", "ingest", *args]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, cwd=REPO_ROOT)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


def bounded(settings: Settings) -> None:
    result = ingest(settings, "--available-now")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def accounted(spark, settings: Settings) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(partition, offset) of every landed and every quarantined record."""
    client = hdfs.client(settings)
    out = []
    for path in (settings.landing_path, settings.quarantine_path):
        if client.status(path, strict=False) is None or not [n for n in client.list(path) if not n.startswith("_")]:
            out.append([])
            continue
        rows = spark.read.parquet(settings.uri(path)).select("kafka_partition", "kafka_offset").collect()
        out.append([(r[0], r[1]) for r in rows])
    return out[0], out[1]


def assert_exactly_once(spark, settings: Settings) -> tuple[int, int]:
    landed, quarantined = accounted(spark, settings)
    everything = landed + quarantined
    ends = kafka_admin.end_offsets(settings)
    expected = {(p, o) for p, end in ends.items() for o in range(end)}
    assert len(everything) == len(set(everything)), "a record landed twice"
    assert set(everything) == expected, f"missing {sorted(expected - set(everything))[:10]}"
    positions = landing.positions(hdfs.client(settings), settings.landing_path)
    assert positions == ends
    return len(landed), len(quarantined)


def wait_for_manifests(settings: Settings, at_least: int, process, timeout: float = 180) -> None:
    client = hdfs.client(settings)
    deadline = time.monotonic() + timeout
    while len(landing.manifest_keys(client, settings.landing_path)) < at_least:
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the ingest committed nothing in time"
        time.sleep(0.5)


def test_bounded_ingest_lands_json_tsv_and_bad_records_exactly_once(isolated: Settings, spark) -> None:
    summary = produce(isolated, count=3000, rate=0, seed=11, bad_fraction=0.05, progress=False)
    tsv = produce(isolated, count=500, rate=0, seed=12, fmt="tsv", progress=False)
    bad = sum(summary["bad_injected"].values())
    # Kafka's own console producer, the course's TSV line
    lines = "\n".join(f"{1795600000000 + i}\tGoogle\tpurchase\t\tVisitor-{i}\tPage-1\tConsole Widget" for i in range(20))
    console = subprocess.run(kafka_tool_command("console-producer", [
        "--bootstrap-server", isolated.kafka_bootstrap, "--topic", isolated.topic]),
        input=lines + "\n", capture_output=True, text=True, timeout=90)
    assert console.returncode == 0, console.stderr

    bounded(isolated)

    landed, quarantined = assert_exactly_once(spark, isolated)
    assert landed + quarantined == 3000 + 500 + 20
    assert quarantined == bad
    rows = spark.read.parquet(isolated.uri(isolated.landing_path))
    console_rows = rows.where("product = 'Console Widget'").collect()
    assert len(console_rows) == 20
    assert all(r.action == "purchase" and r.prev_page is None and r.referrer == "Google" for r in console_rows)
    assert rows.where("referrer = 'Internal' AND prev_page IS NULL").count() == 0
    assert set(rows.columns) >= {"timestamp", "referrer", "action", "prev_page", "visitor", "page", "product",
                                 "timestamp_hour", "topic", "kafka_partition", "kafka_offset", "kafka_timestamp"}
    assert rows.where("timestamp_hour != timestamp - timestamp % 3600000").count() == 0
    assert tsv["acked"] == 500

    quarantine = spark.read.parquet(isolated.uri(isolated.quarantine_path)).collect()
    assert all(r.reason and r.value is not None for r in quarantine)
    reasons = {r.reason.split(":")[0] for r in quarantine}
    assert {"empty", "malformed_tsv", "unknown_action", "bad_timestamp", "wrong_type"} <= reasons

    # progress visible to Kafka's tools: the consumer group sits at the landing positions
    assert kafka_admin.group_offsets(isolated) == kafka_admin.end_offsets(isolated)

    # speed views equal the exact counts
    from lambdaflow import views
    speed = views.speed_activity_view(spark.read.parquet(isolated.uri(f"{isolated.speed_root}/activity_by_product")))
    exact = views.activity_by_product(rows)
    from pyspark.testing import assertDataFrameEqual
    assertDataFrameEqual(speed, exact)


def test_kafka_partitions_read_in_many_tasks_land_exactly_once(isolated: Settings, spark, monkeypatch) -> None:
    # Every partition's offset range split among tasks (maxRecordsPerPartition): the batch's offset
    # ranges, the quarantine and the speed partials are still the source's, one per record.
    monkeypatch.setenv("LAMBDAFLOW_INGEST_RECORDS_PER_TASK", "97")
    summary = produce(isolated, count=2000, rate=0, seed=31, bad_fraction=0.05, progress=False)
    bounded(isolated)
    landed, quarantined = assert_exactly_once(spark, isolated)
    assert (landed, quarantined) == (2000 - sum(summary["bad_injected"].values()), sum(summary["bad_injected"].values()))
    rows = spark.read.parquet(isolated.uri(isolated.landing_path))
    # one writer below 250,000 rows: one landed file per hour, however many tasks read
    files = rows.select("timestamp_hour", F.input_file_name().alias("f")).distinct()
    assert files.groupBy("timestamp_hour").count().where("count > 1").count() == 0
    from pyspark.testing import assertDataFrameEqual

    from lambdaflow import views
    speed = views.speed_activity_view(spark.read.parquet(isolated.uri(f"{isolated.speed_root}/activity_by_product")))
    assertDataFrameEqual(speed, views.activity_by_product(rows))


def test_steady_micro_batches_compile_no_new_code(isolated: Settings, spark) -> None:
    # A micro-batch's plan carries nothing that changes from batch to batch (offsets, batch ids)
    # into Spark's generated code: after the first batch compiled the parse, the summary and the
    # writes, each later batch reuses them (a batch that compiled its parse anew took 0.5 s more).
    summary = produce(isolated, count=1500, rate=0, seed=41, bad_fraction=0.05, progress=False)
    result = ingest(isolated, "--available-now", "--max-offsets-per-trigger", "250")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    profiles = [p for p in map(batch_profile.parse_profile_line, (result.stdout + result.stderr).splitlines()) if p]
    assert len(profiles) >= 5 and profiles[0]["codegen_compilations"] > 0
    assert [p["codegen_compilations"] for p in profiles[1:]] == [0] * (len(profiles) - 1)
    landed, quarantined = assert_exactly_once(spark, isolated)
    assert quarantined == sum(summary["bad_injected"].values()) and landed + quarantined == 1500


def test_deleted_checkpoint_and_clean_restart_lose_and_duplicate_nothing(isolated: Settings, spark) -> None:
    produce(isolated, count=1500, rate=0, seed=21, progress=False)
    bounded(isolated)
    before = landing.positions(hdfs.client(isolated), isolated.landing_path)

    produce(isolated, count=1200, rate=0, seed=22, progress=False)
    hdfs.client(isolated).delete(isolated.checkpoint_path, recursive=True)
    bounded(isolated)
    landed, _ = assert_exactly_once(spark, isolated)
    assert landed == 2700
    # the first record after the old position landed: no skip at the boundary (untilOffset is exclusive)
    rows = spark.read.parquet(isolated.uri(isolated.landing_path))
    for partition, until in before.items():
        assert rows.where(f"kafka_partition = {partition} AND kafka_offset = {until}").count() == 1

    # nothing new: a re-run lands nothing and commits nothing
    keys = landing.manifest_keys(hdfs.client(isolated), isolated.landing_path)
    bounded(isolated)
    assert landing.manifest_keys(hdfs.client(isolated), isolated.landing_path) == keys


def test_kill_9_mid_stream_then_sigterm_stop_keep_exactly_once(isolated: Settings, spark) -> None:
    produce(isolated, count=6000, rate=0, seed=31, bad_fraction=0.02, progress=False)
    job = ingest(isolated, "--max-offsets-per-trigger", "600", "--trigger-interval", "0 seconds", wait=False)
    try:
        wait_for_manifests(isolated, 2, job)
        # a second writer is refused, naming the holder
        second = ingest(isolated, "--available-now", timeout=180)
        assert second.returncode != 0
        assert "another ingest holds" in second.stdout + second.stderr
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    partial = len(landing.manifest_keys(hdfs.client(isolated), isolated.landing_path))
    assert partial >= 2

    # restart unbounded, let it catch up, stop it with SIGTERM: it finishes its batch and exits 0
    job = ingest(isolated, "--max-offsets-per-trigger", "2000", wait=False)
    try:
        client = hdfs.client(isolated)
        deadline = time.monotonic() + 240
        while landing.positions(client, isolated.landing_path) != kafka_admin.end_offsets(isolated):
            assert job.poll() is None, job.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the restarted ingest did not catch up"
            time.sleep(1)
        job.send_signal(signal.SIGTERM)
        output, _ = job.communicate(timeout=120)
        assert job.returncode == 0, output[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    landed, quarantined = assert_exactly_once(spark, isolated)
    assert landed + quarantined == 6000
    # the clean stop released the lock: its epoch is marked released (a restart need not wait)
    client = hdfs.client(isolated)
    epochs = f"{isolated.landing_path}/_writer/epochs"
    assert hdfs.read_json(client, f"{epochs}/{max(int(n) for n in client.list(epochs))}")["released_ms"]


def test_retention_gap_stops_with_an_error_naming_it(isolated: Settings) -> None:
    """Offsets the landing zone needs were deleted from Kafka: start-up refuses and names the gap."""
    produce(isolated, count=300, rate=0, seed=41, progress=False)
    ends = kafka_admin.end_offsets(isolated)
    client = hdfs.client(isolated)
    # a landing zone that ends before what Kafka still holds, as after retention deleted records
    client.write(f"{isolated.landing_path}/_manifests/0-0-1.json", data="{}", encoding="utf-8")
    records = subprocess.run(kafka_tool_command("delete-records", [
        "--bootstrap-server", isolated.kafka_bootstrap, "--offset-json-file", _offsets_file(isolated, ends)]),
        capture_output=True, text=True, timeout=90)
    assert records.returncode == 0, records.stderr
    result = ingest(isolated, "--available-now", timeout=180)
    assert result.returncode != 0
    assert f"partition 0 starts at {ends[0]} but the landing zone ends at 1" in result.stdout + result.stderr


def _offsets_file(settings: Settings, ends: dict[int, int]) -> str:
    import json
    import tempfile

    document = {"partitions": [{"topic": settings.topic, "partition": p, "offset": o} for p, o in ends.items()],
                "version": 1}
    handle = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(document, handle)
    handle.close()
    return handle.name
