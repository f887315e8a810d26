"""Entry points: ``lambdaflow batch`` and ``spark_jobs/batch_recompute.py`` share these arguments and ``execute``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Iterable

from lambdaflow.config import Settings
from lambdaflow.errors import UserError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

from lambdaflow.batch.layout import *  # noqa: F401,F403 - the shared layout and helpers
from lambdaflow.batch.layout import Log, _print  # noqa: F401
from lambdaflow.batch.compaction import compact_hour
from lambdaflow.batch.late import late_hours
from lambdaflow.batch.locks import HourLocks
from lambdaflow.batch.recompute import recompute_all, recompute_hours


# ------------------------------------------------------------------------------- entry points
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``lambdaflow batch`` and of ``spark_jobs/batch_recompute.py`` (the same)."""
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("--hour", type=parse_time, help="recompute the hour containing this ISO 8601 time (UTC)")
    scope.add_argument("--from", dest="start", type=parse_time,
                       help="recompute the hours of [FROM, TO) (ISO 8601, half-open, UTC); needs --to")
    scope.add_argument("--all", action="store_true",
                       help="full recomputation of all history into a new version, then switch readers to it")
    parser.add_argument("--to", dest="end", type=parse_time, help="end of the interval (exclusive)")
    parser.add_argument("--late", dest="late", action="store_true", default=True,
                        help="recompute late hours too (the default; see --no-late)")
    parser.add_argument("--no-late", dest="late", action="store_false",
                        help="do not recompute the recorded hours whose landed rows changed since their "
                             "recomputation (late data, however old); by default they are recomputed too")
    parser.add_argument("--compact", action="store_true",
                        help="compact the landing files of the hours first (fewer, larger files)")
    parser.add_argument("--no-compact", dest="compact", action="store_false", help="do not compact (the default)")
    parser.add_argument("--allowed-lateness-seconds", type=float, default=60, metavar="S",
                        help="--all: the newest landed hour counts as complete only S seconds after its end "
                             "(and once the landing zone has reached Kafka's log end); default 60")


def execute(spark: "SparkSession", settings: Settings, args: argparse.Namespace, log: Log = _print) -> list[dict]:
    """Run what ``args`` ask for (see :func:`add_arguments`); returns the hour records written."""
    from lambdaflow.spark import prepare_batch_session

    prepare_batch_session(spark)
    if args.all:
        return recompute_all(spark, settings, compact=args.compact,
                             allowed_lateness_s=getattr(args, "allowed_lateness_seconds", 60), log=log)
    if args.hour is not None:
        start = floor_hour(epoch_ms(args.hour))
        end = start + HOUR_MS
    elif args.end is None:
        raise UserError("--from needs --to")
    else:
        start, end = epoch_ms(args.start), epoch_ms(args.end)
        if end <= start:
            raise UserError("--to must be after --from")
    return recompute_interval(spark, settings, start, end, late=getattr(args, "late", True),
                              compact=args.compact, log=log)


def recompute_interval(spark: "SparkSession", settings: Settings, start_ms: int, end_ms: int, late: bool = True,
                       compact: bool = False, log: Log = _print) -> list[dict]:
    """Recompute the hours of [start, end) and, with ``late``, every recorded hour whose landed rows
    changed since its recomputation, under their locks (compacting them first with ``compact``);
    returns the hour records. A failure is recorded for those hours (serving falls back to speed)."""
    hours = hours_between(start_ms, end_ms)
    fs = BatchFs(settings)
    todo = set(hours)
    if late:
        todo |= set(late_hours(spark, fs, settings, current_version(fs, settings), log))
    todo = sorted(todo)
    with HourLocks(fs, settings, todo, log):
        version = current_version(fs, settings)  # a full recomputation may have switched while we waited
        log(f"recomputing {len(todo)} hour(s) into v{version}: {', '.join(iso(h) for h in todo)}")
        try:
            if compact:
                for hour in todo:
                    compact_hour(spark, settings, hour, log=log, locked=True)
            return recompute_hours(spark, settings, version, todo, log)
        except Exception as exc:
            _record_failure_fs(fs, settings, version, todo, f"{type(exc).__name__}: {exc}", log)
            raise


def _record_failure_fs(fs: "BatchFs", settings: Settings, version: int, hours: Iterable[int], reason: str,
                       log: Log) -> None:
    """:func:`record_failure` with the run's file system, best effort (the recomputation's own error is what counts)."""
    try:
        record_failure(settings, hours, reason, client=fs.client, version=version)
        log(f"recorded the failure of {len(list(hours))} hour(s); serving answers them from the speed layer")
    except Exception as exc:  # noqa: BLE001 - never hide the original error behind this one
        log(f"could not record the failure: {exc}")


def run(args: argparse.Namespace) -> int:
    """``lambdaflow batch``: the recomputation on the deployment's Spark Connect server (a local
    SparkSession when none answers); the DAG's tasks run the same code through the Spark provider."""
    from lambdaflow.spark import batch_session

    settings = Settings.from_env()
    spark = batch_session("lambdaflow-batch", settings, log=_print)
    try:
        records = execute(spark, settings, args)
        _print(f"done: {len(records)} hour(s), {sum(r['landed_rows'] for r in records)} landed rows; "
               f"batch watermark {state(BatchFs(settings), settings)['watermark_iso']}")
    finally:
        spark.stop()
    return 0
