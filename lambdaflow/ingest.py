"""The streaming ingest: Kafka -> HDFS landing zone, exactly once, plus the speed views.

Spark Structured Streaming's Kafka source is the *direct* approach: the driver fixes each
micro-batch's offset range, one Kafka partition maps to one Spark partition, there are no
receivers and no write-ahead log. Exactly-once comes from the sink side: each micro-batch's
landed rows, quarantined rows and speed-view partials are committed together with the batch's
offset ranges (``lambdaflow.landing``), keyed by the ranges, so a replayed range is recognised
and never lands twice.

Recovery:
- with the checkpoint, Spark resumes and replays the unfinished batch; rows at offsets the
  landing zone already holds are dropped (``after_positions``), so a replay replaces nothing twice;
- without it (deleted, or unusable after an upgrade), the stream starts at the landing positions
  (largest ``until`` per partition, compared as integers: no skipped record, no duplicate);
- when Kafka no longer holds offsets the landing zone needs (retention), start-up fails and names
  the gap.

Run with ``lambdaflow ingest`` (spark-submit of ``spark_jobs/stream_ingest.py``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import os
import signal
import sys
import threading
import time

from lambdaflow import landing
from lambdaflow.config import Settings
from lambdaflow.errors import UserError
from lambdaflow.monitoring import batch_profile, stream_progress
from lambdaflow.monitoring.batch_profile import CountingFs
from lambdaflow.storage import commit_log
from lambdaflow.storage.fs import write_files
# The single-writer lock, fenced by epochs: a driver paused past the takeover timeout
# (LAMBDAFLOW_LOCK_STALE_S, default 60 s) and taken over can never commit again.
from lambdaflow.storage.lock import LockLost, WriterLock as IngestLock

log = logging.getLogger("lambdaflow.ingest")

# The steps of a batch commit where the test hook (LandingCommitter._test_pause) can hold the ingest.
TEST_PAUSE_STEPS = ("staged", "manifest_written", "moved_partially", "moved")


class StopIngest(Exception):
    """Raised inside a micro-batch that starts after a stop was requested (nothing written yet)."""


class RetentionGap(UserError):
    """Kafka no longer holds offsets the landing zone needs."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class LandingCommitter:
    """Commits micro-batches to the landing zone (see ``lambdaflow.landing`` for the protocol)."""

    def __init__(self, spark, settings: Settings, fs, lg_config_k: int = 12) -> None:
        self.spark, self.settings, self.fs = spark, settings, fs
        self.lg_config_k = lg_config_k
        self.landing = settings.landing_path
        self.manifests = f"{self.landing}/{landing.MANIFESTS}"
        self.staging = f"{self.landing}/{landing.STAGING}"
        self.positions: dict[int, int] = {}
        self.batch_lock = threading.Lock()
        self.stopping = False
        self.totals = {"batches": 0, "landed": 0, "quarantined": 0}
        self._group_consumer = None
        self.lock: IngestLock | None = None  # set by run_stream: commits go through its fenced commit point
        self.log_store = commit_log.JvmLogStore(fs)
        # Commits since the last roll-up, kept in memory so that rolling them up reads nothing back.
        self.unrolled: dict[str, dict] = {}
        self.rollup_every = settings.rollup_every
        self.tail_at_start = 0  # manifests left unrolled by earlier runs (an ingest restarted often)
        self._merged_at: int | None = None  # when the last hour merge started (epoch ms)
        self._merging: threading.Thread | None = None
        # The speed partials' small files are written several at once (lambdaflow.storage.fs.write_files).
        self._writers = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="lambdaflow-write")

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> None:
        """Roll committed staging directories forward and uncommitted ones back; load positions.

        Reads the bounded commit log (the newest roll-up plus the tail), never the whole history."""
        from lambdaflow.storage import quarantine

        state = commit_log.read_state(self.log_store, self.landing)
        keys = {n.removesuffix(".json") for n in state.tail}
        replaying = None
        for staged_dir in self.fs.list(self.staging):
            key = staged_dir.rsplit("/", 1)[1]
            if key.startswith(commit_log.REPLAY_PREFIX) and key not in keys:
                if replaying is None:
                    replaying = quarantine.replay_running(self.fs, self.settings)
                if replaying:  # a live replay's, not yet committed: the replay finishes or rolls it back
                    log.info("recovery: left %s to the quarantine replay that is running", key)
                    continue
            if key in keys:  # a range commit, or a quarantine replay's (replay-<id>)
                manifest = json.loads(self.fs.read_text(f"{self.manifests}/{key}.json"))
                self._move_files(manifest["files"])
                log.info("recovery: rolled committed batch %s forward", key)
            else:  # never committed (a roll-up covers only batches whose staging was gone)
                log.info("recovery: rolled uncommitted batch %s back", key)
            self.fs.delete(staged_dir)
        for tmp in self.fs.list(self.manifests):
            if tmp.rsplit("/", 1)[1].startswith("_tmp"):
                self.fs.delete(tmp, recursive=False)
        self.positions = state.positions
        self.tail_at_start = len(state.tail)  # they count toward the next roll-up

    def starting_offsets(self, partitions: list[int], earliest: dict[int, int]) -> str:
        """The Kafka source's startingOffsets for a stream without a checkpoint: the landing positions."""
        offsets = {}
        for p in partitions:
            position = self.positions.get(p)
            if position is None:
                offsets[str(p)] = -2  # earliest
            elif earliest.get(p, 0) > position:
                raise RetentionGap(
                    f"Kafka no longer holds offsets the landing zone needs: {self.settings.topic} partition {p} "
                    f"starts at {earliest[p]} but the landing zone ends at {position} "
                    f"(offsets {position}..{earliest[p] - 1} are gone; lower retention or re-produce them)")
            else:
                offsets[str(p)] = position
        return json.dumps({self.settings.topic: offsets})

    # -- one micro-batch ----------------------------------------------------------------------
    def __call__(self, batch, batch_id: int) -> None:
        """foreachBatch: commit micro-batch ``batch_id``, whose rows ``batch`` are already parsed."""
        with self.batch_lock:
            if self.stopping:
                raise StopIngest("stop requested")
            if self.lock is not None and self.lock.lost is not None:
                raise self.lock.lost
            self._commit_batch(batch, batch_id)

    def _commit_batch(self, batch, batch_id: int) -> None:
        from pyspark.sql import functions as F

        from lambdaflow.ingest_transforms import (after_positions, arrival_hour, batch_summary, landed_rows,
                                                  quarantined_rows, read_summary, speed_partial_files)

        from lambdaflow.storage import offset_log

        started = time.monotonic()
        counted = self.fs if isinstance(self.fs, CountingFs) else None
        profile = batch_profile.BatchProfile(self.spark, batch_id, counted)
        # The batch's range is the source's (from the offset log), not the records' min/max + 1.
        with profile.step("offsets"):
            start, end = offset_log.batch_offsets(self.fs, self.settings.checkpoint_path, batch_id,
                                                  self.settings.topic)
        ranges = landing.batch_ranges(start, end, self.positions)
        if not ranges:
            log.info("batch %d: offsets up to %s already landed (a replayed batch); nothing to commit", batch_id, end)
            return
        parsed = after_positions(batch, self.positions, start).persist()  # parsed by the query (_start_query)
        try:
            # One small aggregate gives the offset ranges, rows per hour, quarantine reasons and both
            # speed views' partials; it also materialises the parsed batch, which the writes below
            # read from memory.
            partitions = sorted(r.partition for r in ranges)
            with profile.step("stats"):
                summary = read_summary(batch_summary(parsed, partitions, self.lg_config_k).collect(), partitions)
            bounds, hours, reasons = summary.bounds, summary.hours, summary.reasons
            landing.check_records_within(ranges, bounds)  # an empty batch (all aborted) commits its range too
            key = landing.commit_key(ranges)
            epoch = self.lock.epoch if self.lock is not None else None
            stage = f"{self.staging}/{landing.staging_name(key, epoch)}"
            with profile.step("clear_stage"):
                self.fs.delete(stage)
            n_landed, n_quarantined = sum(hours.values()), sum(reasons.values())
            uri = self.settings.uri
            if n_landed:
                landed = landed_rows(parsed)
                with profile.step("write_landing"):
                    writers = 1 if n_landed < SINGLE_WRITER_ROWS else len(partitions)
                    landed.coalesce(writers).write.options(
                        **STAGE_WRITE_OPTIONS).partitionBy("timestamp_hour").parquet(uri(f"{stage}/landing"))
                # Both views' partials came with the summary: one small file per view and hour,
                # written by the driver (no Spark job), several at once.
                with profile.step("write_speed"):
                    write_files(self.fs, {f"{stage}/{relative}": data for relative, data
                                          in speed_partial_files(summary.partials).items()}, self._writers)
            if n_quarantined:  # partitioned by arrival hour (the Kafka timestamp's): retention and merges per hour
                with profile.step("write_quarantine"):
                    (quarantined_rows(parsed).withColumn("arrival_hour", arrival_hour(F.col("kafka_timestamp")))
                     .coalesce(1).write.options(**STAGE_WRITE_OPTIONS).partitionBy("arrival_hour")
                     .parquet(uri(f"{stage}/quarantine")))
        finally:
            parsed.unpersist()
        with profile.step("plan_moves"):
            files = self._plan_moves(stage, key)
        self._test_pause("staged")
        manifest = landing.manifest_document(self.settings.topic, ranges, files, n_landed, n_quarantined,
                                             hours, _now_ms(), reasons, epoch=epoch)
        with profile.step("manifest"):
            self._commit_manifest(key, manifest)  # the commit point, fenced
        self._test_pause("manifest_written")
        with profile.step("moves"):
            self._move_files(files, recovering=False)
        self._test_pause("moved")
        with profile.step("clear_staging"):
            self.fs.delete(f"{self.staging}/{key}")  # with any leftovers of fenced epochs
        for r in ranges:
            self.positions[r.partition] = max(self.positions.get(r.partition, 0), r.until_offset)
        with profile.step("group_commit"):
            self._commit_group_offsets()
        self.unrolled[f"{key}.json"] = manifest
        if self.rollup_every and len(self.unrolled) + self.tail_at_start >= self.rollup_every:
            with profile.step("roll_up"):
                self.roll_up()
        self.totals["batches"] += 1
        self.totals["landed"] += n_landed
        self.totals["quarantined"] += n_quarantined
        log.info("batch %d committed %s: landed %d, quarantined %d, offsets %s, %.2fs", batch_id, key, n_landed,
                 n_quarantined, ", ".join(f"p{r.partition}:[{r.from_offset},{r.until_offset})" for r in ranges),
                 time.monotonic() - started)
        log.info("%s", batch_profile.profile_line(profile.document(key=key, landed=n_landed,
                                                                    quarantined=n_quarantined, files=files)))

    def roll_up(self) -> None:
        """Fold the commits since the last roll-up into a new one and delete their manifests, so the
        commit log stays O(hours), not O(micro-batches) (:mod:`lambdaflow.storage.commit_log`)."""
        started = time.monotonic()
        try:
            rolled = commit_log.roll_up(self.log_store, self.landing, pending=self.unrolled)
        except Exception as exc:  # bookkeeping: never fails the stream; the next commit tries again
            log.warning("rolling up the commit log failed (retried after the next commit): %s",
                        str(exc).splitlines()[0][:300])
            return
        self.unrolled.clear()
        self.tail_at_start = 0
        log.info("rolled up %d commit(s) of the landing zone's log in %.2fs", rolled, time.monotonic() - started)
        self._merge_hours()

    def _merge_hours(self) -> None:
        """Every ``LAMBDAFLOW_MERGE_EVERY_S`` (default 300 s; checked after each roll-up, so none with
        ``LAMBDAFLOW_ROLLUP_EVERY=0``): merge the speed partials and quarantine files (one small file
        per micro-batch) of every hour, the open one included, into one per hour
        (:mod:`lambdaflow.storage.hour_merge`), so an hour directory holds the files of the last few
        minutes' commits plus one, however long the hour. The ingest is those directories' writer,
        so it starts it: files it adds during a merge are not the merge's inputs. The maintenance
        DAG does it when the ingest is down (a per-hour lock keeps the two apart). It runs in a
        background thread, as Spark jobs of its own (13-17 ms per file here), never holding the stream."""
        now = _now_ms()
        every_ms = float(os.environ.get("LAMBDAFLOW_MERGE_EVERY_S") or 300) * 1000
        if (self._merged_at is not None and now - self._merged_at < every_ms) or (
                self._merging is not None and self._merging.is_alive()):
            return
        self._merged_at = now
        self._merging = threading.Thread(target=self._run_merges, name="lambdaflow-hour-merges", daemon=True)
        self._merging.start()

    def _run_merges(self) -> None:
        from lambdaflow import maintenance

        started = time.monotonic()
        try:
            # "before" the next hour: every hour up to the open one is merged
            maintenance.merge_hours(self.settings, _now_ms() + 3_600_000, log=log.info, spark=self.spark)
        except Exception as exc:  # bookkeeping: never fails the stream; the next hour (or the DAG) retries
            log.warning("merging hours failed (retried at the next merge): %s", str(exc).splitlines()[0][:300])
        else:
            log.info("merged hours in %.2fs", time.monotonic() - started)

    def _commit_manifest(self, key: str, manifest: dict) -> None:
        """Make the manifest visible: through the lock's fenced commit point (fails once taken over)."""
        if self.lock is None:  # tools and tests without a lock
            self.fs.write_atomic(f"{self.manifests}/{key}.json", landing.dumps(manifest))
            return
        if not getattr(self, "_manifests_made", False):
            self.fs.mkdirs(self.manifests)
            self._manifests_made = True
        self.lock.commit(f"{key}.json", landing.dumps(manifest), self.manifests)

    def _plan_moves(self, stage: str, key: str) -> list[dict]:
        """Staged data files -> their final paths, named by the commit key."""
        targets = {
            "landing": self.landing,
            "activity_by_product": f"{self.settings.speed_root}/activity_by_product",
            "visitors_by_product": f"{self.settings.speed_root}/visitors_by_product",
            "quarantine": self.settings.quarantine_path,
        }
        moves = []
        for kind, target in targets.items():
            n = 0
            for path in self.fs.list_files_recursive(f"{stage}/{kind}"):
                name = path.rsplit("/", 1)[1]
                if not name.endswith(".parquet"):
                    continue  # _SUCCESS and checksums
                relative_dir = path[len(f"{stage}/{kind}"):].rsplit("/", 1)[0]  # "/timestamp_hour=..." or ""
                final = f"{target}{relative_dir}/part-{key}-{n}.snappy.parquet"
                moves.append({"kind": kind, "staged": path, "final": final})
                n += 1
        return moves

    def _move_files(self, files: list[dict], recovering: bool = True) -> None:
        """Rename staged files into place (:func:`lambdaflow.landing.move_into_place`)."""
        landing.move_into_place(self.fs, files, recovering, log=log.warning,
                                after_first=None if recovering else lambda: self._test_pause("moved_partially"))

    def _test_pause(self, step: str) -> None:
        """Test hook: with ``LAMBDAFLOW_TEST_PAUSE_AT=<step>[:<n>]`` the n-th batch commit (default the
        first) announces itself on stderr and blocks at ``step``, so that a test can kill -9 the ingest
        exactly there. Without the variable (always, outside tests) it does nothing."""
        wanted = os.environ.get("LAMBDAFLOW_TEST_PAUSE_AT")
        if not wanted:
            return
        name, _, number = wanted.partition(":")
        if name not in TEST_PAUSE_STEPS:
            raise ValueError(f"LAMBDAFLOW_TEST_PAUSE_AT: unknown step {name!r}; one of {', '.join(TEST_PAUSE_STEPS)}")
        batch = self.totals["batches"] + 1
        if name != step or batch != int(number or 1):
            return
        print(f"lambdaflow test hook: paused at {step} of batch commit {batch}", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)

    def _commit_group_offsets(self) -> None:
        """Publish the landed positions to the consumer group so Kafka's tools show the ingest's lag."""
        from kafka import KafkaConsumer, TopicPartition
        from kafka.structs import OffsetAndMetadata

        try:
            if self._group_consumer is None:
                self._group_consumer = KafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap,
                                                     group_id=self.settings.ingest_group,
                                                     enable_auto_commit=False, request_timeout_ms=10000)
            self._group_consumer.commit({TopicPartition(self.settings.topic, p): OffsetAndMetadata(o, "", -1)
                                         for p, o in self.positions.items()})
        except Exception as exc:  # a convenience copy of the landing positions: never fails the batch
            log.warning("committing positions to consumer group %s failed: %s", self.settings.ingest_group, exc)

    def close(self, merge_wait_s: float = 600) -> None:
        """Let a running hour merge finish (stopping mid-merge would leave its inputs and the merged
        file both visible until a later merge's recovery), then close the group consumer."""
        if self._merging is not None and self._merging.is_alive():
            log.info("waiting for the hour merge in progress to finish (up to %.0f s)", merge_wait_s)
            self._merging.join(timeout=merge_wait_s)
        self._writers.shutdown(wait=True)
        if self._group_consumer is not None:
            self._group_consumer.close()


def run_stream(settings: Settings, available_now: bool = False, trigger_interval: str = "1 second",
               max_offsets_per_trigger: int | None = None, lg_config_k: int = 12) -> dict:
    """Run the ingest until stopped (SIGTERM/SIGINT finish the current batch) or, with
    ``available_now``, until everything Kafka held at start has landed. Returns the totals."""
    from lambdaflow import kafka_admin
    from lambdaflow.jvm_fs import JvmFs
    from lambdaflow.spark import session

    spark = session("lambdaflow-ingest", settings, conf={**MICRO_BATCH_CONF, **ui_conf()})
    log.info("Spark UI of the ingest (Structured Streaming tab: /StreamingQuery/): %s", spark.sparkContext.uiWebUrl)
    recorder = stream_progress.recorder(settings)  # per-batch progress, charted on the dashboard
    spark.streams.addListener(recorder)
    fs = CountingFs(JvmFs(spark, settings.hdfs_url))  # counts NameNode calls for the batch profile
    lock = IngestLock(fs, settings.landing_path)
    lock.acquire()
    committer = LandingCommitter(spark, settings, fs, lg_config_k)
    committer.lock = lock
    stop_requested = threading.Event()
    lock.on_lost = stop_requested.set  # taken over: stop the query; the loss is raised below

    def on_signal(signum, _frame) -> None:
        log.info("signal %d: finishing the current batch, then stopping", signum)
        stop_requested.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    marker = stop_marker(settings)
    try:
        if fs.exists(marker):  # a stop request for an earlier run
            fs.delete(marker, recursive=False)
        committer.recover()
        partitions = kafka_admin.topic_partitions(settings)
        if not partitions:
            raise UserError(f"topic {settings.topic} does not exist on {settings.kafka_bootstrap}")
        earliest = kafka_admin.beginning_offsets(settings)
        starting = committer.starting_offsets(partitions, earliest)
        for attempt in (1, 2):
            try:
                query = _start_query(spark, settings, committer, starting, available_now, trigger_interval,
                                     max_offsets_per_trigger)
            except Exception as exc:  # start() reads the checkpoint's metadata file
                error = QueryFailed.from_start(exc)
            else:
                log.info("ingest started: topic %s, landing positions %s, checkpoint %s", settings.topic,
                         committer.positions or "none (from earliest)", settings.checkpoint_path)
                error = _supervise(query, committer, stop_requested, lambda: fs.exists(marker))
            _raise_if_lost(lock, error)
            if error is None or isinstance(error, StopIngest) or stop_requested.is_set():
                break
            if attempt == 1 and _is_checkpoint_problem(error):
                aside = f"{settings.checkpoint_path}.unusable-{_now_ms()}"
                log.warning("the checkpoint cannot be used (%s); moving it to %s and resuming from the landing "
                            "zone's offset ranges", str(error).splitlines()[0][:300], aside)
                fs.rename(settings.checkpoint_path, aside)
                committer.recover()
                starting = committer.starting_offsets(partitions, kafka_admin.beginning_offsets(settings))
                continue
            raise error
        if fs.exists(marker):
            fs.delete(marker, recursive=False)
        return {**committer.totals, "positions": committer.positions}
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        committer.close()
        lock.release()
        spark.streams.removeListener(recorder)
        recorder.close()


# How the ingest plans its micro-batches' jobs (not a cluster's sizing: that is the topology's).
# Adaptive query execution re-plans each shuffle from its statistics, which costs every micro-batch
# an extra job per shuffle (the stats aggregation ran 3 jobs, the speed partials 4) for plans that are
# already right: a batch's aggregates are a few rows per hour and product. Measured at 1,000
# events/s beside the Airflow daemons: 2.39 s per commit with it, 1.61 s without.
# The only shuffle of a micro-batch is its summary aggregation, whose output is a few rows per hour
# and product: one reduce task, not one per core.
# A micro-batch's parsed rows are cached once, read by the summary and the writes, then dropped:
# compressing the cache cost more than it saved (200,000 records read, parsed, cached and
# summarised, best of 3: 5.8 s compressed, 4.8 s uncompressed MEMORY_ONLY; the ingest keeps the
# default level, which spills a backlog batch to disk; the cache of a 5,000 events/s batch is a few MB).
MICRO_BATCH_CONF = {"spark.sql.adaptive.enabled": "false", "spark.sql.shuffle.partitions": "1",
                    "spark.sql.inMemoryColumnarStorage.compressed": "false"}

# The landing and quarantine writes go to the batch's staging directory, which nobody reads until
# the manifest commits it (a failed write is cleared before the next attempt and rolled back by
# recovery), so the job commit need not be atomic: task commits move their files into place
# (FileOutputCommitter algorithm 2: no second rename per file at job commit) and no _SUCCESS marker
# is written (one NameNode create fewer per write).
STAGE_WRITE_OPTIONS = {"mapreduce.fileoutputcommitter.algorithm.version": "2",
                       "mapreduce.fileoutputcommitter.marksuccessfuljobs": "false"}

# Below this many landed rows a micro-batch writes one landing file per hour instead of one per Kafka
# partition and hour: fewer files for the NameNode (at 5,000 events/s a day is 86,400 commits). The
# write reads the cached batch, so one task is cheap: 200,000 rows over 27 hours took 1.4 s as one
# task (27 files) and 2.1-2.3 s as three (81 files) on 2 cores. A larger batch writes one file per
# Kafka partition and hour, however many read tasks it had (records_per_task).
SINGLE_WRITER_ROWS = 250_000


def records_per_task() -> int:
    """At most this many records per Kafka read task (the source's ``maxRecordsPerPartition``):
    ``LAMBDAFLOW_INGEST_RECORDS_PER_TASK``, default 25,000, 0 for one task per Kafka partition. The
    parse is CPU-bound: a backlog of 200,000 records in 3 partitions on 2 cores ran as two waves
    with one core idle in the second; split into tasks of at most 25,000 both cores stay busy
    (best 32,904 rows/s against 29,531 unsplit). A micro-batch of a steady stream (a few thousand
    records) keeps one task per partition: splitting every batch into 6 (``minPartitions``) made
    small batches slower (at 1,000 events/s 0.81 s instead of 0.70 s at the p50; p99 latency at
    5,000 events/s 5.2 s instead of 3.4 s in one run each). Spark splits a partition's offset
    range among tasks; the batch's offset ranges and the commit key are the source's, not the tasks'."""
    return int(os.environ.get("LAMBDAFLOW_INGEST_RECORDS_PER_TASK", "25000"))


def ui_conf() -> dict[str, str]:
    """The ingest's Spark UI, on for Spark users (``LAMBDAFLOW_INGEST_UI_PORT``, default 4040; the next
    free port when taken), with bounded retention for a driver that runs for months."""
    return {
        "spark.ui.enabled": "true",
        "spark.ui.port": str(stream_progress.ui_port()),
        "spark.ui.retainedJobs": "200",
        "spark.ui.retainedStages": "200",
        "spark.ui.retainedTasks": "20000",
        "spark.sql.ui.retainedExecutions": "100",
        "spark.sql.streaming.ui.retainedQueries": "10",
        "spark.sql.streaming.ui.retainedProgressUpdates": "100",
    }


# How long a read task's Kafka fetch may wait at the broker for more data (the consumer's
# ``fetch.max.wait.ms``, 500 ms by default). A task reads a range that is already in the log, so
# waiting buys nothing; but a read that reaches the end of the log, as the last micro-batch before
# any pause in the traffic does, waited out the default: measured in bursts of 2,000 events/s with
# 4 s pauses, the last batch of every burst took 1.6-2.3 s against 0.7-1.0 s for the others (its
# read 1.2-1.5 s instead of 0.3-0.5 s); with 10 ms it took as long as the others. The executors'
# consumers fetch only while a task reads, so a short wait adds no polling of an idle topic.
FETCH_MAX_WAIT_MS = 10


def _raise_if_lost(lock: IngestLock, error: Exception | None) -> None:
    """A driver that was taken over exits with LockLost (naming the new holder), whatever else failed."""
    if lock.lost is None and error is not None:
        try:
            lock.check()
        except LockLost:
            pass
        except Exception as exc:  # HDFS unreachable: report the query's own error
            log.warning("could not check the landing zone lock: %s", exc)
    if lock.lost is not None:
        raise lock.lost


def _start_query(spark, settings, committer, starting, available_now, trigger_interval, max_offsets):
    from lambdaflow import ingest_transforms  # looked up at start: a test can patch its parse_records

    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
              .option("subscribe", settings.topic)
              .option("startingOffsets", starting)
              .option("failOnDataLoss", "true")
              .option("kafka.isolation.level", "read_committed")  # aborted transactions never land
              .option("includeHeaders", "false")
              .option("kafka.fetch.max.wait.ms", str(FETCH_MAX_WAIT_MS)))
    if max_offsets:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets))
    per_task = records_per_task()
    if per_task > 0:
        reader = reader.option("maxRecordsPerPartition", str(per_task))
    # The parse is part of the streaming query, not of each micro-batch's commit: Spark analyses it
    # once, when the query starts, and hands foreachBatch each batch's parsed rows as a plan of one
    # node (ForeachBatchSink wraps the planned batch in a LogicalRDD). Built inside the commit, the
    # parse's plan was analysed anew every batch: building it, caching it and aggregating over it
    # took 0.23 s of a 1,000-record batch before any record was read (lambdaflow.ingest_transforms).
    parsed = ingest_transforms.for_commit(ingest_transforms.parse_records(reader.load()))
    writer = (parsed.writeStream.queryName("lambdaflow_ingest").foreachBatch(committer)
              .option("checkpointLocation", settings.uri(settings.checkpoint_path)))
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(processingTime=trigger_interval)
    return writer.start()


def _supervise(query, committer: LandingCommitter, stop_requested: threading.Event,
               marker_present) -> Exception | None:
    """Wait for the query; on a stop request (signal or marker) let the running batch finish, then stop it."""
    polls = 0
    while query.isActive:
        polls += 1
        if polls % 4 == 0 and marker_present():
            log.info("stop marker found: finishing the current batch, then stopping")
            stop_requested.set()
        if stop_requested.is_set():
            with committer.batch_lock:  # waits for a batch in flight to commit
                committer.stopping = True
            query.stop()
            break
        try:
            query.awaitTermination(0.5)
        except Exception:  # pyspark raises the query's failure here; it is judged below, from query.exception()
            break
    exc = query.exception()
    if exc is None:
        return None
    if "StopIngest" in str(exc):
        return StopIngest(str(exc))
    return QueryFailed.from_java(str(exc), query._jsq.exception().get())


class QueryFailed(RuntimeError):
    """The streaming query failed (in ``start()`` or while running), with the Java exception chain.

    ``chain`` holds, outermost first, one ``(java class, Spark error condition or None, first Spark
    class in its stack trace or None)`` per exception, so callers judge the error by what it is,
    never by words that happen to appear in its message.
    """

    def __init__(self, message: str, chain: list[tuple[str, str | None, str | None]]) -> None:
        super().__init__(message)
        self.chain = chain

    @classmethod
    def from_java(cls, message: str, throwable) -> "QueryFailed":
        chain, seen = [], 0
        while throwable is not None and seen < 20:
            seen += 1
            try:
                condition = throwable.getCondition()  # org.apache.spark.SparkThrowable
            except Exception:
                condition = None
            spark_frame = next((f.getClassName() for f in throwable.getStackTrace()
                                if f.getClassName().startswith("org.apache.spark.")), None)
            chain.append((throwable.getClass().getName(), condition, spark_frame))
            throwable = throwable.getCause()
        return cls(message, chain)

    @classmethod
    def from_start(cls, exc: Exception) -> "QueryFailed | Exception":
        """The error ``writeStream.start()`` raised (it reads the checkpoint's metadata file)."""
        throwable = getattr(exc, "_origin", None) or getattr(exc, "java_exception", None)
        return exc if throwable is None else cls.from_java(str(exc), throwable)


# Spark's error conditions (error-conditions.json, Spark 4.2) for a checkpoint this Spark cannot use:
# a log file it cannot parse, a log written by another Spark version, offset/commit logs without
# the metadata file.
CHECKPOINT_CONDITIONS = frozenset({"MALFORMED_LOG_FILE", "INVALID_LOG_VERSION",
                                   "STREAMING_CHECKPOINT_MISSING_METADATA_FILE"})


def _is_checkpoint_problem(error: Exception) -> bool:
    """True only for a checkpoint this query cannot resume from, judged by Spark's error condition
    or by which code threw: not for Kafka, HDFS or data errors (a Kafka metadata timeout must not
    move the checkpoint aside)."""
    if not isinstance(error, QueryFailed):
        return False
    for java_class, condition, spark_frame in error.chain:
        if condition and condition.split(".", 1)[0] in CHECKPOINT_CONDITIONS:
            return True
        frame = spark_frame or ""
        # The checkpoint's metadata file is unreadable (Spark raises the JSON parser's error).
        if frame.rsplit(".", 1)[-1].startswith("StreamMetadata") and java_class.startswith("com.fasterxml.jackson."):
            return True
        # An offset in the offset log that is not a Kafka source offset: a checkpoint of another query.
        if java_class == "java.lang.IllegalArgumentException" and frame.startswith("org.apache.spark.sql.kafka010.JsonUtils"):
            return True
    return False


# -------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--available-now", action="store_true",
                        help="bounded mode: land everything Kafka holds now, then exit 0")
    parser.add_argument("--mode", choices=["continuous", "available-now"], default="continuous",
                        help="the same choice as --available-now, as a value (for templated arguments)")
    parser.add_argument("--trigger-interval", default=os.environ.get("LAMBDAFLOW_TRIGGER_INTERVAL", "1 second"),
                        help="micro-batch trigger interval (default: %(default)s)")
    parser.add_argument("--max-offsets-per-trigger", type=int,
                        default=int(os.environ.get("LAMBDAFLOW_MAX_OFFSETS_PER_TRIGGER", "0")) or None,
                        help="rate limit: at most this many records per micro-batch")
    parser.add_argument("--lg-config-k", type=int, default=12, help="HLL sketch size for speed views (4..21)")
    parser.add_argument("--stop", action="store_true",
                        help="ask the running ingest to finish its current batch and exit (a stop marker in HDFS)")


def run(args: argparse.Namespace) -> int:
    """`lambdaflow ingest`: the streaming job in this process (SIGTERM/SIGINT stop it cleanly).

    The ``weblogs_ingest`` DAG runs the same job through spark-submit (``spark_jobs/stream_ingest.py``).
    """
    if args.stop:
        return request_stop(Settings.from_env())
    configure_logging()
    available_now = args.available_now or args.mode == "available-now"
    totals = run_stream(Settings.from_env(), available_now=available_now, trigger_interval=args.trigger_interval,
                        max_offsets_per_trigger=args.max_offsets_per_trigger, lg_config_k=args.lg_config_k)
    print(json.dumps({"ingest": totals}), flush=True)
    return 0


def main(argv: list[str]) -> int:
    """Entry point of spark_jobs/stream_ingest.py."""
    parser = argparse.ArgumentParser(prog="stream_ingest.py", description="lambdaflow streaming ingest")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except UserError as exc:
        print(f"stream_ingest: error: {exc}", file=sys.stderr)
        return 2


def stop_marker(settings: Settings) -> str:
    return f"{settings.root}/checkpoints/ingest.stop"


def request_stop(settings: Settings) -> int:
    """Ask a running ingest (wherever it runs) to finish its batch and exit, via a marker in HDFS."""
    from lambdaflow import hdfs
    from lambdaflow.storage.fs import web_write_atomic

    # atomically (a temp file renamed into place): the job polls for the marker and deletes it when
    # it stops, and a marker it saw while still being written made the writer's close fail
    web_write_atomic(hdfs.client(settings), stop_marker(settings), str(_now_ms()))
    print(f"stop requested: {stop_marker(settings)}; the ingest stops after its current batch")
    return 0


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("py4j").setLevel(logging.WARNING)
