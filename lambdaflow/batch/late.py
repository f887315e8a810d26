"""Late data: the recorded hours whose landed rows changed since their recomputation, however old."""

from __future__ import annotations

import json
import re

from typing import TYPE_CHECKING

from lambdaflow.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

from lambdaflow.batch.layout import *  # noqa: F401,F403 - the shared layout and helpers
from lambdaflow.batch.layout import Log, _print  # noqa: F401


def _read_manifests(spark: "SparkSession", settings: Settings, names: list[str]) -> dict[str, dict]:
    """Contents of the named manifests, read by Spark in parallel ({name: document})."""
    from pyspark.sql import functions as F

    if not names:
        return {}
    uris = [settings.uri(f"{manifests_path(settings)}/{n}") for n in names]
    rows = (spark.read.text(uris, wholetext=True)
            .select(F.col("_metadata.file_name").alias("name"), "value").collect())
    return {row["name"]: json.loads(row["value"]) for row in rows}


def manifest_rollup_path(settings: Settings) -> str:
    return f"{settings.batch_root}/_late/landed_by_hour.json"


def landed_by_hour(spark: "SparkSession", fs: BatchFs, settings: Settings) -> dict[int, int]:
    """Rows landed per event hour, summed over every committed manifest's ``hours``.

    The sums are kept in a roll-up (``_late/landed_by_hour.json``: the manifests already counted and
    the per-hour totals), so a run reads only the manifests committed since the roll-up was written,
    in one Spark read; a manifest that disappeared from the commit log resets the roll-up. Runs that
    race write consistent roll-ups (each one covers exactly its ``manifests``), the last one stays.
    """
    names = set(manifest_names(fs, settings))
    path = manifest_rollup_path(settings)
    rollup = fs.read_json(path) or {}
    counted = set(rollup.get("manifests", []))
    totals = {int(h): int(n) for h, n in rollup.get("hours", {}).items()}
    if not counted <= names:
        counted, totals = set(), {}
    new = sorted(names - counted)
    for document in _read_manifests(spark, settings, new).values():
        for hour, rows in document.get("hours", {}).items():
            totals[int(hour)] = totals.get(int(hour), 0) + int(rows)
    if new:
        fs.write_json(path, {"manifests": sorted(counted | set(new)),
                             "hours": {str(h): n for h, n in sorted(totals.items())}})
    return totals


def read_hour_records(spark: "SparkSession", fs: BatchFs, settings: Settings, version: int) -> dict[int, dict]:
    """Every hour record of ``version``, in one Spark read (not one HDFS round trip per hour)."""
    from pyspark.sql import functions as F

    directory = records_path(settings, version)
    if not recorded_hours(fs, settings, version):
        return {}
    rows = (spark.read.text(settings.uri(f"{directory}/*.json"), wholetext=True)
            .select(F.col("_metadata.file_name").alias("name"), "value").collect())
    return {int(r["name"][:-5]): json.loads(r["value"]) for r in rows if re.fullmatch(r"-?\d+\.json", r["name"])}


def late_hours(spark: "SparkSession", fs: BatchFs, settings: Settings, version: int,
               log: Log = _print) -> list[int]:
    """Every recorded hour of ``version``, however old, whose landed rows changed since its recompute.

    An hour's record keeps the rows its recomputation read (``landed_rows``); the committed manifests
    say, in their ``hours``, how many rows each commit landed in each hour, so the hour's landed count
    today is their sum (:func:`landed_by_hour`). A difference means late data (or a batch that was
    still moving its files into place when the hour was read): the hour is recomputed.
    """
    records = read_hour_records(spark, fs, settings, version)
    if not records:
        return []
    landed = landed_by_hour(spark, fs, settings)
    stale = []
    for hour, record in sorted(records.items()):
        if landed.get(hour, 0) != record["landed_rows"]:
            log(f"late data: hour {iso(hour)} recomputed with {record['landed_rows']} rows, "
                f"now {landed.get(hour, 0)} landed")
            stale.append(hour)
    return stale
