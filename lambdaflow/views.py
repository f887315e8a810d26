"""The views of the lambda architecture, as pure transformations DataFrame -> DataFrame.

Both layers compute the same two views from landed events (ARCHITECTURE.md, "views"):

- ``activity_by_product(product, timestamp_hour, purchase_count, add_to_cart_count, page_view_count)``
- ``visitors_by_product(product, timestamp_hour, unique_visitors)``

The **batch layer** computes them exactly (:func:`activity_by_product`, :func:`visitors_by_product`
with an exact distinct count) from de-duplicated landed events (:func:`dedupe_landed`).

The **speed layer** cannot recount the whole hour on every micro-batch, so each committed batch
writes *partial aggregates* that merge: counts add up (:func:`speed_activity_partial`,
:func:`speed_activity_view`), and distinct visitors are kept as HyperLogLog sketches
(:func:`speed_visitors_partial` = Spark's ``hll_sketch_agg``; :func:`speed_visitors_view` =
``hll_sketch_estimate(hll_union_agg(...))``). Late events simply merge into their hour.

Error of the sketch: Spark's HLL (Apache DataSketches, HLL_4) has a relative standard error of about
``1.04 / sqrt(2**lg_config_k)``; for the default ``lg_config_k=12`` (4096 registers) that is
1.04 / 64 = **1.6 %** (one standard deviation; 3.3 % at 95 %, 4.9 % at 99.7 %). Below a few hundred
distinct visitors the sketch is still in its exact list/set mode, so small counts come out exact.
Merging sketches loses nothing: the union of the per-batch sketches has the same error as one sketch
over the whole hour.
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

GROUP_KEYS = ["product", "timestamp_hour"]
LANDING_KEY = ["topic", "kafka_partition", "kafka_offset"]
ACTIONS = {"purchase": "purchase_count", "add_to_cart": "add_to_cart_count", "page_view": "page_view_count"}
COUNT_COLUMNS = list(ACTIONS.values())
DEFAULT_LG_CONFIG_K = 12

ACTIVITY_COLUMNS = [*GROUP_KEYS, *COUNT_COLUMNS]
VISITORS_COLUMNS = [*GROUP_KEYS, "unique_visitors"]


def hll_relative_error(lg_config_k: int = DEFAULT_LG_CONFIG_K) -> float:
    """The sketch's relative standard error (one sigma): 1.04 / sqrt(2**lg_config_k)."""
    return 1.04 / math.sqrt(2 ** lg_config_k)


def dedupe_landed(events: DataFrame) -> DataFrame:
    """Landed events with each Kafka record (topic, partition, offset) once.

    The landing zone is exact at rest; this is the batch layer's defence against a replayed
    range that landed twice (e.g. files seen mid-commit), so a duplicate can never be counted.
    """
    return events.dropDuplicates(LANDING_KEY)


def record_census(events: DataFrame) -> DataFrame:
    """Per (topic, kafka_partition): landed ``rows`` and distinct Kafka ``records`` (equal when no duplicate).

    Counts distinct offsets with Spark's offset bitmaps (``bitmap_construct_agg`` over 32768-offset
    buckets), which aggregate map-side: no shuffle of the rows, unlike :func:`dedupe_landed`.
    """
    offset = F.col("kafka_offset")
    return (events.groupBy("topic", "kafka_partition", F.bitmap_bucket_number(offset).alias("bucket"))
            .agg(F.count(F.lit(1)).alias("rows"),
                 F.bitmap_count(F.bitmap_construct_agg(F.bitmap_bit_position(offset))).alias("records"))
            .groupBy("topic", "kafka_partition")
            .agg(F.sum("rows").cast("long").alias("rows"), F.sum("records").cast("long").alias("records")))


def _action_count(action: str) -> Column:
    return F.count(F.when(F.col("action") == action, True)).cast("long").alias(ACTIONS[action])


def activity_by_product(events: DataFrame) -> DataFrame:
    """Exact counts of each action per (product, timestamp_hour)."""
    return events.groupBy(*GROUP_KEYS).agg(*(_action_count(a) for a in ACTIONS)).select(ACTIVITY_COLUMNS)


def visitors_by_product(events: DataFrame) -> DataFrame:
    """Exact number of distinct visitors per (product, timestamp_hour)."""
    return (events.groupBy(*GROUP_KEYS)
            .agg(F.countDistinct("visitor").cast("long").alias("unique_visitors"))
            .select(VISITORS_COLUMNS))


def speed_activity_partial(events: DataFrame) -> DataFrame:
    """One micro-batch's activity counts; partials of the same hour add up (:func:`speed_activity_view`)."""
    return activity_by_product(events)


def speed_visitors_partial(events: DataFrame, lg_config_k: int = DEFAULT_LG_CONFIG_K) -> DataFrame:
    """One micro-batch's visitors per (product, timestamp_hour) as an HLL sketch ``visitors_sketch`` (binary).

    ``lg_config_k`` sets the sketch's size and error (see :func:`hll_relative_error`).
    """
    return (events.groupBy(*GROUP_KEYS)
            .agg(F.hll_sketch_agg("visitor", lg_config_k).alias("visitors_sketch"))
            .select(*GROUP_KEYS, "visitors_sketch"))


def speed_activity_view(partials: DataFrame) -> DataFrame:
    """The speed layer's activity view: the sum of the partials of each (product, timestamp_hour)."""
    return (partials.groupBy(*GROUP_KEYS)
            .agg(*(F.sum(c).cast("long").alias(c) for c in COUNT_COLUMNS))
            .select(ACTIVITY_COLUMNS))


def speed_visitors_view(partials: DataFrame) -> DataFrame:
    """The speed layer's visitors view: the estimate of the union of the partials' sketches.

    Sketches written with different ``lg_config_k`` still merge (at the coarser precision).
    """
    union = F.hll_union_agg("visitors_sketch", True)
    return (partials.groupBy(*GROUP_KEYS)
            .agg(F.hll_sketch_estimate(union).cast("long").alias("unique_visitors"))
            .select(VISITORS_COLUMNS))


def exact_views(events: DataFrame, flags: dict[str, Column] | None = None) -> DataFrame:
    """Both exact views in one aggregation: per (product, timestamp_hour) the columns of
    :func:`activity_by_product` and of :func:`visitors_by_product`, plus ``rows`` (every event) and,
    for each ``flags`` name, the number of events for which that boolean column holds.

    One shuffle instead of two: events are first grouped by (product, timestamp_hour, visitor), which
    gives each visitor's action counts, then by (product, timestamp_hour), where the visitor groups
    are the distinct visitors (a null visitor is not counted, as ``countDistinct`` does not).
    """
    flags = flags or {}
    per_visitor = events.groupBy(*GROUP_KEYS, "visitor").agg(
        *(_action_count(a) for a in ACTIONS), F.count(F.lit(1)).cast("long").alias("rows"),
        *(F.count(F.when(flag, True)).cast("long").alias(name) for name, flag in flags.items()))
    return (per_visitor.groupBy(*GROUP_KEYS)
            .agg(*(F.sum(c).cast("long").alias(c) for c in [*COUNT_COLUMNS, "rows", *flags]),
                 F.count("visitor").cast("long").alias("unique_visitors"))
            .select(*ACTIVITY_COLUMNS, "unique_visitors", "rows", *flags))
