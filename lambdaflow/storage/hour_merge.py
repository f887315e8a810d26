"""Merging the small files of a closed hour into one: speed partials and quarantine.

The ingest writes one small Parquet file per committed micro-batch into each hour directory it
touches: ``<speed_root>/<view>/timestamp_hour=<h>/part-<commit key>-<n>.snappy.parquet`` and
``<quarantine>/arrival_hour=<h>/part-<commit key>-<n>.snappy.parquet``. At a 1 s trigger that is up
to 3,600 files per view and hour. Once the hour is closed its files are rewritten into one
(:func:`merge_closed_hours`), so every such directory holds O(1) files, not O(micro-batches).

**Rows are concatenated, never aggregated.** Speed partials are partial aggregates (counts that
add up, HLL sketches that union) and quarantine rows are records: the readers combine them
(:mod:`lambdaflow.serving`, :func:`lambdaflow.views.speed_activity_view`,
:func:`lambdaflow.views.speed_visitors_view`), so a merged file gives them exactly the same
answers. The merged file keeps the inputs' columns, types and nullability (the partition column
stays in the directory name, as Spark wrote it).

Layout, bookkeeping under ``<root>/_merging/`` (readers skip names starting with ``_``)::

    <column>=<h>.lock                  one merge of an hour at a time (create-if-absent)
    <column>=<h>/<run>/data/           Spark's output: the one merged file
    <column>=<h>/<run>/commit.json     the commit record: inputs, staged and final file

**Protocol** for an hour, under its lock: (1) finish or roll back what an earlier merge of the hour
left (below); (2) list the hour's data files, the inputs; (3) one Spark read of exactly those
files, into one partition, written to ``<run>/data``; (4) **commit**: create ``commit.json`` naming the
inputs and the final name ``part-merged-<h>-<n>.snappy.parquet`` (``n`` fresh); (5) rename the
merged file into the hour; (6) delete exactly the inputs; (7) delete the run. Files a writer adds
meanwhile are not inputs: the next merge takes them. A reader listing the hour between (5) and (6)
can see a row twice, for as long as the deletes take (milliseconds per file).

**Recovery rule** (step 1, and :func:`recover_merges` for every hour of a root): a run with a
``commit.json`` is rolled forward (move the merged file if still staged, delete the inputs still
present); a run without one is rolled back (deleted). A lock whose heartbeat (modification time)
is older than ``LAMBDAFLOW_MERGE_LOCK_STALE_S`` (default 1800 s) belongs to a dead merger and is
taken over.

The ingest is the single writer of these directories and calls the merge after its commits; the
``weblogs_maintenance`` DAG calls it too (when the ingest is down nothing else would), and the
hour lock keeps the two from merging the same hour at once. Files of a batch still moving into
place (``<landing>/_staging/<key>`` exists: the ingest's recovery needs them where its manifest
says) are left out: pass the landing zone's ``_staging`` as ``staging_dir``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Iterable

from lambdaflow.storage.lock import _pid_alive

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from lambdaflow.storage.fs import JvmFs

HOUR_MS = 3_600_000
MERGING = "_merging"
MERGED_PREFIX = "part-merged-"
SPARK_SCHEMA_KEY = "org.apache.spark.sql.parquet.row.metadata"
_MERGED = re.compile(r"part-merged-(-?\d+)-(\d+)\.snappy\.parquet")

Log = Callable[[str], None]


def lock_stale_s() -> float:
    """A merge lock not touched for this long belongs to a dead merger (env LAMBDAFLOW_MERGE_LOCK_STALE_S)."""
    return float(os.environ.get("LAMBDAFLOW_MERGE_LOCK_STALE_S", "") or 1800.0)


# ------------------------------------------------------------------------------------ names
def partition_hour(name: str, column: str) -> int | None:
    """The hour of a ``<column>=<h>`` directory name, None for anything else."""
    match = re.fullmatch(rf"{re.escape(column)}=(-?\d+)", name)
    return int(match.group(1)) if match else None


def is_data_file(name: str) -> bool:
    """A Parquet data file (bookkeeping, temp and checksum files start with ``_`` or ``.``)."""
    return name.endswith(".parquet") and not name.startswith(("_", "."))


def commit_key_of(name: str) -> str | None:
    """The commit key in an ingest file name ``part-<key>-<n>.snappy.parquet`` (None for merged files)."""
    if not name.startswith("part-") or name.startswith(MERGED_PREFIX):
        return None
    stem = name[len("part-"):].split(".", 1)[0]
    return stem.rsplit("-", 1)[0] if "-" in stem else None


def merged_name(hour: int, n: int) -> str:
    return f"{MERGED_PREFIX}{hour}-{n}.snappy.parquet"


def next_merged_number(names: Iterable[str], hour: int) -> int:
    """A fresh ``n`` for ``part-merged-<hour>-<n>``: one above any in use (inputs of this merge included)."""
    used = [int(m.group(2)) for m in map(_MERGED.fullmatch, names) if m and int(m.group(1)) == hour]
    return max(used, default=-1) + 1


def closed_hours(hours: Iterable[int], before_ms: int) -> list[int]:
    """The hours that ended at or before ``before_ms``."""
    return sorted(h for h in hours if h + HOUR_MS <= before_ms)


def merging_root(root: str) -> str:
    return f"{root}/{MERGING}"


def _name(path: str) -> str:
    return path.rsplit("/", 1)[1]


# ------------------------------------------------------------------------------------ lock
class _HourLock:
    """``<root>/_merging/<column>=<h>.lock``: create-if-absent; stale after :func:`lock_stale_s`."""

    def __init__(self, fs: "JvmFs", path: str, log: Log, stale_s: float | None = None) -> None:
        self.fs, self.path, self.log = fs, path, log
        self.stale_ms = int((stale_s if stale_s is not None else lock_stale_s()) * 1000)
        self.token = uuid.uuid4().hex

    def acquire(self) -> bool:
        holder = json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                             "taken_ms": int(time.time() * 1000)})
        for _ in range(3):
            if self.fs.create_new(self.path, holder):
                return True
            try:
                age_ms = int(time.time() * 1000) - self.fs.modification_time_ms(self.path)
            except Exception:  # noqa: BLE001 - released meanwhile: try again
                continue
            holder_doc = self.fs.read_json(self.path) or {}
            dead_here = holder_doc.get("host") == socket.gethostname() and not _pid_alive(holder_doc.get("pid"))
            if age_ms <= self.stale_ms and not dead_here:
                return False
            self.log(f"merge lock {self.path}: its holder died (" + (
                f"pid {holder_doc.get('pid')} gone from this host" if dead_here else
                f"not touched for {age_ms / 1000:.0f} s") + "), taking over")
            self.fs.delete(self.path, recursive=False)
        return False

    def touch(self) -> None:
        self.fs.touch(self.path, int(time.time() * 1000))

    def release(self) -> None:
        try:
            if (self.fs.read_json(self.path) or {}).get("token") == self.token:
                self.fs.delete(self.path, recursive=False)
        except Exception as exc:  # noqa: BLE001 - a lock left behind goes stale and is taken over
            self.log(f"could not release {self.path}: {exc}")


# ------------------------------------------------------------------------------------ recovery
def _delete_files(fs: "JvmFs", paths: list[str], threads: int = 8) -> int:
    """Delete files (in parallel: each is one NameNode call); returns how many existed."""
    if len(paths) <= 4:
        return sum(fs.delete(p, recursive=False) for p in paths)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sum(pool.map(lambda p: fs.delete(p, recursive=False), paths))


def _finish_run(fs: "JvmFs", run_dir: str, log: Log) -> bool:
    """Roll a merge run forward (it has a commit record) or back; True when it was committed."""
    record = fs.read_json(f"{run_dir}/commit.json")
    if record is None:
        fs.delete(run_dir)
        log(f"rolled back an uncommitted merge {run_dir}")
        return False
    if not fs.exists(record["final"].rsplit("/", 1)[0]):  # retention removed the whole hour meanwhile
        fs.delete(run_dir)
        log(f"dropped the merge {run_dir}: its hour directory was removed meanwhile")
        return False
    if fs.exists(record["staged"]) and not fs.exists(record["final"]):
        fs.rename(record["staged"], record["final"], make_parent=False)
    if not fs.exists(record["final"]):
        raise RuntimeError(f"committed merge {run_dir}: neither {record['staged']} nor {record['final']} exists")
    removed = _delete_files(fs, [i for i in record["inputs"] if fs.exists(i)])
    fs.delete(run_dir)
    log(f"rolled forward a committed merge {run_dir}: {record['final']} in place, {removed} input(s) deleted")
    return True


def _recover_hour(fs: "JvmFs", staging: str, log: Log) -> int:
    runs = [p for p in fs.list(staging) if not _name(p).startswith(".")]
    for run_dir in runs:
        _finish_run(fs, run_dir, log)
    if fs.exists(staging):
        fs.delete(staging)
    return len(runs)


def recover_merges(fs: "JvmFs", root: str, column: str, log: Log = print) -> dict[str, int]:
    """Finish or roll back every merge of ``root`` a dead merger left (each hour under its lock).

    Returns ``{"runs": recovered runs, "locks": stale locks removed, "busy": hours locked by a live merge}``."""
    out = {"runs": 0, "locks": 0, "busy": 0}
    base = merging_root(root)
    entries = {_name(p) for p in fs.list(base)}
    hours = sorted({h for h in (partition_hour(n.removesuffix(".lock"), column) for n in entries) if h is not None})
    for hour in hours:
        lock = _HourLock(fs, f"{base}/{column}={hour}.lock", log)
        stale_lock = f"{column}={hour}.lock" in entries
        if not lock.acquire():
            out["busy"] += 1
            continue
        out["locks"] += int(stale_lock)
        try:
            out["runs"] += _recover_hour(fs, f"{base}/{column}={hour}", log)
        finally:
            lock.release()
    return out


# ------------------------------------------------------------------------------------ merging
def _spark_schema(spark: "SparkSession", path: str):
    """The Spark schema (with nullability) recorded in a Parquet file's footer, None without one.

    Spark reads every Parquet column as nullable; this keeps a merged file's schema the inputs'."""
    from pyspark.sql.types import StructType

    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(
        jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(hadoop_path, conf))
    try:
        text = reader.getFooter().getFileMetaData().getKeyValueMetaData().get(SPARK_SCHEMA_KEY)
    finally:
        reader.close()
    return StructType.fromJson(json.loads(text)) if text else None


def _with_schema(spark: "SparkSession", df: "DataFrame", schema) -> "DataFrame":
    """``df`` with ``schema``'s nullability (same columns and types; the values are not touched)."""
    from pyspark.sql import DataFrame

    if schema is None or df.schema == schema:
        return df
    if [(f.name, f.dataType) for f in df.schema] != [(f.name, f.dataType) for f in schema]:
        raise RuntimeError(f"the files to merge do not have the schema of their footer: {df.schema} vs {schema}")
    jschema = spark._jsparkSession.parseDataType(schema.json())
    return DataFrame(spark._jsparkSession.createDataFrame(df._jdf.javaRDD(), jschema), spark)


def merge_hour(spark: "SparkSession", fs: "JvmFs", root: str, column: str, hour: int, log: Log = print,
               skip_keys: Iterable[str] = (), staging_dir: str | None = None) -> int:
    """Merge the data files of ``<root>/<column>=<hour>`` into one (see the module docstring).

    ``staging_dir`` (the landing zone's ``_staging``): listed right *after* the hour's files, so a
    file whose batch is still moving into place (its ``_staging/<key>`` not yet deleted: a crash
    now would leave it to the ingest's recovery, which needs it where its manifest says) is never
    an input. Returns the number of files merged (0 when the hour holds at most one file, or
    another merge of it is running)."""
    hour_dir = f"{root}/{column}={hour}"
    staging = f"{merging_root(root)}/{column}={hour}"
    lock = _HourLock(fs, f"{staging}.lock", log)
    if not lock.acquire():
        log(f"{hour_dir}: another merge of the hour is running; left to it")
        return 0
    try:
        _recover_hour(fs, staging, log)
        skip = set(skip_keys)
        names = [_name(p) for p in fs.list(hour_dir, files_only=True)]
        if staging_dir is not None:
            skip |= {_name(p) for p in fs.list(staging_dir)}
        inputs = sorted(f"{hour_dir}/{n}" for n in names if is_data_file(n) and commit_key_of(n) not in skip)
        if len(inputs) <= 1:
            return 0
        started = time.monotonic()
        run_dir = f"{staging}/{uuid.uuid4().hex[:12]}"
        uri = fs._fs.getUri().toString().rstrip("/")
        schema = _spark_schema(spark, uri + inputs[0])
        # Exactly these files (no partition discovery), listed by the driver: above the threshold
        # (32 paths) Spark would start a job just to stat them. repartition(1), not coalesce(1):
        # the small files are read by parallel tasks, only the write is one task.
        threshold = "spark.sql.sources.parallelPartitionDiscovery.threshold"
        previous = spark.conf.get(threshold, None)
        spark.conf.set(threshold, str(max(len(inputs) + 1, 32)))
        try:
            reader = spark.read.schema(schema) if schema is not None else spark.read
            rows = reader.parquet(*(uri + p for p in inputs))
        finally:
            if previous is None:
                spark.conf.unset(threshold)
            else:
                spark.conf.set(threshold, previous)
        _with_schema(spark, rows, schema).repartition(1).write.parquet(uri + f"{run_dir}/data")
        lock.touch()
        outputs = [p for p in fs.list(f"{run_dir}/data", files_only=True) if is_data_file(_name(p))]
        if len(outputs) != 1:
            raise RuntimeError(f"merging {hour_dir}: expected one output file in {run_dir}/data, found {outputs}")
        final = f"{hour_dir}/{merged_name(hour, next_merged_number(names, hour))}"
        record = {"hour": hour, "inputs": inputs, "staged": outputs[0], "final": final,
                  "merged_at_ms": int(time.time() * 1000)}
        if not fs.create_new(f"{run_dir}/commit.json", json.dumps(record)):  # the commit point
            raise RuntimeError(f"merging {hour_dir}: the commit record of {run_dir} exists already")
        _finish_run(fs, run_dir, lambda _message: None)
        fs.delete(staging)
        log(f"{hour_dir}: merged {len(inputs)} files into {_name(final)} in {time.monotonic() - started:.1f} s")
        return len(inputs)
    finally:
        lock.release()


def merge_closed_hours(spark: "SparkSession", fs: "JvmFs", root: str, column: str, before_ms: int,
                       log: Log = print, skip_keys: Iterable[str] = (),
                       hours: Iterable[int] | None = None, staging_dir: str | None = None) -> dict[int, int]:
    """Merge every closed hour (``hour + 1 h <= before_ms``) of ``root`` that holds more than one
    data file into one file; returns ``{hour: files merged}`` for the hours merged.

    ``root`` is e.g. ``<speed_root>/activity_by_product`` (``column`` ``timestamp_hour``) or the
    quarantine path (``arrival_hour``). ``skip_keys``: commit keys whose files must stay as they
    are; ``staging_dir``: the landing zone's ``_staging``, whose keys (batches still moving into
    place) are skipped, listed after each hour's files (see :func:`merge_hour`). ``hours``: look only at these hours (e.g. those the
    caller's recent commits touched) instead of every hour directory of ``root``. One listing per
    hour directory looked at; one Spark job per hour merged."""
    skip = set(skip_keys)
    merged: dict[int, int] = {}
    present = [h for h in (partition_hour(_name(p), column) for p in fs.list(root)) if h is not None]
    if hours is not None:
        present = sorted(set(present) & {int(h) for h in hours})
    for hour in closed_hours(present, before_ms):
        hour_dir = f"{root}/{column}={hour}"
        names = [_name(p) for p in fs.list(hour_dir, files_only=True)]
        if sum(1 for n in names if is_data_file(n) and commit_key_of(n) not in skip) <= 1:
            continue
        n = merge_hour(spark, fs, root, column, hour, log, skip, staging_dir)
        if n:
            merged[hour] = n
    return merged
