"""The lag monitor against real Kafka and HDFS, checked with clients and tools the monitor does not use.

The ingest's progress is simulated the way the ingest records it: offset-range manifests in the
landing zone (written here with WebHDFS) and offsets committed to its consumer group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewPartitions
from kafka.structs import OffsetAndMetadata

from lambdaflow import hdfs, lag, landing
from lambdaflow import stack as local_stack
from lambdaflow.config import Settings

pytestmark = pytest.mark.integration


def produce(settings: Settings, count: int) -> dict[int, int]:
    """Send ``count`` keyed events; returns how many went to each partition (from the broker's acks)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20)
    futures = []
    for i in range(count):
        visitor = f"visitor-{i % 613}"
        event = {"timestamp": int(time.time() * 1000), "referrer": "google", "action": "page_view",
                 "prev_page": None, "visitor": visitor, "page": f"page-{i % 17}", "product": f"product-{i % 11}"}
        futures.append(producer.send(settings.topic, key=visitor.encode(), value=json.dumps(event).encode()))
    producer.flush()
    producer.close()
    counts: dict[int, int] = {}
    for future in futures:
        partition = future.get(timeout=30).partition
        counts[partition] = counts.get(partition, 0) + 1
    return counts


def kafka_end_offsets(settings: Settings) -> dict[int, int]:
    """Log-end offsets read with a consumer of the test's own (not lambdaflow.kafka_admin)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        tps = [TopicPartition(settings.topic, p) for p in consumer.partitions_for_topic(settings.topic)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def land(settings: Settings, *names: str) -> None:
    """Commit micro-batches the way the ingest does: one manifest per offset-range key, the document
    the ingest writes (``landing.manifest_document``), written to a ``_tmp`` file and renamed into place.
    A name starting with ``_tmp.`` is a commit in flight: a torn manifest left at its temporary name."""
    c = hdfs.client(settings)
    directory = f"{settings.landing_path}/{landing.MANIFESTS}"
    now_ms = int(time.time() * 1000)
    for name in names:
        ranges = landing.parse_commit_key(name.removeprefix("_tmp.").removesuffix(".json"))
        rows = sum(r.count for r in ranges)
        hour_dir = f"{settings.landing_path}/timestamp_hour={landing.hour_of(now_ms)}"
        staged = f"{settings.landing_path}/{landing.STAGING}/{name}/landing/part-0.parquet"
        files = [{"kind": "landing", "staged": staged, "final": f"{hour_dir}/part-{name}-0.snappy.parquet"}]
        document = landing.dumps(landing.manifest_document(settings.topic, ranges, files, rows, 0,
                                                           {landing.hour_of(now_ms): rows}, now_ms))
        if name.startswith("_tmp."):
            c.write(f"{directory}/{name}", data=document[: len(document) // 2], encoding="utf-8", overwrite=True)
            continue
        c.write(f"{directory}/_tmp.{name}", data=document, encoding="utf-8", overwrite=True)
        c.rename(f"{directory}/_tmp.{name}", f"{directory}/{name}")


def commit_group(settings: Settings, offsets: dict[int, int]) -> None:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.ingest_group,
                             enable_auto_commit=False)
    try:
        consumer.commit({TopicPartition(settings.topic, p): OffsetAndMetadata(offset, "", -1)
                         for p, offset in offsets.items()})
    finally:
        consumer.close()


def consumer_groups_describe(settings: Settings) -> dict[int, dict[str, str]]:
    """Kafka's own ``kafka-consumer-groups --describe`` rows for the ingest group, by partition."""
    command = local_stack.kafka_tool_command("consumer-groups", [
        "--bootstrap-server", settings.kafka_bootstrap, "--describe", "--group", settings.ingest_group])
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    lines = [line.split() for line in out.splitlines() if line.strip()]
    header = next(line for line in lines if line[:2] == ["GROUP", "TOPIC"])
    return {int(row[2]): dict(zip(header, row)) for row in lines if row[1:2] == [settings.topic]}


def by_partition(report: dict, key: str) -> dict[int, object]:
    return {p["partition"]: p[key] for p in report["partitions"]}


def test_lag_counts_every_record_when_nothing_landed(isolated: Settings) -> None:
    counts = produce(isolated, 5000)
    assert sorted(counts) == [0, 1, 2] and sum(counts.values()) == 5000

    first = lag.monitor(isolated, window=3)
    assert first["total_lag"] == 5000
    assert by_partition(first, "lag") == counts
    assert by_partition(first, "log_end_offset") == kafka_end_offsets(isolated) == counts
    assert set(by_partition(first, "committed_offset").values()) == {None}
    assert all(p["lag_seconds"] > 0 for p in first["partitions"])
    assert first["status"] == lag.NOT_STARTED
    assert set(by_partition(first, "status").values()) == {lag.NOT_STARTED}

    time.sleep(2)
    second = lag.monitor(isolated, window=3)
    assert second["total_lag"] == 5000
    assert second["window"] == {"samples": 2, "size": 3}  # the first sample was read back from HDFS
    for before, after in zip(first["partitions"], second["partitions"]):
        assert after["lag_seconds"] >= before["lag_seconds"] + 1.5
    assert second["status"] == lag.NOT_STARTED
    assert lag.alerts(second, max_lag_records=None, max_lag_seconds=None) == [
        f"partition {p}: NOT_STARTED (nothing landed yet, lag {counts[p]} records)" for p in range(3)]
    assert [s["sampled_at"] for s in lag.history(isolated)] == [first["sampled_at"], second["sampled_at"]]

    # Kafka's own tool agrees, given a group at the start of the log (nothing consumed)
    commit_group(isolated, {p: 0 for p in counts})
    third = lag.monitor(isolated, window=3)
    described = consumer_groups_describe(isolated)
    assert {p: int(row["LAG"]) for p, row in described.items()} == by_partition(third, "lag") == counts
    assert {p: int(row["LOG-END-OFFSET"]) for p, row in described.items()} == by_partition(third, "log_end_offset")
    assert by_partition(third, "group_offset") == {0: 0, 1: 0, 2: 0}
    assert set(by_partition(third, "disagreement").values()) == {None}


def test_partial_landing_stall_stop_then_caught_up(isolated: Settings) -> None:
    ends = produce(isolated, 3000)
    half = ends[1] // 2
    # partition 0 landed in two batches ("9" > "1000" as strings), partition 1 half, partition 2 not at all;
    # an in-flight manifest must not count
    land(isolated, f"0-0-9_1-0-{half}.json", f"0-9-{ends[0]}.json", f"_tmp.1-{half}-999999.json")

    report = lag.monitor(isolated, window=5, stop_after_s=600)
    assert by_partition(report, "committed_offset") == {0: ends[0], 1: half, 2: None}
    assert by_partition(report, "lag") == {0: 0, 1: ends[1] - half, 2: ends[2]}
    assert report["total_lag"] == ends[1] - half + ends[2]
    seconds = by_partition(report, "lag_seconds")
    assert seconds[0] == 0 and seconds[1] > 0 and seconds[2] > 0
    assert by_partition(report, "status") == {0: lag.OK, 1: lag.OK, 2: lag.NOT_STARTED}

    # a second sample with partition 1 not moving: STALL, the worst partition
    report = lag.monitor(isolated, window=5, stop_after_s=600)
    assert by_partition(report, "status") == {0: lag.OK, 1: lag.STALL, 2: lag.NOT_STARTED}
    assert report["status"] == lag.STALL

    # its last batch landed an hour ago: STOP
    c = hdfs.client(isolated)
    an_hour_ago = int((time.time() - 3600) * 1000)
    c.set_times(f"{isolated.landing_path}/{landing.MANIFESTS}/0-0-9_1-0-{half}.json", modification_time=an_hour_ago)
    report = lag.monitor(isolated, window=5, stop_after_s=600)
    assert by_partition(report, "status")[1] == lag.STOP and report["status"] == lag.STOP
    assert any(m.startswith(f"partition 1: STOP (no batch landed for 36") and f"lag {ends[1] - half} records" in m
               for m in lag.alerts(report))

    # the ingest catches up and commits its group: 0, 0 s, OK, as Kafka's own tool sees it
    land(isolated, f"1-{half}-{ends[1]}_2-0-{ends[2]}.json")
    commit_group(isolated, ends)
    report = lag.monitor(isolated, window=5, stop_after_s=600)
    assert report["total_lag"] == 0 and report["status"] == lag.OK
    assert by_partition(report, "lag_seconds") == {0: 0, 1: 0, 2: 0}
    assert by_partition(report, "committed_offset") == ends == by_partition(report, "group_offset")
    assert set(by_partition(report, "disagreement").values()) == {None}
    assert lag.alerts(report) == []
    described = consumer_groups_describe(isolated)
    assert {p: int(row["CURRENT-OFFSET"]) for p, row in described.items()} == ends
    assert {p: int(row["LAG"]) for p, row in described.items()} == {0: 0, 1: 0, 2: 0}


def test_group_ahead_of_the_landing_zone_is_an_alert(isolated: Settings) -> None:
    ends = produce(isolated, 300)
    land(isolated, f"0-0-{ends[0] // 2}.json")
    commit_group(isolated, {0: ends[0]})
    report = lag.monitor(isolated, record=False)
    assert by_partition(report, "disagreement") == {0: lag.GROUP_AHEAD, 1: None, 2: None}
    assert (f"partition 0: consumer group {isolated.ingest_group} at {ends[0]} is ahead of the landing zone "
            f"at {ends[0] // 2}") in lag.alerts(report)
    assert lag.history(isolated) == []  # --no-record


def test_partition_added_to_the_topic(isolated: Settings) -> None:
    ends = produce(isolated, 60)
    land(isolated, "_".join(f"{p}-0-{ends[p]}" for p in sorted(ends)) + ".json")
    assert lag.monitor(isolated)["status"] == lag.OK
    admin = KafkaAdminClient(bootstrap_servers=isolated.kafka_bootstrap)
    admin.create_partitions({isolated.topic: NewPartitions(total_count=4)})
    admin.close()
    producer = KafkaProducer(bootstrap_servers=isolated.kafka_bootstrap, acks="all")
    for i in range(5):
        producer.send(isolated.topic, key=b"visitor-new", value=b"{}", partition=3).get(timeout=30)
    producer.close()
    report = lag.monitor(isolated)
    assert by_partition(report, "status") == {0: lag.OK, 1: lag.OK, 2: lag.OK, 3: lag.NOT_STARTED}
    assert by_partition(report, "lag")[3] == 5 and report["total_lag"] == 5
    assert report["status"] == lag.NOT_STARTED


def test_history_survives_and_is_bounded(isolated: Settings) -> None:
    produce(isolated, 10)
    c = hdfs.client(isolated)
    base = lag.history_dir(isolated)
    old_day = (datetime.now(timezone.utc) - timedelta(days=10)).date().isoformat()
    c.write(f"{base}/{old_day}.jsonl", data='{"sampled_at": 1}\n', encoding="utf-8", overwrite=True)
    for _ in range(3):
        lag.monitor(isolated, window=2, retention_days=7)
    today = datetime.now(timezone.utc).date().isoformat()
    assert hdfs.list_names(c, base) == [f"{today}.jsonl"]
    samples = lag.history(isolated, hours=1)
    assert len(samples) == 3 and all(s["total_lag"] == 10 for s in samples)
    assert [s["window"]["samples"] for s in samples] == [1, 2, 2]
    assert lag.history(isolated, hours=None, limit=2) == samples[1:]


def test_hdfs_down_with_kafka_up_is_a_clear_error(isolated: Settings) -> None:
    with pytest.raises(lag.HdfsUnavailable, match="cannot reach WebHDFS at http://127.0.0.1:9"):
        lag.sample(isolated.replace(webhdfs_url="http://127.0.0.1:9"))


def test_cli_json_document(isolated: Settings) -> None:
    counts = produce(isolated, 50)
    result = subprocess.run([sys.executable, "-m", "lambdaflow.cli", "lag", "--json", "--window", "4"],
                            env={**os.environ, **isolated.env()}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert {"group", "topic", "partitions", "total_lag", "status"} <= document.keys()
    assert (document["group"], document["topic"], document["total_lag"]) == (isolated.ingest_group, isolated.topic, 50)
    assert [{k: p[k] for k in ("partition", "log_end_offset", "committed_offset", "lag")} for p in document["partitions"]] == [
        {"partition": p, "log_end_offset": counts[p], "committed_offset": None, "lag": counts[p]} for p in range(3)]
    assert {p["status"] for p in document["partitions"]} == {lag.NOT_STARTED}

    table = subprocess.run([sys.executable, "-m", "lambdaflow.cli", "lag", "--no-record", "--fail-on-alert"],
                           env={**os.environ, **isolated.env()}, capture_output=True, text=True, timeout=120)
    assert table.returncode == 1
    assert table.stdout.splitlines()[0].split()[:6] == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET",
                                                        "LOG-END-OFFSET", "LAG"]
    assert "total lag 50 records, status NOT_STARTED (window 2/10 samples)" in table.stdout
