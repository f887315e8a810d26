"""The batch layer's layout, constants, time helpers and state readers (see :mod:`lambdaflow.batch`)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from lambdaflow import hdfs, landing, timeutil
from lambdaflow.config import Settings
from lambdaflow.storage.fs import WebFs

if TYPE_CHECKING:
    from hdfs import InsecureClient
    from pyspark.sql import DataFrame, SparkSession

HOUR_MS = timeutil.HOUR_MS
VIEWS = ("activity_by_product", "visitors_by_product")
# As in lambdaflow.views, which imports pyspark: repeated so that the JVM-free readers (sensor,
# validation, serving) and the DAG file's parsing stay light.
COUNT_COLUMNS = ("purchase_count", "add_to_cart_count", "page_view_count")
LANDING_KEY = ("topic", "kafka_partition", "kafka_offset")
TARGET_FILE_BYTES = 128 * 1024 * 1024
# A per-hour lock whose heartbeat (its modification time, touched every quarter of this) is older is
# taken over: its holder died.
LOCK_STALE_SECONDS = float(os.environ.get("LAMBDAFLOW_BATCH_LOCK_STALE_S", "600"))
LOCK_WAIT_SECONDS = float(os.environ.get("LAMBDAFLOW_BATCH_LOCK_WAIT_S", "3600"))

Log = Callable[[str], None]


def _print(message: str) -> None:
    print(f"[batch] {message}", flush=True)


# ------------------------------------------------------------------------------------ layout
def view_path(settings: Settings, view: str, version: int, hour: int | None = None) -> str:
    path = f"{settings.batch_root}/{view}/v{version}"
    return path if hour is None else f"{path}/timestamp_hour={hour}"


def records_path(settings: Settings, version: int, hour: int | None = None) -> str:
    path = f"{settings.batch_root}/_hours/v{version}"
    return path if hour is None else f"{path}/{hour}.json"


def current_path(settings: Settings) -> str:
    return f"{settings.batch_root}/_CURRENT"


def failures_path(settings: Settings, version: int, hour: int | None = None) -> str:
    path = f"{settings.batch_root}/_failed/v{version}"
    return path if hour is None else f"{path}/{hour}.json"


def hour_lock_path(settings: Settings, hour: int) -> str:
    return f"{settings.batch_root}/_locks/{hour}.lock"


def observation_path(settings: Settings, hour: int) -> str:
    return f"{settings.batch_root}/_observations/{hour}.json"


def landing_hour_path(settings: Settings, hour: int) -> str:
    return f"{settings.landing_path}/timestamp_hour={hour}"


def compaction_record_path(settings: Settings, hour: int) -> str:
    return f"{settings.landing_path}/_compactions/{hour}.json"


def compaction_staging_path(settings: Settings, hour: int) -> str:
    return f"{settings.landing_path}/_compact/{hour}"


def is_data_file(name: str) -> bool:
    """Bookkeeping and temp files start with '_' or '.' (readers skip them, as Spark does)."""
    return not name.startswith(("_", "."))


def partition_hour(name: str) -> int | None:
    """The hour of a ``timestamp_hour=<h>`` directory name, None for anything else."""
    match = re.fullmatch(r"timestamp_hour=(-?\d+)", name)
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------------------- time
parse_time = timeutil.parse_iso8601  # for argparse: the message of a bad time is shown as it is
epoch_ms = timeutil.to_epoch_ms
floor_hour = timeutil.floor_hour
iso = timeutil.iso
hours_between = timeutil.hours_between


# ------------------------------------------------------------------------------ offset ranges
def batch_watermark(hours: Iterable[int], failed: Iterable[int] = ()) -> int | None:
    """The last hour of the contiguous run of covered hours that starts at the first covered hour.

    A failed hour (``failed``) does not stop the run: the hours after it advance the watermark,
    while the failed hour itself is served by the speed layer until a recomputation succeeds."""
    covered = set(hours) | set(failed)
    if not covered:
        return None
    hour = min(covered)
    while hour + HOUR_MS in covered:
        hour += HOUR_MS
    return hour


# ---------------------------------------------------------------------- reading the batch state
class Store(Protocol):
    """What the bookkeeping readers need (:class:`~lambdaflow.storage.fs.WebFs` provides it)."""

    def list_names(self, path: str) -> list[str]: ...

    def read_json(self, path: str) -> Any: ...


# A :class:`Store` over WebHDFS, for code that runs without a JVM (the one WebHDFS file system).
WebHdfsStore = WebFs


def web_store(settings: Settings) -> WebFs:
    return WebFs(hdfs.client(settings))


def current_version(store: Store, settings: Settings) -> int:
    document = store.read_json(current_path(settings))
    return int(document["version"]) if document else 1


def recorded_hours(store: Store, settings: Settings, version: int) -> set[int]:
    """The hours covered by the batch layer in ``version`` (those with a record)."""
    names = store.list_names(records_path(settings, version))
    return {int(n[:-5]) for n in names if re.fullmatch(r"-?\d+\.json", n)}


def read_hour_record(store: Store, settings: Settings, version: int, hour: int) -> dict | None:
    return store.read_json(records_path(settings, version, hour))


def failed_hours(store: Store, settings: Settings, version: int) -> set[int]:
    """The hours whose last recomputation in ``version`` failed (a failure record, removed on success)."""
    names = store.list_names(failures_path(settings, version))
    return {int(n[:-5]) for n in names if re.fullmatch(r"-?\d+\.json", n)}


def state(store: Store, settings: Settings) -> dict:
    """The batch layer's state: current version, covered hours, failed hours and watermark."""
    version = current_version(store, settings)
    failed = failed_hours(store, settings, version)
    hours = recorded_hours(store, settings, version) - failed
    watermark = batch_watermark(hours, failed)
    return {"version": version, "hours": sorted(hours), "failed": sorted(failed), "watermark": watermark,
            "watermark_iso": iso(watermark) if watermark is not None else None}


def record_failure(settings: Settings, hours: Iterable[int], reason: str,
                   client: "InsecureClient | None" = None, version: int | None = None) -> None:
    """Mark ``hours`` as failed in ``version`` (default: the current one); the DAG's ``record_failure``
    task and a recomputation that fails both write it.

    Serving then answers them from the speed layer, flagged ``batch_failed``, and the watermark moves
    past them; the next successful recomputation of an hour removes its failure record."""
    fs = WebFs(client or hdfs.client(settings))
    version = current_version(fs, settings) if version is None else version
    for hour in hours:
        fs.write_json(failures_path(settings, version, hour),
                      {"timestamp_hour": hour, "hour": iso(hour), "version": version, "reason": reason[:2000],
                       "failed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


# ------------------------------------------------------------- the recomputation's file system
@dataclasses.dataclass(frozen=True)
class FileInfo:
    name: str
    is_file: bool
    length: int
    mtime_ms: int


class BatchFs(WebFs):
    """HDFS for the batch layer's bookkeeping, over WebHDFS (the DataFrames run on whatever Spark
    session the caller has: a Spark Connect server's, a local one, a spark-submit's, so nothing here
    may need Spark's JVM): listings with sizes, exclusive creates (locks), renames, and JSON documents
    replaced with one atomic rename-over (:mod:`lambdaflow.storage.fs`). A :class:`Store`."""

    def __init__(self, settings: Settings):
        super().__init__(hdfs.client(settings, timeout=60))

    def entries(self, path: str) -> list[FileInfo]:
        return [FileInfo(name, status["type"] == "FILE", int(status["length"]), int(status["modificationTime"]))
                for name, status in self._listing(path)]


def landing_schema():
    """The landing zone's columns (ARCHITECTURE.md, "landing zone"), ``timestamp_hour`` being the partition."""
    from pyspark.sql.types import (IntegerType, LongType, StringType, StructField, StructType,
                                   TimestampType)

    strings = ["referrer", "action", "prev_page", "visitor", "page", "product"]
    return StructType([StructField("timestamp", LongType()),
                       *(StructField(name, StringType()) for name in strings),
                       StructField("timestamp_hour", LongType()),
                       StructField("topic", StringType()),
                       StructField("kafka_partition", IntegerType()),
                       StructField("kafka_offset", LongType()),
                       StructField("kafka_timestamp", TimestampType())])


def landed_hours(fs: BatchFs, settings: Settings) -> set[int]:
    return {h for h in map(partition_hour, fs.list_names(settings.landing_path)) if h is not None}


def read_landing(spark: "SparkSession", settings: Settings, hours: Iterable[int],
                 present: set[int]) -> "DataFrame":
    """The landed events of ``hours``, reading only those partitions (cost grows with the hours read,
    not with the history kept): the partition paths are passed explicitly, so Spark lists nothing else."""
    paths = [settings.uri(landing_hour_path(settings, h)) for h in sorted(set(hours) & present)]
    if not paths:
        return spark.createDataFrame([], landing_schema())
    return (spark.read.schema(landing_schema()).option("basePath", settings.uri(settings.landing_path))
            .parquet(*paths))

