"""The lambdaflow dashboard: ingest lag, the landing zone's totals, the batch watermark, the DAGs.

The Airflow api-server serves it under ``/lambdaflow/`` through ``plugins/lambdaflow_dashboard.py``;
everything else lives here, so that it can be tested without Airflow:

- **Gathering** (:class:`Gatherer`) builds one summary document from independent sources: the lag now
  (:func:`lambdaflow.lag.monitor` with ``record=False``, so the dashboard never writes), the stored lag
  samples (:func:`lambdaflow.lag.history`), the streaming query's recorded micro-batch progress
  (:func:`lambdaflow.monitoring.stream_progress.history`), the landing zone's offset-range manifests, the batch
  layer's state (:func:`lambdaflow.batch.state`, used defensively), the alert log
  (:mod:`lambdaflow.monitoring.alerts`) and the DAGs' last runs (given by the plugin, which can read
  Airflow's metadata DB). Each source fails on its own: a section is ``{"ok": true, "data": ...}`` or
  ``{"ok": false, "error": "..."}``. When Kafka or HDFS is down, the sections that need it show an
  error box, and the page is still a 200.
- **Rendering** (:func:`render_page`, :func:`line_chart`, :func:`bar_chart`, :func:`error_box`):
  Python computes figures and chart geometry; the autoescaped Jinja2 templates in ``templates/``
  (``page.html``, ``sections.html``, ``macros.html``) make the HTML, charts as inline SVG. There is
  no JavaScript and nothing is loaded from elsewhere (the machines may be offline); the page reloads
  itself every minute.
- **The app** (:func:`create_app`) is a FastAPI app: ``GET /`` is the page (``?hours=`` picks the
  chart window) and ``GET /api/summary`` returns the same summary as JSON. Both link the ingest's
  Spark UI (its Structured Streaming tab, :func:`ingest_ui_url`), where the same progress is live.

**Auth.** The plugin passes :func:`lambdaflow.monitoring.auth.airflow_login_required`: Airflow's own
auth manager checks the Bearer token or the UI session cookie on every route; without one the
answer is 401 (a browser is redirected to Airflow's login page).

**Cost of a request.** Bounded however often the page is reloaded: the :class:`Gatherer` has one
pool of :data:`SOURCE_THREADS` threads for all requests, keeps each section :data:`CACHE_S` seconds,
never runs two calls of the same source at once and answers within :data:`SOURCE_TIMEOUT_S`.
The landing figures come from the commit log: its newest roll-up (one file) plus the tail of
manifests after it, each read once and then cached in the process. A manifest is named by its
offset ranges, and a replayed range writes the same figures again, so a cached manifest never goes
stale. A request reads only the tail manifests committed since the previous one, at most
:data:`MANIFEST_READS_PER_REQUEST` (the totals say when they are partial).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import statistics
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import jinja2
import markupsafe
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from lambdaflow import hdfs
from lambdaflow.config import Settings
from lambdaflow.errors import UserError, is_user_error

log = logging.getLogger(__name__)

KNOWN_DAGS = ("weblogs_producer", "weblogs_ingest", "weblogs_lag_monitor", "weblogs_batch")
SECTIONS = ("lag", "lag_history", "stream", "landing", "batch", "alerts", "dags")
HOUR_MS = 3_600_000
DEFAULT_HOURS = 6.0
MAX_HOURS = 24.0 * 7  # the lag history's default retention
HOUR_CHOICES = {1: "1 h", 6: "6 h", 24: "24 h", 168: "7 days"}
SOURCE_TIMEOUT_S = 20.0  # a request waits at most this long for its sources
SOURCE_THREADS = 7  # one pool for all requests (a thread per section)
MAX_PENDING = 12  # source calls in flight at once, at most
CACHE_S = 5.0  # a section's figures are reused for this long
RECENT_ALERTS = 20
MANIFEST_READS_PER_REQUEST = 2000
RECENT_BATCH_HOURS = 6
LANDING_CHART_HOURS = 24
MAX_CHART_POINTS = 360
# micro-batch progress records read per request: a 1 s trigger records 3,600 an hour (a busy day's
# file is ~45 MB); the newest win, so a long window reads one or two day files, not seven; the chart
# shows at most MAX_CHART_POINTS per series (each bucket's peak)
MAX_STREAM_RECORDS = 25_000
MAX_MARKERS = 120
REFRESH_S = 60
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
STATUS_CLASS = {"OK": "ok", "WARN": "warn", "NOT_STARTED": "idle", "STALL": "bad", "STOP": "bad", "REWIND": "bad"}
SEVERITY_CLASS = {"info": "ok", "warning": "warn", "error": "bad"}
RUN_STATE_CLASS = {"success": "ok", "running": "warn", "queued": "idle", "failed": "bad"}


# ===================================================================================== sources
class SourceUnavailable(UserError):
    """A data source the dashboard cannot use in this deployment; the message says why."""


@contextlib.contextmanager
def _webhdfs_reachable(settings: Settings) -> Iterator[None]:
    try:
        with hdfs.webhdfs_errors(settings):
            yield
    except hdfs.HdfsUnavailable as exc:
        raise SourceUnavailable(str(exc)) from exc


def lag_now(settings: Settings) -> dict[str, Any]:
    """The lag of every partition now, judged like the lag monitor does, without recording the sample."""
    from lambdaflow import lag

    return lag.monitor(settings, record=False)


def lag_history(settings: Settings, hours: float) -> dict[str, Any]:
    """The lag samples of the last ``hours``, as chart series (see :func:`lag_series`)."""
    from lambdaflow import lag

    return lag_series(lag.history(settings, hours=hours))


def stream_history(settings: Settings, hours: float) -> dict[str, Any]:
    """The micro-batches recorded by the ingest's ``StreamingQueryListener`` in the last ``hours``,
    as chart series plus the latest batch's source offsets (see :func:`stream_series`)."""
    from lambdaflow.monitoring import stream_progress

    with _webhdfs_reachable(settings):
        records = stream_progress.history(settings, hours=hours, limit=MAX_STREAM_RECORDS)
    # at the limit, older batches of the window were left unread: the page says so
    return {**stream_series(records), "truncated": len(records) >= MAX_STREAM_RECORDS}


def ingest_ui_url(request_host: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The ingest's Spark UI, Structured Streaming tab: ``LAMBDAFLOW_INGEST_UI_URL`` when set (the UI's
    base URL, or the tab's), else ``http://<host the page was asked on>:<port>/StreamingQuery/`` (port
    ``LAMBDAFLOW_INGEST_UI_PORT``, default 4040, as the ingest's ``spark.ui.port``).

    The driver's UI runs beside the ingest on the same machine as the services, so the host a browser
    used to reach Airflow normally reaches it too; behind a proxy or on another host, set the URL.
    """
    environ = os.environ if environ is None else environ
    override = (environ.get("LAMBDAFLOW_INGEST_UI_URL") or "").strip().rstrip("/")
    if override:
        return override + "/" if override.endswith("/StreamingQuery") else override + "/StreamingQuery/"
    port = _ingest_ui_port(environ)
    host = request_host or "localhost"
    if ":" in host and not host.startswith("["):  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{port}/StreamingQuery/"


def _ingest_ui_port(environ: Mapping[str, str]) -> int:
    """``LAMBDAFLOW_INGEST_UI_PORT`` as the ingest reads it; a value that is no port gives the default
    (a link, not worth a failed page)."""
    from lambdaflow.monitoring import stream_progress

    try:
        port = int(environ.get("LAMBDAFLOW_INGEST_UI_PORT") or stream_progress.DEFAULT_UI_PORT)
    except ValueError:
        return stream_progress.DEFAULT_UI_PORT
    return port if 0 < port < 65536 else stream_progress.DEFAULT_UI_PORT


def ingest_ui(request_host: str | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The link to the ingest's Spark UI and the port it is documented on (for the page and the JSON)."""
    environ = os.environ if environ is None else environ
    return {"url": ingest_ui_url(request_host, environ), "port": _ingest_ui_port(environ),
            "overridden": bool((environ.get("LAMBDAFLOW_INGEST_UI_URL") or "").strip())}


class ManifestCache:
    """The landing zone's figures: the commit log's newest roll-up plus its tail manifests, each read
    once (see the module doc)."""

    def __init__(self, reads_per_request: int = MANIFEST_READS_PER_REQUEST, threads: int = 8) -> None:
        self.reads_per_request = reads_per_request
        self.threads = threads
        self._lock = threading.Lock()
        self._zones: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}

    def totals(self, settings: Settings, client: Any = None) -> dict[str, Any]:
        """:func:`landing_totals` of the landing zone: the commit log's newest roll-up plus the tail
        of manifests after it (cached by key), so a request reads O(tail) files, never the history."""
        from lambdaflow import hdfs
        from lambdaflow.storage import commit_log

        with _webhdfs_reachable(settings):
            c = client if client is not None else hdfs.client(settings)
            store = commit_log.WebLogStore(c)
            state = commit_log.read_state(store, settings.landing_path)
            keys = sorted(state.tail)
            with self._lock:
                cached = self._zones.setdefault((settings.webhdfs_url, settings.landing_path), {})
                for gone in cached.keys() - set(keys):  # rolled up or deleted: no longer read one by one
                    del cached[gone]
                missing = [k for k in keys if k not in cached][: self.reads_per_request]
            directory = commit_log.manifests_dir(settings.landing_path)

            def read(name: str) -> tuple[str, Any]:  # None when rolled up meanwhile (the next request re-lists)
                return name, store.read_json(f"{directory}/{name}")

            with ThreadPoolExecutor(max_workers=self.threads) as pool:
                fresh = [(k, doc) for k, doc in pool.map(read, missing) if isinstance(doc, dict)]
        with self._lock:
            # a replay moves rows from quarantine to landed: no micro-batch of its own
            cached.update((k, {**manifest_figures(doc), "batches": 0 if commit_log.is_replay_name(k) else 1})
                          for k, doc in fresh)
            manifests = [cached[k] for k in keys if k in cached]
        rollup = state.rollup
        figures = [{**manifest_figures(rollup), "batches": int(rollup.get("batches", 0)),
                    "committed_at_ms": max(map(int, rollup.get("landed_at_ms", {}).values()), default=None)}]
        totals = landing_totals(figures + manifests if rollup.get("seq") else manifests)
        totals.update(manifests_listed=len(keys), manifests_read=len(manifests), partial=len(manifests) < len(keys),
                      rollup=state.rollup_name)
        return totals


def batch_state(settings: Settings, recent: int = RECENT_BATCH_HOURS) -> dict[str, Any]:
    """The batch layer's version, watermark and most recent hour records (see :func:`batch_figures`).

    ``lambdaflow.batch`` may be older or newer than this module: anything missing from it becomes a
    :class:`SourceUnavailable` (an error box), never a failed page.
    """
    try:
        from lambdaflow import batch
    except ImportError as exc:
        raise SourceUnavailable(f"the batch layer cannot be imported ({exc})") from exc
    state, web_store = getattr(batch, "state", None), getattr(batch, "web_store", None)
    if not callable(state) or not callable(web_store):
        raise SourceUnavailable("lambdaflow.batch offers no state(): the batch watermark is not available")
    read_record = getattr(batch, "read_hour_record", None)
    with _webhdfs_reachable(settings):
        store = web_store(settings)
        current = state(store, settings)
        hours = sorted(current.get("hours") or [])
        records = []
        if callable(read_record):
            for hour in reversed(hours[-recent:]):
                record = read_record(store, settings, current.get("version", 1), hour)
                records.append(record or {"timestamp_hour": hour})
    return batch_figures(current, records)


def recent_alerts(settings: Settings, limit: int = RECENT_ALERTS) -> list[dict[str, Any]]:
    """The newest entries of the alert log (see :mod:`lambdaflow.monitoring.alerts`)."""
    from lambdaflow.monitoring import alerts

    with _webhdfs_reachable(settings):
        return alerts.recent_alerts(alerts.HdfsStore(settings, timeout_s=5.0), limit)


@dataclass(frozen=True)
class Sources:
    """Where each section's data comes from; tests pass fakes."""

    lag: Callable[[Settings], dict[str, Any]] = lag_now
    lag_history: Callable[[Settings, float], dict[str, Any]] = lag_history
    stream: Callable[[Settings, float], dict[str, Any]] = stream_history
    landing: Callable[[Settings], dict[str, Any]] = field(default_factory=lambda: ManifestCache().totals)
    batch: Callable[[Settings], dict[str, Any]] = batch_state
    dags: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None
    alerts: Callable[[Settings], list[dict[str, Any]]] = recent_alerts


def describe_error(exc: BaseException) -> str:
    """One line for an error box: a user error's own message, otherwise the exception's class and text."""
    text = " ".join(str(exc).split())
    if is_user_error(exc) and text:
        return text
    text = text[:400] + ("…" if len(text) > 400 else "")
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


class Gatherer:
    """Builds summaries with bounded work, however often the page is reloaded.

    - One pool of ``threads`` threads for every source call, shared by all requests (no pool per request).
    - A section's result (or error) is cached for ``cache_s`` seconds, per source and settings (and
      chart window, for the lag history and the stream progress): a reload loop reads Kafka and HDFS
      once per ``cache_s``.
    - At most one call per section key is in flight: a request finding one running waits for it
      (up to ``timeout_s``) instead of starting another, so a hung source holds one thread, not one
      per request; with more than ``max_pending`` calls in flight, new keys answer "busy".
    """

    def __init__(self, sources: Sources | None = None, cache_s: float = CACHE_S, timeout_s: float = SOURCE_TIMEOUT_S,
                 threads: int = SOURCE_THREADS, max_pending: int = MAX_PENDING, max_cached: int = 64) -> None:
        self.sources = sources or Sources()
        self.cache_s, self.timeout_s, self.max_pending, self.max_cached = cache_s, timeout_s, max_pending, max_cached
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lambdaflow-dashboard")
        # reentrant: a job already done when its callback is added runs _finished in gather's thread
        self._lock = threading.RLock()
        self._cache: OrderedDict[tuple, tuple[float, dict[str, Any]]] = OrderedDict()
        self._in_flight: dict[tuple, Future] = {}

    def _jobs(self, settings: Settings, hours: float) -> dict[str, tuple[tuple, Callable[[], Any]]]:
        s = self.sources
        return {
            "lag": (("lag", settings), lambda: s.lag(settings)),
            "lag_history": (("lag_history", settings, hours), lambda: s.lag_history(settings, hours)),
            "stream": (("stream", settings, hours), lambda: s.stream(settings, hours)),
            "landing": (("landing", settings), lambda: s.landing(settings)),
            "batch": (("batch", settings), lambda: s.batch(settings)),
            "alerts": (("alerts", settings), lambda: s.alerts(settings) if s.alerts else []),
            "dags": (("dags",), lambda: dag_table(s.dags() if s.dags else {})),
        }

    @staticmethod
    def _section(name: str, future: Future) -> dict[str, Any]:
        try:
            return {"ok": True, "data": future.result(timeout=0)}
        except Exception as exc:  # one source failing must not take the page down
            log.warning("dashboard section %s failed: %s", name, exc, exc_info=not is_user_error(exc))
            return {"ok": False, "error": describe_error(exc)}

    def _finished(self, key: tuple, future: Future) -> None:
        section = self._section(key[0], future)
        with self._lock:
            self._in_flight.pop(key, None)
            if self.cache_s > 0:
                self._cache[key] = (time.monotonic() + self.cache_s, section)
                self._cache.move_to_end(key)
                while len(self._cache) > self.max_cached:
                    self._cache.popitem(last=False)

    def gather(self, settings: Settings, hours: float = DEFAULT_HOURS) -> dict[str, Any]:
        """The summary document: settings, then one section per source, each ``ok`` with data or with an error."""
        sections: dict[str, dict[str, Any]] = {}
        waiting: dict[str, Future] = {}
        now = time.monotonic()
        with self._lock:
            for name, (key, job) in self._jobs(settings, hours).items():
                cached = self._cache.get(key)
                if cached and cached[0] > now:
                    sections[name] = cached[1]
                elif key in self._in_flight:
                    waiting[name] = self._in_flight[key]
                elif len(self._in_flight) >= self.max_pending:
                    sections[name] = {"ok": False, "error": "busy: too many dashboard requests in flight; reload later"}
                else:
                    future = self._pool.submit(job)
                    self._in_flight[key] = future
                    future.add_done_callback(lambda f, key=key: self._finished(key, f))
                    waiting[name] = future
        deadline = time.monotonic() + self.timeout_s
        for name, future in waiting.items():
            try:
                future.exception(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                sections[name] = {"ok": False, "error": f"no answer within {self.timeout_s:g} s"}
                continue
            sections[name] = self._section(name, future)
        return {
            "generated_at": int(time.time() * 1000),
            "window_hours": hours,
            "topic": settings.topic,
            "group": settings.ingest_group,
            "kafka_bootstrap": settings.kafka_bootstrap,
            "webhdfs_url": settings.webhdfs_url,
            "landing_path": settings.landing_path,
            "sections": {name: sections[name] for name in SECTIONS},
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def gather(settings: Settings, hours: float = DEFAULT_HOURS, sources: Sources | None = None,
           timeout_s: float = SOURCE_TIMEOUT_S) -> dict[str, Any]:
    """One summary, uncached (the app keeps a :class:`Gatherer` instead)."""
    gatherer = Gatherer(sources, cache_s=0, timeout_s=timeout_s, threads=len(SECTIONS))
    try:
        return gatherer.gather(settings, hours)
    finally:
        gatherer.close()  # a hung source must not hold the caller


# ====================================================================== pure figures (no I/O)
def downsample_max(points: Sequence[Sequence[float]], max_points: int = MAX_CHART_POINTS) -> list[list[float]]:
    """At most ``max_points`` points, keeping each bucket's highest value (a lag peak must stay visible)."""
    points = [list(p) for p in points]
    if len(points) <= max_points:
        return points
    size = math.ceil(len(points) / max_points)
    return [max(points[i:i + size], key=lambda p: p[1]) for i in range(0, len(points), size)]


def lag_series(samples: Sequence[Mapping[str, Any]], max_points: int = MAX_CHART_POINTS) -> dict[str, Any]:
    """Chart series from lag samples (oldest first): ``[sampled_at, value]`` points per partition.

    ``records`` holds the lag in records of each partition (``p0``, ``p1``, ...) and, with more than one
    partition, the ``total``; ``seconds`` holds ``lag_seconds``, leaving out samples where it is unknown.
    ``statuses`` counts the group statuses of the samples.
    """
    records: dict[str, list[list[float]]] = {}
    seconds: dict[str, list[list[float]]] = {}
    statuses: Counter[str] = Counter()
    partitions = sorted({p["partition"] for s in samples for p in s.get("partitions", [])})
    for s in samples:
        t = s["sampled_at"]
        for p in sorted(s.get("partitions", []), key=lambda p: p["partition"]):
            records.setdefault(f"p{p['partition']}", []).append([t, p.get("lag") or 0])
            if p.get("lag_seconds") is not None:
                seconds.setdefault(f"p{p['partition']}", []).append([t, p["lag_seconds"]])
        if len(partitions) > 1:
            records.setdefault("total", []).append([t, sum(p.get("lag") or 0 for p in s.get("partitions", []))])
        if s.get("status"):
            statuses[s["status"]] += 1
    return {
        "samples": len(samples),
        "first_sampled_at": samples[0]["sampled_at"] if samples else None,
        "last_sampled_at": samples[-1]["sampled_at"] if samples else None,
        "records": {k: downsample_max(v, max_points) for k, v in records.items()},
        "seconds": {k: downsample_max(v, max_points) for k, v in seconds.items()},
        "statuses": dict(statuses),
    }


def stream_series(records: Sequence[Mapping[str, Any]], max_points: int = MAX_CHART_POINTS) -> dict[str, Any]:
    """Chart series from micro-batch progress records (:func:`stream_progress.progress_record`, oldest
    first): ``[at, value]`` points, each series thinned to ``max_points`` (each bucket's peak).

    ``rates`` holds the ``input`` and ``processed`` rows per second, ``duration_s`` the batch duration
    in seconds, ``rows`` the rows per batch; ``latest`` is the newest batch with its source offsets per
    partition (``start``, ``end``, ``latest`` and ``behind`` = latest - end: records Kafka held beyond
    what the batch read).
    """
    rates: dict[str, list[list[float]]] = {"input": [], "processed": []}
    duration: list[list[float]] = []
    rows: list[list[float]] = []
    for r in records:
        t = r["at"]
        rates["input"].append([t, float(r.get("input_rows_per_s") or 0.0)])
        rates["processed"].append([t, float(r.get("processed_rows_per_s") or 0.0)])
        duration.append([t, int(r.get("batch_duration_ms") or 0) / 1000])
        rows.append([t, int(r.get("rows") or 0)])
    latest = dict(records[-1]) if records else None
    if latest is not None:
        latest["offsets"] = source_offsets(latest)
        parts = (latest.get("durations_ms") or {}).items()
        latest["durations_ms"] = dict(sorted(parts, key=lambda kv: (-kv[1], kv[0])))  # the costliest first
    return {
        "batches": len(records),
        "rows_total": sum(int(r.get("rows") or 0) for r in records),
        "first_at": records[0]["at"] if records else None,
        "last_at": records[-1]["at"] if records else None,
        "runs": len({r.get("run_id") for r in records if r.get("run_id")}),
        "rates": {k: downsample_max(v, max_points) for k, v in rates.items() if v},
        "duration_s": {"batch duration": downsample_max(duration, max_points)} if duration else {},
        "rows": {"rows per batch": downsample_max(rows, max_points)} if rows else {},
        "latest": latest,
    }


def source_offsets(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per partition of a progress record's Kafka source offsets (partitions in number order)."""
    kinds = {k: record.get(f"{k}_offsets") or {} for k in ("start", "end", "latest")}
    partitions = sorted({str(p) for offsets in kinds.values() for p in offsets},
                        key=lambda p: (0, int(p), p) if p.isdigit() else (1, 0, p))
    table = []
    for p in partitions:
        row = {"partition": p, **{k: offsets.get(p) for k, offsets in kinds.items()}}
        row["rows"] = None if row["start"] is None or row["end"] is None else row["end"] - row["start"]
        row["behind"] = None if row["latest"] is None or row["end"] is None else max(0, row["latest"] - row["end"])
        table.append(row)
    return table


def manifest_figures(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What the dashboard keeps of a manifest. ``quarantine_reasons`` is None for manifests written
    before the ingest recorded reasons."""
    reasons = manifest.get("quarantine_reasons")
    return {
        "landed_rows": int(manifest.get("landed_rows") or 0),
        "quarantined_rows": int(manifest.get("quarantined_rows") or 0),
        "quarantine_reasons": {str(k): int(v) for k, v in reasons.items()} if isinstance(reasons, dict) else None,
        "hours": {int(h): int(n) for h, n in (manifest.get("hours") or {}).items()},
        "committed_at_ms": manifest.get("committed_at_ms"),
    }


def landing_totals(manifests: Iterable[Mapping[str, Any]], chart_hours: int = LANDING_CHART_HOURS) -> dict[str, Any]:
    """Totals over manifests (as :func:`manifest_figures` gives them, raw manifests work too).

    Quarantined rows of manifests that carry no reasons count as ``quarantine_unattributed``;
    ``recent_hours`` is ``[event hour, landed rows]`` for the ``chart_hours`` hours up to the newest one.
    """
    batches = landed = quarantined = unattributed = 0
    reasons: Counter[str] = Counter()
    by_hour: Counter[int] = Counter()
    committed: list[int] = []
    for m in manifests:
        batches += int(m.get("batches", 1))  # a roll-up stands for many
        landed += int(m.get("landed_rows") or 0)
        q = int(m.get("quarantined_rows") or 0)
        quarantined += q
        recorded = m.get("quarantine_reasons")
        if isinstance(recorded, dict) and recorded:
            reasons.update({str(k): int(v) for k, v in recorded.items()})
            unattributed += max(0, q - sum(int(v) for v in recorded.values()))
        else:
            unattributed += q
        by_hour.update({int(h): int(n) for h, n in (m.get("hours") or {}).items()})
        if m.get("committed_at_ms") is not None:
            committed.append(int(m["committed_at_ms"]))
    last_hour = max(by_hour, default=None)
    recent = [] if last_hour is None else [
        [h, by_hour.get(h, 0)] for h in range(last_hour - (chart_hours - 1) * HOUR_MS, last_hour + 1, HOUR_MS)]
    return {
        "batches": batches,
        "landed_rows": landed,
        "quarantined_rows": quarantined,
        "quarantine_share": quarantined / (landed + quarantined) if landed + quarantined else 0.0,
        "quarantine_reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "quarantine_unattributed": unattributed,
        "first_committed_at": min(committed, default=None),
        "last_committed_at": max(committed, default=None),
        "event_hours": len(by_hour),
        "first_event_hour": min(by_hour, default=None),
        "last_event_hour": last_hour,
        "recent_hours": recent,
    }


def batch_figures(state: Mapping[str, Any], records: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The batch layer's summary from ``lambdaflow.batch.state()`` and hour records (newest first).

    ``exact_until`` is the end of the watermark hour: the serving query answers from batch views
    before it and from speed views after it (hours recomputed beyond it are ``beyond_watermark``).
    """
    hours = sorted(int(h) for h in state.get("hours") or [])
    watermark = state.get("watermark")
    keep = ("timestamp_hour", "landed_rows", "activity_rows", "visitors_rows", "purchase_count",
            "add_to_cart_count", "page_view_count", "recomputed_at")
    return {
        "version": state.get("version"),
        "watermark": watermark,
        "exact_until": None if watermark is None else watermark + HOUR_MS,
        "covered_hours": len(hours),
        "first_hour": hours[0] if hours else None,
        "last_hour": hours[-1] if hours else None,
        "beyond_watermark": [h for h in hours if watermark is not None and h > watermark][:24],
        "recent": [{k: r.get(k) for k in keep} for r in records],
    }


def dag_table(states: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per DAG (the known ones first, then any other), with what Airflow said about its last run."""
    ids = [*KNOWN_DAGS, *sorted(set(states) - set(KNOWN_DAGS))]
    return [{"dag_id": dag_id, "known_to_airflow": dag_id in states, **dict(states.get(dag_id, {}))} for dag_id in ids]


def nice_scale(max_value: float, ticks: int = 4, integer: bool = False) -> tuple[float, float]:
    """``(top, step)`` of a y axis from 0 with ``ticks`` round steps (1, 2, 2.5 or 5 times a power of 10)."""
    if not max_value > 0:
        max_value = 1.0
    raw = max_value / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    if integer:
        step = max(1.0, math.ceil(step))
    return step * ticks, step


_TIME_STEPS_MS = [s * 60_000 for s in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)]


def time_ticks(start_ms: float, end_ms: float, max_ticks: int = 6) -> list[int]:
    """Round UTC times (whole minutes, hours or days) between start and end, at most ``max_ticks``."""
    span = max(1.0, end_ms - start_ms)
    day = 24 * HOUR_MS
    step = next((s for s in _TIME_STEPS_MS if span / s <= max_ticks), day * math.ceil(span / (day * max_ticks)))
    first = math.ceil(start_ms / step) * step
    return list(range(int(first), int(end_ms) + 1, int(step)))


def split_gaps(points: Sequence[Sequence[float]], gap_ms: float | None = None) -> list[list[Sequence[float]]]:
    """Runs of points without a pause in sampling (no line is drawn across hours nobody measured).

    The default gap is five times the median interval, at least three minutes.
    """
    if len(points) < 2:
        return [list(points)] if points else []
    if gap_ms is None:
        gap_ms = max(180_000.0, 5 * statistics.median(b[0] - a[0] for a, b in zip(points, points[1:])))
    runs: list[list[Sequence[float]]] = [[points[0]]]
    for before, point in zip(points, points[1:]):
        if point[0] - before[0] > gap_ms:
            runs.append([])
        runs[-1].append(point)
    return runs


# =========================================================================== pure rendering
# Everything HTML comes from the autoescaped Jinja2 templates in ``templates/``; Python computes
# figures and chart geometry (numbers), the templates turn them into markup.
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("lambdaflow.monitoring", "templates"),
    autoescape=True,  # every template here is HTML or SVG
    trim_blocks=False,
    keep_trailing_newline=False,
)


def esc(value: Any) -> str:
    """HTML-escaped text (for callers outside the templates; the templates escape on their own)."""
    return str(markupsafe.escape("" if value is None else str(value)))


def fmt_number(value: Any, digits: int = 1) -> str:
    """Plain text (the templates escape it)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:,.0f}"
    return str(value)


def fmt_time(ms: float | None, with_date: bool = True) -> str:
    if ms is None:
        return "–"
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ" if with_date else "%H:%M:%SZ")


def fmt_hour(ms: float | None) -> str:
    return "–" if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:00Z")


def fmt_age(ms: float | None, now_ms: float) -> str:
    if ms is None:
        return "never"
    s = max(0.0, (now_ms - ms) / 1000)
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    if s < 172_800:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.1f} days ago"


_TEMPLATES.filters.update(number=fmt_number, time=fmt_time, hour=fmt_hour, age=lambda ms, now: fmt_age(ms, now))


def _macro(template: str, name: str) -> Callable[..., markupsafe.Markup]:
    return getattr(_TEMPLATES.get_template(template).module, name)


def error_box(title: str, message: str) -> str:
    """The box a section shows instead of its content when its source failed."""
    return _macro("macros.html", "error_box")(title, message)


def badge(text: Any, css: str) -> str:
    return _macro("macros.html", "badge")(text, css)


def line_chart(series: Mapping[str, Sequence[Sequence[float]]], *, title: str, unit: str, width: int = 760,
               height: int = 240, integer: bool = False, x_range: tuple[float, float] | None = None) -> str:
    """An SVG line chart of ``{name: [[epoch ms, value], ...]}``: one polyline per series and run
    without gaps, a marker with a tooltip per point (for short series), axes in UTC, a legend.

    The x axis spans ``x_range`` when given (points outside it are left out), else the data.
    """
    data = {name: [(float(x), float(y)) for x, y in pts if y is not None
                   and (x_range is None or x_range[0] <= x <= x_range[1])] for name, pts in series.items()}
    data = {name: downsample_max(pts) for name, pts in data.items() if pts}
    chart: dict[str, Any] = {"title": title, "unit": unit, "width": width, "height": height, "series": []}
    if not data:
        return _macro("macros.html", "line_chart")(chart)
    xs = [x for pts in data.values() for x, _ in pts]
    x0, x1 = (min(xs), max(xs)) if x_range is None else (float(x_range[0]), float(x_range[1]))
    if x1 - x0 < 60_000:
        x0, x1 = x0 - 30_000, x1 + 30_000
    top, step = nice_scale(max(y for pts in data.values() for _, y in pts), integer=integer)
    left, right, upper, lower = 64, 104, 14, 30
    plot_w, plot_h = width - left - right, height - upper - lower

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return upper + plot_h - min(y, top) / top * plot_h

    with_date = x1 - x0 > 20 * HOUR_MS
    chart.update(left=left, right_x=left + plot_w, upper=upper, bottom_y=upper + plot_h,
                 y_ticks=[(sy(i * step), fmt_number(i * step, 2)) for i in range(round(top / step) + 1)],
                 x_ticks=[(sx(t), datetime.fromtimestamp(t / 1000, tz=timezone.utc)
                           .strftime("%m-%d %H:%M" if with_date else "%H:%M")) for t in time_ticks(x0, x1)])
    for i, (name, pts) in enumerate(data.items()):
        markers = len(pts) <= MAX_MARKERS
        runs = split_gaps(pts)
        chart["series"].append({
            "name": name, "color": PALETTE[i % len(PALETTE)], "stroke_width": 2.2 if name == "total" else 1.5,
            "lines": [" ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in run) for run in runs if len(run) > 1],
            # a lone sample between gaps still shows
            "dots": [] if markers else [(sx(run[0][0]), sy(run[0][1])) for run in runs if len(run) == 1],
            "markers": [(sx(x), sy(y), f"{name} {fmt_time(x)}: {fmt_number(y)} {unit}") for x, y in pts] if markers else [],
            "legend_y": upper + 14 + 18 * i,
        })
    return _macro("macros.html", "line_chart")(chart)


def bar_chart(bars: Sequence[Sequence[float]], *, title: str, unit: str, width: int = 760, height: int = 200) -> str:
    """An SVG bar chart of ``[[hour epoch ms, value], ...]`` (one bar per hour, labels in UTC)."""
    chart: dict[str, Any] = {"title": title, "unit": unit, "width": width, "height": height, "bars": []}
    if not bars or not any(v for _, v in bars):
        return _macro("macros.html", "bar_chart")(chart)
    left, right, upper, lower = 64, 16, 14, 30
    plot_w, plot_h = width - left - right, height - upper - lower
    top, step = nice_scale(max(v for _, v in bars), integer=True)
    slot = plot_w / len(bars)
    label_every = max(1, math.ceil(len(bars) / 12))
    chart.update(left=left, right_x=left + plot_w, upper=upper,
                 y_ticks=[(upper + plot_h - i * step / top * plot_h, fmt_number(i * step, 2))
                          for i in range(round(top / step) + 1)])
    for i, (hour, value) in enumerate(bars):
        h = value / top * plot_h
        x = left + i * slot
        chart["bars"].append({
            "x": x + 1, "y": upper + plot_h - h, "width": max(1.0, slot - 2), "height": h,
            "tip": f"{fmt_hour(hour)}: {fmt_number(value)} {unit}", "label_x": x + slot / 2,
            "label": datetime.fromtimestamp(hour / 1000, tz=timezone.utc).strftime("%H:00") if i % label_every == 0 else "",
        })
    return _macro("macros.html", "bar_chart")(chart)


def render_lag(report: Mapping[str, Any], now_ms: float) -> str:
    """The group's status and totals, then the per-partition table (``lambdaflow lag`` in HTML)."""
    return _macro("sections.html", "lag")(report, now_ms, STATUS_CLASS)


def render_lag_history(history: Mapping[str, Any], hours: float, now_ms: float) -> str:
    window = (now_ms - hours * HOUR_MS, now_ms)
    records = line_chart(history.get("records", {}), title="Lag in records by partition", unit="records",
                         integer=True, x_range=window)
    seconds = line_chart(history.get("seconds", {}), title="Lag in seconds (age of the oldest record not landed)",
                         unit="seconds", x_range=window)
    return _macro("sections.html", "lag_history")(history, float(hours), records, seconds)


def render_stream(progress: Mapping[str, Any], hours: float, now_ms: float) -> str:
    """The micro-batches' rates, durations and sizes on the lag charts' time axis, and the newest
    batch's source offsets."""
    window = (now_ms - hours * HOUR_MS, now_ms)
    rates = line_chart(progress.get("rates", {}), title="Input and processing rate per micro-batch", unit="rows/s",
                       x_range=window)
    duration = line_chart(progress.get("duration_s", {}), title="Micro-batch duration", unit="seconds", x_range=window)
    rows = line_chart(progress.get("rows", {}), title="Rows per micro-batch", unit="rows", integer=True, x_range=window)
    return _macro("sections.html", "stream")(progress, float(hours), now_ms, rates, duration, rows)


def render_landing(totals: Mapping[str, Any], now_ms: float) -> str:
    chart = bar_chart(totals.get("recent_hours") or [], title="Landed rows per event hour (latest hours)", unit="rows")
    return _macro("sections.html", "landing")(totals, now_ms, chart)


def render_batch(figures: Mapping[str, Any]) -> str:
    if figures.get("watermark") is not None and not isinstance(figures["watermark"], (int, float)):
        raise TypeError(f"the batch watermark is not an epoch ms: {figures['watermark']!r}")
    return _macro("sections.html", "batch")(figures)


def render_dags(dags: Sequence[Mapping[str, Any]], airflow_base: str) -> str:
    return _macro("sections.html", "dags")(dags, airflow_base, RUN_STATE_CLASS)


def render_alerts(entries: Sequence[Mapping[str, Any]], now_ms: float) -> str:
    return _macro("sections.html", "alerts")(entries, now_ms, SEVERITY_CLASS)


SECTION_TITLES = {"lag": "Ingest lag now", "lag_history": "Lag over time",
                  "stream": "Stream progress (micro-batches)", "landing": "Landing zone (master dataset)",
                  "batch": "Batch layer", "alerts": "Recent alerts", "dags": "Airflow DAGs"}


def render_page(summary: Mapping[str, Any], base_path: str = "/lambdaflow", airflow_base: str = "",
                spark_ui: Mapping[str, Any] | None = None) -> str:
    """The whole page: every section with its content, or its error box when its source failed.

    ``spark_ui`` is :func:`ingest_ui` (by default for ``localhost``): linked in the header and above
    the stream progress, whether or not its history could be read.
    """
    spark_ui = spark_ui or ingest_ui()
    now = summary.get("generated_at") or int(time.time() * 1000)
    hours = summary.get("window_hours", DEFAULT_HOURS)
    sections = summary.get("sections", {})
    renderers: dict[str, Callable[[Any], str]] = {
        "lag": lambda d: render_lag(d, now),
        "lag_history": lambda d: render_lag_history(d, hours, now),
        "stream": lambda d: render_stream(d, hours, now),
        "landing": lambda d: render_landing(d, now),
        "batch": render_batch,
        "alerts": lambda d: render_alerts(d, now),
        "dags": lambda d: render_dags(d, airflow_base),
    }
    rendered = []
    for name, title in SECTION_TITLES.items():
        s = sections.get(name) or {"ok": False, "error": "not gathered"}
        try:
            body = renderers[name](s["data"]) if s.get("ok") else error_box(title, s.get("error") or "unknown error")
        except Exception as exc:  # a source returning an odd shape must not take the page down
            log.exception("dashboard section %s could not be rendered", name)
            body = error_box(title, f"cannot render: {describe_error(exc)}")
        rendered.append({"name": name, "title": title, "body": markupsafe.Markup(body)})
    return _TEMPLATES.get_template("page.html").render(
        summary=summary, sections=rendered, now=now, hours=hours, base_path=base_path, airflow_base=airflow_base,
        spark_ui=spark_ui, hour_choices=list(HOUR_CHOICES.items()), refresh_s=REFRESH_S, cache_s=CACHE_S)


# ==================================================================================== the app
def parse_hours(text: str | None) -> float:
    """The chart window from ``?hours=``: a number of hours within (0, 7 days], else the default.

    Rounded to a tenth of an hour, so that the cache sees few distinct windows.
    """
    try:
        hours = float(text) if text is not None else DEFAULT_HOURS
    except ValueError:
        return DEFAULT_HOURS
    if not math.isfinite(hours) or hours <= 0:
        return DEFAULT_HOURS
    return max(0.1, round(min(hours, MAX_HOURS), 1))


def create_app(sources: Sources | None = None,
               settings_factory: Callable[[], Settings] = Settings.from_env,
               auth: Callable[..., Any] | None = None,
               gatherer: "Gatherer | None" = None) -> FastAPI:
    """The dashboard as a FastAPI app; mounted under ``/lambdaflow`` by the Airflow plugin.

    ``auth`` is a FastAPI dependency every route requires (the plugin passes
    :func:`lambdaflow.monitoring.auth.airflow_login_required`); when it raises a 401/403, a browser
    is redirected to Airflow's login page and other clients get the status. Links are built from
    the mount point (``root_path``), so the page also works behind a proxy prefix.
    """
    from lambdaflow.monitoring.auth import login_redirect

    gatherer = gatherer or Gatherer(sources or Sources())
    app = FastAPI(title="lambdaflow dashboard", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(auth)] if auth is not None else [])
    app.add_exception_handler(HTTPException, login_redirect)
    no_store = {"Cache-Control": "no-store"}

    # Plain (sync) routes run in Starlette's bounded thread pool; the gathering itself is bounded
    # by the Gatherer (one shared pool, one call per source in flight, results cached CACHE_S).
    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    def page(request: Request, hours: str | None = None) -> HTMLResponse:
        summary = gatherer.gather(settings_factory(), parse_hours(hours))
        base_path = request.scope.get("root_path", "").rstrip("/")
        airflow_base = base_path.rsplit("/", 1)[0] if base_path else ""
        return HTMLResponse(render_page(summary, base_path=base_path, airflow_base=airflow_base,
                                        spark_ui=ingest_ui(request.url.hostname)), headers=no_store)

    @app.api_route("/api/summary", methods=["GET", "HEAD"])
    def summary(request: Request, hours: str | None = None) -> JSONResponse:
        body = {**gatherer.gather(settings_factory(), parse_hours(hours)), "ingest_ui": ingest_ui(request.url.hostname)}
        return JSONResponse(body, headers=no_store)

    return app
