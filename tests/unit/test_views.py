"""The views' pure transformations against expectations computed independently in plain Python."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest
from pyspark.testing import assertDataFrameEqual, assertSchemaEqual

from lambdaflow import views

HOUR = 3_600_000
H0 = 1_795_950_000_000 - 1_795_950_000_000 % HOUR
ACTIONS = ["page_view"] * 8 + ["add_to_cart"] * 3 + ["purchase"]
EVENT_SCHEMA = ("topic string, kafka_partition int, kafka_offset long, timestamp_hour long, "
                "product string, action string, visitor string")


def make_events(n: int, seed: int = 7, products: int = 5, visitors: int = 40, hours: int = 3) -> list[tuple]:
    rng = random.Random(seed)
    return [("weblogs", i % 3, i // 3, H0 + rng.randrange(hours) * HOUR, f"Product {rng.randrange(products)}",
             rng.choice(ACTIONS), f"visitor-{rng.randrange(visitors)}") for i in range(n)]


def expected_activity(events: list[tuple]) -> list[tuple]:
    counts: dict[tuple, Counter] = defaultdict(Counter)
    for _, _, _, hour, product, action, _ in events:
        counts[(product, hour)][action] += 1
    return [(p, h, c["purchase"], c["add_to_cart"], c["page_view"]) for (p, h), c in counts.items()]


def expected_visitors(events: list[tuple]) -> list[tuple]:
    seen: dict[tuple, set] = defaultdict(set)
    for _, _, _, hour, product, _, visitor in events:
        seen[(product, hour)].add(visitor)
    return [(p, h, len(v)) for (p, h), v in seen.items()]


ACTIVITY_SCHEMA = ("product string, timestamp_hour long, purchase_count long, add_to_cart_count long, "
                   "page_view_count long")
VISITORS_SCHEMA = "product string, timestamp_hour long, unique_visitors long"


@pytest.fixture(scope="module")
def events() -> list[tuple]:
    return make_events(3000)


def test_activity_by_product_counts_each_action(spark, events) -> None:
    actual = views.activity_by_product(spark.createDataFrame(events, EVENT_SCHEMA))
    assertSchemaEqual(actual.schema, spark.createDataFrame([], ACTIVITY_SCHEMA).schema, ignoreNullable=True)
    assertDataFrameEqual(actual, spark.createDataFrame(expected_activity(events), ACTIVITY_SCHEMA))


def test_visitors_by_product_counts_distinct_visitors_exactly(spark, events) -> None:
    actual = views.visitors_by_product(spark.createDataFrame(events, EVENT_SCHEMA))
    assertSchemaEqual(actual.schema, spark.createDataFrame([], VISITORS_SCHEMA).schema, ignoreNullable=True)
    assertDataFrameEqual(actual, spark.createDataFrame(expected_visitors(events), VISITORS_SCHEMA))


def test_dedupe_landed_keeps_each_kafka_record_once(spark, events) -> None:
    replayed = events[100:400]  # an offset range that landed twice
    same_payload_other_offset = [(t, p, o + 10_000, h, pr, a, v) for t, p, o, h, pr, a, v in events[:50]]
    landed = events + replayed + same_payload_other_offset
    deduped = views.dedupe_landed(spark.createDataFrame(landed, EVENT_SCHEMA))
    assert deduped.count() == len(events) + len(same_payload_other_offset)
    assertDataFrameEqual(views.activity_by_product(deduped),
                         spark.createDataFrame(expected_activity(events + same_payload_other_offset),
                                               ACTIVITY_SCHEMA))


def test_speed_activity_partials_add_up_to_the_exact_view(spark, events) -> None:
    batches = [events[i:i + 700] for i in range(0, len(events), 700)]  # micro-batches
    partials = None
    for chunk in batches:
        partial = views.speed_activity_partial(spark.createDataFrame(chunk, EVENT_SCHEMA))
        partials = partial if partials is None else partials.unionByName(partial)
    assertDataFrameEqual(views.speed_activity_view(partials),
                         spark.createDataFrame(expected_activity(events), ACTIVITY_SCHEMA))


def test_speed_visitor_sketches_merge_exactly_at_small_cardinality(spark, events) -> None:
    # Below a few hundred distinct visitors the HLL sketch is still exact (list/set mode).
    partials = None
    for chunk in (events[:1000], events[1000:2200], events[2200:]):
        partial = views.speed_visitors_partial(spark.createDataFrame(chunk, EVENT_SCHEMA))
        assert dict(partial.dtypes)["visitors_sketch"] == "binary"
        partials = partial if partials is None else partials.unionByName(partial)
    assertDataFrameEqual(views.speed_visitors_view(partials),
                         spark.createDataFrame(expected_visitors(events), VISITORS_SCHEMA))


def test_speed_visitor_estimate_is_within_the_stated_error(spark) -> None:
    # 20,000 distinct visitors of one product and hour, over 4 micro-batches that overlap by half.
    rows = [("weblogs", 0, i, H0, "Product 1", "page_view", f"v{i % 20_000}") for i in range(40_000)]
    partials = None
    for start in range(0, 40_000, 10_000):
        partial = views.speed_visitors_partial(spark.createDataFrame(rows[start:start + 10_000], EVENT_SCHEMA), 12)
        partials = partial if partials is None else partials.unionByName(partial)
    estimate = views.speed_visitors_view(partials).collect()[0]["unique_visitors"]
    sigma = views.hll_relative_error(12)
    assert sigma == pytest.approx(0.01625)
    assert abs(estimate - 20_000) <= 3 * sigma * 20_000, estimate


def test_record_census_counts_rows_and_distinct_kafka_records(spark, events) -> None:
    replayed = events[:90]  # 30 offsets of each partition landed twice
    far = [("weblogs", 0, 5_000_000_000 + i, H0, "Product 1", "page_view", "v") for i in range(3)]  # big offsets
    census = views.record_census(spark.createDataFrame(events + replayed + far, EVENT_SCHEMA))
    per_partition = Counter(p for _, p, *_ in events + far)
    assertDataFrameEqual(census, spark.createDataFrame(
        [("weblogs", p, n + 30, n) for p, n in per_partition.items()],
        "topic string, kafka_partition int, rows long, records long"))


def test_exact_views_in_one_aggregation_equal_both_views_and_count_rows_and_flags(spark) -> None:
    from pyspark.sql import functions as F

    events = make_events(3000, seed=13)
    df = spark.createDataFrame(events, EVENT_SCHEMA)
    both = views.exact_views(df, {"even_offsets": F.col("kafka_offset") % 2 == 0})
    assertDataFrameEqual(both.select(*views.ACTIVITY_COLUMNS), spark.createDataFrame(expected_activity(events),
                                                                                     ACTIVITY_SCHEMA))
    assertDataFrameEqual(both.select(*views.VISITORS_COLUMNS),
                         spark.createDataFrame(expected_visitors(events),
                                               "product string, timestamp_hour long, unique_visitors long"))
    rows, even = Counter(), Counter()
    for _, _, offset, hour, product, _, _ in events:
        rows[(product, hour)] += 1
        even[(product, hour)] += offset % 2 == 0
    assertDataFrameEqual(both.select("product", "timestamp_hour", "rows", "even_offsets"),
                         spark.createDataFrame([(p, h, n, even[(p, h)]) for (p, h), n in rows.items()],
                                               "product string, timestamp_hour long, rows long, even_offsets long"))
