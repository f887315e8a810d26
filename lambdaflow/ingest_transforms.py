"""Pure transformations of the streaming ingest: Kafka records -> landed rows | quarantined rows.

``parse_records`` turns the Kafka source's rows (key, value, topic, partition, offset, timestamp)
into one row per record with the event fields and a ``reason`` that is null for a valid event.
Both the contract's JSON object and the course's tab-separated line are accepted. Validation
(the same rules as ``lambdaflow.events.validate_event``): the value is not empty; it parses; every
required field is present; ``timestamp`` is an integer epoch-ms between 2000-01-01 and one day
after the record's Kafka timestamp (event time may not run ahead of send time); ``action`` is one
of page_view / add_to_cart / purchase.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from lambdaflow.events import ACTIONS, FIELDS, MAX_FUTURE_MS, MIN_TIMESTAMP_MS, REQUIRED_FIELDS

HOUR_MS = 3_600_000
EVENT_COLUMNS = ["timestamp", "referrer", "action", "prev_page", "visitor", "page", "product"]
KAFKA_COLUMNS = ["topic", "kafka_partition", "kafka_offset", "kafka_timestamp"]
LANDING_COLUMNS = [*EVENT_COLUMNS, "timestamp_hour", *KAFKA_COLUMNS]
QUARANTINE_COLUMNS = [*KAFKA_COLUMNS, "key", "value", "reason"]

# Every field read as text: a wrongly typed timestamp must be caught here, not turned into null.
_JSON_SCHEMA = StructType([StructField(f, StringType()) for f in FIELDS] + [StructField("_corrupt", StringType())])
_JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"}


def _first_reason(*cases: tuple[Column, str | Column]) -> Column:
    expr = None
    for condition, reason in cases:
        value = F.lit(reason) if isinstance(reason, str) else reason
        expr = F.when(condition, value) if expr is None else expr.when(condition, value)
    return expr


def parse_records(records: DataFrame) -> DataFrame:
    """Kafka source rows -> event fields + Kafka coordinates + key/value + ``reason`` (null = valid).

    Each value is parsed once: JSON objects by ``from_json``, other values split as TSV lines.
    """
    text = F.col("value").cast("string")
    staged = records.select(
        F.col("topic"),
        F.col("partition").cast("int").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.col("key"), F.col("value"),
        text.alias("_text"),
        F.coalesce(F.ltrim(text).startswith("{"), F.lit(False)).alias("_is_json"),
    ).select(
        "*",
        F.when(F.col("_is_json"), F.from_json("_text", _JSON_SCHEMA, _JSON_OPTIONS)).alias("_json"),
        F.when(~F.col("_is_json"), F.split("_text", "\t", -1)).alias("_tsv"),
    )

    def field(i: int, name: str) -> Column:
        from_tsv = F.try_element_at(F.col("_tsv"), F.lit(i + 1))
        if name == "prev_page":  # the course's TSV writes an empty field for "no previous page"
            from_tsv = F.when(from_tsv == "", F.lit(None)).otherwise(from_tsv)
        return F.when(F.col("_is_json"), F.col("_json")[name]).otherwise(from_tsv).alias(name)

    parsed = staged.select(
        *KAFKA_COLUMNS, "key", "value", "_is_json",
        F.col("_json")["_corrupt"].alias("_corrupt"),
        F.size("_tsv").alias("_tsv_fields"),
        *(field(i, name) for i, name in enumerate(FIELDS)),
    )
    ts_text = F.trim(F.col("timestamp"))
    parsed = parsed.withColumn("_ts", F.when(ts_text.rlike(r"^-?\d{1,18}$"), ts_text.cast("long")))
    ts = F.col("_ts")
    latest = (F.unix_millis(F.col("kafka_timestamp")) + F.lit(MAX_FUTURE_MS))
    missing = [(F.col(f).isNull() | (F.trim(F.col(f)) == ""), f"missing_field: {f}") for f in REQUIRED_FIELDS]
    reason = _first_reason(
        (F.col("value").isNull() | (F.length(F.col("value")) == 0), "empty"),
        (F.col("_is_json") & F.col("_corrupt").isNotNull(), "malformed_json"),
        (~F.col("_is_json") & (F.col("_tsv_fields") == 1), "unparseable: neither a JSON object nor a TSV line"),
        (~F.col("_is_json") & (F.col("_tsv_fields") != len(FIELDS)),
         F.concat(F.lit(f"malformed_tsv: expected {len(FIELDS)} fields, got "), F.col("_tsv_fields").cast("string"))),
        *missing,
        (ts.isNull(), "wrong_type: timestamp is not an integer epoch-ms"),
        (~F.col("action").isin(*ACTIONS), F.concat(F.lit("unknown_action: "), F.col("action"))),
        ((ts < F.lit(MIN_TIMESTAMP_MS)) | (ts > latest), "bad_timestamp: outside [2000-01-01, kafka time + 1 day]"),
    )
    return (parsed.withColumn("reason", reason)  # before the text timestamp is replaced by its number
            .withColumn("timestamp", ts)
            .withColumn("timestamp_hour", ts - F.pmod(ts, F.lit(HOUR_MS)))
            .drop("_is_json", "_corrupt", "_tsv_fields", "_ts"))


def landed_rows(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("reason").isNull()).select(*LANDING_COLUMNS)


def quarantined_rows(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("reason").isNotNull()).select(*QUARANTINE_COLUMNS)


def after_positions(records: DataFrame, positions: dict[int, int]) -> DataFrame:
    """Drop records at offsets the landing zone already holds (a replayed or overlapping range)."""
    if not positions:
        return records
    cutoff = F.lit(0)
    for partition, until in positions.items():
        cutoff = F.when(F.col("partition") == partition, F.lit(until)).otherwise(cutoff)
    return records.where(F.col("offset") >= cutoff)
