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
events/s for ``latency_duration_s`` (after a short untimed warm-up), then SIGTERM. For every record
produced in the timed window: latency = ``committed_at_ms`` of the manifest whose offset range holds
the record - the record's Kafka timestamp (the producer's send time). ``committed_at_ms`` is the
commit point for manifest-aware readers (lambdaflow's reader, the batch layer, the lag monitor);
the data files are renamed into place right after it (tens of ms). Percentiles are over records.

Goals (measured, never asserted): ratio_vs_naive_spark >= 1.0, ratio_vs_consumer_perf_test >= 0.3,
latency p99 <= 3 s with a 1 s trigger.

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

KEYS = (
    "ingest.rows_per_s",
    "ingest.naive_spark_rows_per_s",
    "ingest.consumer_perf_test_rows_per_s",
    "ingest.ratio_vs_naive_spark",
    "ingest.ratio_vs_consumer_perf_test",
    "ingest.latency_p50_s",
    "ingest.latency_p99_s",
)


@dataclasses.dataclass(frozen=True)
class Scale:
    events: int                # pre-produced events for the throughput runs
    repeats: int               # alternating timed rounds of ours / naive (best counts)
    warmup_events: int         # untimed warm-up round on its own small topic
    latency_rate: float        # events/s during the latency run
    latency_duration_s: float  # timed produce window of the latency run
    latency_warmup_s: float    # untimed produce before the window (first batches are slow: JIT)


SCALES = {
    "full": Scale(events=200_000, repeats=2, warmup_events=10_000, latency_rate=5000.0,
                  latency_duration_s=60.0, latency_warmup_s=5.0),
    "small": Scale(events=20_000, repeats=1, warmup_events=2_000, latency_rate=5000.0,
                   latency_duration_s=15.0, latency_warmup_s=3.0),
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
    return {"rows": totals["landed"], "quarantined": totals["quarantined"], "seconds": seconds,
            "rows_per_s": totals["landed"] / seconds, "batches": batches,
            "batch_seconds": round(sum(b["seconds"] for b in batches), 3)}


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


def latency_run(spark, settings: Settings, scale: Scale, progress: Callable[[str], None],
                workdir: Path) -> dict:
    """The real ingest as a process at a steady rate; per-record produce -> commit latency."""
    from pyspark.sql import functions as F

    from lambdaflow import hdfs, landing, producer

    log_path = workdir / "ingest-latency.log"
    command = [sys.executable, "-m", "lambdaflow.cli", "ingest", "--trigger-interval", "1 second"]
    # Per-record latency needs every manifest's commit time: no roll-ups during this run (a roll-up of
    # 100 commits, one file written and 100 deleted, took 0.47-0.53 s on a loaded machine: one
    # micro-batch in 100 is that much slower).
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **settings.replace(rollup_every=0).env()},
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "ingest started" not in _log_tail(log_path, 100_000):
            if proc.poll() is not None:
                raise RuntimeError(f"the ingest exited with {proc.returncode}: {_log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the ingest did not start within 180s: {_log_tail(log_path)}")
            time.sleep(0.5)
        progress(f"ingest process {proc.pid} started; warm-up {scale.latency_warmup_s:.0f}s at "
                 f"{scale.latency_rate:.0f}/s")
        producer.produce(settings, duration=scale.latency_warmup_s, rate=scale.latency_rate, seed=11,
                         progress=False)
        _wait_landed(settings, 120, proc)
        time.sleep(1.0)
        window_start_ms = int(time.time() * 1000)
        progress(f"producing {scale.latency_duration_s:.0f}s at {scale.latency_rate:.0f} events/s")
        summary = producer.produce(settings, duration=scale.latency_duration_s, rate=scale.latency_rate,
                                   seed=12, progress=False)
        if summary["failed"]:
            raise RuntimeError(f"the producer lost records: {summary['errors']}")
        _wait_landed(settings, 180, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # finishes the current batch, then exits
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the ingest and its JVM only
                proc.wait(timeout=30)
    log_text = log_path.read_text(errors="replace")
    batches = parse_batch_lines(log_text.splitlines())

    manifests = landing.read_manifests(hdfs.client(settings), settings.landing_path)
    table = (spark.read.parquet(settings.uri(settings.landing_path))
             .select("kafka_partition", "kafka_offset", F.unix_millis("kafka_timestamp").alias("ts"))
             .where(F.col("ts") >= window_start_ms)
             .toArrow())
    records = zip(table.column("kafka_partition").to_pylist(), table.column("kafka_offset").to_pylist(),
                  table.column("ts").to_pylist())
    latencies = record_latencies_s(records, manifests)
    if len(latencies) < summary["acked"]:
        raise RuntimeError(f"{len(latencies)} records of the timed window landed, {summary['acked']} were acked")
    window_batches = [b for b in batches if b["landed"]]
    commits = sorted(m["committed_at_ms"] for m in manifests if m["committed_at_ms"] >= window_start_ms)
    gaps = [(b - a) / 1000 for a, b in zip(commits, commits[1:])]
    return {
        "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
        "latency_s": summarize(latencies),
        "records": len(latencies),
        "produced_events_per_s": summary["events_per_s"],
        "exit_code": proc.returncode,
        "batch_seconds": summarize([b["seconds"] for b in window_batches]),
        "rows_per_batch": summarize([float(b["landed"]) for b in window_batches]),
        "seconds_between_commits": summarize(gaps),
    }


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
        details["throughput_runs"] = {k: [{n: (round(v, 3) if isinstance(v, float) else v) for n, v in r.items()}
                                          for r in rs] for k, rs in runs.items()}
        best_ours = max(r["rows_per_s"] for r in runs["ours"])
        best_naive = max(r["rows_per_s"] for r in runs["naive"])

        say("latency run: the real ingest as a process, 1 s trigger")
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as workdir:
            lat = latency_run(spark, latency, scale, say, Path(workdir))
        details["latency"] = lat
        say(f"  p50 {lat['p50']:.2f}s, p99 {lat['p99']:.2f}s over {lat['records']:,} records; "
            f"batches took {lat['batch_seconds'].get('p50', 0):.2f}s (p50), "
            f"{lat['rows_per_batch'].get('p50', 0):,.0f} rows (p50)")
    finally:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        try:
            admin.delete_topics(topics)
            try:
                admin.delete_consumer_groups(groups)
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
        "ingest.latency_p50_s": round(lat["p50"], 3),
        "ingest.latency_p99_s": round(lat["p99"], 3),
    }
