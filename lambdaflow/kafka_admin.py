"""Kafka administration with kafka-python: topics, log-end offsets, consumer-group offsets."""

from __future__ import annotations

import time

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from lambdaflow.config import Settings


class KafkaUnavailable(RuntimeError):
    """The brokers could not be reached; the message names the bootstrap servers tried."""


def admin(settings: Settings, timeout_s: float = 10.0) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                client_id="lambdaflow-admin",
                                request_timeout_ms=int(timeout_s * 1000))
    except KafkaError as exc:
        raise KafkaUnavailable(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc.__class__.__name__}); "
            "is the broker up? (`lambdaflow status`, `make up`)") from exc


def topic_partitions(settings: Settings, topic: str | None = None) -> list[int]:
    """Partition numbers of a topic, [] when the topic does not exist."""
    topic = topic or settings.topic
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
    try:
        parts = consumer.partitions_for_topic(topic)
        return sorted(parts) if parts else []
    finally:
        consumer.close()


def ensure_topic(settings: Settings, topic: str | None = None, partitions: int | None = None,
                 replication_factor: int = 1, configs: dict[str, str] | None = None) -> bool:
    """Create the topic if missing (idempotent), with topic ``configs`` (e.g. min.insync.replicas).
    Returns True when it was created."""
    topic = topic or settings.topic
    client = admin(settings)
    try:
        client.create_topics([NewTopic(topic, partitions or settings.partitions, replication_factor,
                                       topic_configs=configs or {})])
        created = True
    except TopicAlreadyExistsError:
        created = False
    finally:
        client.close()
    deadline = time.monotonic() + 15
    while not topic_partitions(settings, topic):  # metadata propagates asynchronously
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} was created but never appeared in metadata")
        time.sleep(0.2)
    return created


def end_offsets(settings: Settings, topic: str | None = None) -> dict[int, int]:
    """End offsets per partition as a ``read_committed`` consumer sees them: the last stable offset
    (the log end, unless a transaction is still open). What the ingest can land; a landing position
    at or past it is caught up, even when the log ends with transaction markers."""
    return _offsets(settings, topic, "end_offsets")


def beginning_offsets(settings: Settings, topic: str | None = None) -> dict[int, int]:
    """Earliest offsets still held per partition (after retention)."""
    return _offsets(settings, topic, "beginning_offsets")


def _offsets(settings: Settings, topic: str | None, which: str) -> dict[int, int]:
    topic = topic or settings.topic
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000,
                             isolation_level="read_committed")  # as the ingest reads
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        result = getattr(consumer, which)(tps) if tps else {}
        return dict(sorted((tp.partition, offset) for tp, offset in result.items()))  # by partition
    finally:
        consumer.close()


def group_offsets(settings: Settings, group: str | None = None, topic: str | None = None) -> dict[int, int]:
    """Committed offsets of a consumer group for the topic ({} when it never committed)."""
    topic = topic or settings.topic
    client = admin(settings)
    try:
        group = group or settings.ingest_group
        offsets = client.list_group_offsets({group: None}).get(group, {})
    finally:
        client.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0}
