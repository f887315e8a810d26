"""Maintenance of a long-running landing zone: roll-ups, retention, hour merges, clean-up.

``lambdaflow maintenance [--dry-run] [--json] [--step S ...]`` (:func:`maintain`) and the daily ``weblogs_maintenance``
DAG run the same steps, in this order (each logs what it removed and what it kept, and returns a
JSON-able report):

1. ``roll_up``: fold the landing zone's manifests into a roll-up
   (:func:`lambdaflow.storage.commit_log.roll_up`); skipped, with a log line, when it fails while
   the ingest holds the writer lock (the ingest rolls its own commits up).
2. ``retention``: landed hours, quarantine arrival hours, speed partials the batch layer covers,
   lag-history day files (:mod:`lambdaflow.storage.retention`, settings ``LAMBDAFLOW_RETENTION_*``).
   Before that, so that hours about to go are not merged first.
3. ``merge_hours``: every closed hour of the speed views and the quarantine holding more than one
   file is merged into one (:mod:`lambdaflow.storage.hour_merge`; needs Spark: a local session is
   started only when there is something to merge). Files of batches still moving into place are
   left; an unfinished earlier merge is finished first.
4. ``clean_up``: stale batch locks, old batch ``_staging``/``_trash`` runs, fenced epochs' landing
   staging (:func:`lambdaflow.storage.retention.clean_leftovers`).

``now_ms`` decides what is due: the CLI uses the wall clock, the DAG its run's data interval end.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

from lambdaflow.config import Settings
from lambdaflow.storage import retention

HOUR_MS = 3_600_000
STEPS = ("roll_up", "retention", "merge_hours", "clean_up")

Log = Callable[[str], None]


def _print(message: str) -> None:
    print(f"[maintenance] {message}", flush=True)


def merge_roots(settings: Settings) -> list[tuple[str, str]]:
    """(root, partition column) of every directory the ingest writes one file per commit and hour into."""
    return [(f"{settings.speed_root}/activity_by_product", "timestamp_hour"),
            (f"{settings.speed_root}/visitors_by_product", "timestamp_hour"),
            (settings.quarantine_path, "arrival_hour")]


def _client(settings: Settings):
    from lambdaflow import hdfs

    return hdfs.client(settings)


def _writer_live(target, settings: Settings) -> str | None:
    """A description of the ingest holding the landing zone's writer lock, None when nobody does."""
    return retention.live_holder(retention.Tree(target), settings.landing_path)


# ------------------------------------------------------------------------------------------ steps
def roll_up(settings: Settings, dry_run: bool = False, log: Log = _print, target=None) -> dict:
    """Roll the commit log's tail up; skipped when that fails while the ingest holds the writer lock."""
    from lambdaflow.storage import commit_log

    target = target if target is not None else _client(settings)
    if dry_run:
        state = commit_log.read_state(target, settings.landing_path)
        log(f"roll-up: would fold up to {len(state.tail)} manifest(s) of {settings.landing_path} "
            f"(newest roll-up: {state.rollup_name or 'none'})")
        return {"rolled_up": 0, "tail": len(state.tail)}
    try:
        rolled = commit_log.roll_up(target, settings.landing_path)
    except Exception as exc:  # noqa: BLE001 - decided below
        holder = _writer_live(target, settings)
        if holder is None:
            raise
        log(f"roll-up skipped: the ingest holds the writer lock ({holder}) and rolls its own commits up ({exc})")
        return {"rolled_up": 0, "skipped": f"the ingest holds the writer lock: {holder}"}
    state = commit_log.read_state(target, settings.landing_path)
    log(f"roll-up: folded {rolled} manifest(s) of {settings.landing_path} into {state.rollup_name or 'none'}; "
        f"{len(state.tail)} left in the tail")
    return {"rolled_up": rolled, "rollup": state.rollup_name, "tail": len(state.tail)}


def apply_retention(settings: Settings, now_ms: int, dry_run: bool = False, log: Log = _print,
                    target=None, policy: retention.RetentionSettings | None = None) -> dict:
    """Landing, quarantine, speed and lag-history retention (:mod:`lambdaflow.storage.retention`)."""
    policy = policy or retention.RetentionSettings.from_env()
    tree = retention.Tree(target if target is not None else _client(settings))
    return {"settings": policy.as_dict(),
            "landing": retention.apply_landing(tree, settings, policy, now_ms, dry_run, log),
            "quarantine": retention.apply_quarantine(tree, settings, policy, now_ms, dry_run, log),
            "speed": retention.apply_speed(tree, settings, policy, now_ms, dry_run, log),
            "lag_history": retention.apply_lag_history(tree, settings, policy, now_ms, dry_run, log)}


def plan_merges(settings: Settings, before_ms: int, target=None) -> dict[str, dict[int, int]]:
    """``{root: {hour: data files}}`` of the closed hours holding more than one data file, plus
    roots with ``_merging`` leftovers (hour -1). Listings only, no Spark."""
    from lambdaflow.storage import hour_merge

    tree = retention.Tree(target if target is not None else _client(settings))
    skip = set(tree.names(f"{settings.landing_path}/_staging"))
    out: dict[str, dict[int, int]] = {}
    for root, column in merge_roots(settings):
        names = tree.names(root)
        due = {}
        for hour in hour_merge.closed_hours(retention.partition_hours(names, column), before_ms):
            files = [n for n in tree.names(f"{root}/{column}={hour}")
                     if hour_merge.is_data_file(n) and hour_merge.commit_key_of(n) not in skip]
            if len(files) > 1:
                due[hour] = len(files)
        if hour_merge.MERGING in names and tree.names(f"{root}/{hour_merge.MERGING}"):
            due[-1] = 0
        if due:
            out[root] = due
    return out


def merge_hours(settings: Settings, now_ms: int, dry_run: bool = False, log: Log = _print,
                spark=None) -> dict:
    """Merge the closed hours of the speed views and the quarantine (a local Spark session is
    started only when some hour needs it and none is given)."""
    from lambdaflow.storage import hour_merge

    before_ms = now_ms - now_ms % HOUR_MS
    due = plan_merges(settings, before_ms)
    report: dict[str, Any] = {"before_ms": before_ms, "merged": {}}
    if not due:
        log(f"hour merges: nothing to merge (every closed hour before {retention._iso(before_ms)} holds at most one file)")
        return report
    if dry_run:
        for root, hours in due.items():
            real = {h: n for h, n in hours.items() if h >= 0}
            log(f"hour merges: would merge {len(real)} hour(s) of {root} ({sum(real.values())} files)"
                + ("; would finish an earlier merge's leftovers" if -1 in hours else ""))
            report.setdefault("would_merge", {})[root] = {str(h): n for h, n in real.items()}
        return report
    own = spark is None
    if own:
        from lambdaflow.spark import session

        spark = session("lambdaflow-maintenance", settings, master="local[2]")
    try:
        from lambdaflow.storage.fs import JvmFs

        fs = JvmFs(spark, settings.hdfs_url)
        for root, column in merge_roots(settings):
            if root not in due:
                continue
            replay_lock = None
            if root == settings.quarantine_path:
                # A quarantine replay rewrites the files it read: merging them under it would count its
                # records twice. Holding the replay's fenced lock fences a replay in progress (its commit
                # fails) and keeps new ones out until the merges are done.
                from lambdaflow.storage.lock import LockHeld, WriterLock

                replay_lock = WriterLock(fs, retention.replay_lock_path(settings))
                try:
                    replay_lock.acquire()
                except LockHeld as exc:
                    log(f"hour merges of {root}: skipped, a quarantine replay is running ({exc})")
                    report.setdefault("skipped", {})[root] = "a quarantine replay is running"
                    continue
            try:
                if replay_lock is not None:  # a replay killed after its commit still has files to move out
                    from lambdaflow.storage import quarantine

                    quarantine.recover(fs, settings, progress=log)
                recovered = hour_merge.recover_merges(fs, root, column, log)
                merged = hour_merge.merge_closed_hours(spark, fs, root, column, before_ms, log,
                                                       staging_dir=f"{settings.landing_path}/_staging")
            finally:
                if replay_lock is not None:
                    replay_lock.release()
            files_left = {h: n for h, n in due[root].items() if h >= 0 and h not in merged}
            log(f"hour merges of {root}: merged {len(merged)} hour(s) ({sum(merged.values())} files into "
                f"{len(merged)}), finished {recovered['runs']} earlier merge(s)"
                + (f", left {len(files_left)} hour(s) (being merged by another process)" if files_left else ""))
            report["merged"][root] = {str(h): n for h, n in merged.items()}
            report.setdefault("recovered", {})[root] = recovered
    finally:
        if own:
            spark.stop()
    return report


def clean_up(settings: Settings, now_ms: int, dry_run: bool = False, log: Log = _print, target=None,
             policy: retention.RetentionSettings | None = None) -> dict:
    """Leftovers: stale batch locks, old batch staging/trash, fenced epochs' landing staging."""
    policy = policy or retention.RetentionSettings.from_env()
    tree = retention.Tree(target if target is not None else _client(settings))
    return retention.clean_leftovers(tree, settings, policy, now_ms, dry_run, log)


def maintain(settings: Settings, now_ms: int | None = None, dry_run: bool = False, steps=STEPS,
             log: Log = _print, spark=None) -> dict:
    """Every step in order; returns ``{step: report}`` (JSON-able)."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown maintenance step(s) {sorted(unknown)}; choose from {', '.join(STEPS)}")
    report: dict[str, Any] = {"root": settings.root, "now_ms": now_ms, "dry_run": dry_run}
    started = time.monotonic()
    for step in STEPS:
        if step not in steps:
            continue
        if step == "roll_up":
            report[step] = roll_up(settings, dry_run, log)
        elif step == "retention":
            report[step] = apply_retention(settings, now_ms, dry_run, log)
        elif step == "merge_hours":
            report[step] = merge_hours(settings, now_ms, dry_run, log, spark)
        else:
            report[step] = clean_up(settings, now_ms, dry_run, log)
    report["seconds"] = round(time.monotonic() - started, 2)
    return report


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="say what would be removed and merged; change nothing")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON document")
    parser.add_argument("--step", dest="steps", action="append", choices=STEPS,
                        help="run only this step (repeatable; default: all, in the order "
                             f"{', '.join(STEPS)})")


def run(args: argparse.Namespace) -> int:
    """``lambdaflow maintenance``: every step now (wall clock), printed as log lines or one JSON document."""
    settings = Settings.from_env()
    logs: list[str] = []

    def note(message: str) -> None:
        logs.append(message)
        if not args.json:
            _print(message)

    report = maintain(settings, dry_run=args.dry_run, steps=tuple(args.steps or STEPS), log=note)
    if args.json:
        print(json.dumps({**report, "log": logs}, default=str))
    return 0

