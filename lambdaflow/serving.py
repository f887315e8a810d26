"""The serving query: batch views where the batch layer covers an hour, speed views everywhere else.

``lambdaflow query activity|visitors --product P --from A --to B [--json]`` and :func:`query`.

Cut-over rule: an hour is served by the batch layer when it has an hour record in the current batch
version (:func:`lambdaflow.batch.recorded_hours`; these are the hours up to the batch watermark, plus
any hour an out-of-order backfill has already recomputed beyond it), and by the speed layer
otherwise. Each hour is looked up in exactly one layer, so no hour is counted twice or missed.
Every row says which layer served it. An hour whose last batch recomputation failed (a failure
record, :func:`lambdaflow.batch.failed_hours`) is served by the speed layer, its rows flagged
``"batch_failed": true``, until a recomputation of it succeeds.

How it reads: without a JVM where it can. Batch views are one small Parquet file per view and hour,
downloaded through WebHDFS and read with pyarrow. Speed activity partials (one small file per
committed micro-batch and hour) are downloaded the same way, in parallel, and summed. Speed unique
visitors are HyperLogLog sketches written by Spark's ``hll_sketch_agg``; only Spark can merge them,
so for visitors over speed hours the query uses the SparkSession it is given, or starts a local one
(a few seconds). The speed layer's unique visitors carry the sketch's error: about 1.6 % relative
standard error for ``lg_config_k=12`` (:func:`lambdaflow.views.hll_relative_error`).

A query that runs while a full recomputation switches versions may find the old version's files
gone and miss those hours; run it again.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from lambdaflow import batch, hdfs
from lambdaflow.config import Settings
from lambdaflow.errors import UserError

if TYPE_CHECKING:
    from hdfs import InsecureClient
    from pyspark.sql import SparkSession

VIEW_NAMES = {"activity": "activity_by_product", "visitors": "visitors_by_product"}
VALUE_COLUMNS = {"activity_by_product": list(batch.COUNT_COLUMNS), "visitors_by_product": ["unique_visitors"]}


def _batch_rows(c: "InsecureClient", settings: Settings, view: str, version: int, product: str,
                hours: list[int]) -> list[dict]:
    rows = []
    for hour in hours:
        table = batch.read_parquet_dir(c, batch.view_path(settings, view, version, hour))
        for row in table.to_pylist() if table is not None else []:
            if row["product"] == product:
                rows.append({"product": product, "timestamp_hour": hour,
                             **{col: row[col] for col in VALUE_COLUMNS[view]}, "layer": "batch"})
    return rows


def _speed_activity_rows(c: "InsecureClient", settings: Settings, product: str, hours: list[int]) -> list[dict]:
    view = "activity_by_product"
    rows = []
    for hour in hours:
        table = batch.read_parquet_dir(c, f"{settings.speed_root}/{view}/timestamp_hour={hour}")
        partials = [r for r in (table.to_pylist() if table is not None else []) if r["product"] == product]
        if partials:
            rows.append({"product": product, "timestamp_hour": hour,
                         **{col: sum(int(r[col]) for r in partials) for col in batch.COUNT_COLUMNS},
                         "layer": "speed"})
    return rows


def _speed_visitors_rows(spark: "SparkSession", settings: Settings, product: str, hours: list[int]) -> list[dict]:
    from pyspark.sql import functions as F

    from lambdaflow import views

    root = f"{settings.speed_root}/visitors_by_product"
    paths = [settings.uri(f"{root}/timestamp_hour={h}") for h in hours]
    partials = (spark.read.schema("product string, visitors_sketch binary, timestamp_hour long")
                .option("basePath", settings.uri(root)).parquet(*paths).where(F.col("product") == product))
    return [{"product": product, "timestamp_hour": r["timestamp_hour"], "unique_visitors": r["unique_visitors"],
             "layer": "speed"} for r in views.speed_visitors_view(partials).collect()]


def query(spark: "SparkSession | None", settings: Settings, view: str, product: str, start_ms: int,
          end_ms: int, client: "InsecureClient | None" = None) -> list[dict]:
    """One row per hour with data for ``product`` in the hours overlapping [start_ms, end_ms).

    ``view`` is ``activity`` / ``visitors`` (or the full view name). Rows carry the view's columns,
    ``timestamp_hour`` (epoch ms) and ``layer`` ("batch" or "speed"), in hour order. ``spark`` is used
    only for speed-layer visitors; when None and needed, a local session is started and stopped.
    """
    view = VIEW_NAMES.get(view, view)
    if view not in VALUE_COLUMNS:
        raise UserError(f"unknown view {view!r}; choose one of {', '.join(VIEW_NAMES)}")
    c = client or hdfs.client(settings)
    store = batch.WebHdfsStore(c)
    version = batch.current_version(store, settings)
    failed = batch.failed_hours(store, settings, version)
    covered = batch.recorded_hours(store, settings, version) - failed
    hours = batch.hours_between(start_ms, end_ms)
    rows = _batch_rows(c, settings, view, version, product, [h for h in hours if h in covered])
    speed_present = {h for h in map(batch.partition_hour, hdfs.list_names(c, f"{settings.speed_root}/{view}"))
                     if h is not None}
    speed_hours = [h for h in hours if h not in covered and h in speed_present]
    if view == "activity_by_product":
        rows += _speed_activity_rows(c, settings, product, speed_hours)
    elif speed_hours:
        own = spark is None
        if own:
            from lambdaflow.spark import session

            spark = session("lambdaflow-query", settings, master="local[1]")
        try:
            rows += _speed_visitors_rows(spark, settings, product, speed_hours)
        finally:
            if own:
                spark.stop()
    for row in rows:
        if row["timestamp_hour"] in failed:
            row["batch_failed"] = True
    return sorted(rows, key=lambda r: r["timestamp_hour"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("view", choices=sorted(VIEW_NAMES),
                        help="activity (activity_by_product) or visitors (visitors_by_product)")
    parser.add_argument("--product", required=True, help="the product, e.g. \"Product 12\"")
    parser.add_argument("--from", dest="start", required=True, type=batch.parse_time,
                        help="start (ISO 8601, UTC); every hour overlapping [FROM, TO) is answered")
    parser.add_argument("--to", dest="end", required=True, type=batch.parse_time, help="end (ISO 8601, exclusive)")
    parser.add_argument("--json", action="store_true", help='print one JSON document {"rows": [...]}')


def run(args: argparse.Namespace) -> int:
    """``lambdaflow query``: print the rows as a table (with the batch watermark) or as JSON."""
    settings = Settings.from_env()
    start, end = batch.epoch_ms(args.start), batch.epoch_ms(args.end)
    if end <= start:
        raise UserError("--to must be after --from")
    rows = query(None, settings, args.view, args.product, start, end)
    if args.json:
        print(json.dumps({"rows": rows}))
        return 0
    view = VIEW_NAMES[args.view]
    columns = VALUE_COLUMNS[view]
    print(f"{'hour (UTC)':22}" + "".join(f"{c:>20}" for c in columns) + f"{'layer':>8}")
    for row in rows:
        print(f"{batch.iso(row['timestamp_hour']):22}" + "".join(f"{row[c]:>20}" for c in columns)
              + f"{row['layer']:>8}" + ("  (batch recomputation failed)" if row.get("batch_failed") else ""))
    if view == "activity_by_product":
        print(f"{'total':22}" + "".join(f"{sum(r[c] for r in rows):>20}" for c in columns))
    watermark = batch.state(batch.web_store(settings), settings)["watermark_iso"]
    print(f"{args.product}: {len(rows)} hour(s) with data; batch watermark {watermark or 'none'} "
          f"(hours recomputed by the batch layer are served from it, the rest from the speed layer)")
    return 0
