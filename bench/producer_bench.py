"""Producer throughput beside two yardsticks, in one run on the same broker and a fresh topic.

- ``producer.events_per_s``: ``lambdaflow.producer.produce``, unthrottled (acks=all, idempotent).
- ``producer.perf_test_events_per_s``: Kafka's own ProducerPerformance (``kafka-producer-perf-test``)
  with acks=all and records as large as our average JSON event: what the JVM client gets here.
- ``producer.naive_events_per_s``: a kafka-python loop that sends one record and waits for its
  ack before the next: what a producer without batching gets.
- ``producer.ratio_vs_perf_test`` and ``producer.ratio_vs_naive``: ours divided by each.

Goals (measured, never asserted): ratio_vs_perf_test >= 0.2, ratio_vs_naive >= 10 on 2 cores.
Standalone: ``.venv/bin/python bench/producer_bench.py`` (Kafka up); ``make bench`` runs it too.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid

from kafka import KafkaAdminClient, KafkaProducer

from lambdaflow import events, kafka_admin, producer, stack
from lambdaflow.config import Settings

OURS_EVENTS = 200_000
NAIVE_EVENTS = 3_000
_PERF_RESULT = re.compile(r"(\d+) records sent, ([\d.]+) records/sec")


def _average_json_size(sample: int = 10_000) -> int:
    records = list(events.EventGenerator(1, count=sample, rate=0))
    return round(sum(len(r.value) for r in records) / len(records))


def _ours(settings: Settings) -> float:
    summary = producer.produce(settings, count=OURS_EVENTS, rate=0, seed=1, progress=False)
    if summary["failed"]:
        raise RuntimeError(f"benchmark run lost records: {summary['errors']}")
    return summary["events_per_s"]


def _perf_test(settings: Settings, record_size: int) -> float:
    command = stack.kafka_tool_command("producer-perf-test", [
        "--topic", settings.topic, "--num-records", str(OURS_EVENTS), "--record-size", str(record_size),
        "--throughput", "-1",
        "--command-property", "acks=all", f"bootstrap.servers={settings.kafka_bootstrap}"])
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    results = _PERF_RESULT.findall(done.stdout)
    if done.returncode != 0 or not results:
        raise RuntimeError(f"producer-perf-test failed ({done.returncode}): {done.stderr[-2000:]}")
    sent, per_s = results[-1]  # the last line is the whole run's figure
    if int(sent) != OURS_EVENTS:
        raise RuntimeError(f"producer-perf-test sent {sent} of {OURS_EVENTS} records")
    return float(per_s)


def _naive(settings: Settings) -> float:
    records = list(events.EventGenerator(2, count=NAIVE_EVENTS, rate=0))
    client = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        started = time.perf_counter()
        for record in records:
            client.send(settings.topic, key=record.key, value=record.value).get(timeout=30)
        return NAIVE_EVENTS / (time.perf_counter() - started)
    finally:
        client.close()


def run(settings: Settings) -> dict[str, float]:
    """The five producer figures, measured one after the other on a fresh topic (deleted after)."""
    bench = settings.replace(topic=f"bench-producer-{uuid.uuid4().hex[:8]}")
    kafka_admin.ensure_topic(bench)
    try:
        naive = _naive(bench)
        ours = _ours(bench)
        perf_test = _perf_test(bench, _average_json_size())
    finally:
        admin = KafkaAdminClient(bootstrap_servers=bench.kafka_bootstrap)
        try:
            admin.delete_topics([bench.topic])
        finally:
            admin.close()
    return {
        "producer.events_per_s": round(ours, 1),
        "producer.perf_test_events_per_s": round(perf_test, 1),
        "producer.naive_events_per_s": round(naive, 1),
        "producer.ratio_vs_perf_test": round(ours / perf_test, 3),
        "producer.ratio_vs_naive": round(ours / naive, 1),
    }


if __name__ == "__main__":
    print(json.dumps(run(Settings.from_env()), indent=2))
