"""The producer against the real broker, checked with a plain kafka-python consumer it does not use.

Every test writes to its own fresh topic (fixture ``isolated``) and reads everything back.
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from lambdaflow import events, producer
from lambdaflow.config import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

SCRIPT = [sys.executable, str(REPO_ROOT / "producers" / "weblogs_producer.py")]
START = "2026-11-24T10:00:00Z"


def read_all(settings: Settings, topic: str | None = None) -> list[ConsumerRecord]:
    """Every record of the topic, from the beginning to the log end, partition by partition."""
    topic = topic or settings.topic
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, "could not read the topic to its end within 60 s"
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def run_script(settings: Settings, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**settings.env(), "PATH": "/usr/bin:/bin"}
    return subprocess.run([*SCRIPT, *argv], env=env, capture_output=True, text=True, timeout=timeout)


def test_produces_exactly_n_keyed_events_over_every_partition(isolated: Settings) -> None:
    summary = producer.produce(isolated, count=2000, rate=0, seed=7, progress=False)
    records = read_all(isolated)

    assert (summary["sent"], summary["acked"], summary["failed"]) == (2000, 2000, 0)
    assert len(records) == 2000
    per_partition = collections.Counter(str(r.partition) for r in records)
    assert set(per_partition) == {"0", "1", "2"} and min(per_partition.values()) > 400
    assert summary["per_partition"] == dict(per_partition)
    now_ms = int(time.time() * 1000)
    for record in records:
        event = json.loads(record.value)
        assert events.validate_event(event) is None
        assert record.key == event["visitor"].encode("utf-8")
        assert event["timestamp"] <= now_ms  # simulated time stays in the past
        assert abs(record.timestamp - now_ms) < 600_000  # the Kafka timestamp is the send time
    assert summary["topic"] == isolated.topic and summary["seed"] == 7


def test_same_seed_same_events_through_library_and_command_line(isolated: Settings) -> None:
    first = producer.produce(isolated, count=1500, rate=0, seed=42, start=START, progress=False)
    done = run_script(isolated, "--count", "1500", "--rate", "0", "--seed", "42", "--start", START, "--json")
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout)
    assert second["acked"] == first["acked"] == 1500
    assert second["per_partition"] == first["per_partition"]

    by_partition: dict[int, list[tuple[bytes, bytes]]] = collections.defaultdict(list)
    for record in read_all(isolated):
        by_partition[record.partition].append((record.key, record.value))
    assert sum(map(len, by_partition.values())) == 3000
    for partition, pairs in by_partition.items():
        half = len(pairs) // 2
        assert pairs[:half] == pairs[half:], f"partition {partition}: the second run sent other events"

    other = producer.produce(isolated, count=10, rate=0, seed=43, start=START, progress=False)
    assert other["acked"] == 10
    values = {r.value for r in read_all(isolated)}
    assert len(values) > 1500  # seed 43 added events of its own


def test_bad_fraction_is_counted_by_kind_and_every_bad_record_is_rejected(isolated: Settings) -> None:
    summary = producer.produce(isolated, count=4000, rate=0, seed=5, bad_fraction=0.05, fmt="tsv",
                               progress=False)
    records = read_all(isolated)
    rejected = [r for r in records if events.check_value(r.value) is not None]
    injected = sum(summary["bad_injected"].values())

    assert summary["acked"] == len(records) == 4000
    assert set(summary["bad_injected"]) == set(events.BAD_KINDS)
    assert len(rejected) == injected and 0.03 < injected / 4000 < 0.07
    assert all(n > 0 for n in summary["bad_injected"].values())
    good = [r for r in records if events.check_value(r.value) is None]
    assert all(r.value.count(b"\t") == 6 for r in good)  # the course's TSV line


def test_rate_limit_holds(isolated: Settings) -> None:
    summary = producer.produce(isolated, count=300, rate=200, seed=1, progress=False)
    assert summary["acked"] == 300
    assert 1.4 < summary["elapsed_s"] < 6
    assert summary["events_per_s"] < 215


def test_duration_run_stops_in_time_and_flushes(isolated: Settings) -> None:
    summary = producer.produce(isolated, duration=1.5, rate=400, seed=2, progress=False)
    assert 400 <= summary["sent"] <= 600
    assert summary["acked"] == summary["sent"] == len(read_all(isolated))


def test_sigint_stops_cleanly_with_everything_sent_acked(isolated: Settings) -> None:
    env = {**isolated.env(), "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen([*SCRIPT, "--duration", "60", "--rate", "300", "--seed", "3", "--json"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    summary = json.loads(out)
    assert process.returncode == 130, err
    assert summary["interrupted"] is True and summary["failed"] == 0
    assert 100 < summary["sent"] == summary["acked"] == len(read_all(isolated))
    assert "Traceback" not in err


def test_unreachable_broker_fails_fast_naming_the_servers(stack: Settings) -> None:
    started = time.monotonic()
    done = run_script(stack, "--count", "10", "--bootstrap-servers", "localhost:1")
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert "localhost:1" in done.stderr and "cannot reach Kafka" in done.stderr
    assert "Traceback" not in done.stderr
    assert elapsed < 20


def test_missing_topic_is_reported_and_created_on_request(stack: Settings) -> None:
    topic = f"weblogs-missing-{uuid.uuid4().hex[:8]}"
    done = run_script(stack, "--count", "10", "--topic", topic)
    assert done.returncode == 1
    assert f"topic '{topic}' does not exist" in done.stderr and "--create-topic" in done.stderr
    assert "Traceback" not in done.stderr

    done = run_script(stack, "--count", "10", "--topic", topic, "--create-topic", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["acked"] == 10
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    assert len(described["partitions"]) == stack.partitions
    assert len(read_all(stack, topic)) == 10
