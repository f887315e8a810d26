"""Synthetic commits: a landing zone's history of committed micro-batches, written fast through the
storage layer (for benchmarks and for trying maintenance tools at scale).

A real history of 100,000 micro-batches takes a day of streaming; this module writes the same
*bookkeeping* in seconds, through the same calls the ingest makes:

- manifest documents come from :func:`lambdaflow.landing.manifest_document`, named by
  :func:`lambdaflow.landing.commit_key` over offset ranges that tile ``[first, end)`` of every
  partition without gaps or overlaps, in commit order (what a stream of micro-batches commits);
- all but the newest ``tail`` commits are folded into roll-ups with
  :func:`lambdaflow.storage.commit_log.roll_up` (``pending``: documents held in memory, as the
  ingest does every ``LAMBDAFLOW_ROLLUP_EVERY`` commits; here ``chunk`` commits per roll-up), so
  no manifest file is written for them;
- the newest ``tail`` commits are real manifest files ``_manifests/<key>.json`` created with the
  storage layer's create-if-absent, the uncovered tail a running ingest leaves between roll-ups.

What is *not* written: the landed data files the manifests name (``files``), and the Kafka records
the offsets stand for (the caller produces them when it wants lag to read 0). Speed-view partials
and quarantine files, one small real Parquet file per sampled commit and hour, come from
:func:`write_hour_partials`; merging them is :mod:`lambdaflow.storage.hour_merge`'s job.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from typing import Callable, Iterator

from lambdaflow import landing
from lambdaflow.storage import commit_log

HOUR_MS = 3_600_000
# Quarantine reason classes (lambdaflow.schema.Reason), weighted roughly as a producer's bad data.
REASONS = ("malformed_json", "wrong_type", "missing_field", "empty_field", "unparseable", "invalid_action")
REASON_WEIGHTS = (40, 20, 15, 10, 10, 5)
SPEED_VIEWS = ("activity_by_product", "visitors_by_product")

Progress = Callable[[str], None]


@dataclasses.dataclass
class History:
    """What :func:`write_history` wrote."""

    commits: int
    rolled_up: int
    tail: int
    rollups: int
    positions: dict[int, int]
    landed_rows: int
    quarantined_rows: int
    # Every commit's key by the hour it was committed in (to name per-commit partial files).
    keys_by_hour: dict[int, list[str]]


def commit_documents(topic: str, commits: int, start_ms: int, end_ms: int, end_offsets: dict[int, int],
                     first_offsets: dict[int, int] | None = None, seed: int = 0, epoch: int | None = 1,
                     quarantine_fraction: float = 0.02, late_fraction: float = 0.05,
                     roots: dict[str, str] | None = None) -> Iterator[tuple[str, dict]]:
    """``commits`` manifest documents ``(name, document)`` in commit order, committed at even steps
    over ``(start_ms, end_ms]``, whose ranges tile ``[first_offsets[p], end_offsets[p])`` per partition.

    Each micro-batch: the offsets of every partition that moved (a partition with fewer offsets than
    commits is absent from some), a seeded share of them quarantined under a reason class, the rest
    landed in the hour of its event time (a few seconds before the commit) and, for some batches, a
    late event or two in the previous hour. ``files`` lists the batch's landing file per event hour,
    one speed partial per view and hour and a quarantine file per arrival hour, as the ingest's
    manifests do (the files themselves are not written)."""
    if commits <= 0:
        raise ValueError("commits must be positive")
    first = {p: (first_offsets or {}).get(p, 0) for p in end_offsets}
    roots = roots or default_roots(f"/{topic}")
    rng = random.Random(seed)
    span = end_ms - start_ms
    for i in range(commits):
        ranges = []
        for p in sorted(end_offsets):
            total = end_offsets[p] - first[p]
            lo, hi = first[p] + total * i // commits, first[p] + total * (i + 1) // commits
            if hi > lo:
                ranges.append(landing.OffsetRange(p, lo, hi))
        if not ranges:  # fewer offsets than commits everywhere: an empty range keeps the key valid
            p = min(end_offsets)
            at = first[p] + (end_offsets[p] - first[p]) * i // commits
            ranges = [landing.OffsetRange(p, at, at)]
        committed_at = start_ms + span * (i + 1) // commits
        records = sum(r.count for r in ranges)
        quarantined = sum(1 for _ in range(records) if rng.random() < quarantine_fraction)
        reasons: dict[str, int] = {}
        for _ in range(quarantined):
            reason = rng.choices(REASONS, REASON_WEIGHTS)[0]
            reasons[reason] = reasons.get(reason, 0) + 1
        landed = records - quarantined
        event_hour = landing.hour_of(committed_at - rng.randint(500, 3000))
        hours: dict[int, int] = {}
        if landed:
            late = min(landed - 1, rng.randint(1, 2)) if landed > 1 and rng.random() < late_fraction else 0
            hours[event_hour] = landed - late
            if late:
                hours[event_hour - HOUR_MS] = late
        key = landing.commit_key(ranges)
        files = _files(key, epoch, hours, landing.hour_of(committed_at) if quarantined else None,
                       roots)
        yield f"{key}.json", landing.manifest_document(topic, ranges, files, landed, quarantined, hours,
                                                       committed_at, reasons, epoch=epoch)


def _files(key: str, epoch: int | None, hours: dict[int, int], arrival_hour: int | None,
           roots: dict[str, str]) -> list[dict]:
    """The staged -> final moves a real manifest of this batch lists (the files are not written)."""
    stage = f"{roots['landing']}/{landing.STAGING}/{landing.staging_name(key, epoch)}"
    out = []
    for kind, column, hour_list in [("landing", "timestamp_hour", sorted(hours)),
                                    *[(view, "timestamp_hour", sorted(hours)) for view in SPEED_VIEWS],
                                    ("quarantine", "arrival_hour", [arrival_hour] if arrival_hour is not None else [])]:
        for n, hour in enumerate(hour_list):
            out.append({"kind": kind,
                        "staged": f"{stage}/{kind}/{column}={hour}/part-00000-synthetic-{n}.c000.snappy.parquet",
                        "final": f"{roots[kind]}/{column}={hour}/part-{key}-{n}.snappy.parquet"})
    return out


def default_roots(landing_path: str, speed_root: str | None = None, quarantine_path: str | None = None) -> dict:
    """Where a manifest's ``files`` point: the landing zone, the speed views, the quarantine."""
    speed_root = speed_root or f"{landing_path}/../speed"
    return {"landing": landing_path, **{v: f"{speed_root}/{v}" for v in SPEED_VIEWS},
            "quarantine": quarantine_path or f"{landing_path}/../quarantine"}


def write_history(fs_or_client, landing_path: str, topic: str, commits: int, start_ms: int, end_ms: int,
                  end_offsets: dict[int, int], first_offsets: dict[int, int] | None = None, tail: int = 50,
                  chunk: int = 10_000, seed: int = 0, epoch: int | None = 1, roots: dict[str, str] | None = None,
                  progress: Progress | None = None) -> History:
    """Append ``commits`` synthetic micro-batches to the commit log of ``landing_path`` (a JvmFs, a
    WebHDFS client or a :class:`~lambdaflow.storage.commit_log.LogStore`): roll-ups of ``chunk``
    commits each for all but the newest ``tail``, which become real manifest files.

    The offsets continue the landing zone's log: pass ``first_offsets`` = its current positions
    when appending to an existing history. Manifests already in the tail are rolled up with the
    first chunk, as the ingest's next roll-up would."""
    store = commit_log.store_for(fs_or_client)
    tail = max(0, min(tail, commits))
    keys_by_hour: dict[int, list[str]] = {}
    pending: dict[str, dict] = {}
    rolled = rollups = landed_rows = quarantined_rows = written = 0
    positions: dict[int, int] = dict(first_offsets or {})
    manifests = commit_log.manifests_dir(landing_path)

    def flush() -> None:
        nonlocal rolled, rollups
        if pending:
            last = max(doc["committed_at_ms"] for doc in pending.values())
            rolled += commit_log.roll_up(store, landing_path, pending=pending, now_ms=last)
            rollups += 1
            pending.clear()
            if progress:
                progress(f"rolled up {rolled:,} of {commits:,} synthetic commits")

    docs = commit_documents(topic, commits, start_ms, end_ms, end_offsets, first_offsets, seed, epoch,
                            roots=roots or default_roots(landing_path))
    for i, (name, doc) in enumerate(docs):
        keys_by_hour.setdefault(landing.hour_of(doc["committed_at_ms"]), []).append(name.removesuffix(".json"))
        landed_rows += doc["landed_rows"]
        quarantined_rows += doc["quarantined_rows"]
        for r in doc["ranges"]:
            positions[r["partition"]] = max(positions.get(r["partition"], 0), r["until_offset"])
        if i < commits - tail:
            pending[name] = doc
            if len(pending) >= chunk:
                flush()
            continue
        flush()
        if not store.create_new(f"{manifests}/{name}", landing.dumps(doc)):
            raise RuntimeError(f"{manifests}/{name} exists already: the history overlaps the landing zone's")
        written += 1
    flush()
    if progress:
        progress(f"{commits:,} synthetic commits: {rolled:,} rolled up in {rollups} roll-up(s), "
                 f"{written} manifest files")
    return History(commits=commits, rolled_up=rolled, tail=written, rollups=rollups, positions=positions,
                   landed_rows=landed_rows, quarantined_rows=quarantined_rows, keys_by_hour=keys_by_hour)


def sample_keys(keys: list[str], n: int) -> list[str]:
    """``n`` keys spread evenly over ``keys`` (all of them when there are fewer)."""
    if len(keys) <= n:
        return list(keys)
    return [keys[i * len(keys) // n] for i in range(n)]


def write_hour_partials(spark, fs, settings, keys_by_hour: dict[int, list[str]], per_hour: int = 20,
                        events_per_file: int = 12, lg_config_k: int = 12, progress: Progress | None = None) -> int:
    """Real per-commit files as the ingest leaves them before any merge: for every hour of
    ``keys_by_hour`` and up to ``per_hour`` of its commits (spread evenly), one speed partial per
    view ``<speed_root>/<view>/timestamp_hour=<h>/part-<key>-0.snappy.parquet`` and one quarantine
    file ``<quarantine>/arrival_hour=<h>/part-<key>-0.snappy.parquet``, each holding a few rows in
    the ingest's schemas (activity counts, HLL visitor sketches, raw quarantined records).

    Three Spark jobs write them (partitioned by hour and commit), then each file is renamed to its
    per-commit name. Returns the number of files written."""
    from pyspark.sql import functions as F

    from lambdaflow import views

    chosen = [(hour, key) for hour in sorted(keys_by_hour) for key in sample_keys(keys_by_hour[hour], per_hour)]
    if not chosen:
        return 0
    names = spark.createDataFrame([(i, h, k) for i, (h, k) in enumerate(chosen)],
                                  "slot long, hour long, commit_key string")
    i = F.col("id")
    events = (spark.range(len(chosen) * events_per_file)
              .withColumn("slot", (i / events_per_file).cast("long"))
              .join(F.broadcast(names), "slot")
              .select(F.col("hour").alias("timestamp_hour"), "commit_key",
                      F.concat(F.lit("Product "), (i % 7).cast("string")).alias("product"),
                      F.concat(F.lit("visitor-"), ((i * 7919) % 5000).cast("string")).alias("visitor"),
                      F.when(i % 20 == 0, "purchase").when(i % 20 < 6, "add_to_cart").otherwise("page_view")
                      .alias("action"), i.alias("n")))
    keys = ["product", "timestamp_hour", "commit_key"]
    activity = events.groupBy(*keys).agg(*(F.count(F.when(F.col("action") == a, True)).cast("long").alias(c)
                                           for a, c in views.ACTIONS.items()))
    activity = activity.select("timestamp_hour", "commit_key", "product", *views.COUNT_COLUMNS)
    visitors = (events.groupBy(*keys).agg(F.hll_sketch_agg("visitor", lg_config_k).alias("visitors_sketch"))
                .select("timestamp_hour", "commit_key", "product", "visitors_sketch"))
    quarantine = (events.where(F.col("n") % events_per_file < 2)
                  .select(F.col("timestamp_hour").alias("arrival_hour"), "commit_key",
                          F.lit(settings.topic).alias("topic"), (F.col("n") % 3).cast("int").alias("kafka_partition"),
                          F.col("n").cast("long").alias("kafka_offset"),
                          F.timestamp_millis(F.col("timestamp_hour") + 1000).alias("kafka_timestamp"),
                          F.col("visitor").cast("binary").alias("key"),
                          F.lit(b"{not json").cast("binary").alias("value"),
                          F.lit("malformed_json: not exactly one well-formed JSON object").alias("reason")))
    scratch = f"{settings.root}/_synthetic/{uuid.uuid4().hex[:12]}"
    targets = [(f"{settings.speed_root}/activity_by_product", "timestamp_hour", activity),
               (f"{settings.speed_root}/visitors_by_product", "timestamp_hour", visitors),
               (settings.quarantine_path, "arrival_hour", quarantine)]
    written = 0
    try:
        for n, (root, column, frame) in enumerate(targets):
            out = f"{scratch}/{n}"  # one file per (hour, commit): each group lands in one task
            frame.repartition(column, "commit_key").write.partitionBy(column, "commit_key").parquet(settings.uri(out))
            made: set[str] = set()
            for path in fs.list_files_recursive(out):
                if not path.endswith(".parquet"):
                    continue
                hour_dir, key_dir, _ = path[len(out) + 1:].split("/")
                key = key_dir.split("=", 1)[1]
                target_dir = f"{root}/{hour_dir}"
                if target_dir not in made:
                    fs.mkdirs(target_dir)
                    made.add(target_dir)
                fs.rename(path, f"{target_dir}/part-{key}-0.snappy.parquet", make_parent=False)
                written += 1
            if progress:
                progress(f"wrote {written:,} per-commit partial files ({root})")
    finally:
        fs.delete(scratch)
    return written
