"""Offset lag of the streaming ingest: records, seconds, Burrow-style health, history and alerts.

The ingest's position is the landing zone's own truth: its commit log (the newest roll-up plus
the offset-range manifests after it, :mod:`lambdaflow.storage.commit_log`); the committed position
of partition p is the largest ``until`` committed, compared as integers.
The consumer group ``settings.ingest_group``, which the ingest also commits to so that Kafka's own
tools see its lag, is only cross-checked against it.

One **sample** (:func:`sample`) holds, per partition of the topic: ``log_start_offset``,
``log_end_offset`` (read with ``isolation.level=read_committed``, as the ingest reads: the last
stable offset, so transaction markers and aborted records at the end count as landed),
``committed_offset`` (``null`` when nothing of the partition was ever landed),
``lag`` in records (``log_end - committed``, or ``log_end - log_start`` when never landed: the
ingest starts from the earliest record), ``lag_seconds`` (age of the oldest record not landed
yet, from its Kafka timestamp; 0 when the lag is 0, ``null`` if no record could be fetched),
``last_landed_at`` (modification time, epoch ms, of the newest manifest holding the partition),
``group_offset`` and ``disagreement`` (``group_missing`` / ``group_behind`` / ``group_ahead`` or
``null``). Reads go group → landing zone → log end, so that in normal operation (the ingest
lands a batch, then commits the group) group ≤ committed ≤ log end holds within a sample.

**Evaluation** (:func:`evaluate`) follows LinkedIn Burrow's consumer-lag rules over a window of
the last N samples of each partition (oldest first; the last one is the current sample):

1. ``OK`` when the current lag is 0: a partition at the log end is never in error.
2. ``REWIND`` when the committed offset went backwards between two samples of the window (a
   landed position disappearing counts): the landing zone lost commits. Burrow checks this only
   when the lag never touched zero in the window; here it is always an error, because the
   landing zone's positions never go back in normal operation, not even on a replay.
3. ``NOT_STARTED`` when nothing of the partition was ever landed (ingest never ran, or the
   partition was added to the topic and the ingest has not picked it up).
4. ``STOP`` when no batch of the partition has landed for longer than ``stop_after_s`` (Burrow:
   commits stopped arriving; its threshold is the span of the window, ours is explicit because
   the ingest writes no commit while it has nothing to land).
5. ``OK`` when the lag was 0 in any sample of the window (Burrow rule 1).
6. ``STALL`` when the window holds two or more samples and the committed offset did not move
   across all of them while the lag stayed above 0.
7. ``WARN`` when the window holds two or more samples, the committed offset moves, yet the lag
   never decreases between two consecutive samples: the ingest is slower than the producers.
8. ``OK`` otherwise.

The group status is its worst partition's, by severity
OK < WARN < NOT_STARTED < STALL < STOP < REWIND.

**History**: every sample (with its evaluation) is appended as one JSON line to
``{lag_history_path}/{group}/{topic}/YYYY-MM-DD.jsonl`` (UTC day of the sample); day files older
than the retention (default 7 days) are deleted when a sample is recorded. The window is read
back from there, so statuses survive restarts; :func:`history` serves dashboards.

**Alerts** (:func:`alerts`): a partition not OK, a lag above the thresholds in records or seconds,
or a consumer group ahead of the landing zone, each as a message naming the partition and figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from lambdaflow import hdfs, kafka_admin
from lambdaflow.config import Settings
from lambdaflow.errors import UserError
from lambdaflow.hdfs import HdfsUnavailable, webhdfs_errors  # HdfsUnavailable: part of this module's API
from lambdaflow.kafka_admin import KafkaUnavailable
from lambdaflow.monitoring import day_files

log = logging.getLogger(__name__)

OK, WARN, NOT_STARTED, STALL, STOP, REWIND = "OK", "WARN", "NOT_STARTED", "STALL", "STOP", "REWIND"
SEVERITY = {OK: 0, WARN: 1, NOT_STARTED: 2, STALL: 3, STOP: 4, REWIND: 5}

GROUP_MISSING, GROUP_BEHIND, GROUP_AHEAD = "group_missing", "group_behind", "group_ahead"

DEFAULT_WINDOW = 10
DEFAULT_STOP_AFTER_S = 300.0
DEFAULT_MAX_LAG_RECORDS = 10_000
DEFAULT_MAX_LAG_SECONDS = 300.0
DEFAULT_RETENTION_DAYS = int(float(os.environ.get("LAMBDAFLOW_RETENTION_LAG_DAYS") or 7))  # as retention.py

_FETCH_TIMEOUT_S = 10.0


class TopicNotFound(UserError):
    """The monitored topic does not exist on the brokers."""


class LagAlert(RuntimeError):
    """The ingest does not keep up: the message names the partitions and figures."""


# -- pure figures -----------------------------------------------------------------------------------

def records_behind(log_start: int, log_end: int, committed: int | None) -> int:
    """Records between the ingest's position (the log start when never landed) and the log end."""
    position = log_start if committed is None else committed
    return max(0, log_end - position)


def group_disagreement(committed: int | None, group_offset: int | None, log_start: int) -> str | None:
    """How the consumer group's offset differs from the landing zone's position, None when equal.

    ``group_behind`` is normal for a moment (the ingest lands a batch, then commits the group);
    ``group_ahead`` is an anomaly: Kafka's tools would count records as done that never landed.
    """
    if group_offset is None:
        return None if committed is None else GROUP_MISSING
    landed = log_start if committed is None else committed
    if group_offset < landed:
        return GROUP_BEHIND
    if group_offset > landed:
        return GROUP_AHEAD
    return None


def worst_status(statuses: Iterable[str]) -> str:
    """The most severe status (OK for none)."""
    return max(statuses, key=SEVERITY.__getitem__, default=OK)


def partition_status(window: Sequence[Mapping[str, Any]], stop_after_s: float = DEFAULT_STOP_AFTER_S) -> tuple[str, str]:
    """Status and reason of one partition over its window of observations (oldest first).

    Each observation carries ``sampled_at`` (ms), ``committed_offset`` (int or None), ``lag``
    and ``last_landed_at`` (ms or None); the rules are in the module docstring.
    """
    current = window[-1]
    lag, committed = current["lag"], current["committed_offset"]
    if lag == 0:
        return OK, "caught up"
    for before, after in zip(window, window[1:]):
        old, new = before["committed_offset"], after["committed_offset"]
        if old is not None and (new is None or new < old):
            return REWIND, f"committed offset went back from {old} to {new}, lag {lag} records"
    if committed is None:
        return NOT_STARTED, f"nothing landed yet, lag {lag} records"
    landed_at = current.get("last_landed_at")
    if landed_at is not None:
        idle_s = (current["sampled_at"] - landed_at) / 1000
        if idle_s > stop_after_s:
            return STOP, (f"no batch landed for {idle_s:.0f} s (> {stop_after_s:g} s) at committed offset "
                          f"{committed}, lag {lag} records")
    if any(o["lag"] == 0 for o in window):
        return OK, f"lag {lag} records, touched 0 within the window"
    if len(window) >= 2:
        span_s = (current["sampled_at"] - window[0]["sampled_at"]) / 1000
        if all(o["committed_offset"] == committed for o in window):
            return STALL, (f"committed offset {committed} unchanged over {len(window)} samples ({span_s:.0f} s), "
                           f"lag {lag} records")
        lags = [o["lag"] for o in window]
        if all(a <= b for a, b in zip(lags, lags[1:])):
            return WARN, f"lag grew from {lags[0]} to {lag} records over {len(window)} samples ({span_s:.0f} s)"
    return OK, f"lag {lag} records, making progress"


def evaluate(window: Sequence[Mapping[str, Any]], stop_after_s: float = DEFAULT_STOP_AFTER_S) -> dict[str, Any]:
    """The current (last) sample of a window, each partition with its ``status`` and ``reason``.

    Every partition is judged on the samples of the window that contain it (a partition added
    to the topic has a shorter window); the group ``status`` is the worst partition's.
    """
    current = window[-1]
    partitions = []
    for entry in current["partitions"]:
        observations = [{**p, "sampled_at": s["sampled_at"]}
                        for s in window for p in s["partitions"] if p["partition"] == entry["partition"]]
        status, reason = partition_status(observations, stop_after_s)
        partitions.append({**entry, "status": status, "reason": reason})
    return {
        **current,
        "partitions": partitions,
        "total_lag": sum(p["lag"] for p in partitions),
        "status": worst_status(p["status"] for p in partitions),
        "window": {"samples": len(window)},
    }


def alerts(report: Mapping[str, Any], max_lag_records: int | None = DEFAULT_MAX_LAG_RECORDS,
           max_lag_seconds: float | None = DEFAULT_MAX_LAG_SECONDS) -> list[str]:
    """One message per problem: partitions not OK, over a threshold, or with the group ahead."""
    messages = []
    for p in report["partitions"]:
        n = p["partition"]
        if p["status"] != OK:
            messages.append(f"partition {n}: {p['status']} ({p['reason']})")
        if max_lag_records is not None and p["lag"] > max_lag_records:
            messages.append(f"partition {n}: lag {p['lag']} records > max {max_lag_records}")
        if max_lag_seconds is not None and (p["lag_seconds"] or 0) > max_lag_seconds:
            messages.append(f"partition {n}: lag {p['lag_seconds']:.1f} s > max {max_lag_seconds:g} s")
        if p.get("disagreement") == GROUP_AHEAD:
            messages.append(f"partition {n}: consumer group {report['group']} at {p['group_offset']} is ahead "
                            f"of the landing zone at {p['committed_offset']}")
    return messages


def alert_message(report: Mapping[str, Any], messages: Sequence[str]) -> str:
    """One line for a failed task or a notification: the group's state, then every alert."""
    return (f"ingest lag alert: group {report['group']} on topic {report['topic']} is {report['status']}, "
            f"total lag {report['total_lag']} records: " + "; ".join(messages))


# -- sampling (Kafka and HDFS) -----------------------------------------------------------------------

@contextlib.contextmanager
def _kafka_errors(settings: Settings) -> Iterator[None]:
    try:
        yield
    except KafkaUnavailable:
        raise
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot read offsets from Kafka at {settings.kafka_bootstrap} "
                               f"({exc.__class__.__name__}: {exc}); is the broker up? (`lambdaflow status`)") from exc


def _require_kafka(settings: Settings, timeout_s: float = 3.0) -> None:
    """Fail fast when no bootstrap server accepts a connection (kafka-python waits 30 s to say so)."""
    for server in settings.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
            return
        except OSError:
            continue
    raise KafkaUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap} (connection refused or timed out); "
                           "is the broker up? (`lambdaflow status`)")


def _read_landing_progress(settings: Settings) -> dict[int, tuple[int, int | None]]:
    """``{partition: (landing position, last landed at ms)}`` from the bounded commit log: the newest
    roll-up and the manifests after it (:meth:`lambdaflow.storage.commit_log.LogState.progress`)."""
    from lambdaflow.storage import commit_log

    with webhdfs_errors(settings):
        return commit_log.read_state(commit_log.WebLogStore(hdfs.client(settings)), settings.landing_path).progress()


def _oldest_unlanded_timestamps(settings: Settings, positions: Mapping[int, int]) -> dict[int, int]:
    """Kafka timestamp (ms) of the first record at or after each position, by partition."""
    if not positions:
        return {}
    with _kafka_errors(settings):
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, client_id="lambdaflow-lag",
                                 group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                 max_partition_fetch_bytes=64 * 1024, request_timeout_ms=10000,
                                 isolation_level="read_committed")  # as the ingest reads
        try:
            tps = {TopicPartition(settings.topic, p): offset for p, offset in positions.items()}
            consumer.assign(list(tps))
            for tp, offset in tps.items():
                consumer.seek(tp, offset)
            found: dict[int, int] = {}
            deadline = time.monotonic() + _FETCH_TIMEOUT_S
            while len(found) < len(tps) and time.monotonic() < deadline:
                for tp, records in consumer.poll(timeout_ms=500).items():
                    if records and tp.partition not in found:
                        found[tp.partition] = records[0].timestamp
                        consumer.pause(tp)
            return found
        finally:
            consumer.close()


def sample(settings: Settings) -> dict[str, Any]:
    """Measure the ingest's lag on every partition of the topic now (see the module docstring)."""
    _require_kafka(settings)
    with _kafka_errors(settings):
        group = kafka_admin.group_offsets(settings)
    progress = _read_landing_progress(settings)
    with _kafka_errors(settings):
        ends = kafka_admin.end_offsets(settings)
        starts = kafka_admin.beginning_offsets(settings)
    if not ends:
        raise TopicNotFound(f"topic {settings.topic} does not exist on {settings.kafka_bootstrap}")
    partitions = []
    for p in sorted(ends):
        committed, landed_at = progress.get(p, (None, None))
        log_start = starts.get(p, 0)
        partitions.append({
            "partition": p,
            "log_start_offset": log_start,
            "log_end_offset": ends[p],
            "committed_offset": committed,
            "lag": records_behind(log_start, ends[p], committed),
            "last_landed_at": landed_at,
            "group_offset": group.get(p),
            "disagreement": group_disagreement(committed, group.get(p), log_start),
        })
    behind = {e["partition"]: (e["log_start_offset"] if e["committed_offset"] is None else e["committed_offset"])
              for e in partitions if e["lag"] > 0}
    timestamps = _oldest_unlanded_timestamps(settings, behind)
    sampled_at = int(time.time() * 1000)
    for e in partitions:
        ts = timestamps.get(e["partition"])
        e["lag_seconds"] = 0.0 if e["lag"] == 0 else None if ts is None else max(0, sampled_at - ts) / 1000
    return {"group": settings.ingest_group, "topic": settings.topic, "sampled_at": sampled_at,
            "partitions": partitions, "total_lag": sum(e["lag"] for e in partitions)}


# -- history -------------------------------------------------------------------------------------------

def history_dir(settings: Settings) -> str:
    """Where the samples of the ingest group on the topic are kept, one JSON-lines file per UTC day."""
    return f"{settings.lag_history_path}/{settings.ingest_group}/{settings.topic}"


def expired_history_files(names: Iterable[str], today: date, retention_days: int) -> list[str]:
    """Day files older than the retention (today and the ``retention_days`` days before are kept)."""
    return day_files.expired(names, today, retention_days)


def record_sample(settings: Settings, report: Mapping[str, Any], retention_days: int = DEFAULT_RETENTION_DAYS) -> str:
    """Append a sample to its day file and drop day files past the retention; returns the path."""
    with webhdfs_errors(settings):
        return day_files.append(hdfs.client(settings), history_dir(settings), [dict(report)], report["sampled_at"],
                                retention_days)


def history(settings: Settings, hours: float | None = 24.0, limit: int | None = None) -> list[dict[str, Any]]:
    """Recorded samples, oldest first: those of the last ``hours`` (None: all kept), at most ``limit``."""
    since = None if hours is None else int((time.time() - hours * 3600) * 1000)
    with webhdfs_errors(settings):
        return day_files.read(hdfs.client(settings), history_dir(settings), "sampled_at",
                              lambda d: {"sampled_at", "partitions"} <= d.keys(), since, limit, "lag sample")


# -- one monitoring step --------------------------------------------------------------------------------

def monitor(settings: Settings, window: int = DEFAULT_WINDOW, record: bool = True,
            stop_after_s: float = DEFAULT_STOP_AFTER_S, retention_days: int = DEFAULT_RETENTION_DAYS) -> dict[str, Any]:
    """Sample now, evaluate over the last ``window`` samples (this one included), record it.

    The report has the ``lambdaflow lag --json`` shape: group, topic, partitions (with status and
    reason), total_lag, status, plus sampled_at and window.
    """
    current = sample(settings)
    past = history(settings, hours=None, limit=window - 1)
    report = evaluate([*past, current], stop_after_s)
    report["window"]["size"] = window
    if record:
        record_sample(settings, report, retention_days)
    return report


# -- CLI ------------------------------------------------------------------------------------------------

_COLUMNS = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "LAG-SECONDS",
            "STATUS", "GROUP-OFFSET", "NOTE")


def format_table(report: Mapping[str, Any], messages: Sequence[str] = ()) -> str:
    """Human output in the manner of ``kafka-consumer-groups --describe``, then totals and alerts."""
    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)

    rows = [_COLUMNS] + [
        tuple(cell(v) for v in (report["group"], report["topic"], p["partition"], p["committed_offset"],
                                 p["log_end_offset"], p["lag"], p["lag_seconds"], p["status"],
                                 p.get("group_offset"), p.get("disagreement")))
        for p in report["partitions"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    window = report.get("window", {})
    lines.append(f"\ntotal lag {report['total_lag']} records, status {report['status']} "
                 f"(window {window.get('samples', 1)}/{window.get('size', 1)} samples)")
    lines += [f"ALERT {m}" for m in messages]
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lambdaflow lag``."""
    parser.add_argument("--json", action="store_true",
                        help='print one JSON document: {"group", "topic", "partitions": [...], "total_lag", "status", ...}')
    parser.add_argument("--window", type=_positive_int, default=DEFAULT_WINDOW,
                        help=f"samples the Burrow-style status looks at, this one included (default {DEFAULT_WINDOW})")
    parser.add_argument("--no-record", dest="record", action="store_false",
                        help="do not store this sample in the lag history")
    parser.add_argument("--max-lag-records", type=int, default=DEFAULT_MAX_LAG_RECORDS,
                        help=f"alert when a partition lags more records than this (default {DEFAULT_MAX_LAG_RECORDS})")
    parser.add_argument("--max-lag-seconds", type=float, default=DEFAULT_MAX_LAG_SECONDS,
                        help=f"alert when a partition's oldest unlanded record is older (default {DEFAULT_MAX_LAG_SECONDS:g})")
    parser.add_argument("--stop-after", type=float, default=DEFAULT_STOP_AFTER_S, metavar="SECONDS",
                        help=f"STOP when nothing landed for this long while lagging (default {DEFAULT_STOP_AFTER_S:g})")
    parser.add_argument("--retention-days", type=_positive_int, default=DEFAULT_RETENTION_DAYS,
                        help=f"days of lag history kept (default {DEFAULT_RETENTION_DAYS})")
    parser.add_argument("--fail-on-alert", action="store_true",
                        help="exit with status 1 when there is any alert (status not OK or a threshold exceeded)")


def run(args: argparse.Namespace) -> int:
    """``lambdaflow lag``: 0 when measured, 1 on an alert with ``--fail-on-alert``.

    Kafka or HDFS unreachable and a missing topic raise user errors (one line, exit 2 via the CLI).
    """
    report = monitor(Settings.from_env(), window=args.window, record=args.record, stop_after_s=args.stop_after,
                     retention_days=args.retention_days)
    report["alerts"] = alerts(report, args.max_lag_records, args.max_lag_seconds)
    print(json.dumps(report, sort_keys=True) if args.json else format_table(report, report["alerts"]))
    return 1 if args.fail_on_alert and report["alerts"] else 0
