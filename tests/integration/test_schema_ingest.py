"""An outside producer's malformed shapes, through the real ingest (Kafka -> Spark -> HDFS).

A plain kafka-python producer (not lambdaflow's) sends valid events and every malformed shape we
could think of; after a bounded ingest each malformed value is in quarantine with the reason the
schema gives it (naming the field and the problem), none is in the landing zone, and every valid
event landed with its fields intact.
"""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaProducer

from lambdaflow import schema
from lambdaflow.config import Settings
from tests.integration.test_ingest import assert_exactly_once, bounded

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)
EVENT = {"timestamp": NOW_MS - 3_600_000, "referrer": "Internal", "action": "purchase", "prev_page": "Page-2",
         "visitor": "Visitor-7", "page": "Page-3", "product": "Blue Kettle"}


def as_json(**changes) -> bytes:
    obj = {**EVENT, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


MALFORMED = {
    as_json(product={"a": 1}): "wrong_type: product (expected string, got object)",
    as_json(product=["Blue Kettle"]): "wrong_type: product (expected string, got array)",
    as_json(visitor=42): "wrong_type: visitor (expected string, got integer)",
    as_json(page=4.5): "wrong_type: page (expected string, got number)",
    as_json(referrer=False): "wrong_type: referrer (expected string, got boolean)",
    as_json(prev_page={"p": 1}): "wrong_type: prev_page (expected string, got object)",
    as_json(action=1): "wrong_type: action (expected string, got integer)",
    as_json(timestamp=str(EVENT["timestamp"])): "wrong_type: timestamp (expected integer, got string)",
    as_json(timestamp=float(EVENT["timestamp"])): "wrong_type: timestamp (expected integer, got number)",
    as_json(timestamp=2 ** 64): "wrong_type: timestamp (expected integer, got number)",
    as_json(timestamp=None): "missing_field: timestamp",
    as_json(product=...): "missing_field: product",
    as_json(visitor=""): "empty_field: visitor",
    as_json(action="refund"): "unknown_action: action 'refund' is not one of page_view, add_to_cart, purchase",
    as_json(timestamp=5): "bad_timestamp: timestamp 5 is outside [2000-01-01, Kafka time + 1 day]",
    as_json() + b" and more": "malformed_json: not exactly one well-formed JSON object",
    as_json()[:-1] + b', "visitor": "Visitor-8"}': "malformed_json: not exactly one well-formed JSON object",
    as_json(timestamp=...)[:-1] + b', "timestamp": NaN}': "malformed_json: not exactly one well-formed JSON object",
    b'\xef\xbb\xbf' + as_json(): "unparseable: neither a JSON object nor a tab-separated line of 7 fields",
    b"\x00\xff\xfe": "not_utf8: the value is not valid UTF-8",
    b"": "empty: the value is empty",
    b"a\tb\tc": "malformed_tsv: expected 7 tab-separated fields, got 3",
    f"{EVENT['timestamp']}.0\tGoogle\tpage_view\t\tVisitor-1\tPage-1\tKettle".encode():
        "wrong_type: timestamp (expected integer, got string)",
}
VALID = [as_json(), as_json(prev_page=None), as_json(prev_page=..., extra={"nested": [1, 2]}),
         as_json(product="Kettle é 😀 \"quoted\""),
         f"{EVENT['timestamp']}\tGoogle\tpage_view\t\tVisitor-1\tPage-1\tKettle\r\n".encode()]


def test_outside_producer_malformed_shapes_are_quarantined_with_their_reason(isolated: Settings, spark) -> None:
    producer = KafkaProducer(bootstrap_servers=isolated.kafka_bootstrap)
    for i, value in enumerate([*MALFORMED, *VALID]):
        producer.send(isolated.topic, key=f"k{i}".encode(), value=value, partition=i % 3)
    producer.flush()
    producer.close()

    bounded(isolated)

    landed_n, quarantined_n = assert_exactly_once(spark, isolated)
    assert (landed_n, quarantined_n) == (len(VALID), len(MALFORMED))
    quarantined = {bytes(r.value or b""): r.reason for r in
                   spark.read.parquet(isolated.uri(isolated.quarantine_path)).collect()}
    assert quarantined == MALFORMED
    for value, reason in MALFORMED.items():  # the Python validator gives the same reason
        assert schema.check_value(value) == reason

    landed = spark.read.parquet(isolated.uri(isolated.landing_path)).collect()
    expected = sorted((schema.parse_value(v)["product"], schema.parse_value(v).get("prev_page") or "") for v in VALID)
    assert sorted((r.product, r.prev_page or "") for r in landed) == expected
    assert {r.timestamp for r in landed} == {EVENT["timestamp"]}
