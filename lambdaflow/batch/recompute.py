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


def _per_hour(computed) -> dict[int, dict]:
    """Per hour of the exact views (:func:`lambdaflow.views.exact_views`): the rows read, the rows
    below the landing positions, the action counts, and the rows of each view."""
    from pyspark.sql import functions as F

    sums = [F.sum(c).cast("long").alias(c) for c in ("rows", "rows_below_positions", *COUNT_COLUMNS)]
    return {r["timestamp_hour"]: r.asDict() for r in computed.groupBy("timestamp_hour").agg(
        *sums, F.count(F.lit(1)).alias("products")).collect()}


def recompute_hours(spark: "SparkSession", settings: Settings, version: int, hours: Iterable[int],
                    log: Log = _print, profile: dict | None = None) -> list[dict]:
    """Recompute both views for ``hours`` into ``version``, replacing exactly those hours; returns the records.

    ``profile``, when given, receives the seconds each step took (``commit_log``, ``aggregate``,
    ``census`` (0 when the commit log proves uniqueness), ``write_views``, ``replace_and_record``)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from lambdaflow import views

    hours = sorted(set(hours))
    if not hours:
        return []
    step = _Steps(profile)
    fs = BatchFs(settings)
    for hour in hours:
        finish_committed_compaction(fs, settings, hour, log)
    # A manifest is committed before its batch's files move into place (lambdaflow.landing), so a batch
    # whose staging directory is still there may be partly visible: the positions stop before it, and
    # the late-data check counts it as committed after them. (Listing manifests first is what makes
    # "not staging any more" mean "all moved".)
    committed = commit_log.read_state(fs, settings.landing_path)
    tail_docs = commit_log.read_tail(fs, settings.landing_path, committed)
    moving = set(fs.list_names(f"{settings.landing_path}/{landing.STAGING}"))
    positions = committed.settled_positions(moving)
    present = landed_hours(fs, settings)
    step.done("commit_log")
    started = time.monotonic()
    events = read_landing(spark, settings, hours, present).select(
        *LANDING_KEY, "timestamp_hour", "product", "action", "visitor")
    position_of = F.create_map(*(F.lit(x) for p, o in positions.items() for x in (p, o))).cast("map<int,bigint>")
    below = F.col("kafka_offset") < F.coalesce(position_of[F.col("kafka_partition")], F.lit(0))
    # Both views, the rows and the rows below the positions, in one aggregation (one scan, one shuffle).
    computed = views.exact_views(events, {"rows_below_positions": below}).persist()
    landed = events
    try:
        per_hour = _per_hour(computed)
        step.done("aggregate")
        # The landing zone is exactly-once at rest: every committed offset range once, each manifest
        # counting the rows it landed per hour. So when no batch is moving and no hour holds more rows
        # than the commit log says landed in it, no Kafka record was read twice and nothing needs
        # de-duplicating. Otherwise count distinct records (offset bitmaps: no shuffle of the rows)
        # and de-duplicate only if one really repeats.
        log_hours = ({int(h): n for h, n in commit_log.fold(committed.rollup, tail_docs)["hours"].items()}
                     if len(tail_docs) == len(committed.tail) else None)
        proven = (not moving and log_hours is not None
                  and all(row["rows"] <= log_hours.get(hour, 0) for hour, row in per_hour.items()))
        duplicates = 0 if proven else sum(r["rows"] - r["records"] for r in views.record_census(events).collect())
        step.done("census")
        if duplicates:
            log(f"{duplicates} row(s) repeat Kafka records already landed: de-duplicating")
            computed.unpersist()
            landed = views.dedupe_landed(events).persist(StorageLevel.MEMORY_AND_DISK)
            computed = views.exact_views(landed, {"rows_below_positions": below}).persist()
            per_hour = _per_hour(computed)
        run = uuid.uuid4().hex[:12]
        staged = {view: f"{settings.batch_root}/{view}/_staging/{run}" for view in VIEWS}
        for view, columns in (("activity_by_product", views.ACTIVITY_COLUMNS),
                              ("visitors_by_product", views.VISITORS_COLUMNS)):
            (computed.select(*columns).repartition("timestamp_hour").write.partitionBy("timestamp_hour")
             .parquet(settings.uri(staged[view])))
        step.done("write_views")
    finally:
        computed.unpersist()
        if landed is not events:
            landed.unpersist()
    log(f"v{version}: computed {len(hours)} hour(s) in {time.monotonic() - started:.1f} s; replacing them")
    records = []
    for hour in hours:
        for view in VIEWS:
            _replace_dir(fs, f"{staged[view]}/timestamp_hour={hour}", view_path(settings, view, version, hour),
                         f"{settings.batch_root}/{view}/_trash/{run}/timestamp_hour={hour}")
        figures = per_hour.get(hour)
        record = {"timestamp_hour": hour, "hour": iso(hour), "version": version,
                  "landed_rows": figures["rows"] if figures else 0,
                  "rows_below_positions": figures["rows_below_positions"] if figures else 0,
                  "positions": {str(p): o for p, o in sorted(positions.items())},
                  "activity_rows": figures["products"] if figures else 0,
                  "visitors_rows": figures["products"] if figures else 0,
                  **{c: (figures[c] if figures else 0) for c in COUNT_COLUMNS},
                  "recomputed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        fs.write_json(records_path(settings, version, hour), record)
        fs.delete(failures_path(settings, version, hour))  # a success ends the hour's failure
        records.append(record)
        log(f"v{version} {record['hour']}: {record['landed_rows']} landed rows -> "
            f"{record['activity_rows']} activity rows, {record['visitors_rows']} visitors rows")
    for view in VIEWS:
        fs.delete(staged[view])
        fs.delete(f"{settings.batch_root}/{view}/_trash/{run}")
    step.done("replace_and_record")
    return records


class _Steps:
    """Seconds per step of a recomputation, into a caller's ``profile`` dict (nothing when None)."""

    def __init__(self, profile: dict | None):
        self.profile, self.last = profile, time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        if self.profile is not None:
            self.profile[name] = round(self.profile.get(name, 0) + now - self.last, 3)
        self.last = now


def recompute_all(spark: "SparkSession", settings: Settings, compact: bool = False,
                  allowed_lateness_s: float = 60, log: Log = _print, now_ms: int | None = None) -> list[dict]:
    """Full recomputation into a new version, then an atomic switch of ``_CURRENT`` and removal of the old.

    Only the hours before the completeness boundary (:func:`completeness_boundary`) are recorded: the
    hour still open never gets frozen at a partial count."""
    from lambdaflow import kafka_admin

    fs = BatchFs(settings)
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
