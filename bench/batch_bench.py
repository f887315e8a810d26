"""Batch layer benchmark: one-hour recomputation, against DuckDB and against the history kept.

``run(settings, spark)`` builds a synthetic landing zone under ``settings.landing_path`` (give it an
isolated root) and returns:

- ``batch.seconds``: recomputing one hour of ``rows`` events (default 5M) with 1 h of history: the
  whole job (read the hour's partition, de-duplicate, both views, write, swap, hour records).
- ``batch.duckdb_seconds``: DuckDB running the same aggregation (de-duplication on the Kafka
  coordinates, activity counts, exact distinct visitors) over a local copy of the same Parquet files
  (DuckDB has no HDFS client; the copy is not timed, nor are writes: a conservative comparison).
- ``batch.ratio_vs_duckdb``: the first divided by the second (goal <= 3).
- ``batch.history_1h_seconds`` / ``_6h_`` / ``_24h_``: the same one-hour recomputation with 1, 6 and 24
  hours in the landing zone, and ``batch.history_growth_ratio`` = 24 h / 1 h (goal <= 1.2: cost grows
  with the hour, not with history). History hours hold ``history_rows_per_hour`` events each, in
  ``history_files_per_hour`` files, like a streaming ingest's many small files.

The recomputations run as the deployment runs them: on the Spark Connect server (``lambdaflow up``
starts it), from a client process with no JVM of its own. ``python -m bench`` runs this section in
a child process (``python -m bench.batch_bench``), as a Spark Connect client cannot share a process
with the local SparkSession the other sections use. The synthetic hours carry a commit (offset
ranges and rows per hour, :func:`write_manifest`) as ingested hours do, so the batch layer can prove
from the commit log that no Kafka record repeats and skips the census of offsets; the profile of
the best run (seconds per step of :func:`lambdaflow.batch.recompute_hours`) goes to
``latest-details.json`` (``batch.recompute_profile_s``).

Every timing is the best of ``repeats`` runs after one warm-up run. Landing data is generated with
``spark.range`` straight into ``timestamp_hour=<h>`` directories in the landing schema (no Kafka, no
ingest): about 30 s per 5M rows on 2 cores.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from lambdaflow import batch, hdfs, landing
from lambdaflow.config import Settings
from lambdaflow.storage import commit_log

HOUR = batch.HOUR_MS
DUCKDB_QUERIES = """
CREATE OR REPLACE TEMP TABLE landed AS
  SELECT DISTINCT ON (topic, kafka_partition, kafka_offset) product, action, visitor, {hour}::BIGINT AS timestamp_hour
  FROM read_parquet('{files}');
SELECT product, timestamp_hour,
       count(*) FILTER (WHERE action = 'purchase') AS purchase_count,
       count(*) FILTER (WHERE action = 'add_to_cart') AS add_to_cart_count,
       count(*) FILTER (WHERE action = 'page_view') AS page_view_count
  FROM landed GROUP BY product, timestamp_hour;
SELECT product, timestamp_hour, count(DISTINCT visitor) AS unique_visitors FROM landed GROUP BY product, timestamp_hour;
"""


def write_hour(spark, settings: Settings, hour: int, rows: int, files: int, first_offset: int) -> None:
    """``rows`` synthetic landed events of one hour, in ``files`` Parquet files, Kafka offsets from ``first_offset``."""
    from pyspark.sql import functions as F

    i = F.col("id")
    events = spark.range(rows).select(
        (F.lit(hour) + (i * HOUR / rows).cast("long")).alias("timestamp"),
        F.lit("https://example.org/").alias("referrer"),
        F.when(i % 20 == 0, "purchase").when(i % 20 < 6, "add_to_cart").otherwise("page_view").alias("action"),
        F.lit(None).cast("string").alias("prev_page"),
        F.concat(F.lit("visitor-"), ((i * 104_729) % 400_000).cast("string")).alias("visitor"),
        F.concat(F.lit("/page/"), (i % 15).cast("string")).alias("page"),
        F.concat(F.lit("Product "), ((i * 7_919) % 200).cast("string")).alias("product"),
        F.lit(settings.topic).alias("topic"),
        (i % 3).cast("int").alias("kafka_partition"),
        (F.lit(first_offset) + F.floor(i / 3)).cast("long").alias("kafka_offset"),
        F.current_timestamp().alias("kafka_timestamp"))
    events.repartition(files).write.mode("overwrite").parquet(settings.uri(batch.landing_hour_path(settings, hour)))
    write_manifest(settings, hour, rows, first_offset)


def write_manifest(settings: Settings, hour: int, rows: int, first_offset: int) -> None:
    """The commit of :func:`write_hour`'s rows, as the ingest would have written it: its offset
    ranges (record ``i`` is partition ``i % 3``, offset ``first_offset + i // 3``) and its rows per
    hour. The batch layer reads it to know that the hour holds each Kafka record once."""
    ranges = [landing.OffsetRange(p, first_offset, first_offset + len(range(p, rows, 3))) for p in range(min(3, rows))]
    document = landing.manifest_document(settings.topic, ranges, [], rows, 0, {hour: rows}, int(time.time() * 1000))
    name = f"{commit_log.manifests_dir(settings.landing_path)}/{landing.commit_key(ranges)}.json"
    if not commit_log.store_for(hdfs.client(settings)).create_new(name, landing.dumps(document)):
        raise RuntimeError(f"{name} exists already")


def _best(action, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return min(timings)


def _duckdb_seconds(settings: Settings, hour: int, repeats: int) -> float:
    import duckdb

    client = hdfs.client(settings, timeout=120)
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as local:
        source = batch.landing_hour_path(settings, hour)
        for name in filter(batch.is_data_file, client.list(source)):
            client.download(f"{source}/{name}", str(Path(local) / name))
        statements = [s for s in DUCKDB_QUERIES.format(hour=hour, files=f"{local}/*.parquet").split(";") if s.strip()]
        connection = duckdb.connect()

        def aggregate() -> None:
            for statement in statements:
                connection.execute(statement).fetchall()

        aggregate()  # warm-up
        return _best(aggregate, repeats)


def run(settings: Settings, spark, rows: int = 5_000_000, history_rows_per_hour: int = 200_000,
        history_files_per_hour: int = 30, repeats: int = 2, details: dict | None = None) -> dict:
    """The batch benchmark (see the module docstring); ``settings`` should have an isolated root.
    ``details`` receives the profile of the best one-hour recomputation (seconds per step)."""
    hour = batch.floor_hour(int(time.time() * 1000)) - 48 * HOUR
    write_hour(spark, settings, hour, rows, files=8, first_offset=0)
    profiles: list[tuple[float, dict]] = []

    def recompute() -> None:
        profile: dict = {}
        started = time.perf_counter()
        records = batch.recompute_hours(spark, settings, 1, [hour], log=lambda _: None, profile=profile)
        profiles.append((time.perf_counter() - started, profile))
        assert records[0]["landed_rows"] == rows, records

    recompute()  # warm-up: JIT, connections
    timings = {1: _best(recompute, repeats)}
    if details is not None:
        details["recompute_profile_s"] = min(profiles[1:], key=lambda p: p[0])[1]
    duckdb_seconds = _duckdb_seconds(settings, hour, repeats)
    offset = rows
    for history in (6, 24):
        for back in range(len(batch.landed_hours(batch.BatchFs(settings), settings)), history):
            write_hour(spark, settings, hour - back * HOUR, history_rows_per_hour, history_files_per_hour, offset)
            offset += history_rows_per_hour
        timings[history] = _best(recompute, repeats)
    return {
        "batch.rows": rows,
        "batch.seconds": round(timings[1], 3),
        "batch.duckdb_seconds": round(duckdb_seconds, 3),
        "batch.ratio_vs_duckdb": round(timings[1] / duckdb_seconds, 2),
        "batch.history_1h_seconds": round(timings[1], 3),
        "batch.history_6h_seconds": round(timings[6], 3),
        "batch.history_24h_seconds": round(timings[24], 3),
        "batch.history_growth_ratio": round(timings[24] / timings[1], 2),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.batch_bench --root R --topic T [--scale small] --out FILE``: the section in a
    process of its own, on the Spark Connect server; writes ``{"figures": ..., "details": ...}``."""
    import argparse
    import json

    from lambdaflow.spark import connect_session

    parser = argparse.ArgumentParser(prog="python -m bench.batch_bench")
    parser.add_argument("--root", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--scale", default="full", choices=["full", "small"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--backfill", action="store_true", help="also the backfill benchmark (bench.backfill_bench)")
    args = parser.parse_args(argv)
    settings = Settings.from_env().replace(root=args.root, topic=args.topic)
    small = args.scale == "small"
    spark = connect_session(settings)
    details: dict = {}
    try:
        figures = run(settings, spark, details=details,
                      **({"rows": 500_000, "history_rows_per_hour": 50_000, "repeats": 1} if small else {}))
        if args.backfill:
            from bench import backfill_bench

            figures.update(backfill_bench.run(settings.replace(root=f"{args.root}/backfill",
                                                               topic=f"{args.topic}-backfill"),
                                              spark, details=details,
                                              **({"hours": 6, "rows_per_busy_hour": 20_000} if small else {})))
    finally:
        spark.stop()
    with open(args.out, "w") as out:
        json.dump({"figures": figures, "details": details}, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
