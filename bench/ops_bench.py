"""Operations against a long history: does the cost of every reader stay flat as micro-batches pile up?

``run(settings, spark)`` builds two landing zones on isolated HDFS roots, each with its own real
topic (3 partitions), holding a synthetic history of ``small`` (1,000) and ``large`` (100,000)
committed micro-batches spread over the same 48 hours that end now, and times, on each, once both
are built (one untimed warm-up run each, then ``repeats`` runs alternating between the two zones in
ABBA order, so that the other work on the machine weighs on both alike; the median counts):

- ``ops.lag_s_at_<n>``: ``lambdaflow lag --json`` as a user runs it: a new process of the CLI with
  the settings' environment (Python start-up, imports, Kafka look-ups, the commit log, the lag
  history sample it records);
- ``ops.completeness_s_at_<n>``: one poke of the batch layer's completeness sensor
  (``lambdaflow.batch.landing_complete``, what the ``weblogs_batch`` DAG's ``wait_for_landing``
  calls) for a closed hour in the middle of the history, after the first poke (untimed, at the
  hour's end + the allowed lateness) recorded the hour's observation: the state of every later poke;
- ``ops.recovery_s_at_<n>``: the ingest's start-up recovery,
  ``LandingCommitter(spark, settings, JvmFs(...)).recover()`` in a local SparkSession;
- ``ops.dashboard_s_at_<n>``: the dashboard summary's landing figures,
  ``ManifestCache().totals(settings)`` on a fresh cache (a cold api-server).

``ops.<figure>_growth_ratio`` = the time at ``large`` / the time at ``small`` for each of the four,
``ops.growth_ratio_max`` the worst of them (goal <= 1.5: reader cost does not grow with history);
``ops.bookkeeping_files_at_100k`` = the files under the large landing zone's bookkeeping paths
(names starting with ``_``), its speed root and its quarantine root (goal <= 2,000).

How the history is made (:mod:`lambdaflow.storage.synthetic`): the topic is filled with one tiny
record per partition per commit (so the history's positions equal the log-end offsets and lag is
0, the steady state); manifest documents are generated for offset ranges that tile the topic, all
but the newest ``tail`` are folded into roll-ups through ``commit_log.roll_up`` (``chunk`` commits
per roll-up), the tail is written as real manifest files; the consumer group gets the landed
positions, as the ingest commits them. On the large zone, per hour ``partials_per_hour`` real
per-commit speed partials per view and quarantine files are written, then the real
``hour_merge.merge_closed_hours`` merges every closed hour, as the ingest does. The open hour then
gets real per-commit files for the commits since the ingest's last merge (it merges every hour, the
open one too, every ``LAMBDAFLOW_MERGE_EVERY_S`` = 300 s: at 100,000 commits over 48 hours that is
174 commits, 3 files each). Landed data files are not written: none of the timed operations reads
them.

At ``--scale small`` the histories are 1,000 and 10,000 commits; the keys keep their names and
``details`` gives the sizes. Standalone: ``.venv/bin/python -m bench --only ops``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lambdaflow.config import Settings

OPERATIONS = ("lag", "completeness", "recovery", "dashboard")
KEYS = (*(f"ops.{op}_s_at_{size}" for op in OPERATIONS for size in ("1k", "100k")),
        *(f"ops.{op}_growth_ratio" for op in OPERATIONS),
        "ops.growth_ratio_max", "ops.bookkeeping_files_at_100k")
HOUR_MS = 3_600_000
ALLOWED_LATENESS_S = 60.0  # the weblogs_batch DAG's default
MERGE_THREADS = 4
MERGE_EVERY_S = float(os.environ.get("LAMBDAFLOW_MERGE_EVERY_S") or 300)  # the ingest's merge interval


@dataclasses.dataclass(frozen=True)
class Scale:
    small: int                   # commits of the small history (the "1k" figures)
    large: int                   # commits of the large history (the "100k" figures)
    hours: int = 48              # both histories are spread over this many hours, ending now
    partials_per_hour: int = 10  # real per-commit speed partials (per view) and quarantine files per hour
    tail: int = 50               # real manifest files after the newest roll-up (the ingest rolls up every 100)
    chunk: int = 10_000          # synthetic commits per roll-up
    repeats: int = 7             # timed runs of each in-process operation (median)
    cli_repeats: int = 5         # timed runs of the CLI (median)


SCALES = {
    "full": Scale(small=1_000, large=100_000),
    "small": Scale(small=1_000, large=10_000, partials_per_hour=5, repeats=3, cli_repeats=2),
}


def interleaved_medians(actions: dict[str, Callable[[], object]], repeats: int
                        ) -> dict[str, tuple[float, list[float]]]:
    """Time several variants of one operation in alternating rounds (ABBA order: a load that drifts
    during the run weighs on every variant alike): one untimed warm-up run each, then ``repeats``
    timed runs each. Returns {variant: (median seconds, every timing)}."""
    for action in actions.values():
        action()
    timings: dict[str, list[float]] = {name: [] for name in actions}
    names = list(actions)
    for round_ in range(repeats):
        for name in (names if round_ % 2 == 0 else reversed(names)):
            started = time.perf_counter()
            actions[name]()
            timings[name].append(time.perf_counter() - started)
    return {name: (statistics.median(t), [round(x, 4) for x in t]) for name, t in timings.items()}


def _fill_topic(settings: Settings, per_partition: int) -> dict[int, int]:
    """``per_partition`` tiny records in every partition of the (new) topic; returns the end offsets."""
    from kafka import KafkaProducer

    from lambdaflow import kafka_admin

    partitions = kafka_admin.topic_partitions(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks=1, linger_ms=20,
                             batch_size=512 * 1024)
    try:
        value = b'{"synthetic": true}'
        for _ in range(per_partition):
            for p in partitions:
                producer.send(settings.topic, value=value, partition=p)
        producer.flush()
    finally:
        producer.close()
    return kafka_admin.end_offsets(settings)


def _commit_group(settings: Settings, positions: dict[int, int]) -> None:
    """The landed positions in the consumer group, as the ingest publishes them after each commit."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.ingest_group,
                             enable_auto_commit=False)
    try:
        consumer.commit({TopicPartition(settings.topic, p): OffsetAndMetadata(o, "", -1) for p, o in positions.items()})
    finally:
        consumer.close()


def bookkeeping_files(settings: Settings, client=None) -> dict[str, int]:
    """Files under the landing zone's ``_`` paths, the speed root and the quarantine root."""
    from lambdaflow import hdfs

    c = client or hdfs.client(settings)

    def files(path: str) -> int:
        return int(c.content(path)["fileCount"]) if c.status(path, strict=False) else 0

    landing = {name: files(f"{settings.landing_path}/{name}")
               for name in hdfs.list_names(c, settings.landing_path) if name.startswith("_")}
    return {**{f"landing/{k}": v for k, v in sorted(landing.items())},
            "speed": files(settings.speed_root), "quarantine": files(settings.quarantine_path)}


def build_history(spark, fs, settings: Settings, commits: int, scale: Scale, now_ms: int, partials: bool,
                  progress: Callable[[str], None]) -> dict:
    """A topic and a landing zone holding ``commits`` synthetic micro-batches over ``scale.hours``."""
    from lambdaflow import kafka_admin
    from lambdaflow.storage import hour_merge, synthetic

    started = time.monotonic()
    kafka_admin.ensure_topic(settings)
    end_offsets = _fill_topic(settings, commits)
    progress(f"{commits:,}: topic {settings.topic} holds {sum(end_offsets.values()):,} records "
             f"({time.monotonic() - started:.0f}s)")
    roots = synthetic.default_roots(settings.landing_path, settings.speed_root, settings.quarantine_path)
    history = synthetic.write_history(fs, settings.landing_path, settings.topic, commits,
                                      now_ms - scale.hours * HOUR_MS, now_ms, end_offsets, tail=scale.tail,
                                      chunk=scale.chunk, roots=roots, progress=lambda m: progress(f"{commits:,}: {m}"))
    _commit_group(settings, history.positions)
    out = {"commits": commits, "records": sum(end_offsets.values()), "rollups_written": history.rollups,
           "tail_manifests": history.tail, "landed_rows": history.landed_rows,
           "quarantined_rows": history.quarantined_rows, "hours": len(history.keys_by_hour),
           "history_seconds": round(time.monotonic() - started, 1)}
    if partials:
        started = time.monotonic()
        open_hour = max(history.keys_by_hour)  # the hour of now: its files are modelled below
        out["partial_files_written"] = synthetic.write_hour_partials(
            spark, fs, settings, {h: k for h, k in history.keys_by_hour.items() if h != open_hour},
            per_hour=scale.partials_per_hour,
            progress=lambda m: progress(f"{commits:,}: {m}"))
        out["partials_seconds"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        roots = [(f"{settings.speed_root}/{v}", "timestamp_hour") for v in synthetic.SPEED_VIEWS] + [
            (settings.quarantine_path, "arrival_hour")]
        # The ingest merges each hour once it has closed, one at a time over 48 hours; here every
        # closed hour is merged at once, by merge_closed_hours per hour in a few threads (the hour
        # locks keep them apart), to fast-forward.
        tasks = [(root, column, hour) for root, column in roots
                 for hour in hour_merge.closed_hours(sorted(history.keys_by_hour), now_ms)]

        def merge(task: tuple[str, str, int]) -> int:
            root, column, hour = task
            return len(hour_merge.merge_closed_hours(spark, fs, root, column, now_ms, log=lambda _m: None,
                                                     hours=[hour]))

        merged = 0
        with ThreadPoolExecutor(max_workers=MERGE_THREADS) as pool:
            for i, n in enumerate(pool.map(merge, tasks), 1):
                merged += n
                if i % 24 == 0 or i == len(tasks):
                    progress(f"{commits:,}: merged {i} of {len(tasks)} closed view- and quarantine-hours "
                             f"({time.monotonic() - started:.0f}s)")
        out["hours_merged"] = merged
        out["merge_seconds"] = round(time.monotonic() - started, 1)
        # The open hour: the ingest merges every hour, the open one too, every LAMBDAFLOW_MERGE_EVERY_S
        # (300 s), so at most the commits of the last interval are still one file each (per view and
        # quarantine). Write that many, as real files, for the newest hour.
        per_hour = commits / scale.hours
        # (never more than the open hour's commits: just after the hour turned it holds only a few)
        since_merge = min(math.ceil(per_hour * MERGE_EVERY_S / 3600), len(history.keys_by_hour[open_hour]))
        started = time.monotonic()
        out["open_hour_commits_since_merge"] = since_merge
        out["open_hour_files_written"] = synthetic.write_hour_partials(
            spark, fs, settings, {open_hour: history.keys_by_hour[open_hour]}, per_hour=since_merge,
            progress=lambda m: progress(f"{commits:,}: open hour: {m}"))
        out["open_hour_seconds"] = round(time.monotonic() - started, 1)
    return out


class Operations:
    """The four timed operations on one landing zone, and what they answered (checked afterwards)."""

    def __init__(self, spark, settings: Settings, scale: Scale, now_ms: int, commits: int) -> None:
        from lambdaflow import batch

        self.spark, self.settings, self.commits = spark, settings, commits
        self.env = {**os.environ, **settings.env()}
        script = Path(sys.executable).with_name("lambdaflow")  # the console script beside this Python
        self.cli = [str(script) if script.exists() else shutil.which("lambdaflow") or "lambdaflow", "lag", "--json"]
        # closed, mid-history, and past its allowed lateness even in the first minute of an hour (the
        # tiny scale's 3 hours once picked the hour that had closed 34 s before: "lateness ends in 26 s")
        closed_by = now_ms - int(ALLOWED_LATENESS_S * 1000)
        self.hour = (closed_by - closed_by % HOUR_MS) - max(1, scale.hours // 2) * HOUR_MS
        self.answers: dict = {}
        # The sensor's first poke after the hour closed recorded the log-end offsets (here: as of the
        # hour's end + the allowed lateness, through the function's clock parameter); every later
        # poke, the one timed, compares the landing positions with them.
        batch.landing_complete(settings, self.hour, self.hour + HOUR_MS, ALLOWED_LATENESS_S,
                               now_ms=self.hour + HOUR_MS + int(ALLOWED_LATENESS_S * 1000))

    def lag(self) -> None:
        """``lambdaflow lag --json`` in a new process, as a user runs it."""
        done = subprocess.run(self.cli, env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"lambdaflow lag --json failed ({done.returncode}): {done.stderr[-1000:]}")
        self.answers["lag"] = json.loads(done.stdout)

    def completeness(self) -> None:
        """One poke of the weblogs_batch DAG's completeness sensor."""
        from lambdaflow import batch

        self.answers["completeness"] = batch.landing_complete(self.settings, self.hour, self.hour + HOUR_MS,
                                                              ALLOWED_LATENESS_S)

    def recovery(self) -> None:
        """The ingest's start-up recovery."""
        from lambdaflow.ingest import LandingCommitter
        from lambdaflow.storage.fs import JvmFs

        committer = LandingCommitter(self.spark, self.settings, JvmFs(self.spark, self.settings.hdfs_url))
        committer.recover()
        self.answers["recovery"] = committer.positions

    def dashboard(self) -> None:
        """The dashboard summary's landing figures on a fresh cache."""
        from lambdaflow.monitoring.dashboard import ManifestCache

        self.answers["dashboard"] = ManifestCache().totals(self.settings)

    def checked(self) -> dict:
        """What the operations answered; raises when one did not see the whole history."""
        lag, (done, reason) = self.answers["lag"], self.answers["completeness"]
        totals = self.answers["dashboard"]
        if lag.get("total_lag") != 0:
            raise RuntimeError(f"lag after the synthetic history is {lag.get('total_lag')}, not 0: {lag}")
        if not done:
            raise RuntimeError(f"the completeness check of a closed hour did not complete: {reason}")
        if totals.get("batches") != self.commits:
            raise RuntimeError(f"the dashboard counts {totals.get('batches')} batches, not {self.commits}")
        return {"lag_status": lag.get("status"), "total_lag": lag.get("total_lag"), "completeness": reason,
                "recovered_positions": self.answers["recovery"], "dashboard_batches": totals.get("batches"),
                "dashboard_manifests_read": totals.get("manifests_read")}


def run(settings: Settings, spark, scale: str | Scale = "full", progress: Callable[[str], None] = print,
        details: dict | None = None, keep: bool | None = None) -> dict:
    """Build both histories, time the four operations on each; returns the ``ops.*`` figures."""
    from lambdaflow import hdfs, kafka_admin
    from lambdaflow.storage.fs import JvmFs

    chosen = SCALES[scale] if isinstance(scale, str) else scale
    details = details if details is not None else {}
    keep = bool(os.environ.get("LAMBDAFLOW_BENCH_KEEP")) if keep is None else keep
    run_id = uuid.uuid4().hex[:8]
    base = f"/bench/ops-{run_id}"
    fs = JvmFs(spark, settings.hdfs_url)
    now_ms = int(time.time() * 1000)
    zones = {"1k": chosen.small, "100k": chosen.large}
    isolated = {label: settings.replace(root=f"{base}/{label}", topic=f"bench-ops-{run_id}-{label}",
                                        ingest_group=f"bench-ops-{run_id}-{label}") for label in zones}
    figures: dict = {}
    details.update(scale=dataclasses.asdict(chosen), roots={k: v.root for k, v in isolated.items()},
                   topics={k: v.topic for k, v in isolated.items()})
    try:
        for label, commits in zones.items():
            details[f"history_{label}"] = build_history(spark, fs, isolated[label], commits, chosen, now_ms,
                                                        partials=label == "100k", progress=progress)
        ops = {label: Operations(spark, isolated[label], chosen, now_ms, commits) for label, commits in zones.items()}
        for op in OPERATIONS:
            repeats = chosen.cli_repeats if op == "lag" else chosen.repeats
            timed = interleaved_medians({label: getattr(ops[label], op) for label in zones}, repeats)
            for label, (median, timings) in timed.items():
                figures[f"ops.{op}_s_at_{label}"] = round(median, 4)
                details.setdefault(f"timings_{label}", {})[op] = timings
            progress(f"{op}: " + ", ".join(f"{zones[label]:,} commits {median:.3f}s"
                                           for label, (median, _) in timed.items()))
        for label in zones:
            details[f"sanity_{label}"] = ops[label].checked()
        for op in OPERATIONS:
            figures[f"ops.{op}_growth_ratio"] = round(figures[f"ops.{op}_s_at_100k"] / figures[f"ops.{op}_s_at_1k"], 3)
        figures["ops.growth_ratio_max"] = max(figures[f"ops.{op}_growth_ratio"] for op in OPERATIONS)
        counts = bookkeeping_files(isolated["100k"])
        details["bookkeeping_files_100k"] = counts
        details["bookkeeping_files_1k"] = bookkeeping_files(isolated["1k"])
        figures["ops.bookkeeping_files_at_100k"] = sum(counts.values())
        progress(f"bookkeeping files after {chosen.large:,} commits: {sum(counts.values()):,} {counts}")
    finally:
        if not keep:
            try:
                hdfs.client(settings).delete(base, recursive=True)
            except Exception as exc:  # noqa: BLE001 - a leftover root is reported, not fatal
                progress(f"could not remove {base}: {exc}")
            admin = kafka_admin.admin(settings)
            try:
                for topic in {z.topic for z in isolated.values()} & set(admin.list_topics()):
                    admin.delete_topics([topic])
            except Exception as exc:  # noqa: BLE001 - a leftover topic is reported, not fatal
                progress(f"could not delete the topics: {exc}")
            finally:
                admin.close()
    return figures


if __name__ == "__main__":  # quick manual run: python -m bench.ops_bench [full|small]
    from lambdaflow.spark import session as make_session

    spark_session = make_session("lambdaflow-bench-ops", Settings.from_env(), master="local[2]")
    try:
        print(json.dumps(run(Settings.from_env(), spark_session, sys.argv[1] if len(sys.argv) > 1 else "small"),
                         indent=2))
    finally:
        spark_session.stop()
