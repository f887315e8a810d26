"""Parsing and validation of Kafka records into landed and quarantined rows (local SparkSession)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from lambdaflow import events
from lambdaflow.ingest_transforms import after_positions, for_commit, landed_rows, parse_records, quarantined_rows

KAFKA_TIME = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)
EVENT = {"timestamp": 1795600000000, "referrer": "Internal", "action": "purchase", "prev_page": "Page-2",
         "visitor": "Visitor-7", "page": "Page-3", "product": "Blue Kettle"}


def records(spark, values: list[bytes | None]):
    rows = [(b"k", v, "weblogs", i % 3, i, KAFKA_TIME, 0) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, "key binary, value binary, topic string, partition int, offset long, "
                                       "timestamp timestamp, timestampType int")


def reasons(spark, values: list[bytes | None]) -> list[str | None]:
    parsed = parse_records(records(spark, values)).orderBy("kafka_offset")
    return [r.reason for r in parsed.collect()]


def as_json(**changes) -> bytes:
    obj = {**EVENT, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


def test_valid_json_and_tsv_land_with_the_same_fields(spark) -> None:
    tsv = "\t".join(str(EVENT[f]) for f in events.FIELDS).encode()
    landed = landed_rows(parse_records(records(spark, [as_json(), tsv]))).orderBy("kafka_offset").collect()
    assert len(landed) == 2
    for row in landed:
        assert (row.timestamp, row.referrer, row.action, row.prev_page, row.visitor, row.page, row.product) == tuple(
            EVENT[f] for f in events.FIELDS)
        assert row.timestamp_hour == 1795600000000 - 1795600000000 % 3_600_000


def test_tsv_empty_prev_page_is_null(spark) -> None:
    tsv = b"1795600000000\tGoogle\tpage_view\t\tVisitor-1\tPage-1\tBlue Kettle"
    [row] = landed_rows(parse_records(records(spark, [tsv]))).collect()
    assert row.prev_page is None


@pytest.mark.parametrize("value, reason", [
    (b"", "empty"),
    (None, "empty"),
    (events.GARBAGE, "not_utf8"),
    (b"junk", "unparseable"),
    (b'{"timestamp": 17', "malformed_json"),
    (as_json() + b" trailing", "malformed_json"),
    (as_json(visitor=...), "missing_field: visitor"),
    (as_json(product=""), "empty_field: product"),
    (as_json(product={"a": 1}), "wrong_type: product (expected string, got object)"),
    (as_json(product=["a"]), "wrong_type: product (expected string, got array)"),
    (as_json(page=7), "wrong_type: page (expected string, got integer)"),
    (as_json(referrer=True), "wrong_type: referrer (expected string, got boolean)"),
    (as_json(timestamp="yesterday"), "wrong_type: timestamp (expected integer, got string)"),
    (as_json(timestamp="1795600000000"), "wrong_type: timestamp (expected integer, got string)"),
    (as_json(timestamp=1.5), "wrong_type: timestamp (expected integer, got number)"),
    (as_json(action="refund"), "unknown_action: action 'refund'"),
    (as_json(timestamp=0), "bad_timestamp: timestamp 0"),
    (as_json(timestamp=int(KAFKA_TIME.timestamp() * 1000) + 2 * 86_400_000), "bad_timestamp"),
    (b"1795600000000\tGoogle\tpage_view\tx", "malformed_tsv: expected 7 tab-separated fields, got 4"),
])
def test_each_kind_of_bad_record_gets_its_reason(spark, value, reason) -> None:
    [got] = reasons(spark, [value])
    assert got is not None and got.startswith(reason), got


def test_every_injected_bad_kind_is_quarantined(spark) -> None:
    import random

    event = events.Event(**EVENT)
    generator_values = [events.malformed(kind, event, random.Random(1)) for kind in events.BAD_KINDS]
    assert all(r is not None for r in reasons(spark, generator_values))


def test_quarantine_keeps_raw_key_value_and_coordinates(spark) -> None:
    parsed = parse_records(records(spark, [as_json(), b"junk"]))
    [bad] = quarantined_rows(parsed).collect()
    assert (bad.key, bytes(bad.value), bad.topic, bad.kafka_partition, bad.kafka_offset) == (
        bytearray(b"k"), b"junk", "weblogs", 1, 1)
    assert landed_rows(parsed).count() == 1


def test_the_commits_cache_keeps_raw_bytes_of_quarantined_rows_only(spark) -> None:
    parsed = for_commit(parse_records(records(spark, [as_json(), b"junk", as_json(action="jump")])))
    rows = sorted(parsed.collect(), key=lambda r: r.kafka_offset)
    assert [(r.key, r.value) for r in rows[:1]] == [(None, None)]
    assert [(bytes(r.key), bytes(r.value)) for r in rows[1:]] == [(b"k", b"junk"), (b"k", as_json(action="jump"))]
    [landed] = landed_rows(parsed).collect()
    assert landed.asDict() == landed_rows(parse_records(records(spark, [as_json()]))).first().asDict()
    assert sorted(bytes(r.value) for r in quarantined_rows(parsed).collect()) == sorted([as_json(action="jump"), b"junk"])


def test_after_positions_drops_offsets_already_landed(spark) -> None:
    parsed = parse_records(records(spark, [as_json()] * 9))  # partitions 0,1,2 at offsets 0..8
    kept = after_positions(parsed, {0: 4, 1: 10}).select("kafka_partition", "kafka_offset").collect()
    assert sorted(tuple(r) for r in kept) == [(0, 6), (2, 2), (2, 5), (2, 8)]


def test_after_positions_filters_only_a_batch_that_begins_below_what_landed(spark) -> None:
    parsed = parse_records(records(spark, [as_json()] * 9))  # partitions 0,1,2 at offsets 0..8
    # a steady batch begins where the landing zone ends: the plan is untouched (no per-batch literal
    # for the code generator to compile anew)
    assert after_positions(parsed, {0: 4, 1: 10}, start={0: 4, 1: 10, 2: 0}) is parsed
    # partition 1 begins below its landing position (a replay): only its records before it go
    kept = after_positions(parsed, {0: 4, 1: 10}, start={0: 4, 1: 7, 2: 0}).select(
        "kafka_partition", "kafka_offset").collect()
    assert sorted(tuple(r) for r in kept) == [(0, 0), (0, 3), (0, 6), (2, 2), (2, 5), (2, 8)]
    # a partition the batch's start does not name is filtered as when the start is unknown
    kept = after_positions(parsed, {0: 4}, start={1: 0}).select("kafka_partition", "kafka_offset").collect()
    assert sorted(kept) == sorted(after_positions(parsed, {0: 4}).select("kafka_partition", "kafka_offset").collect())


def test_batch_summary_gives_bounds_hours_reasons_and_each_views_partial(spark) -> None:
    import io

    import pyarrow.parquet as pq
    from pyspark.sql import functions as F
    from pyspark.testing import assertDataFrameEqual

    from lambdaflow import views
    from lambdaflow.ingest_transforms import batch_summary, read_summary, speed_partial_files

    values = [as_json(action=a, visitor=v, product=p, timestamp=t)
              for a, v, p, t in [("purchase", "v1", "p1", 1_700_000_000_000), ("page_view", "v2", "p1", 1_700_000_000_000),
                                 ("page_view", "v1", "p1", 1_700_000_100_000), ("add_to_cart", "v3", "p2", 1_700_004_000_000)]]
    values += [b"not json", as_json(action="fly")]
    parsed = parse_records(records(spark, values))  # partitions 0,1,2 at offsets 0..5
    summary = read_summary(batch_summary(parsed, [0, 1], 12).collect(), [0, 1])
    assert summary.bounds == {0: (0, 3), 1: (1, 4), 2: (2, 5)}  # partition 2 reported though not listed
    assert summary.hours == {1_699_999_200_000: 3, 1_700_002_800_000: 1}
    assert summary.reasons == {"unparseable": 1, "unknown_action": 1}

    landed = landed_rows(parsed)
    partials = spark.createDataFrame(summary.partials)
    assertDataFrameEqual(partials.select(*views.ACTIVITY_COLUMNS), views.speed_activity_partial(landed))
    estimate = F.hll_sketch_estimate("visitors_sketch").alias("estimate")
    assertDataFrameEqual(partials.select(*views.GROUP_KEYS, estimate),
                         views.speed_visitors_partial(landed, 12).select(*views.GROUP_KEYS, estimate))

    files = speed_partial_files(summary.partials)
    assert sorted(files) == [f"{view}/timestamp_hour={h}/part-00000.parquet"
                             for view in ("activity_by_product", "visitors_by_product")
                             for h in (1_699_999_200_000, 1_700_002_800_000)]
    activity = pq.read_table(io.BytesIO(files["activity_by_product/timestamp_hour=1699999200000/part-00000.parquet"]))
    assert activity.column_names == ["product", *views.COUNT_COLUMNS]
    assert activity.to_pylist() == [{"product": "p1", "purchase_count": 1, "add_to_cart_count": 0,
                                     "page_view_count": 2}]


def test_only_the_character_scan_runs_outside_compiled_code(spark) -> None:
    # Spark cannot compile a higher-order function; a projection holding one is interpreted whole.
    # The parse keeps the scan in a projection of its own so that the fields and checks are compiled.
    parsed = parse_records(records(spark, [as_json()]))
    plan = parsed._jdf.queryExecution().executedPlan().toString().splitlines()
    interpreted = [line for line in plan if line.lstrip(" :+-").startswith("Project")]
    assert len(interpreted) == 1, "\n".join(plan)
    assert "aggregate(" in interpreted[0] and "variant_get" not in interpreted[0], interpreted[0]
