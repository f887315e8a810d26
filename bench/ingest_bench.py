"""Ingest throughput and latency beside two yardsticks, in one run on the same broker and topic.

Throughput (bounded mode, one topic of ``events`` pre-produced events, 3 partitions):

- ``ingest.rows_per_s``: lambdaflow's own ingest (``lambdaflow.ingest.run_stream(available_now=True)``:
  parse + validate, landing rows, quarantine, speed-view partials, offset-range manifest, renames,
  consumer-group commit) = rows landed / wall time of the ``run_stream`` call.
- ``ingest.naive_spark_rows_per_s``: a naive Structured Streaming job on the same topic (Kafka source
  -> Parquet file sink, defaults except ``startingOffsets=earliest``, ``availableNow`` trigger) = rows
  written / wall time of ``start()`` + ``awaitTermination()``.
- ``ingest.consumer_perf_test_rows_per_s``: Kafka's own ConsumerPerformance on the same topic
  (``nMsg.sec`` of its summary line: the JVM client's ceiling; it only counts records).
- ``ingest.ratio_vs_naive_spark`` / ``ingest.ratio_vs_consumer_perf_test``: ours divided by each.

What is timed: both Spark jobs run in the benchmark's one SparkSession, so JVM start-up is never
timed; each is timed from the call that starts the query to its end (checkpoint set-up, offset
look-up, the micro-batches, the final commit). Ours also pays for its lock, recovery scan and
Kafka admin look-ups: that is part of the job. A warm-up round on a small topic runs both jobs
once untimed (class loading, JIT); then ``repeats`` alternating rounds each write to a fresh
HDFS root and checkpoint, and the best round of each job counts. ConsumerPerformance reports its
own rate from its first poll to its last record (no JVM start-up either).

Latency (``ingest.latency_p50_s`` / ``ingest.latency_p99_s``): the real ingest as a separate process
(``python -m lambdaflow.cli ingest --trigger-interval '1 second'``), a producer at a steady 5,000
events/s for ``latency_duration_s``, then SIGTERM. Before it, a cold window of ``latency_warmup_s``
at the same rate is measured the same way and reported apart (``details.latency.cold``): a fresh
JVM's first ~30-60 s of micro-batches run 1.5-2x slower until the JIT has compiled the hot paths,
and a job that runs for months is judged by its steady state without hiding its start. For every record
produced in the timed window: latency = ``committed_at_ms`` of the manifest whose offset range holds
the record - the record's Kafka timestamp (the producer's send time). ``committed_at_ms`` is the
commit point for manifest-aware readers (lambdaflow's reader, the batch layer, the lag monitor);
the data files are renamed into place right after it (tens of ms). Percentiles are over records.

The same process then gets a 1,000 events/s window (``ingest.latency_p99_s_at_1k``), while a
sampler sums the peak RSS of every service and job (``memory.stack_peak_rss_gib``, ``PeakRss``:
each service's and job's peak of its process tree's RSS; the benchmark's own Spark JVM is reported,
not summed),
then a few 2-minute probes at steady rates (``ingest.sustained_events_per_s``: the highest at
which the lag stayed bounded, ``lag_bounded``). What else ran (load average, other JVMs and Python
processes, the Airflow daemons up or not) is recorded with the figures (``environment``). Every
micro-batch's profile (``lambdaflow.monitoring.batch_profile``) goes to the details, summarised.

Where the bounded run's time goes before any write (``parse_profile`` in the details): the
throughput topic read once and cached, then no-op writes of the records as they are, of
``try_parse_json`` alone, of the whole parse and validation, and of the speed partials.

Goals (measured, never asserted): ratio_vs_naive_spark >= 1.0 (0.5 this round),
ratio_vs_consumer_perf_test >= 0.3 (0.15 this round), latency p99 <= 3 s with a 1 s trigger,
p99 at 1,000 events/s <= 2 s, stack peak RSS <= 6 GiB.

Standalone: ``.venv/bin/python -m bench --only ingest`` (Kafka and HDFS up).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from lambdaflow.config import REPO_ROOT, Settings
from lambdaflow.monitoring import batch_profile

KEYS = (
    "ingest.rows_per_s",
    "ingest.naive_spark_rows_per_s",
    "ingest.consumer_perf_test_rows_per_s",
    "ingest.ratio_vs_naive_spark",
    "ingest.ratio_vs_consumer_perf_test",
    "ingest.latency_p50_s",
    "ingest.latency_p99_s",
    "ingest.latency_p99_s_at_1k",
    "ingest.sustained_events_per_s",
    "memory.stack_peak_rss_gib",
)


@dataclasses.dataclass(frozen=True)
class Scale:
    events: int                # pre-produced events for the throughput runs
    repeats: int               # alternating timed rounds of ours / naive (best counts)
    warmup_events: int         # untimed warm-up round on its own small topic
    latency_rate: float        # events/s during the latency run
    latency_duration_s: float  # timed produce window of the latency run
    latency_warmup_s: float    # the cold window before the timed ones (its figures are reported
                               # apart: the JVM's JIT makes the first ~30-60 s of batches 1.5-2x slower)
    low_rate: float = 1000.0   # events/s of the second latency run (ingest.latency_p99_s_at_1k)
    probe_s: float = 120.0     # each sustained-rate probe produces this long at a steady rate
    probes: int = 2            # sustained-rate probes (a short bisection)


SCALES = {
    "full": Scale(events=200_000, repeats=2, warmup_events=10_000, latency_rate=5000.0,
                  latency_duration_s=60.0, latency_warmup_s=60.0),
    "small": Scale(events=20_000, repeats=1, warmup_events=2_000, latency_rate=5000.0,
                   latency_duration_s=15.0, latency_warmup_s=3.0, probe_s=30.0, probes=2),
}


# ------------------------------------------------------------------------------- pure helpers
def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100 or math.isnan(q):
        raise ValueError(f"percentile must be within [0, 100], not {q!r}")
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def parse_consumer_perf_output(text: str) -> dict[str, float | str]:
    """ConsumerPerformance's summary (a header line and a value line, comma separated) as a dict.

    Other lines (SLF4J notices, warnings) are ignored; numbers become floats. With
    ``--show-detailed-stats`` the last value line (the whole run) wins. Raises ValueError when the
    output holds no summary.
    """
    header: list[str] | None = None
    result: dict[str, float | str] | None = None
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if "nMsg.sec" in fields:
            header = fields
            continue
        if header and len(fields) == len(header):
            values: dict[str, float | str] = {}
            for name, value in zip(header, fields):
                try:
                    values[name] = float(value)
                except ValueError:
                    values[name] = value
            if isinstance(values.get("nMsg.sec"), float):
                result = values
    if result is None:
        raise ValueError(f"no ConsumerPerformance summary in the output: {text[-500:]!r}")
    return result


_BATCH_LINE = re.compile(
    r"batch (?P<batch>\d+) committed (?P<key>\S+): landed (?P<landed>\d+), quarantined (?P<quarantined>\d+), "
    r"offsets .*, (?P<seconds>\d+(?:\.\d+)?)s\s*$")


def parse_batch_lines(lines: Iterable[str]) -> list[dict]:
    """lambdaflow.ingest's per-batch log lines -> [{"batch", "key", "landed", "quarantined", "seconds"}]."""
    out = []
    for line in lines:
        match = _BATCH_LINE.search(line)
        if match:
            out.append({"batch": int(match["batch"]), "key": match["key"], "landed": int(match["landed"]),
                        "quarantined": int(match["quarantined"]), "seconds": float(match["seconds"])})
    return out


def record_latencies_s(records: Iterable[tuple[int, int, int]], manifests: list[dict]) -> list[float]:
    """Per record (partition, offset, kafka timestamp ms): seconds from its Kafka timestamp to the
    ``committed_at_ms`` of the manifest whose [from_offset, until_offset) range holds it.

    Raises ValueError for a record no manifest covers (it was not landed through a commit).
    """
    per_partition: dict[int, list[tuple[int, int, int]]] = {}
    for manifest in manifests:
        for r in manifest["ranges"]:
            per_partition.setdefault(int(r["partition"]), []).append(
                (int(r["from_offset"]), int(r["until_offset"]), int(manifest["committed_at_ms"])))
    starts: dict[int, list[int]] = {}
    for partition, ranges in per_partition.items():
        ranges.sort()
        starts[partition] = [r[0] for r in ranges]
    latencies = []
    for partition, offset, timestamp_ms in records:
        ranges = per_partition.get(partition, [])
        i = bisect.bisect_right(starts.get(partition, []), offset) - 1
        if i < 0 or not ranges[i][0] <= offset < ranges[i][1]:
            raise ValueError(f"record at partition {partition} offset {offset} is in no committed range")
        latencies.append((ranges[i][2] - timestamp_ms) / 1000.0)
    return latencies


def summarize(values: list[float]) -> dict[str, float]:
    """count, mean, p50, p90, p99 and max of a list of seconds (rounded to ms)."""
    if not values:
        return {"count": 0}
    return {"count": len(values), "mean": round(sum(values) / len(values), 3),
            **{f"p{q}": round(percentile(values, q), 3) for q in (50, 90, 99)}, "max": round(max(values), 3)}


def lag_bounded(samples: list[tuple[float, int]], rate: float, settle_s: float = 20.0,
                slack_s: float = 5.0) -> dict:
    """Did the lag (records not landed) stay bounded during a probe at ``rate`` events/s?

    ``samples``: (seconds since the probe started, lag). After ``settle_s``, the least-squares
    slope of the lag must not add up to more than ``slack_s`` seconds of input over the probe,
    and the last lag must be below twice that (a few micro-batches' worth): a lag that grows
    without end fails either test, one that swings with batch boundaries passes both.
    """
    points = [(t, float(lag)) for t, lag in samples if t >= settle_s]
    if len(points) < 3:
        raise ValueError(f"too few lag samples after {settle_s:g}s: {len(points)}")
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_l = sum(lag for _, lag in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    slope = sum((t - mean_t) * (lag - mean_l) for t, lag in points) / var if var else 0.0
    span = points[-1][0] - points[0][0]
    limit = rate * slack_s
    bounded = slope * span <= limit and points[-1][1] <= 2 * limit
    return {"bounded": bounded, "lag_slope_per_s": round(slope, 1), "last_lag": int(points[-1][1]),
            "max_lag": int(max(lag for _, lag in points)), "limit": int(limit)}


def next_probe(low: float, high: float) -> float:
    """The bisection's next rate between the highest bounded (``low``) and lowest unbounded (``high``)."""
    return round((low + high) / 2 / 100) * 100


# ------------------------------------------------------------------------------- environment
def _read_proc(pid: int, name: str) -> str:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else ():
        out += [int(c) for c in _read_proc(pid, f"task/{task}/children").split()]
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen or not os.path.exists(f"/proc/{p}"):
            continue
        seen.append(p)
        todo += _children(p)
    return seen


def rss_bytes(pid: int) -> int:
    for line in _read_proc(pid, "status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def stack_services() -> dict[str, int]:
    """The local deployment's services that are up: name -> pid (from .run/pids)."""
    out = {}
    pid_dir = REPO_ROOT / ".run" / "pids"
    for f in sorted(pid_dir.glob("*.pid")) if pid_dir.is_dir() else ():
        try:
            pid = int(f.read_text().strip())
        except ValueError:
            continue
        if os.path.exists(f"/proc/{pid}"):
            out[f.stem] = pid
    return out


def environment(exclude: Iterable[int] = ()) -> dict:
    """What else was running: load average, the stack's services up (Airflow daemons or not), and
    every other JVM and Python process on the machine (other engineers' tests and benchmarks)."""
    services = stack_services()
    ours = set(exclude) | {os.getpid()}
    for pid in services.values():
        ours.update(process_tree(pid))
    others = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ours:
            continue
        cmd = _read_proc(int(entry), "cmdline").replace("\0", " ").strip()
        if not cmd or not (cmd.split()[0].endswith("java") or "python" in cmd.split()[0]):
            continue
        main_class = next((w for w in cmd.split() if re.match(r"^[a-z]+(\.[a-zA-Z0-9_$]+){2,}$", w)), None)
        others.append({"pid": int(entry), "rss_mib": round(rss_bytes(int(entry)) / 2**20),
                       "command": (main_class or cmd)[:160]})
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "services_up": sorted(services),
            "airflow_daemons_up": sorted(n for n in services if n.startswith("airflow-")),
            "other_processes": sorted(others, key=lambda o: -o["rss_mib"])[:20]}


class PeakRss:
    """Samples, every ``interval_s``, the RSS of each service of the stack and of each job (``add``):
    a service's or job's RSS at an instant is the sum over its process tree then (a daemon and the
    children it has at that moment, e.g. the DAG processor's parsing processes); each keeps its peak.
    ``total_gib`` is the sum of those peaks (never less than the simultaneous peak, ``concurrent_gib``).

    The benchmark's own process is the producer (a job); its Spark JVM, the instrument that runs the
    throughput rounds and the naive yardstick and reads the manifests, is not part of the stack: it
    is sampled and reported beside the total (``instrument``), not summed."""

    def __init__(self, interval_s: float = 1.0) -> None:
        import threading

        self.interval_s = interval_s
        self.roots: dict[str, int] = dict(stack_services())
        self.peaks: dict[str, int] = {}
        self.concurrent = 0
        self.instrument = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def add(self, name: str, pid: int) -> None:
        self.roots[name] = pid

    def sample(self) -> None:
        total = 0
        for name, root in list(self.roots.items()):
            rss = sum(rss_bytes(pid) for pid in process_tree(root))
            self.peaks[name] = max(self.peaks.get(name, 0), rss)
            total += rss
        me = os.getpid()
        producer = rss_bytes(me)  # this Python process only: the producer
        instrument = sum(rss_bytes(pid) for pid in process_tree(me) if pid != me)
        self.peaks["producer"] = max(self.peaks.get("producer", 0), producer)
        self.instrument = max(self.instrument, instrument)
        self.concurrent = max(self.concurrent, total + producer)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> "PeakRss":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def total_gib(self) -> float:
        return sum(self.peaks.values()) / 2**30

    def concurrent_gib(self) -> float:
        return self.concurrent / 2**30

    def by_name_mib(self) -> dict[str, int]:
        return {k: round(v / 2**20) for k, v in sorted(self.peaks.items())}

    def document(self) -> dict:
        return {"peak_rss_gib": round(self.total_gib(), 3),
                "peak_rss_mib_by_service": self.by_name_mib(),
                "simultaneous_peak_rss_gib": round(self.concurrent_gib(), 3),
                "instrument_peak_rss_mib": round(self.instrument / 2**20),
                "how": "per service or job: the peak over time of its process tree's RSS; summed; the "
                       "benchmark's own Spark JVM (instrument) reported, not summed"}


# ------------------------------------------------------------------------------- measurements
class _BatchLog(logging.Handler):
    """Collects lambdaflow.ingest's log lines of an in-process run (for the per-batch profile)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.created, record.getMessage()))


def _ours_bounded(spark, settings: Settings) -> dict:
    """lambdaflow's ingest in bounded mode, in this process's SparkSession; rows/s over its wall time."""
    from lambdaflow.ingest import run_stream

    del spark  # run_stream gets the same session through lambdaflow.spark.session()
    logger = logging.getLogger("lambdaflow.ingest")
    handler, level, propagate = _BatchLog(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the profile goes to the details, not to the console
    try:
        started = time.perf_counter()
        totals = run_stream(settings, available_now=True)
        seconds = time.perf_counter() - started
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    batches = parse_batch_lines(line for _, line in handler.lines)
    profiles = [p for p in (batch_profile.parse_profile_line(line) for _, line in handler.lines) if p]
    return {"rows": totals["landed"], "quarantined": totals["quarantined"], "seconds": seconds,
            "rows_per_s": totals["landed"] / seconds, "batches": batches,
            "batch_seconds": round(sum(b["seconds"] for b in batches), 3),
            "profile": batch_profile.summarize_profiles(profiles), "profiles": profiles[:5]}


def naive_spark_job(spark, settings: Settings, output: str, checkpoint: str) -> dict:
    """The yardstick: Kafka -> Parquet file sink with Structured Streaming's defaults, bounded.

    Only ``startingOffsets`` is set (to ``earliest``: the default, ``latest``, would read nothing
    from a pre-filled topic). No parsing, no validation, no partitioning, no manifests: the raw
    Kafka rows as the source gives them. Returns rows written and the wall time from ``start()`` to
    the end of ``awaitTermination()``.
    """
    started = time.perf_counter()
    query = (spark.readStream.format("kafka")
             .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
             .option("subscribe", settings.topic)
             .option("startingOffsets", "earliest")
             .load()
             .writeStream.format("parquet")
             .option("path", settings.uri(output))
             .option("checkpointLocation", settings.uri(checkpoint))
             .trigger(availableNow=True)
             .start())
    query.awaitTermination()
    seconds = time.perf_counter() - started
    if query.exception() is not None:
        raise RuntimeError(f"naive Spark job failed: {query.exception()}")
    rows = sum(int(p["numInputRows"]) for p in query.recentProgress)
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds,
            "batches": len([p for p in query.recentProgress if p["numInputRows"]])}


def consumer_perf_test(settings: Settings, records: int, group: str) -> dict:
    """Kafka's ConsumerPerformance over the first ``records`` records of the topic."""
    from lambdaflow import stack

    command = stack.kafka_tool_command("consumer-perf-test", [
        "--bootstrap-server", settings.kafka_bootstrap, "--topic", settings.topic,
        "--num-records", str(records), "--group", group, "--timeout", "30000"])
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"consumer-perf-test failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = parse_consumer_perf_output(done.stdout)
    if int(summary["data.consumed.in.nMsg"]) < records:
        raise RuntimeError(f"consumer-perf-test consumed {summary['data.consumed.in.nMsg']:.0f} of {records} records")
    return summary


def _wait_landed(settings: Settings, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Until the landing positions reach the topic's log-end offsets."""
    from lambdaflow import hdfs, kafka_admin, landing

    client = hdfs.client(settings)
    end = kafka_admin.end_offsets(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        positions = landing.positions(client, settings.landing_path)
        if all(positions.get(p, 0) >= o for p, o in end.items()):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the ingest exited with {proc.returncode} before landing everything")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not landed within {timeout_s:.0f}s: positions {positions}, log end {end}")
        time.sleep(0.25)


def _log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class _GroupLag:
    """Records not yet landed, from the ingest's consumer group (committed after every batch):
    cheap to poll, unlike reading a commit log that grows by one manifest per micro-batch."""

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaAdminClient

        self.settings = settings
        self.admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)

    def __call__(self) -> int:
        from kafka import TopicPartition

        from lambdaflow import kafka_admin

        end = kafka_admin.end_offsets(self.settings)
        group = self.settings.ingest_group
        committed = self.admin.list_group_offsets([group]).get(group, {})  # {TopicPartition: OffsetAndMetadata}
        return sum(max(0, o - (committed[TopicPartition(self.settings.topic, p)].offset
                               if TopicPartition(self.settings.topic, p) in committed else 0))
                   for p, o in end.items())

    def close(self) -> None:
        self.admin.close()


def _latency_window(spark, settings: Settings, rate: float, duration_s: float, seed: int,
                    log_path: Path, proc: subprocess.Popen, say: Callable[[str], None]) -> dict:
    """Produce ``duration_s`` at ``rate``; per-record produce -> commit latency of that window."""
    from pyspark.sql import functions as F

    from lambdaflow import hdfs, landing, producer

    lines_before = len(log_path.read_text(errors="replace").splitlines())
    load_before = [round(x, 2) for x in os.getloadavg()]
    window_start_ms = int(time.time() * 1000)
    say(f"producing {duration_s:.0f}s at {rate:.0f} events/s")
    summary = producer.produce(settings, duration=duration_s, rate=rate, seed=seed, progress=False)
    window_end_ms = int(time.time() * 1000)
    if summary["failed"]:
        raise RuntimeError(f"the producer lost records: {summary['errors']}")
    _wait_landed(settings, 300, proc)
    lines = log_path.read_text(errors="replace").splitlines()[lines_before:]
    manifests = landing.read_manifests(hdfs.client(settings), settings.landing_path)
    table = (spark.read.parquet(settings.uri(settings.landing_path))
             .select("kafka_partition", "kafka_offset", F.unix_millis("kafka_timestamp").alias("ts"))
             .where((F.col("ts") >= window_start_ms) & (F.col("ts") <= window_end_ms))
             .toArrow())
    records = zip(table.column("kafka_partition").to_pylist(), table.column("kafka_offset").to_pylist(),
                  table.column("ts").to_pylist())
    latencies = record_latencies_s(records, manifests)
    if len(latencies) < summary["acked"]:
        raise RuntimeError(f"{len(latencies)} records of the timed window landed, {summary['acked']} were acked")
    window_batches = [b for b in parse_batch_lines(lines) if b["landed"]]
    profiles = [p for p in (batch_profile.parse_profile_line(line) for line in lines) if p and p["rows"]["landed"]]
    commits = sorted(m["committed_at_ms"] for m in manifests if window_start_ms <= m["committed_at_ms"])
    gaps = [(b - a) / 1000 for a, b in zip(commits, commits[1:])]
    return {
        "rate": rate, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
        "latency_s": summarize(latencies), "records": len(latencies),
        "produced_events_per_s": summary["events_per_s"],
        "loadavg_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "batch_seconds": summarize([b["seconds"] for b in window_batches]),
        "rows_per_batch": summarize([float(b["landed"]) for b in window_batches]),
        "seconds_between_commits": summarize(gaps),
        "profile": batch_profile.summarize_profiles(profiles), "profiles": profiles[:3],
    }


def _probe(settings: Settings, rate: float, duration_s: float, seed: int, lag: _GroupLag,
           proc: subprocess.Popen) -> dict:
    """A steady ``rate`` for ``duration_s``, the lag sampled every 2 s; then drain."""
    import threading

    from lambdaflow import producer

    stop, result = threading.Event(), {}

    def send() -> None:
        result.update(producer.produce(settings, duration=duration_s, rate=rate, seed=seed, progress=False,
                                       stop=stop))

    sender = threading.Thread(target=send, name="bench-probe-producer", daemon=True)
    started = time.monotonic()
    sender.start()
    samples: list[tuple[float, int]] = []
    while sender.is_alive():
        samples.append((time.monotonic() - started, lag()))
        if proc.poll() is not None:
            stop.set()
            raise RuntimeError(f"the ingest exited with {proc.returncode} during a probe")
        sender.join(timeout=2.0)
    verdict = lag_bounded(samples, rate)
    _wait_landed(settings, 600, proc)
    return {"rate": rate, **verdict, "produced_events_per_s": round(result.get("events_per_s", 0.0), 1),
            "loadavg": [round(x, 2) for x in os.getloadavg()], "samples": len(samples)}


def parse_profile(spark, settings: Settings, repeats: int = 2) -> dict:
    """Where the bounded run's time goes before anything is written: the throughput topic's records
    read once and cached, then the best of ``repeats`` no-op writes (``format("noop")``) of the
    cached records as they are, of ``try_parse_json`` alone, of the whole parse and validation
    (``parse_records``) and of the batch summary (offset bounds, rows per hour, reasons and both speed
    views' partials: the one aggregation a micro-batch runs)."""
    from pyspark.sql import functions as F

    from lambdaflow.ingest_transforms import batch_summary, parse_records

    records = (spark.read.format("kafka").option("kafka.bootstrap.servers", settings.kafka_bootstrap)
               .option("subscribe", settings.topic).option("startingOffsets", "earliest")
               .option("kafka.isolation.level", "read_committed").load()).persist()
    try:
        rows = records.count()

        def best(frame) -> float:
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                frame.write.format("noop").mode("overwrite").save()
                times.append(time.perf_counter() - started)
            return round(min(times), 3)

        parsed = parse_records(records)
        partitions = sorted(r["partition"] for r in records.select("partition").distinct().collect())
        return {"rows": rows, "cached_scan_s": best(records),
                "try_parse_json_s": best(records.select(F.expr("try_parse_json(cast(value as string))"))),
                "parse_validate_s": best(parsed),
                "batch_summary_s": best(batch_summary(parsed, partitions, 12))}
    finally:
        records.unpersist()


def latency_run(spark, settings: Settings, scale: Scale, progress: Callable[[str], None],
                workdir: Path, ceiling_rows_per_s: float | None = None) -> dict:
    """The real ingest as one process (1 s trigger): the latency windows at ``scale.latency_rate``
    and ``scale.low_rate``, the peak RSS of the stack during them, then the sustained-rate probes."""
    log_path = workdir / "ingest-latency.log"
    command = [sys.executable, "-m", "lambdaflow.cli", "ingest", "--trigger-interval", "1 second"]
    # Per-record latency needs every manifest's commit time: no roll-ups during this run (a roll-up of
    # 100 commits, one file written and 100 deleted, took 0.47-0.53 s on a loaded machine: one
    # micro-batch in 100 is that much slower).
    out: dict = {"environment_at_start": environment()}
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **settings.replace(rollup_every=0).env()},
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    lag = None
    try:
        deadline = time.monotonic() + 180
        while "ingest started" not in _log_tail(log_path, 100_000):
            if proc.poll() is not None:
                raise RuntimeError(f"the ingest exited with {proc.returncode}: {_log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the ingest did not start within 180s: {_log_tail(log_path)}")
            time.sleep(0.5)
        progress(f"ingest process {proc.pid} started; cold window (the JIT's warm-up, reported apart) "
                 f"{scale.latency_warmup_s:.0f}s at {scale.latency_rate:.0f}/s")
        with PeakRss() as memory:
            memory.add("ingest", proc.pid)
            # A streaming job runs for months: the steady windows below are its figures. The fresh
            # JVM's first ``latency_warmup_s`` is measured the same way and reported as ``cold``.
            out["cold"] = _latency_window(spark, settings, scale.latency_rate, scale.latency_warmup_s, 11,
                                          log_path, proc, progress)
            out["high"] = _latency_window(spark, settings, scale.latency_rate, scale.latency_duration_s, 12,
                                          log_path, proc, progress)
            out["low"] = _latency_window(spark, settings, scale.low_rate, scale.latency_duration_s, 13,
                                         log_path, proc, progress)
        out["memory"] = memory.document()
        out["environment_during_latency"] = environment(exclude=process_tree(proc.pid))

        # Sustained rate: a short bisection between the highest rate known bounded and the bounded
        # mode's throughput (the ceiling: no trigger waits there).
        lag = _GroupLag(settings)
        low = scale.latency_rate if out["high"]["p99"] < 10 else 0.0
        high = max(ceiling_rows_per_s or 0.0, low * 2)
        probes = []
        for i in range(scale.probes):
            rate = next_probe(low, high)
            if rate <= low or rate >= high:
                break
            progress(f"sustained-rate probe {i + 1}/{scale.probes}: {rate:.0f} events/s for {scale.probe_s:.0f}s")
            try:
                result = _probe(settings, rate, scale.probe_s, 20 + i, lag, proc)
            except Exception as exc:  # the latency figures above still count; the failure is reported
                out["probe_error"] = f"{type(exc).__name__}: {exc}"
                progress(f"  probe failed: {out['probe_error'][:300]}")
                break
            probes.append(result)
            progress(f"  lag {'bounded' if result['bounded'] else 'growing'}: slope {result['lag_slope_per_s']}/s, "
                     f"last {result['last_lag']:,} (limit {result['limit']:,}); load {result['loadavg']}")
            if result["bounded"]:
                low = rate
            else:
                high = rate
        out["probes"] = probes
        out["sustained_events_per_s"] = low
    finally:
        if lag is not None:
            lag.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # finishes the current batch, then exits
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the ingest and its JVM only
                proc.wait(timeout=30)
    out["exit_code"] = proc.returncode
    return out


# ------------------------------------------------------------------------------- the benchmark
def run(settings: Settings, spark=None, scale: str | Scale = "full",
        progress: Callable[[str], None] | None = None, details: dict | None = None) -> dict:
    """The seven ingest figures (``KEYS``), measured in one run on fresh topics and HDFS roots that are
    removed afterwards. ``details`` (when given) receives the per-run figures and the batch profile."""
    from kafka import KafkaAdminClient

    from lambdaflow import hdfs, kafka_admin, producer

    scale = SCALES[scale] if isinstance(scale, str) else scale
    say = progress or (lambda message: print(f"[ingest] {message}", flush=True))
    details = details if details is not None else {}
    if spark is None:
        from lambdaflow.spark import session

        spark = session("lambdaflow-bench", settings)
    run_id = uuid.uuid4().hex[:8]
    base_root = f"/bench/ingest-{run_id}"

    def isolated(name: str) -> Settings:
        return settings.replace(topic=f"bench-ingest-{run_id}-{name}", root=f"{base_root}/{name}",
                                ingest_group=f"bench-ingest-{run_id}-{name}")

    throughput, warmup, latency = isolated("throughput"), isolated("warmup"), isolated("latency")
    topics = [throughput.topic, warmup.topic, latency.topic]
    groups = [throughput.ingest_group, warmup.ingest_group, latency.ingest_group, f"bench-cpt-{run_id}"]
    for s in (throughput, warmup, latency):
        kafka_admin.ensure_topic(s)
    details["environment_at_start"] = environment()
    try:
        say(f"producing {scale.events:,} events to {throughput.topic} (+{scale.warmup_events:,} for warm-up)")
        for s, count, seed in ((throughput, scale.events, 1), (warmup, scale.warmup_events, 2)):
            summary = producer.produce(s, count=count, rate=0, seed=seed, progress=False)
            if summary["failed"]:
                raise RuntimeError(f"the producer lost records: {summary['errors']}")

        say("consumer-perf-test (Kafka's ConsumerPerformance)")
        cpt = consumer_perf_test(throughput, scale.events, groups[-1])
        details["consumer_perf_test"] = cpt
        say(f"  {cpt['nMsg.sec']:,.0f} records/s")

        say("warm-up round (untimed): naive job and ours on the warm-up topic")
        naive_spark_job(spark, warmup, f"{warmup.root}/naive/data", f"{warmup.root}/naive/_checkpoint")
        _ours_bounded(spark, warmup)

        runs: dict[str, list[dict]] = {"ours": [], "naive": []}
        for round_no in range(1, scale.repeats + 1):
            root = f"{base_root}/round{round_no}"
            naive = naive_spark_job(spark, throughput, f"{root}/naive/data", f"{root}/naive/_checkpoint")
            if naive["rows"] != scale.events:
                raise RuntimeError(f"the naive job wrote {naive['rows']} of {scale.events} rows")
            runs["naive"].append(naive)
            say(f"round {round_no}: naive Spark {naive['rows']:,} rows in {naive['seconds']:.2f}s = "
                f"{naive['rows_per_s']:,.0f} rows/s")
            ours = _ours_bounded(spark, throughput.replace(root=f"{root}/ours",
                                                           ingest_group=f"{throughput.ingest_group}-{round_no}"))
            groups.append(f"{throughput.ingest_group}-{round_no}")
            if ours["rows"] + ours["quarantined"] != scale.events:
                raise RuntimeError(f"our ingest landed {ours['rows']} + quarantined {ours['quarantined']} "
                                   f"of {scale.events} records")
            runs["ours"].append(ours)
            say(f"round {round_no}: ours {ours['rows']:,} rows in {ours['seconds']:.2f}s = "
                f"{ours['rows_per_s']:,.0f} rows/s ({len(ours['batches'])} batch(es), "
                f"{ours['batch_seconds']:.2f}s inside foreachBatch)")
        details["profile_bounded"] = max(runs["ours"], key=lambda r: r["rows_per_s"])["profile"]
        details["throughput_runs"] = {k: [{n: (round(v, 3) if isinstance(v, float) else v) for n, v in r.items()}
                                          for r in rs] for k, rs in runs.items()}
        best_ours = max(r["rows_per_s"] for r in runs["ours"])
        best_naive = max(r["rows_per_s"] for r in runs["naive"])

        say("parse profile: the throughput topic cached, then no-op writes of each stage")
        details["parse_profile"] = parse = parse_profile(spark, throughput)
        say(f"  {parse['rows']:,} records: cached scan {parse['cached_scan_s']:.2f}s, try_parse_json "
            f"{parse['try_parse_json_s']:.2f}s, parse + validation {parse['parse_validate_s']:.2f}s, "
            f"batch summary (with the speed partials) {parse['batch_summary_s']:.2f}s")

        say("latency run: the real ingest as a process, 1 s trigger")
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as workdir:
            lat = latency_run(spark, latency, scale, say, Path(workdir), ceiling_rows_per_s=best_ours)
        details["latency"] = lat
        for name in ("cold", "high", "low"):
            w = lat[name]
            label = "cold, at" if name == "cold" else "at"
            say(f"  {label} {w['rate']:.0f}/s: p50 {w['p50']:.2f}s, p99 {w['p99']:.2f}s over {w['records']:,} records; "
                f"batches took {w['batch_seconds'].get('p50', 0):.2f}s (p50), "
                f"{w['rows_per_batch'].get('p50', 0):,.0f} rows (p50); load {w['loadavg_after']}")
        say(f"  sustained {lat['sustained_events_per_s']:.0f} events/s; stack peak RSS {lat['memory']['peak_rss_gib']:.2f} GiB")
    finally:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        try:
            admin.delete_topics(topics)
            try:
                admin.delete_groups(groups)
            except Exception:  # a group that never committed does not exist: nothing to delete
                pass
        finally:
            admin.close()
        if not os.environ.get("LAMBDAFLOW_BENCH_KEEP"):
            hdfs.client(settings).delete(base_root, recursive=True)

    return {
        "ingest.rows_per_s": round(best_ours, 1),
        "ingest.naive_spark_rows_per_s": round(best_naive, 1),
        "ingest.consumer_perf_test_rows_per_s": round(float(cpt["nMsg.sec"]), 1),
        "ingest.ratio_vs_naive_spark": round(best_ours / best_naive, 3),
        "ingest.ratio_vs_consumer_perf_test": round(best_ours / float(cpt["nMsg.sec"]), 3),
        "ingest.latency_p50_s": round(lat["high"]["p50"], 3),
        "ingest.latency_p99_s": round(lat["high"]["p99"], 3),
        "ingest.latency_p99_s_at_1k": round(lat["low"]["p99"], 3),
        "ingest.sustained_events_per_s": (None if lat.get("probe_error") and not lat["probes"]
                                          else round(float(lat["sustained_events_per_s"]), 1)),
        "memory.stack_peak_rss_gib": lat["memory"]["peak_rss_gib"],
    }
