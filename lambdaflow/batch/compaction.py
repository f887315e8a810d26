"""Compaction of landing hours into fewer, larger files (protocol in :mod:`lambdaflow.batch`)."""

from __future__ import annotations

import math
import re
import uuid

from typing import TYPE_CHECKING

from lambdaflow import landing
from lambdaflow.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

from lambdaflow.batch.layout import *  # noqa: F401,F403 - the shared layout and helpers
from lambdaflow.batch.layout import Log, _print  # noqa: F401
from lambdaflow.batch.locks import HourLocks


# ------------------------------------------------------------------------------- compaction
def finish_committed_compaction(fs: BatchFs, settings: Settings, hour: int, log: Log = _print) -> bool:
    """Roll a committed compaction of ``hour`` forward (idempotent, safe beside a running compaction)."""
    record = fs.read_json(compaction_record_path(settings, hour))
    if record is None:
        return False
    live = landing_hour_path(settings, hour)
    for name in record["old"]:
        fs.delete(f"{live}/{name}", recursive=False)
    for item in record["new"]:
        target = f"{live}/{item['name']}"
        if fs.exists(item["staged"]):
            fs.rename(item["staged"], target)
        elif not fs.exists(target):
            raise RuntimeError(f"compaction of {iso(hour)} committed but {item['name']} is neither staged nor in place")
    fs.delete(compaction_record_path(settings, hour))
    fs.delete(record["staging"])
    log(f"compaction {iso(hour)}: {len(record['old'])} file(s) -> {len(record['new'])}")
    return True


def _commit_key_of(name: str) -> str | None:
    """The commit key in an ingest file name ``part-<commit key>-<n>.snappy.parquet`` (None for others)."""
    match = re.fullmatch(r"part-(\d+-\d+-\d+(?:_\d+-\d+-\d+)*)-\d+\..*", name)
    return match.group(1) if match else None


def compact_hour(spark: "SparkSession", settings: Settings, hour: int,
                 target_file_bytes: int = TARGET_FILE_BYTES, log: Log = _print, locked: bool = False) -> dict | None:
    """Rewrite a landing hour into fewer, larger files; returns what was done, None if nothing was.

    Keeps exactly the same multiset of (topic, kafka_partition, kafka_offset), checked before the
    commit; see the module docstring for the protocol and the recovery rule. Runs under the hour's
    lock (:class:`HourLocks`), taken here unless the caller holds it already (``locked``).
    """
    if not locked:
        with HourLocks(BatchFs(settings), settings, [hour], log):
            return _compact_locked_hour(spark, settings, hour, target_file_bytes, log)
    return _compact_locked_hour(spark, settings, hour, target_file_bytes, log)


def _compact_locked_hour(spark: "SparkSession", settings: Settings, hour: int, target_file_bytes: int,
                         log: Log) -> dict | None:
    fs = BatchFs(settings)
    staging_root = compaction_staging_path(settings, hour)
    finish_committed_compaction(fs, settings, hour, log)
    fs.delete(staging_root)  # staged files without a commit record: roll back
    # A batch whose staging directory still exists may still be moving files into the hour (or
    # be awaiting the ingest's recovery, which expects its moved files in place): leave its files.
    pending = set(fs.list_names(f"{settings.landing_path}/{landing.STAGING}"))
    live = landing_hour_path(settings, hour)
    files = [f for f in fs.entries(live) if f.is_file and is_data_file(f.name)
             and _commit_key_of(f.name) not in pending]
    target_files = max(1, math.ceil(sum(f.length for f in files) / target_file_bytes))
    if len(files) <= target_files:
        return None
    run = uuid.uuid4().hex[:12]
    staging = f"{staging_root}/{run}"
    old = spark.read.option("mergeSchema", "true").parquet(*(settings.uri(f"{live}/{f.name}") for f in files))
    old.coalesce(target_files).write.parquet(settings.uri(staging))
    new = spark.read.parquet(settings.uri(staging))
    key = list(LANDING_KEY)
    if not (old.select(key).exceptAll(new.select(key)).isEmpty()
            and new.select(key).exceptAll(old.select(key)).isEmpty()):
        fs.delete(staging)
        raise RuntimeError(f"compaction of {iso(hour)} would change the set of Kafka coordinates; rolled back")
    new_files = [n for n in fs.list_names(staging) if n.endswith(".parquet")]
    record = {"timestamp_hour": hour, "old": [f.name for f in files], "staging": staging,
              "new": [{"staged": f"{staging}/{n}", "name": f"part-compacted-{run}-{i}.snappy.parquet"}
                      for i, n in enumerate(sorted(new_files))]}
    fs.write_json(compaction_record_path(settings, hour), record)  # the commit point
    finish_committed_compaction(fs, settings, hour, log)
    return {"timestamp_hour": hour, "old_files": len(files), "new_files": len(new_files)}
