"""The streaming query's progress, per micro-batch, as Spark users know it.

A :class:`ProgressRecorder` is a ``StreamingQueryListener`` registered by the ingest: for every
micro-batch Spark reports a ``StreamingQueryProgress`` (input rate, processing rate, the batch's
duration and its parts, rows, the Kafka source's start, end and latest offsets). The recorder keeps
what the dashboard charts beside the lag (:func:`progress_record`) and writes it, every
``flush_every_s`` seconds from a thread of its own (never from Spark's listener bus), to
``<root>/monitoring/stream/<topic>/<YYYY-MM-DD>.jsonl`` (:mod:`lambdaflow.monitoring.day_files`,
retention ``LAMBDAFLOW_RETENTION_LAG_DAYS`` as the lag history). :func:`history` reads it back.

The same figures are live in the Spark UI's Structured Streaming tab of the ingest's driver
(``LAMBDAFLOW_INGEST_UI_PORT``, default 4040: ``http://<host>:4040/StreamingQuery/``).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from datetime import datetime
from typing import Any, Mapping

from lambdaflow import hdfs
from lambdaflow.config import Settings
from lambdaflow.monitoring import day_files

log = logging.getLogger("lambdaflow.monitoring.stream_progress")

DEFAULT_UI_PORT = 4040
FLUSH_EVERY_S = 10.0
MAX_BUFFERED = 10_000  # records kept while HDFS cannot be written (then the oldest are dropped)


def ui_port() -> int:
    return int(os.environ.get("LAMBDAFLOW_INGEST_UI_PORT") or DEFAULT_UI_PORT)


def history_dir(settings: Settings) -> str:
    return f"{settings.root}/monitoring/stream/{settings.topic}"


def _epoch_ms(iso: str | None) -> int | None:
    if not iso:
        return None
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _offsets(value: Any, topic: str | None) -> dict[str, int] | None:
    """``{"<partition>": offset}`` of a Kafka source offset (JSON text or parsed), for ``topic``."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, Mapping):
        return None
    per_topic = value.get(topic) if topic in value else next(iter(value.values()), None)
    return {str(p): int(o) for p, o in per_topic.items()} if isinstance(per_topic, Mapping) else None


def progress_record(progress: Mapping[str, Any], topic: str | None = None) -> dict[str, Any]:
    """What is kept of one ``StreamingQueryProgress`` (its JSON, parsed): pure, for tests and the chart."""
    durations = {str(k): int(v) for k, v in (progress.get("durationMs") or {}).items()}
    sources = progress.get("sources") or [{}]
    source = sources[0] if sources else {}
    return {
        "at": _epoch_ms(progress.get("timestamp")),
        "batch_id": progress.get("batchId"),
        "rows": int(progress.get("numInputRows") or 0),
        "input_rows_per_s": float(progress.get("inputRowsPerSecond") or 0.0),
        "processed_rows_per_s": float(progress.get("processedRowsPerSecond") or 0.0),
        "batch_duration_ms": int(progress.get("batchDuration") or durations.get("triggerExecution") or 0),
        "durations_ms": durations,
        "start_offsets": _offsets(source.get("startOffset"), topic),
        "end_offsets": _offsets(source.get("endOffset"), topic),
        "latest_offsets": _offsets(source.get("latestOffset"), topic),
        "run_id": progress.get("runId"),
    }


def recorder(settings: Settings, flush_every_s: float = FLUSH_EVERY_S) -> "ProgressRecorder":
    """A :class:`ProgressRecorder` that is a pyspark ``StreamingQueryListener`` (pyspark is imported
    here, not with this module: the dashboard reads the history without it)."""
    from pyspark.sql.streaming import StreamingQueryListener

    class Listener(ProgressRecorder, StreamingQueryListener):
        pass

    return Listener(settings, flush_every_s)


class ProgressRecorder:
    """Records every micro-batch's progress (see the module doc). Spark calls the ``on*`` methods on
    its listener bus; they only queue; :meth:`flush` (its thread, and :meth:`close`) writes."""

    def __init__(self, settings: Settings, flush_every_s: float = FLUSH_EVERY_S, retention_days: int | None = None):
        self.settings = settings
        self.flush_every_s = flush_every_s
        from lambdaflow import lag

        self.retention_days = lag.DEFAULT_RETENTION_DAYS if retention_days is None else retention_days
        self.buffer: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_BUFFERED)
        self.recorded = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lambdaflow-stream-progress", daemon=True)
        self._thread.start()

    # -- StreamingQueryListener -------------------------------------------------------------------
    def onQueryStarted(self, event) -> None:
        log.info("streaming query %s started (run %s)", event.id, event.runId)

    def onQueryProgress(self, event) -> None:
        try:
            self.buffer.append(progress_record(json.loads(event.progress.json), self.settings.topic))
        except Exception as exc:  # a listener must never fail the query
            log.warning("could not record a progress event: %s", exc)

    def onQueryIdle(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        log.info("streaming query %s terminated%s", event.id, f": {event.exception}" if event.exception else "")

    # -- writing ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            self.flush()

    def flush(self) -> int:
        """Write what is queued (one WebHDFS append per day file); on failure keep it for the next try."""
        with self._lock:
            records = list(self.buffer)
            if not records:
                return 0
            try:
                c = hdfs.client(self.settings)
                by_day: dict[str, list[dict]] = {}
                for r in records:
                    by_day.setdefault(day_files.utc_day(r["at"] or int(time.time() * 1000)).isoformat(), []).append(r)
                for _, day_records in sorted(by_day.items()):
                    at = day_records[0]["at"] or int(time.time() * 1000)
                    day_files.append(c, history_dir(self.settings), day_records, at, self.retention_days)
            except Exception as exc:  # monitoring: never fails the ingest; retried at the next flush
                log.warning("could not write the stream progress to %s (kept for the next try): %s",
                            history_dir(self.settings), str(exc).splitlines()[0][:200])
                return 0
            for _ in records:
                self.buffer.popleft()
            self.recorded += len(records)
            return len(records)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.flush_every_s + 5)
        self.flush()


def history(settings: Settings, hours: float | None = 24.0, limit: int | None = None) -> list[dict[str, Any]]:
    """Recorded micro-batches, oldest first: those of the last ``hours`` (None: all kept), at most ``limit``."""
    since = None if hours is None else int((time.time() - hours * 3600) * 1000)
    with hdfs.webhdfs_errors(settings):
        return day_files.read(hdfs.client(settings), history_dir(settings), "at",
                              lambda d: {"at", "batch_id", "rows"} <= d.keys() and d["at"] is not None,
                              since, limit, "stream progress record")
