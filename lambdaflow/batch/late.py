"""Late data: the recorded hours whose landed rows changed since their recomputation, however old."""

from __future__ import annotations

import json
import re

from typing import TYPE_CHECKING

from lambdaflow.config import Settings
from lambdaflow.storage import commit_log

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

from lambdaflow.batch.layout import *  # noqa: F401,F403 - the shared layout and helpers
from lambdaflow.batch.layout import Log, _print  # noqa: F401


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

    An hour's record keeps the rows its recomputation read (``landed_rows``); the commit log
    says, in its roll-ups' and manifests' ``hours``, how many rows landed in each hour, so the hour's
    landed count today is their sum (:func:`lambdaflow.storage.commit_log.current`). A difference means late data (or a batch that was
    still moving its files into place when the hour was read): the hour is recomputed.
    """
    records = read_hour_records(spark, fs, settings, version)
    if not records:
        return []
    log_state = commit_log.current(fs, settings.landing_path)
    landed = {int(h): n for h, n in log_state["hours"].items()}
    archived = {int(h) for h in log_state["archived_hours"]}  # removed by retention: the views stay
    stale = []
    for hour, record in sorted(records.items()):
        if hour in archived:  # its data is gone: its view stays as computed (late rows for it are not counted)
            continue
        if landed.get(hour, 0) != record["landed_rows"]:
            log(f"late data: hour {iso(hour)} recomputed with {record['landed_rows']} rows, "
                f"now {landed.get(hour, 0)} landed")
            stale.append(hour)
    return stale
