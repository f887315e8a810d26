"""The quarantine: its layout, ``lambdaflow quarantine list`` and ``lambdaflow quarantine replay``.

Records the ingest cannot parse or validate go to the quarantine with their raw key and value,
their Kafka coordinates and a reason (``<kind>: <text>``). Layout under
``settings.quarantine_path`` (``/lambda/quarantine/weblogs``)::

    arrival_hour=<epoch ms>/part-<commit key>-<n>.snappy.parquet   quarantined by the ingest
    arrival_hour=<epoch ms>/part-replay-<id>-<n>.snappy.parquet    rewritten by a replay
    _replay/_writer/                                               the replay's lock (one at a time)
    _replayed/replay-<id>/...                                      files a replay took out (removed
                                                                   once the replay is in place)

``arrival_hour`` is the hour of the record's Kafka timestamp (its arrival, not its event time,
which a record in quarantine may not have). Older quarantines are flat (files directly under the
root); every reader here lists recursively and handles both.

**Replay** re-validates quarantined records with today's parser
(:func:`lambdaflow.ingest_transforms.parse_records`, the ingest's own). The use case: a parser
bug is fixed, and the data it rejected is recovered. Records that pass land in the landing zone
once, under their original Kafka coordinates; the others stay, with their new reason. The
protocol mirrors the ingest's commit (:mod:`lambdaflow.landing`):

1. read the quarantine, re-parse, split; drop records whose (partition, offset) the landing zone
   already holds (they must never land twice);
2. stage under ``<landing>/_staging/replay-<id>/``: the landed rows (``landing/timestamp_hour=H``)
   and, for every quarantine file that held a now-passing record or one whose reason changed, its
   replacement (the rows that stay, with today's reason; none when all passed);
3. the commit point: the **replay manifest** ``<landing>/_manifests/replay-<id>.json``, created
   through the replay lock's fenced commit (:class:`lambdaflow.storage.lock.WriterLock`). Its
   ``files`` lists, in order, staged -> final moves of the landed files, of the replacements, and
   of each replaced quarantine file to ``_replayed/replay-<id>/`` (a rename takes it out of the
   quarantine); ``landed_rows`` = n and ``quarantined_rows`` = -n, so the commit log's sums keep
   landed + quarantined = produced;
4. move the files, delete the staging directory, then the ``_replayed`` directory.

A crash is rolled forward (manifest present) or back (none) by the next replay, and also by the
ingest's start-up recovery, which rolls forward every ``_staging/<key>`` whose
``_manifests/<key>.json`` exists: the ``files`` list has the ingest's format. ``<id>`` is a hash
of the records' coordinates and the files replaced, so a retried replay is the same replay.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from typing import Callable, Iterable

from lambdaflow import landing, timeutil
from lambdaflow.config import Settings
from lambdaflow.errors import UserError
from lambdaflow.schema import reason_class

log = logging.getLogger("lambdaflow.storage.quarantine")

ARRIVAL_HOUR = "arrival_hour"
from lambdaflow.storage.commit_log import REPLAY_PREFIX  # noqa: E402 - one name for the replay manifests
REPLAY_LOCK = "_replay"
REPLAYED = "_replayed"
DEFAULT_LIMIT = 100
MAX_TEXTS = 20  # full reason texts listed per kind
# Steps of a replay where the test hook can hold it (see ``_test_pause``).
TEST_PAUSE_STEPS = ("staged", "committed", "moved_partially", "moved")


class ReplayRunning(UserError):
    """Another quarantine replay holds the replay lock."""


# ------------------------------------------------------------------------------------ layout
def arrival_hour(kafka_timestamp_ms: int) -> int:
    return timeutil.floor_hour(kafka_timestamp_ms)


def arrival_hour_dir(quarantine_path: str, hour_ms: int) -> str:
    return f"{quarantine_path}/{ARRIVAL_HOUR}={hour_ms}"


def replay_name(replay_id: str) -> str:
    return f"{REPLAY_PREFIX}{replay_id}"


def hour_of_dir(relative_path: str) -> int | None:
    """The ``arrival_hour`` of a file's path relative to the quarantine root; None for a flat file."""
    for part in relative_path.split("/")[:-1]:
        name, _, value = part.partition("=")
        if name == ARRIVAL_HOUR and value.lstrip("-").isdigit():
            return int(value)
    return None


def is_data_file(relative_path: str) -> bool:
    """A Parquet file readers see: no path component is hidden (``_``/``.``: bookkeeping, temp files)."""
    parts = relative_path.strip("/").split("/")
    return parts[-1].endswith(".parquet") and not any(p.startswith(("_", ".")) for p in parts)


def select_files(quarantine_path: str, paths: Iterable[str], from_ms: int | None = None,
                 to_ms: int | None = None) -> list[str]:
    """The quarantine's data files (flat or partitioned), pruned by arrival hour to [from, to)."""
    out = []
    for path in paths:
        relative = path[len(quarantine_path):].lstrip("/")
        if not path.startswith(quarantine_path + "/") or not is_data_file(relative):
            continue
        hour = hour_of_dir(relative)
        if hour is not None and ((from_ms is not None and hour + timeutil.HOUR_MS <= from_ms)
                                 or (to_ms is not None and hour >= to_ms)):
            continue
        out.append(path)
    return sorted(out)


def reason_kind(reason: str | None) -> str | None:
    return reason_class(reason)


def replay_id(topic: str, records: Iterable[tuple[int, int]], replaced: Iterable[str]) -> str:
    """Deterministic per replay: the same records and files give the same id (a retry is the same replay)."""
    digest = hashlib.sha256(topic.encode())
    for partition, offset in sorted(set(records)):
        digest.update(f"|{partition}:{offset}".encode())
    for path in sorted(set(replaced)):
        digest.update(f"|{path}".encode())
    return digest.hexdigest()[:20]


def reason_deltas(changes: Iterable[tuple[str | None, str | None, int]]) -> dict[str, int]:
    """Quarantine rows per reason kind a replay adds (+) and removes (-): ``(old reason, new reason
    or None when the record left the quarantine, rows)``; kinds that net to 0 are left out."""
    deltas: dict[str, int] = {}
    for old, new, n in changes:
        if reason_kind(old) == reason_kind(new):
            continue
        for reason, sign in ((old, -1), (new, 1)):
            kind = reason_kind(reason)
            if kind is not None:
                deltas[kind] = deltas.get(kind, 0) + sign * n
    return {k: v for k, v in sorted(deltas.items()) if v}


def replay_manifest(replay: str, topic: str, files: list[dict], landed_hours: dict[int, int], removed: int,
                    reasons: dict[str, int], records: Iterable[tuple[int, int]], committed_at_ms: int) -> dict:
    """The replay manifest: no offset ranges; its counts move rows from the quarantine to the landing zone."""
    document = landing.manifest_document(topic, [], files, sum(landed_hours.values()), -removed, landed_hours,
                                         committed_at_ms, reasons, epoch=None)
    document.update(kind="replay", id=replay, records=[[p, o] for p, o in sorted(records)])
    return document


def by_reason(counts: Iterable[tuple[str, int]], max_texts: int = MAX_TEXTS) -> dict[str, dict]:
    """``{kind: {"count": n, "reasons": {full text: n}}}`` from (reason, rows) pairs, largest first.

    A kind keeps its ``max_texts`` most frequent texts (a reason may quote the value, so texts can be
    as many as records); the rest are summed in ``"other_reasons": {"texts": k, "count": n}``."""
    out: dict[str, dict] = {}
    for reason, n in counts:
        entry = out.setdefault(reason_kind(reason) or "", {"count": 0, "reasons": {}})
        entry["count"] += n
        entry["reasons"][reason] = entry["reasons"].get(reason, 0) + n
    for entry in out.values():
        ordered = sorted(entry["reasons"].items(), key=lambda kv: (-kv[1], kv[0]))
        entry["reasons"] = dict(ordered[:max_texts])
        if len(ordered) > max_texts:
            rest = ordered[max_texts:]
            entry["other_reasons"] = {"texts": len(rest), "count": sum(n for _, n in rest)}
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["count"], kv[0])))


def show_bytes(data: bytes | bytearray | None) -> tuple[str | None, str]:
    """(text, encoding) of a raw key/value: UTF-8 text where it is, else base64."""
    import base64

    if data is None:
        return None, "null"
    data = bytes(data)
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


# ------------------------------------------------------------------------------------ reading
def _no_scheme(column):
    from pyspark.sql import functions as F

    return F.regexp_replace(column, r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*", "")


def data_files(fs, settings: Settings, from_ms: int | None = None, to_ms: int | None = None) -> list[str]:
    return select_files(settings.quarantine_path, fs.list_files_recursive(settings.quarantine_path), from_ms, to_ms)


def read_quarantine(spark, settings: Settings, files: list[str]):
    """Quarantined rows of ``files`` (the ingest's columns) plus ``_file``, the file each row is in."""
    from pyspark.sql import functions as F

    from lambdaflow.ingest_transforms import QUARANTINE_COLUMNS

    # recursiveFileLookup: no partition discovery, so flat and arrival_hour= files mix
    frame = spark.read.option("recursiveFileLookup", "true").parquet(*(settings.uri(f) for f in files))
    return frame.select(*QUARANTINE_COLUMNS, _no_scheme(F.col("_metadata.file_path")).alias("_file"))


def list_records(spark, settings: Settings, reason: str | None = None, from_ms: int | None = None,
                 to_ms: int | None = None, limit: int = DEFAULT_LIMIT) -> dict:
    """``{"records": [...], "by_reason": {...}, "total": n}`` of the quarantine, filtered."""
    from pyspark.sql import functions as F

    from lambdaflow.storage.fs import JvmFs

    fs = JvmFs(spark, settings.hdfs_url)
    files = data_files(fs, settings, from_ms, to_ms)
    document = {"quarantine": settings.quarantine_path, "files": len(files), "records": [], "by_reason": {},
                "total": 0, "limit": limit}
    if not files:
        return document
    rows = read_quarantine(spark, settings, files)
    if reason:
        rows = rows.where(F.col("reason").startswith(reason))
    millis = F.unix_millis("kafka_timestamp")
    if from_ms is not None:
        rows = rows.where(millis >= F.lit(from_ms))
    if to_ms is not None:
        rows = rows.where(millis < F.lit(to_ms))
    rows = rows.persist()
    try:
        counts = [(r["reason"], r["n"]) for r in rows.groupBy("reason").agg(F.count("*").alias("n")).collect()]
        document["by_reason"] = by_reason(counts)
        document["total"] = sum(n for _, n in counts)
        picked = (rows.select("*", millis.alias("_ms"))
                  .orderBy("_ms", "kafka_partition", "kafka_offset").limit(max(limit, 0)).collect())
    finally:
        rows.unpersist()
    for r in picked:
        key, key_encoding = show_bytes(r["key"])
        value, value_encoding = show_bytes(r["value"])
        document["records"].append({
            "topic": r["topic"], "kafka_partition": r["kafka_partition"], "kafka_offset": r["kafka_offset"],
            "kafka_timestamp": r["_ms"], "kafka_time": timeutil.iso(r["_ms"], millis=True),
            ARRIVAL_HOUR: arrival_hour(r["_ms"]), "reason": r["reason"], "key": key, "key_encoding": key_encoding,
            "value": value, "value_encoding": value_encoding, "file": r["_file"]})
    return document


# ------------------------------------------------------------------------------------ replay
def replay_running(fs, settings: Settings) -> bool:
    """Whether a live replay holds the replay lock: its uncommitted ``_staging/replay-<id>`` is in
    progress, not a leftover (the ingest's start-up recovery must not roll it back then)."""
    from lambdaflow.storage.lock import WriterLock

    lock = WriterLock(fs, f"{settings.quarantine_path}/{REPLAY_LOCK}")
    n, holder, beat = lock.current()
    return n > 0 and not lock._takeable(holder, beat)


class Replay:
    """One replay run over a landing zone and its quarantine (see the module docstring)."""

    def __init__(self, spark, settings: Settings, fs=None, progress: Callable[[str], None] | None = None) -> None:
        from lambdaflow.storage.fs import JvmFs

        self.spark, self.settings = spark, settings
        self.fs = fs or JvmFs(spark, settings.hdfs_url)
        self.progress = progress or (lambda message: log.info("%s", message))
        self.landing = settings.landing_path
        self.quarantine = settings.quarantine_path
        self.manifests = f"{self.landing}/{landing.MANIFESTS}"
        self.staging = f"{self.landing}/{landing.STAGING}"
        self.lock = None

    # -- the lock -------------------------------------------------------------------------------
    def _acquire(self) -> None:
        from lambdaflow.storage.lock import LockHeld, WriterLock, describe

        lock = WriterLock(self.fs, f"{self.quarantine}/{REPLAY_LOCK}")
        try:
            lock.acquire()
        except LockHeld as exc:
            n, holder, _ = lock.current()
            raise ReplayRunning(f"another quarantine replay of {self.quarantine} is running ({describe(holder, n)}); "
                                f"wait for it to finish (a holder that died is taken over: {exc})") from None
        self.lock = lock

    # -- committed replays ----------------------------------------------------------------------
    def is_committed(self, replay: str) -> bool:
        """Whether ``replay-<id>`` is committed: its manifest in the tail, or counted by a roll-up."""
        name = f"{replay_name(replay)}.json"
        if self.fs.exists(f"{self.manifests}/{name}"):
            return True
        from lambdaflow.storage import commit_log

        state = commit_log.read_state(commit_log.store_for(self.fs), self.landing)
        return commit_log.covers(state.rollup, name)

    def recover(self) -> None:
        """Roll interrupted replays forward (manifest committed) or back (none); clear ``_replayed``."""
        for staged in self.fs.list(self.staging):
            name = staged.rsplit("/", 1)[1]
            if not name.startswith(REPLAY_PREFIX):
                continue  # the ingest's batches: its own recovery handles them
            replay = name[len(REPLAY_PREFIX):]
            manifest = self.fs.read_json(f"{self.manifests}/{name}.json")
            if manifest is not None:
                self._move_files(manifest["files"])
                self.progress(f"recovery: rolled committed replay {name} forward")
            elif self.is_committed(replay):
                raise RuntimeError(f"replay {name} is counted in a roll-up but its staging directory {staged} "
                                   "still exists: the roll-up should have kept it in the tail")
            else:
                self.progress(f"recovery: rolled uncommitted replay {name} back")
            self.fs.delete(staged)
        moving = {p.rsplit("/", 1)[1] for p in self.fs.list(self.staging)}
        for taken_out in self.fs.list(f"{self.quarantine}/{REPLAYED}"):
            if taken_out.rsplit("/", 1)[1] not in moving:  # in place: the replaced files are history
                self.fs.delete(taken_out)

    def _move_files(self, files: list[dict], pause: bool = False) -> None:
        """Rename staged -> final (:func:`lambdaflow.landing.move_into_place`, the ingest's own step)."""
        landing.move_into_place(self.fs, files, log=log.warning,
                                after_first=(lambda: _test_pause("moved_partially")) if pause else None)

    # -- the run ----------------------------------------------------------------------------------
    def run(self, reason: str | None = None) -> dict:
        self._acquire()
        try:
            self.recover()
            return self._replay(reason)
        finally:
            self.lock.release()

    def _replay(self, reason: str | None) -> dict:
        from pyspark.sql import functions as F

        from lambdaflow.ingest_transforms import LANDING_COLUMNS, QUARANTINE_COLUMNS, parse_records

        started = time.monotonic()
        summary = {"replay": None, "candidates": 0, "landed": 0, "already_landed": 0, "still_quarantined": 0,
                   "reasons_changed": 0,
                   "files_replaced": 0, "landed_hours": {}, "quarantine_reasons": {}}
        files = data_files(self.fs, self.settings)
        # Files of an ingest batch still moving into place (its _staging/<key> exists, listed after
        # the files) are where its manifest says recovery will look for them: leave them alone.
        from lambdaflow.storage.hour_merge import commit_key_of

        moving = {p.rsplit("/", 1)[1] for p in self.fs.list(self.staging)}
        held = [f for f in files if commit_key_of(f.rsplit("/", 1)[1]) in moving]
        if held:
            self.progress(f"left {len(held)} file(s) of batches still moving into place for the next replay")
            files = [f for f in files if f not in held]
        self.progress(f"reading {len(files)} quarantine file(s) under {self.quarantine}")
        if not files:
            return summary
        rows = read_quarantine(self.spark, self.settings, files)
        candidate = F.col("reason").startswith(reason) if reason else F.lit(True)
        # Today's parser on the records' original Kafka columns, once per (partition, offset).
        kafka_like = rows.where(candidate).select(
            "topic", F.col("kafka_partition").alias("partition"), F.col("kafka_offset").alias("offset"),
            F.col("kafka_timestamp").alias("timestamp"), "key", "value").dropDuplicates(["partition", "offset"])
        verdicts = parse_records(kafka_like).select(
            "kafka_partition", "kafka_offset", F.col("reason").alias("_new_reason"),
            *(F.col(c).alias(f"_new_{c}") for c in LANDING_COLUMNS if c not in ("kafka_partition", "kafka_offset")),
            F.lit(True).alias("_verdict"))
        passes = F.col("_candidate") & F.col("_verdict") & F.col("_new_reason").isNull()
        judged = (rows.withColumn("_candidate", candidate)
                  .join(verdicts, ["kafka_partition", "kafka_offset"], "left")
                  .withColumn("_passes", F.coalesce(passes, F.lit(False)))
                  .persist())
        try:
            return self._replay_judged(judged, summary, started, LANDING_COLUMNS, QUARANTINE_COLUMNS)
        finally:
            judged.unpersist()

    def _replay_judged(self, judged, summary: dict, started: float, landing_columns, quarantine_columns) -> dict:
        from pyspark.sql import functions as F

        stats = (judged.where("_candidate").groupBy("_file", "reason", "_new_reason", "_passes")
                 .agg(F.count("*").alias("n")).collect())
        summary["candidates"] = sum(r["n"] for r in stats)
        # Files to rewrite: those holding a record that passes now or whose reason is new.
        replaced = sorted({r["_file"] for r in stats if r["_passes"] or r["_new_reason"] != r["reason"]})
        passing = sum(r["n"] for r in stats if r["_passes"])
        summary["reasons_changed"] = sum(r["n"] for r in stats if not r["_passes"] and r["_new_reason"] != r["reason"])
        self.progress(f"re-validated {summary['candidates']} quarantined record(s): {passing} pass today's parser, "
                      f"{summary['candidates'] - passing} still fail ({summary['reasons_changed']} with a new "
                      f"reason); {len(replaced)} file(s) to rewrite")
        if not replaced:
            summary["still_quarantined"] = summary["candidates"]
            return summary

        # Records to land: one row per (partition, offset), none that the landing zone already holds.
        new = {c: F.col(f"_new_{c}").alias(c) for c in landing_columns if c not in ("kafka_partition", "kafka_offset")}
        passing_rows = (judged.where("_passes")
                        .select(*(new.get(c, F.col(c)) for c in landing_columns))
                        .dropDuplicates(["kafka_partition", "kafka_offset"]))
        hours = sorted(int(r[0]) for r in passing_rows.select("timestamp_hour").distinct().collect())
        landed_dirs = [f"{self.landing}/timestamp_hour={h}" for h in hours]
        landed_dirs = [d for d in landed_dirs if self.fs.exists(d)]  # a record lands in its event hour, always
        to_land = passing_rows
        if landed_dirs:
            present = (self.spark.read.option("basePath", self.settings.uri(self.landing))
                       .parquet(*(self.settings.uri(d) for d in landed_dirs))
                       .select("kafka_partition", "kafka_offset").distinct())
            to_land = passing_rows.join(present, ["kafka_partition", "kafka_offset"], "left_anti")
        to_land = to_land.persist()
        try:
            landed_stats = to_land.groupBy("timestamp_hour").agg(F.count("*").alias("n")).collect()
            landed_hours = {int(r["timestamp_hour"]): int(r["n"]) for r in landed_stats}
            records = [(int(r[0]), int(r[1])) for r in to_land.select("kafka_partition", "kafka_offset").collect()]
            summary["already_landed"] = passing_rows.count() - len(records)
            replay = replay_id(self.settings.topic, records, replaced)
            name = replay_name(replay)
            if self.is_committed(replay):
                raise RuntimeError(f"{name} is committed, yet its records are still in the quarantine: "
                                   "the quarantine and the commit log disagree; inspect before replaying")
            stage = f"{self.staging}/{name}"
            self.fs.delete(stage)
            self.progress(f"{name}: staging {len(records)} record(s) to land in {len(landed_hours)} hour(s), "
                          f"{summary['already_landed']} already in the landing zone")
            if records:
                (to_land.select(*landing_columns).repartition("timestamp_hour")
                 .write.partitionBy("timestamp_hour").parquet(self.settings.uri(f"{stage}/landing")))
        finally:
            to_land.unpersist()

        # Replacements: every row of a replaced file that stays, a candidate's with its new reason.
        index = self.spark.createDataFrame([(p, i) for i, p in enumerate(replaced)], "_file string, file int")
        staying = (judged.join(F.broadcast(index), "_file").where(~F.col("_passes"))
                   .withColumn("reason", F.when(F.col("_candidate"), F.col("_new_reason")).otherwise(F.col("reason")))
                   .select(*quarantine_columns, "file"))
        staying.repartition("file").write.partitionBy("file").parquet(self.settings.uri(f"{stage}/quarantine"))

        files = self._plan_moves(stage, name, replaced)
        _test_pause("staged")
        removed = sum(r["n"] for r in stats if r["_passes"])
        changes = [(r["reason"], None if r["_passes"] else r["_new_reason"], r["n"]) for r in stats
                   if r["_file"] in set(replaced)]
        reasons = reason_deltas(changes)
        manifest = replay_manifest(replay, self.settings.topic, files, landed_hours, removed, reasons, records,
                                   timeutil.now_ms())
        gone = [f["staged"] for f in files if not self.fs.exists(f["staged"])]
        if gone:  # e.g. an ingest starting now rolled the uncommitted staging back: commit nothing
            raise RuntimeError(f"{name}: {len(gone)} file(s) to move vanished before the commit point (first: "
                               f"{gone[0]}); nothing was committed: run the replay again")
        self.fs.mkdirs(self.manifests)
        self.lock.commit(f"{name}.json", landing.dumps(manifest), self.manifests)  # the commit point, fenced
        self.progress(f"{name}: committed (landed {len(records)}, quarantine {-removed:+d})")
        _test_pause("committed")
        self._move_files(files, pause=True)
        _test_pause("moved")
        self.fs.delete(stage)
        self.fs.delete(f"{self.quarantine}/{REPLAYED}/{name}")
        summary.update(replay=name, landed=len(records), files_replaced=len(replaced),
                       still_quarantined=summary["candidates"] - passing,
                       landed_hours={str(h): n for h, n in sorted(landed_hours.items())}, quarantine_reasons=reasons,
                       seconds=round(time.monotonic() - started, 2))
        self.progress(f"{name}: in place: {len(records)} record(s) landed, {len(replaced)} quarantine file(s) "
                      f"rewritten, {summary['still_quarantined']} record(s) still quarantined")
        return summary

    def _plan_moves(self, stage: str, name: str, replaced: list[str]) -> list[dict]:
        """Staged -> final, in order: landed files, replacements, then each replaced file out of the quarantine."""
        moves: list[dict] = []
        n = 0
        for path in self.fs.list_files_recursive(f"{stage}/landing"):
            if path.endswith(".parquet"):
                hour_dir = path[len(f"{stage}/landing"):].rsplit("/", 1)[0]  # "/timestamp_hour=H"
                moves.append({"kind": "landing", "staged": path,
                              "final": f"{self.landing}{hour_dir}/part-{name}-{n}.snappy.parquet"})
                n += 1
        for path in self.fs.list_files_recursive(f"{stage}/quarantine"):
            if path.endswith(".parquet"):
                number = path[len(f"{stage}/quarantine/file="):].split("/", 1)[0]
                directory = replaced[int(number)].rsplit("/", 1)[0]
                moves.append({"kind": "quarantine", "staged": path,
                              "final": f"{directory}/part-{name}-{n}.snappy.parquet"})
                n += 1
        for path in replaced:
            relative = path[len(self.quarantine) + 1:]
            moves.append({"kind": "quarantine_replaced", "staged": path,
                          "final": f"{self.quarantine}/{REPLAYED}/{name}/{relative}"})
        return moves


def recover(fs, settings: Settings, progress: Callable[[str], None] | None = None) -> None:
    """Roll interrupted replays forward (committed) or back (not), and clear ``_replayed``.

    For other holders of the replay lock (``<quarantine>/_replay``, e.g. quarantine merges and
    retention): call it right after taking the lock, before touching quarantine files, so that the
    files a committed replay still has to move out of the quarantine are moved, not merged or kept."""
    Replay(None, settings, fs=fs, progress=progress).recover()


def replay(spark, settings: Settings, reason: str | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Replay the quarantine of ``settings`` (records whose reason starts with ``reason``, or all)."""
    return Replay(spark, settings, progress=progress).run(reason)


def _test_pause(step: str) -> None:
    """Test hook: with ``LAMBDAFLOW_TEST_REPLAY_PAUSE_AT=<step>`` a replay announces itself on stderr and
    blocks at ``step`` so that a test can kill -9 it there. Without the variable it does nothing."""
    wanted = os.environ.get("LAMBDAFLOW_TEST_REPLAY_PAUSE_AT")
    if not wanted:
        return
    if wanted not in TEST_PAUSE_STEPS:
        raise ValueError(f"LAMBDAFLOW_TEST_REPLAY_PAUSE_AT: unknown step {wanted!r}; "
                         f"one of {', '.join(TEST_PAUSE_STEPS)}")
    if wanted == step:
        print(f"lambdaflow test hook: replay paused at {step}", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)


# ------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="quarantined records and counts by reason",
                             description="Quarantined records and counts by reason (kind and full text).")
    listing.add_argument("--reason", help="only reasons starting with this text (e.g. malformed_json)")
    listing.add_argument("--from", dest="from_", type=timeutil.parse_iso8601, metavar="ISO8601",
                         help="records whose Kafka timestamp is at or after this time (UTC)")
    listing.add_argument("--to", type=timeutil.parse_iso8601, metavar="ISO8601",
                         help="records whose Kafka timestamp is before this time (half-open)")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                         help="records to show, oldest first (default %(default)s; counts cover all)")
    listing.add_argument("--json", action="store_true", help="print one JSON document")
    replaying = sub.add_parser(
        "replay", help="re-validate quarantined records with today's parser; land those that pass, once",
        description="Re-validate quarantined records with today's parser: those that pass land once in the "
                    "landing zone under their original Kafka coordinates, the rest stay with their (new) reason. "
                    "Running it again adds nothing.")
    replaying.add_argument("--reason", help="only records whose reason starts with this text")
    replaying.add_argument("--json", action="store_true", help="print the summary as one JSON document")


def _print_table(document: dict) -> None:
    print(f"quarantine {document['quarantine']}: {document['total']} record(s) in {document['files']} file(s)")
    for kind, entry in document["by_reason"].items():
        print(f"  {entry['count']:>8}  {kind}")
        shown = list(entry["reasons"].items())
        for text, n in shown[:5]:
            print(f"  {n:>8}    {text}")
        hidden = entry["count"] - sum(n for _, n in shown[:5])
        if hidden:
            texts = len(shown) - 5 + entry.get("other_reasons", {}).get("texts", 0)
            print(f"  {hidden:>8}    ... {texts} other text(s) (--json lists up to {MAX_TEXTS})")
    if document["records"]:
        print(f"\n{'kafka time':24} {'part':>4} {'offset':>10}  {'reason':40}  value")
        for r in document["records"]:
            value = r["value"] if r["value_encoding"] == "utf-8" else f"(base64) {r['value']}"
            value = (value or "").replace("\t", "\\t").replace("\n", "\\n")
            print(f"{r['kafka_time']:24} {r['kafka_partition']:>4} {r['kafka_offset']:>10}  "
                  f"{(r['reason'] or '')[:40]:40}  {value[:60]}")
        if document["total"] > len(document["records"]):
            print(f"... {document['total'] - len(document['records'])} more (--limit)")


def run(args: argparse.Namespace) -> int:
    from lambdaflow.spark import session

    settings = Settings.from_env()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    if args.action == "list":
        from_ms = timeutil.to_epoch_ms(args.from_) if args.from_ else None
        to_ms = timeutil.to_epoch_ms(args.to) if args.to else None
        if from_ms is not None and to_ms is not None and from_ms >= to_ms:
            raise UserError(f"--from {timeutil.iso(from_ms)} is not before --to {timeutil.iso(to_ms)}")
        spark = session("lambdaflow-quarantine", settings)
        document = list_records(spark, settings, args.reason, from_ms, to_ms, args.limit)
        if args.json:
            print(json.dumps(document, indent=2))
        else:
            _print_table(document)
        return 0
    spark = session("lambdaflow-quarantine-replay", settings)
    summary = replay(spark, settings, args.reason,
                     progress=lambda message: print(f"[replay] {message}", file=sys.stderr, flush=True))
    print(json.dumps(summary, indent=2) if args.json else
          f"replayed: {summary['landed']} record(s) landed, {summary['already_landed']} already landed, "
          f"{summary['still_quarantined']} still quarantined ({summary['replay'] or 'nothing to commit'})")
    return 0
