"""Accounting of a landing zone against its Kafka topic: every record landed or quarantined, each
(partition, offset) once. The check behind the demo's summary and every fault of ``make chaos``.

``account`` reads what is at rest (the landing zone's and the quarantine's Parquet files, the
``kafka_partition``/``kafka_offset`` columns every row carries) through a Spark session (the batch
layer's Spark Connect server, so no application of its own competes for a cluster's cores) and
compares it with the topic's offsets.
"""

from __future__ import annotations

from lambdaflow import hdfs, kafka_admin
from lambdaflow.config import Settings

COORDS = ("kafka_partition", "kafka_offset")


def _frames(spark, settings: Settings, client) -> dict[str, object]:
    out = {}
    for kind, path in (("landed", settings.landing_path), ("quarantined", settings.quarantine_path)):
        if client.status(path, strict=False) and any(not n.startswith("_") for n in client.list(path)):
            out[kind] = spark.read.parquet(settings.uri(path)).select(*COORDS)
    return out


def account(spark, settings: Settings, client=None) -> dict[str, int]:
    """``{"in_topic", "landed", "quarantined", "distinct", "duplicated", "missing", "outside"}``:
    records in the topic now (end minus beginning offsets), rows at rest in the landing zone and the
    quarantine, distinct (partition, offset) pairs among them, rows beyond one per pair, offsets of
    the topic found nowhere, and pairs outside the topic's offsets (neither should ever be non-zero)."""
    from pyspark.sql import functions as F

    client = client or hdfs.client(settings)
    ends = kafka_admin.end_offsets(settings)
    begins = kafka_admin.beginning_offsets(settings)
    in_topic = sum(ends.values()) - sum(begins.values())
    frames = _frames(spark, settings, client)
    counts = {kind: int(frame.count()) for kind, frame in frames.items()}
    landed, quarantined = counts.get("landed", 0), counts.get("quarantined", 0)
    if not frames:
        return {"in_topic": in_topic, "landed": 0, "quarantined": 0, "distinct": 0, "duplicated": 0,
                "missing": in_topic, "outside": 0}
    union = None
    for frame in frames.values():
        union = frame if union is None else union.unionByName(frame)
    pairs = union.groupBy(*COORDS).count()
    inside = F.lit(False)
    for partition, end in ends.items():
        inside = inside | ((F.col("kafka_partition") == partition)
                           & (F.col("kafka_offset") >= begins.get(partition, 0)) & (F.col("kafka_offset") < end))
    row = pairs.agg(F.count(F.lit(1)).alias("distinct"),
                    F.sum(F.when(inside, 1).otherwise(0)).alias("inside")).collect()[0]
    distinct, within = int(row["distinct"] or 0), int(row["inside"] or 0)
    return {"in_topic": in_topic, "landed": landed, "quarantined": quarantined, "distinct": distinct,
            "duplicated": landed + quarantined - distinct, "missing": in_topic - within,
            "outside": distinct - within}


def exactly_once(result: dict[str, int]) -> bool:
    """Every record of the topic at rest once: nothing missing, nothing twice, nothing foreign."""
    return result["duplicated"] == 0 and result["missing"] == 0 and result["outside"] == 0
