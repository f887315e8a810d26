"""Transactions and offset gaps: the ingest reads ``read_committed`` and commits the source's ranges.

A transactional producer (kafka-python's) interleaves committed and aborted transactions with
plain records; the log ends with transaction markers, so the last landed record's offset + 1 never
equals the log end. Aborted records must never land, every committed record lands once, a batch
made only of aborted records still commits its (empty) range, and lag, status and the batch
layer's completeness check all see the ingest as caught up.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from lambdaflow import batch, hdfs, kafka_admin, lag, landing
from lambdaflow.config import Settings
from tests.integration.test_ingest import accounted, bounded

pytestmark = pytest.mark.integration


def event(product: str, i: int) -> tuple[bytes, bytes]:
    visitor = f"visitor-{i % 37}"
    value = {"timestamp": int(time.time() * 1000), "referrer": "google", "action": "page_view", "prev_page": None,
             "visitor": visitor, "page": f"page-{i % 5}", "product": product}
    return visitor.encode(), json.dumps(value).encode()


def send_transaction(producer: KafkaProducer, settings: Settings, tag: str, n: int, commit: bool) -> None:
    producer.begin_transaction()
    for i in range(n):
        key, value = event(f"{tag}-{'committed' if commit else 'aborted'}", i)
        producer.send(settings.topic, key=key, value=value)
    producer.flush()
    producer.commit_transaction() if commit else producer.abort_transaction()


def send_plain(settings: Settings, tag: str, n: int) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for i in range(n):
        key, value = event(f"{tag}-plain", i)
        producer.send(settings.topic, key=key, value=value)
    producer.flush()
    producer.close()


def raw_log_end(settings: Settings) -> dict[int, int]:
    """High watermarks read with read_uncommitted (markers included), by a consumer of the test's own."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        tps = [TopicPartition(settings.topic, p) for p in consumer.partitions_for_topic(settings.topic)]
        return {tp.partition: o for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def landed_products(spark, settings: Settings) -> dict[str, int]:
    rows = spark.read.parquet(settings.uri(settings.landing_path)).groupBy("product").count().collect()
    return {r["product"]: r["count"] for r in rows}


def test_aborted_transactions_never_land_and_markers_leave_no_lag(isolated: Settings, spark) -> None:
    producer = KafkaProducer(bootstrap_servers=isolated.kafka_bootstrap,
                             transactional_id=f"lambdaflow-test-{uuid.uuid4().hex[:8]}")
    producer.init_transactions()
    try:
        send_plain(isolated, "a", 60)
        send_transaction(producer, isolated, "t1", 90, commit=True)
        send_transaction(producer, isolated, "t2", 80, commit=False)
        send_plain(isolated, "b", 40)
        send_transaction(producer, isolated, "t3", 70, commit=True)
        send_transaction(producer, isolated, "t4", 50, commit=False)  # the log ends with abort markers

        bounded(isolated)

        products = landed_products(spark, isolated)
        assert products == {"a-plain": 60, "t1-committed": 90, "b-plain": 40, "t3-committed": 70}, products
        landed, quarantined = accounted(spark, isolated)
        assert quarantined == [] and len(landed) == len(set(landed)) == 260
        client = hdfs.client(isolated)
        positions = landing.positions(client, isolated.landing_path)
        assert positions == kafka_admin.end_offsets(isolated) == raw_log_end(isolated)
        # the last landed record is not the log end: the markers after it are inside the committed range
        last = {p: max(o for q, o in landed if q == p) for p in positions if any(q == p for q, _ in landed)}
        assert any(last[p] + 1 < positions[p] for p in last)

        # a batch of nothing but an aborted transaction still commits its range, with zero rows
        send_transaction(producer, isolated, "t5", 30, commit=False)
        keys_before = set(landing.manifest_keys(client, isolated.landing_path))
        bounded(isolated)
        new = [k for k in landing.manifest_keys(client, isolated.landing_path) if k not in keys_before]
        assert len(new) == 1, new
        manifest = hdfs.read_json(client, f"{isolated.landing_path}/{landing.MANIFESTS}/{new[0]}.json")
        assert manifest["landed_rows"] == 0 and manifest["quarantined_rows"] == 0 and manifest["files"] == []
        assert landing.positions(client, isolated.landing_path) == raw_log_end(isolated)
        assert "t5-aborted" not in landed_products(spark, isolated)
    finally:
        producer.close()

    # the lag monitor: caught up, OK (not STALL at lag 1)
    report = lag.monitor(isolated, record=False)
    assert report["total_lag"] == 0 and report["status"] == lag.OK, report
    # the batch layer's completeness check for the hour of these events completes
    hour = batch.floor_hour(int(time.time() * 1000))
    done, why = batch.landing_complete(isolated, hour, hour + batch.HOUR_MS, allowed_lateness_s=0,
                                       now_ms=hour + batch.HOUR_MS + 1)
    assert done, why
