"""The batch layer: exact, idempotent recomputation of the views, hour by hour, from the landing zone.

``lambdaflow batch --hour H | --from A --to B | --all`` (and ``spark_jobs/batch_recompute.py``, which the
``weblogs_batch`` DAG submits) read only the landing-zone partitions ``timestamp_hour=<h>`` of the hours
asked for, de-duplicate on (topic, kafka_partition, kafka_offset) when a Kafka record landed twice
(:func:`lambdaflow.views.record_census` finds out without a shuffle), compute ``activity_by_product`` and
``visitors_by_product`` exactly (:mod:`lambdaflow.views`) and replace exactly those hours.

Layout under ``{batch_root}`` (``/lambda/batch``)::

    _CURRENT                                   {"version": N}: the version readers use (absent = 1)
    <view>/v<N>/timestamp_hour=<h>/part-*.parquet   one file per view and hour
    _hours/v<N>/<h>.json                       the hour record: what the recomputation saw and wrote
    _observations/<h>.json                     the completeness sensor's log-end offsets for hour h

Rules:

- **Replacing an hour.** Both views are written for all hours of a run into a hidden staging directory
  (``<view>/_staging/<run>``), then each hour's directory is swapped in with two HDFS renames (live ->
  trash, staged -> live); an hour without rows loses its directory. Then the hour record is written
  (atomic rename-over). Re-running an hour writes the same rows again: nothing changes.
- **Batch watermark.** The hours with a record in the current version are the hours the batch layer
  covers; the watermark is the last hour of the contiguous run of covered hours that starts at the first
  one (:func:`batch_watermark`). Every recomputation records every hour it was asked for, empty hours
  included, so hourly runs keep the run contiguous. The serving query answers covered hours from the
  batch views and every other hour from the speed views (:mod:`lambdaflow.serving`).
- **Late data.** A record keeps the number of rows its recomputation read (``landed_rows``; also the
  landing positions it saw and ``rows_below_positions``, for the record). Every committed manifest
  carries, in its ``"hours"``, the rows it landed per event hour, so an hour's landed count today is
  the sum over the manifests (kept as a roll-up, ``_late/landed_by_hour.json``, so that each run reads
  only the manifests committed since: :func:`landed_by_hour`). Every run of ``--hour`` / ``--from
  --to`` (unless ``--no-late``) also recomputes every recorded hour of the current version, however
  old, whose landed count differs from its ``landed_rows`` (:func:`late_hours`): after the next run
  the batch views equal the landed rows for every hour. A batch still moving its files into place
  while an hour is read is counted by its manifest but not (fully) read, so the hour is recomputed by
  the next run too.
- **Failed hours.** A recomputation that fails writes ``_failed/v<N>/<h>.json`` for its hours (the
  DAG's ``record_failure`` task does it too); the watermark moves past failed hours, serving answers
  them from the speed layer flagged ``batch_failed``, and the next success removes the record.
- **One recomputation of an hour at a time.** Hourly runs, backfills (with their late hours),
  compactions and full recomputations take the hour's lock ``_locks/<h>.lock`` first
  (:class:`HourLocks`: create-if-absent, heartbeat, stale after ``LAMBDAFLOW_BATCH_LOCK_STALE_S``,
  released in ``finally``); a run that finds an hour locked waits for it.
- **Full recomputation** (``--all``; the DAG ``weblogs_full_recompute``): under the locks of every hour
  of history, recompute every hour from the first landed or recorded one up to the completeness
  boundary (:func:`completeness_boundary`) into version N+1, then switch ``_CURRENT`` with one atomic
  rename-over, then delete the older versions. Hourly runs wait meanwhile, then read the new version.
- **Compaction** (``--compact``) rewrites an hour's landing files into files of about 128 MB with exactly
  the same multiset of (topic, kafka_partition, kafka_offset), checked before commit. Files reach an
  hour directory only after their batch's manifest is committed (``lambdaflow.landing``); the files of
  a batch whose ``_staging/<key>`` still exists (moving, or awaiting the ingest's recovery) are left
  alone. The ingest never rewrites a committed range (it resumes after the landing positions), so a
  compacted file is never duplicated by a replay. Protocol (:func:`compact_hour`): take the hour's
  lock ``/lambda/batch/_locks/<h>.lock`` (:class:`HourLocks`) -> write the new files under ``_compact/<h>/<run>/``
  -> verify -> **commit** by writing ``_compactions/<h>.json`` (old names, new files) -> delete the old
  files -> move the new ones into the hour -> delete the record. Deleting before moving means a reader
  can, at worst, miss rows for a moment; it never sees both the old and the new files.
  **Recovery rule**: a ``_compactions/<h>.json`` that exists means committed, so roll forward (delete
  the old files still present, move the new files still staged; both steps are idempotent, and every
  batch read of the hour does this first); staged files without a record were never committed, so roll
  back (delete ``_compact/<h>/``; done by the next compaction of the hour, under its lock).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import socket
import struct
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from lambdaflow import hdfs, landing, timeutil
from lambdaflow.config import Settings
from lambdaflow.errors import UserError
from lambdaflow.jvm_fs import JvmFs

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


def manifests_path(settings: Settings) -> str:
    return f"{settings.landing_path}/{landing.MANIFESTS}"


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
def manifest_names(store: "Store", settings: Settings) -> list[str]:
    """Names of the committed offset-range manifests (``<commit key>.json``)."""
    return [n for n in store.list_names(manifests_path(settings)) if landing.is_manifest_name(n)]


def committed_after(ranges: list[landing.OffsetRange], positions: dict[int, int]) -> bool:
    """Whether a manifest's ranges go beyond ``positions``, i.e. it was committed after they were taken."""
    return any(r.until_offset > positions.get(r.partition, 0) for r in ranges)


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
    """What the bookkeeping readers need; WebHDFS (Airflow tasks, serving) and the JVM (Spark job) provide it."""

    def list_names(self, path: str) -> list[str]: ...

    def read_json(self, path: str) -> Any: ...


class WebHdfsStore:
    """A :class:`Store` over WebHDFS, for code that runs without a JVM."""

    def __init__(self, client: "InsecureClient"):
        self.client = client

    def list_names(self, path: str) -> list[str]:
        return hdfs.list_names(self.client, path)

    def read_json(self, path: str) -> Any:
        return hdfs.read_json(self.client, path)


def web_store(settings: Settings) -> WebHdfsStore:
    return WebHdfsStore(hdfs.client(settings))


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
                   client: "InsecureClient | None" = None) -> None:
    """Mark ``hours`` as failed in the current version (WebHDFS; the DAG's ``record_failure`` task).

    Serving then answers them from the speed layer, flagged ``batch_failed``, and the watermark moves
    past them; the next successful recomputation of an hour removes its failure record."""
    from lambdaflow.storage.fs import web_write_json

    c = client or hdfs.client(settings)
    version = current_version(WebHdfsStore(c), settings)
    for hour in hours:
        web_write_json(c, failures_path(settings, version, hour),
                       {"timestamp_hour": hour, "hour": iso(hour), "version": version, "reason": reason[:2000],
                        "failed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


# -------------------------------------------------------------------- completeness (the sensor)
def landing_complete(settings: Settings, start_ms: int, end_ms: int, allowed_lateness_s: float,
                     client: "InsecureClient | None" = None, now_ms: int | None = None) -> tuple[bool, str]:
    """Whether the ingest has landed everything Kafka held for the hour [start, end); and why (not).

    The hour has *closed* once the landing zone holds an event of a later hour (event time has moved
    past it) or, for a quiet stream, once the wall clock is past ``end + allowed_lateness``. At the
    first check after that, the topic's log-end offsets are recorded (``_observations/<h>.json``,
    kept across pokes and re-runs). The hour is *complete* once the landing positions (highest
    ``until_offset`` per partition over the committed manifests, compared as integers) have reached
    those offsets, and ``allowed_lateness_s`` has passed since they were observed.
    """
    from lambdaflow import kafka_admin

    c = client or hdfs.client(settings)
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    lateness_ms = int(allowed_lateness_s * 1000)
    path = observation_path(settings, start_ms)
    observation = hdfs.read_json(c, path)
    if observation is None:
        landed = [h for h in map(partition_hour, hdfs.list_names(c, settings.landing_path)) if h is not None]
        if not any(h >= end_ms for h in landed) and now_ms < end_ms + lateness_ms:
            return False, f"hour {iso(start_ms)} still open: no later event landed, wall clock before end + lateness"
        log_end = kafka_admin.end_offsets(settings)
        observation = {"observed_at_ms": now_ms, "log_end_offsets": {str(p): o for p, o in log_end.items()}}
        hdfs.write_json(c, path, observation)
    positions = landing.positions_from_keys(manifest_names(WebHdfsStore(c), settings))
    behind = {int(p): end - positions.get(int(p), 0)
              for p, end in sorted(observation["log_end_offsets"].items(), key=lambda item: int(item[0]))
              if positions.get(int(p), 0) < end}
    if behind:
        return False, f"landing zone behind the offsets observed after the hour closed: {behind} records"
    wait_ms = observation["observed_at_ms"] + lateness_ms - now_ms
    if wait_ms > 0:
        return False, f"landed up to the observed offsets; allowed lateness ends in {wait_ms / 1000:.0f} s"
    return True, f"hour {iso(start_ms)} complete: landed up to {observation['log_end_offsets']}"


def completeness_boundary(landed: Iterable[int], positions: dict[int, int], log_end: dict[int, int],
                          now_ms: int, allowed_lateness_ms: int) -> int:
    """The first hour not known to be complete: a full recomputation records only the hours before it.

    The wall clock's hour is still open. Every landed hour before the newest one has closed (event
    time has moved past it); the newest landed hour is complete only once the wall clock is past its
    end plus the allowed lateness *and* the landing positions have reached the topic's log-end
    offsets (the same two conditions as :func:`landing_complete`). Hours at or after the boundary stay
    with the speed layer; events of older hours that land later are late data (:func:`late_hours`).
    """
    boundary = floor_hour(now_ms)
    hours = set(landed)
    if hours:
        newest = max(hours)
        caught_up = all(positions.get(int(p), 0) >= end for p, end in log_end.items())
        closed = now_ms >= newest + HOUR_MS + allowed_lateness_ms
        boundary = min(boundary, newest + HOUR_MS if caught_up and closed else newest)
    return boundary


# ---------------------------------------------------------------------- validation (no JVM)
class ValidationError(UserError):
    """The batch views of an hour do not add up to the rows landed in it."""


def _parquet_rows(c: "InsecureClient", path: str, length: int) -> int:
    """Rows of a Parquet file from its footer alone (two ranged WebHDFS reads at most)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tail_length = min(length, 64 * 1024)
    with c.read(path, offset=length - tail_length, length=tail_length) as reader:
        tail = reader.read()
    footer_length = struct.unpack("<i", tail[-8:-4])[0] + 8
    if footer_length > len(tail):
        with c.read(path, offset=length - footer_length, length=footer_length) as reader:
            tail = reader.read()
    return pq.read_metadata(pa.BufferReader(tail[-footer_length:])).num_rows


def read_parquet_dir(c: "InsecureClient", path: str, threads: int = 8):
    """All data files of an HDFS directory, downloaded in parallel, as one pyarrow Table (None if none)."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    def download(name: str):
        with c.read(f"{path}/{name}") as reader:
            return pq.read_table(io.BytesIO(reader.read()))

    names = [n for n in hdfs.list_names(c, path) if is_data_file(n)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        tables = list(pool.map(download, names))
    return pa.concat_tables(tables, promote_options="default") if tables else None


def landed_rows_at_rest(c: "InsecureClient", settings: Settings, hour: int) -> int:
    """Rows in the hour's landing files now, counted from the Parquet footers."""
    path = landing_hour_path(settings, hour)
    if c.status(path, strict=False) is None:
        return 0
    return sum(_parquet_rows(c, f"{path}/{name}", status["length"])
               for name, status in c.list(path, status=True)
               if is_data_file(name) and status["type"] == "FILE")


def validate_hour(settings: Settings, hour: int, client: "InsecureClient | None" = None) -> dict:
    """Check one recomputed hour without a JVM and return its figures (raise :class:`ValidationError`).

    The activity counts must add up to the rows the recomputation landed (``landed_rows`` in the hour
    record), both views must list the same products, each product's unique visitors must lie between 1
    and its number of events, and the landing zone must still hold at least those rows (counted from
    the Parquet footers). More rows at rest than recomputed is late data: reported, and the next run's
    late-data check recomputes the hour. An hour that was never recorded is valid only if nothing landed.
    """
    c = client or hdfs.client(settings)
    store = WebHdfsStore(c)
    version = current_version(store, settings)
    record = read_hour_record(store, settings, version, hour)
    at_rest = landed_rows_at_rest(c, settings, hour)
    summary = {"timestamp_hour": hour, "hour": iso(hour), "version": version, "landed_rows_at_rest": at_rest}
    if record is None:
        if at_rest:
            raise ValidationError(f"hour {iso(hour)} has {at_rest} landed rows but no batch record in v{version}")
        return {**summary, "landed_rows": 0, "products": 0, **dict.fromkeys(COUNT_COLUMNS, 0)}
    activity = read_parquet_dir(c, view_path(settings, "activity_by_product", version, hour))
    visitors = read_parquet_dir(c, view_path(settings, "visitors_by_product", version, hour))
    events: dict[str, int] = {}
    counts = dict.fromkeys(COUNT_COLUMNS, 0)
    for row in activity.to_pylist() if activity is not None else []:
        events[row["product"]] = sum(row[col] for col in COUNT_COLUMNS)
        for col in COUNT_COLUMNS:
            counts[col] += row[col]
    uniques = {row["product"]: row["unique_visitors"] for row in (visitors.to_pylist() if visitors is not None else [])}
    problems = []
    if sum(counts.values()) != record["landed_rows"]:
        problems.append(f"activity counts add up to {sum(counts.values())}, landed rows {record['landed_rows']}")
    if set(events) != set(uniques):
        problems.append(f"products differ between views: {sorted(set(events) ^ set(uniques), key=str)[:5]}")
    bad = [p for p, n in uniques.items() if not 1 <= n <= events.get(p, 0)]
    if bad:
        problems.append(f"unique visitors outside [1, events] for {bad[:5]}")
    if at_rest < record["landed_rows"]:
        problems.append(f"landing zone holds {at_rest} rows, fewer than the {record['landed_rows']} recomputed")
    if problems:
        raise ValidationError(f"hour {iso(hour)} (v{version}): " + "; ".join(problems))
    return {**summary, "landed_rows": record["landed_rows"], "products": len(events), **counts,
            "late_rows_since_recompute": at_rest - record["landed_rows"]}


# ------------------------------------------------------------------ the JVM side (Spark job)
@dataclasses.dataclass(frozen=True)
class FileInfo:
    name: str
    is_file: bool
    length: int
    mtime_ms: int


class BatchFs(JvmFs):
    """HDFS through Spark's JVM, plus what the batch layer needs: listings with sizes, exclusive
    creates (locks), and JSON documents replaced with one atomic rename-over (the primitives of
    :mod:`lambdaflow.storage.fs`). A :class:`Store`."""

    def __init__(self, spark: "SparkSession", settings: Settings):
        super().__init__(spark, settings.hdfs_url)
        self._gateway = spark.sparkContext._gateway

    def entries(self, path: str) -> list[FileInfo]:
        if not self.exists(path):
            return []
        return [FileInfo(s.getPath().getName(), bool(s.isFile()), int(s.getLen()), int(s.getModificationTime()))
                for s in self._fs.listStatus(self._path(path))]

    def list_names(self, path: str) -> list[str]:
        return [f.name for f in self.entries(path)]

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_text(path)) if self.exists(path) else None

    # create_new (create-if-absent) and write_json (atomic replace) come from lambdaflow.storage.fs.


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


# ------------------------------------------------------------------------ per-hour exclusion
class LockTimeout(UserError):
    """An hour's lock stayed held by another recomputation longer than the wait allowed."""


class HourLocks:
    """One recomputation of an hour at a time: ``_locks/<h>.lock`` per hour, created with
    create-if-absent (``overwrite=false``, one NameNode operation: exactly one racing caller wins).

    Taken by hourly runs, backfills and their late-data hours, compactions and full recomputations,
    always in ascending hour order (so two runs wanting overlapping hours never deadlock). A caller
    that finds an hour locked waits (polling) up to ``wait_s``, then fails. The holder touches its
    lock files every quarter of ``stale_s`` (a heartbeat thread); a lock not touched for ``stale_s``
    belongs to a dead holder and is taken over. Released in ``__exit__`` (only locks still carrying
    the holder's token are deleted). A narrow race remains only between two callers taking over the
    same stale lock at once.
    """

    def __init__(self, fs: BatchFs, settings: Settings, hours: Iterable[int], log: Log = _print,
                 stale_s: float | None = None, wait_s: float | None = None, poll_s: float = 1.0):
        self.fs, self.settings, self.log = fs, settings, log
        self.hours = sorted(set(hours))
        self.stale_ms = int((stale_s if stale_s is not None else LOCK_STALE_SECONDS) * 1000)
        self.wait_s = wait_s if wait_s is not None else LOCK_WAIT_SECONDS
        self.poll_s = poll_s
        self.token = uuid.uuid4().hex
        self.held: list[str] = []
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> "HourLocks":
        try:
            for hour in self.hours:
                self._acquire(hour)
        except BaseException:
            self._release()
            raise
        self._beat = threading.Thread(target=self._heartbeat, name="hour-locks-heartbeat", daemon=True)
        self._beat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=10)
        self._release()

    def _acquire(self, hour: int) -> None:
        path = hour_lock_path(self.settings, hour)
        holder = json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                             "taken_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        deadline = time.monotonic() + self.wait_s
        reported = False
        while True:
            if self.fs.create_new(path, holder):
                self.held.append(path)
                return
            try:
                age_ms = int(time.time() * 1000) - self.fs.modification_time_ms(path)
            except Exception:  # noqa: BLE001 - released meanwhile: try again at once
                continue
            if age_ms > self.stale_ms:
                self.log(f"lock of {iso(hour)} not touched for {age_ms / 1000:.0f} s: its holder died, taking over")
                self.fs.delete(path, recursive=False)
                continue
            if time.monotonic() > deadline:
                raise LockTimeout(f"hour {iso(hour)} is being recomputed by another run "
                                  f"({self.fs.read_json(path)}) for longer than {self.wait_s:.0f} s")
            if not reported:
                self.log(f"hour {iso(hour)} is being recomputed by another run: waiting for {path}")
                reported = True
            time.sleep(self.poll_s)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.stale_ms / 4000):
            for path in list(self.held):
                try:
                    self.fs.touch(path, int(time.time() * 1000))
                except Exception as exc:  # noqa: BLE001 - a missed beat is retried; stale only after 4
                    self.log(f"heartbeat of {path} failed: {exc}")

    def _release(self) -> None:
        for path in reversed(self.held):
            try:
                if (self.fs.read_json(path) or {}).get("token") == self.token:
                    self.fs.delete(path, recursive=False)
            except Exception as exc:  # noqa: BLE001 - a lock left behind goes stale and is taken over
                self.log(f"could not release {path}: {exc}")
        self.held = []


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
    committed = manifest_names(fs, settings)
    moving = set(fs.list_names(f"{settings.landing_path}/{landing.STAGING}"))
    positions = landing.positions_from_keys(n for n in committed if n.removesuffix(".json") not in moving)
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
        boundary = completeness_boundary(landed, landing.positions_from_keys(manifest_names(fs, settings)),
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
        with HourLocks(BatchFs(spark, settings), settings, [hour], log):
            return _compact_locked_hour(spark, settings, hour, target_file_bytes, log)
    return _compact_locked_hour(spark, settings, hour, target_file_bytes, log)


def _compact_locked_hour(spark: "SparkSession", settings: Settings, hour: int, target_file_bytes: int,
                         log: Log) -> dict | None:
    fs = BatchFs(spark, settings)
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
    hours = hours_between(start, end)
    fs = BatchFs(spark, settings)
    todo = set(hours)
    if getattr(args, "late", True):
        todo |= set(late_hours(spark, fs, settings, current_version(fs, settings), log))
    todo = sorted(todo)
    with HourLocks(fs, settings, todo, log):
        version = current_version(fs, settings)  # a full recomputation may have switched while we waited
        log(f"recomputing {len(todo)} hour(s) into v{version}: {', '.join(iso(h) for h in todo)}")
        try:
            if args.compact:
                for hour in todo:
                    compact_hour(spark, settings, hour, log=log, locked=True)
            return recompute_hours(spark, settings, version, todo, log)
        except Exception as exc:
            _record_failure_fs(fs, settings, version, todo, f"{type(exc).__name__}: {exc}", log)
            raise


def _record_failure_fs(fs: "BatchFs", settings: Settings, version: int, hours: Iterable[int], reason: str,
                       log: Log) -> None:
    """:func:`record_failure` through the JVM, best effort (the recomputation's own error is what counts)."""
    try:
        for hour in hours:
            fs.write_json(failures_path(settings, version, hour),
                          {"timestamp_hour": hour, "hour": iso(hour), "version": version, "reason": reason[:2000],
                           "failed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        log(f"recorded the failure of {len(list(hours))} hour(s); serving answers them from the speed layer")
    except Exception as exc:  # noqa: BLE001 - never hide the original error behind this one
        log(f"could not record the failure: {exc}")


def run(args: argparse.Namespace) -> int:
    """``lambdaflow batch``: the recomputation in a local SparkSession (the DAG spark-submits the same code)."""
    from lambdaflow.spark import session

    settings = Settings.from_env()
    spark = session("lambdaflow-batch", settings)
    try:
        records = execute(spark, settings, args)
        _print(f"done: {len(records)} hour(s), {sum(r['landed_rows'] for r in records)} landed rows; "
               f"batch watermark {state(BatchFs(spark, settings), settings)['watermark_iso']}")
    finally:
        spark.stop()
    return 0
