"""Recomputation of hours into a version of the batch views, and full recomputation."""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

from lambdaflow import landing
from lambdaflow.config import Settings
from lambdaflow.storage import commit_log

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

from lambdaflow.batch.layout import *  # noqa: F401,F403 - the shared layout and helpers
from lambdaflow.batch.layout import Log, _print  # noqa: F401
from lambdaflow.batch.compaction import compact_hour, finish_committed_compaction
from lambdaflow.batch.completeness import completeness_boundary
from lambdaflow.batch.locks import HourLocks


def _replace_dir(fs: BatchFs, staged: str, live: str, trash: str) -> None:
    """Swap a staged hour directory in: live -> trash, staged -> live (an hour without rows: no directory).

    Both moves are renames with the storage layer's atomic replace (``Options.Rename.OVERWRITE``),
    never Hadoop's two-argument rename, which moves a directory *into* an existing one of the same
    name (``timestamp_hour=H/timestamp_hour=H``). ``trash`` is unique to the run, and the hour's
    lock (:class:`HourLocks`) keeps any other recomputation away, so ``live`` is gone when the staged
    directory moves; if it were not, the rename fails (a non-empty directory is never overwritten)
    instead of nesting.
    """
    if fs.exists(live):
        fs.mkdirs(trash.rsplit("/", 1)[0])
        fs.replace(live, trash)
    if fs.exists(staged):
        fs.mkdirs(live.rsplit("/", 1)[0])
        fs.replace(staged, live)
    fs.delete(trash)


def recompute_hours(spark: "SparkSession", settings: Settings, version: int, hours: Iterable[int],
                    log: Log = _print) -> list[dict]:
    """Recompute both views for ``hours`` into ``version``, replacing exactly those hours; returns the records."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from lambdaflow import views

    hours = sorted(set(hours))
    if not hours:
        return []
    fs = BatchFs(spark, settings)
    for hour in hours:
        finish_committed_compaction(fs, settings, hour, log)
    # A manifest is committed before its batch's files move into place (lambdaflow.landing), so a batch
    # whose staging directory is still there may be partly visible: the positions stop before it, and
    # the late-data check counts it as committed after them. (Listing manifests first is what makes
    # "not staging any more" mean "all moved".)
    committed = commit_log.read_state(fs, settings.landing_path)
    moving = set(fs.list_names(f"{settings.landing_path}/{landing.STAGING}"))
    positions = committed.settled_positions(moving)
    present = landed_hours(fs, settings)
    started = time.monotonic()
    events = read_landing(spark, settings, hours, present).select(
        *LANDING_KEY, "timestamp_hour", "product", "action", "visitor")
    # De-duplication is a shuffle of every row; counting distinct Kafka records per partition with
    # offset bitmaps is not. So de-duplicate only when the landing zone holds a duplicate (never at rest).
    duplicates = sum(r["rows"] - r["records"] for r in views.record_census(events).collect())
    landed = events
    if duplicates:
        log(f"{duplicates} row(s) repeat Kafka records already landed: de-duplicating")
        landed = views.dedupe_landed(events).persist(StorageLevel.MEMORY_AND_DISK)
    position_of = F.create_map(*(F.lit(x) for p, o in positions.items() for x in (p, o))).cast("map<int,bigint>")
    below = F.col("kafka_offset") < F.coalesce(position_of[F.col("kafka_partition")], F.lit(0))
    run = uuid.uuid4().hex[:12]
    staged = {view: f"{settings.batch_root}/{view}/_staging/{run}" for view in VIEWS}
    computed = {"activity_by_product": views.activity_by_product(landed).persist(),
                "visitors_by_product": views.visitors_by_product(landed).persist()}
    try:
        landed_counts = {r["timestamp_hour"]: r for r in landed.groupBy("timestamp_hour").agg(
            F.count(F.lit(1)).alias("landed_rows"), F.count(F.when(below, True)).alias("rows_below_positions"))
            .collect()}
        for view, rows in computed.items():
            rows.repartition("timestamp_hour").write.partitionBy("timestamp_hour").parquet(settings.uri(staged[view]))
        activity_sums = {r["timestamp_hour"]: r for r in computed["activity_by_product"].groupBy("timestamp_hour")
                         .agg(F.count(F.lit(1)).alias("activity_rows"), *(F.sum(c).alias(c) for c in COUNT_COLUMNS))
                         .collect()}
        visitor_rows = {r["timestamp_hour"]: r["count"]
                        for r in computed["visitors_by_product"].groupBy("timestamp_hour").count().collect()}
    finally:
        for rows in computed.values():
            rows.unpersist()
        if duplicates:
            landed.unpersist()
    log(f"v{version}: computed {len(hours)} hour(s) in {time.monotonic() - started:.1f} s; replacing them")
    records = []
    for hour in hours:
        for view in VIEWS:
            _replace_dir(fs, f"{staged[view]}/timestamp_hour={hour}", view_path(settings, view, version, hour),
                         f"{settings.batch_root}/{view}/_trash/{run}/timestamp_hour={hour}")
        counts, sums = landed_counts.get(hour), activity_sums.get(hour)
        record = {"timestamp_hour": hour, "hour": iso(hour), "version": version,
                  "landed_rows": counts["landed_rows"] if counts else 0,
                  "rows_below_positions": counts["rows_below_positions"] if counts else 0,
                  "positions": {str(p): o for p, o in sorted(positions.items())},
                  "activity_rows": sums["activity_rows"] if sums else 0,
                  "visitors_rows": visitor_rows.get(hour, 0),
                  **{c: (sums[c] if sums else 0) for c in COUNT_COLUMNS},
                  "recomputed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        fs.write_json(records_path(settings, version, hour), record)
        fs.delete(failures_path(settings, version, hour))  # a success ends the hour's failure
        records.append(record)
        log(f"v{version} {record['hour']}: {record['landed_rows']} landed rows -> "
            f"{record['activity_rows']} activity rows, {record['visitors_rows']} visitors rows")
    for view in VIEWS:
        fs.delete(staged[view])
        fs.delete(f"{settings.batch_root}/{view}/_trash/{run}")
    return records


def recompute_all(spark: "SparkSession", settings: Settings, compact: bool = False,
                  allowed_lateness_s: float = 60, log: Log = _print, now_ms: int | None = None) -> list[dict]:
    """Full recomputation into a new version, then an atomic switch of ``_CURRENT`` and removal of the old.

    Only the hours before the completeness boundary (:func:`completeness_boundary`) are recorded: the
    hour still open never gets frozen at a partial count."""
    from lambdaflow import kafka_admin

    fs = BatchFs(spark, settings)
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    known = landed_hours(fs, settings) | recorded_hours(fs, settings, current_version(fs, settings))
    if not known:
        log("nothing landed and nothing recorded: no version to build")
        return []
    # Every hour of history up to the hour after the wall clock's: no hourly run, backfill or
    # compaction touches any of them until the new version is in place (and the old one gone).
    locked = range(min(known), max(max(known), floor_hour(now_ms)) + 2 * HOUR_MS, HOUR_MS)
    with HourLocks(fs, settings, locked, log):
        old = current_version(fs, settings)
        existing = {int(n[1:]) for view in VIEWS for n in fs.list_names(f"{settings.batch_root}/{view}")
                    if re.fullmatch(r"v\d+", n)}
        new = max({old} | existing) + 1
        landed = landed_hours(fs, settings)
        known = landed | recorded_hours(fs, settings, old)
        boundary = completeness_boundary(landed, commit_log.positions(fs, settings.landing_path),
                                         kafka_admin.end_offsets(settings), now_ms, int(allowed_lateness_s * 1000))
        hours = [h for h in range(min(known), max(known) + HOUR_MS, HOUR_MS) if h < boundary]
        if not hours:
            log(f"no hour before the completeness boundary {iso(boundary)}: no version to build")
            return []
        log(f"completeness boundary {iso(boundary)}: later hours stay with the speed layer")
        log(f"full recomputation of {len(hours)} hour(s) {iso(hours[0])} .. {iso(hours[-1])} into v{new}")
        if compact:
            for hour in sorted(landed):
                compact_hour(spark, settings, hour, log=log, locked=True)
        records = recompute_hours(spark, settings, new, hours, log)
        fs.write_json(current_path(settings), {"version": new,
                                               "switched_at": datetime.now(timezone.utc).isoformat()})
        log(f"switched readers to v{new}")
        for version in ({old} | existing) - {new}:
            for view in VIEWS:
                fs.delete(view_path(settings, view, version))
            fs.delete(records_path(settings, version))
            fs.delete(failures_path(settings, version))
    return records
