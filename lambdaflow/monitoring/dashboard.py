"""The lambdaflow dashboard: ingest lag, the landing zone's totals, the batch watermark, the DAGs.

The Airflow api-server serves it under ``/lambdaflow/`` through ``plugins/lambdaflow_dashboard.py``;
everything else lives here, so that it can be tested without Airflow:

- **Gathering** (:func:`gather`) builds one summary document from independent sources: the lag now
  (:func:`lambdaflow.lag.monitor` with ``record=False``, so the dashboard never writes), the stored lag
  samples (:func:`lambdaflow.lag.history`), the landing zone's offset-range manifests, the batch
  layer's state (:func:`lambdaflow.batch.state`, used defensively) and the DAGs' last runs (given by
  the plugin, which can read Airflow's metadata DB). Each source runs in its own thread and fails on
  its own: a section is ``{"ok": true, "data": ...}`` or ``{"ok": false, "error": "..."}``. When Kafka
  or HDFS is down, the sections that need it show an error box, and the page is still a 200.
- **Rendering** (:func:`render_page`, :func:`line_chart`, :func:`bar_chart`, :func:`error_box`) is
  pure: summary in, plain HTML out, charts as inline SVG. There is no JavaScript and nothing is
  loaded from elsewhere (the machines may be offline); the page reloads itself every minute.
- **The app** (:func:`create_app`) is a FastAPI app: ``GET /`` is the page (``?hours=`` picks the
  chart window) and ``GET /api/summary`` returns the same summary as JSON.

**Auth: none.** The dashboard only reads, and the local api-server listens on localhost only.
Airflow 3 does not put plugin FastAPI apps behind its login. Where the api-server can be reached
from other machines (the compose cluster), add
``Depends(airflow.api_fastapi.core_api.security.get_user)`` to the routes (it accepts the UI's
session cookie) or put an authenticating proxy in front.

**Cost of a request.** The landing zone's manifests are read once each and then cached in the
process. A manifest is named by its offset ranges, and a replayed range writes the same figures
again, so a cached manifest never goes stale. A request reads only the manifests committed since
the previous one, at most :data:`MANIFEST_READS_PER_REQUEST` (the totals say when they are partial).
"""

from __future__ import annotations

import contextlib
import html
import logging
import math
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from lambdaflow import hdfs
from lambdaflow.config import Settings
from lambdaflow.errors import UserError, is_user_error

log = logging.getLogger(__name__)

KNOWN_DAGS = ("weblogs_producer", "weblogs_ingest", "weblogs_lag_monitor", "weblogs_batch")
SECTIONS = ("lag", "lag_history", "landing", "batch", "dags")
HOUR_MS = 3_600_000
DEFAULT_HOURS = 6.0
MAX_HOURS = 24.0 * 7  # the lag history's default retention
HOUR_CHOICES = {1: "1 h", 6: "6 h", 24: "24 h", 168: "7 days"}
SOURCE_TIMEOUT_S = 30.0
MANIFEST_READS_PER_REQUEST = 2000
RECENT_BATCH_HOURS = 6
LANDING_CHART_HOURS = 24
MAX_CHART_POINTS = 360
MAX_MARKERS = 120
REFRESH_S = 60
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
STATUS_CLASS = {"OK": "ok", "WARN": "warn", "NOT_STARTED": "idle", "STALL": "bad", "STOP": "bad", "REWIND": "bad"}
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


class ManifestCache:
    """The figures of every committed manifest of a landing zone, read once each (see the module doc)."""

    def __init__(self, reads_per_request: int = MANIFEST_READS_PER_REQUEST, threads: int = 8) -> None:
        self.reads_per_request = reads_per_request
        self.threads = threads
        self._lock = threading.Lock()
        self._zones: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}

    def totals(self, settings: Settings, client: Any = None) -> dict[str, Any]:
        """:func:`landing_totals` of the landing zone, plus how many manifests it covers so far."""
        from lambdaflow import hdfs, landing

        with _webhdfs_reachable(settings):
            c = client if client is not None else hdfs.client(settings)
            keys = landing.manifest_keys(c, settings.landing_path)
            listed = set(keys)
            with self._lock:
                cached = self._zones.setdefault((settings.webhdfs_url, settings.landing_path), {})
                for gone in cached.keys() - listed:  # deleted (with its landing zone, say): no longer counts
                    del cached[gone]
                missing = [k for k in keys if k not in cached][: self.reads_per_request]

            def read(key: str) -> tuple[str, Any]:
                return key, hdfs.read_json(c, f"{settings.landing_path}/{landing.MANIFESTS}/{key}.json")

            with ThreadPoolExecutor(max_workers=self.threads) as pool:
                fresh = [(k, doc) for k, doc in pool.map(read, missing) if isinstance(doc, dict)]
        with self._lock:
            cached.update((k, manifest_figures(doc)) for k, doc in fresh)
            manifests = [cached[k] for k in keys if k in cached]
        totals = landing_totals(manifests)
        totals.update(manifests_listed=len(keys), manifests_read=len(manifests), partial=len(manifests) < len(keys))
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


@dataclass(frozen=True)
class Sources:
    """Where each section's data comes from; tests pass fakes."""

    lag: Callable[[Settings], dict[str, Any]] = lag_now
    lag_history: Callable[[Settings, float], dict[str, Any]] = lag_history
    landing: Callable[[Settings], dict[str, Any]] = field(default_factory=lambda: ManifestCache().totals)
    batch: Callable[[Settings], dict[str, Any]] = batch_state
    dags: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None


def describe_error(exc: BaseException) -> str:
    """One line for an error box: a user error's own message, otherwise the exception's class and text."""
    text = " ".join(str(exc).split())
    if is_user_error(exc) and text:
        return text
    text = text[:400] + ("…" if len(text) > 400 else "")
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def gather(settings: Settings, hours: float = DEFAULT_HOURS, sources: Sources | None = None,
           timeout_s: float = SOURCE_TIMEOUT_S) -> dict[str, Any]:
    """The summary document: settings, then one section per source, each ``ok`` with data or with an error."""
    sources = sources or Sources()
    jobs: dict[str, Callable[[], Any]] = {
        "lag": lambda: sources.lag(settings),
        "lag_history": lambda: sources.lag_history(settings, hours),
        "landing": lambda: sources.landing(settings),
        "batch": lambda: sources.batch(settings),
        "dags": lambda: dag_table(sources.dags() if sources.dags else {}),
    }
    pool = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="lambdaflow-dashboard")
    futures = {name: pool.submit(job) for name, job in jobs.items()}
    deadline = time.monotonic() + timeout_s
    sections: dict[str, dict[str, Any]] = {}
    for name, future in futures.items():
        try:
            sections[name] = {"ok": True, "data": future.result(timeout=max(0.0, deadline - time.monotonic()))}
        except FutureTimeout:
            sections[name] = {"ok": False, "error": f"no answer within {timeout_s:g} s"}
        except Exception as exc:  # one source failing must not take the page down
            log.warning("dashboard section %s failed: %s", name, exc, exc_info=not is_user_error(exc))
            sections[name] = {"ok": False, "error": describe_error(exc)}
    pool.shutdown(wait=False, cancel_futures=True)  # a hung source must not hold the request
    return {
        "generated_at": int(time.time() * 1000),
        "window_hours": hours,
        "topic": settings.topic,
        "group": settings.ingest_group,
        "kafka_bootstrap": settings.kafka_bootstrap,
        "webhdfs_url": settings.webhdfs_url,
        "landing_path": settings.landing_path,
        "sections": sections,
    }


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
        batches += 1
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
def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt_number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:,.0f}"
    return esc(value)


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


def error_box(title: str, message: str) -> str:
    """The box a section shows instead of its content when its source failed."""
    return (f'<div class="error" role="alert"><strong>{esc(title)} unavailable</strong>'
            f'<p>{esc(message)}</p></div>')


def badge(text: Any, css: str) -> str:
    return f'<span class="badge {esc(css)}">{esc(text)}</span>'


def line_chart(series: Mapping[str, Sequence[Sequence[float]]], *, title: str, unit: str, width: int = 760,
               height: int = 240, integer: bool = False, x_range: tuple[float, float] | None = None) -> str:
    """An SVG line chart of ``{name: [[epoch ms, value], ...]}``: one polyline per series and run
    without gaps, a marker with a tooltip per point (for short series), axes in UTC, a legend.

    The x axis spans ``x_range`` when given (points outside it are left out), else the data.
    """
    data = {name: [(float(x), float(y)) for x, y in pts if y is not None
                   and (x_range is None or x_range[0] <= x <= x_range[1])] for name, pts in series.items()}
    data = {name: downsample_max(pts) for name, pts in data.items() if pts}
    if not data:
        return f'<p class="empty">{esc(title)}: no samples in this window.</p>'
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

    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" aria-label="{esc(title)}">',
           f"<title>{esc(title)}</title>"]
    for i in range(round(top / step) + 1):
        y = sy(i * step)
        out.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt_number(i * step, 2)}</text>')
    with_date = x1 - x0 > 20 * HOUR_MS
    for t in time_ticks(x0, x1):
        x = sx(t)
        label = datetime.fromtimestamp(t / 1000, tz=timezone.utc).strftime("%m-%d %H:%M" if with_date else "%H:%M")
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{upper}" y2="{upper + plot_h}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{height - 10}" text-anchor="middle">{label}</text>')
    out.append(f'<text class="tick" x="{left + plot_w}" y="{height - 1}" text-anchor="end">UTC</text>')
    out.append(f'<text class="tick" x="4" y="{upper - 2}">{esc(unit)}</text>')
    for i, (name, pts) in enumerate(data.items()):
        color = PALETTE[i % len(PALETTE)]
        markers = len(pts) <= MAX_MARKERS
        for run in split_gaps(pts):
            if len(run) > 1:
                coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in run)
                out.append(f'<polyline class="series" data-series="{esc(name)}" fill="none" stroke="{color}" '
                           f'stroke-width="{2.2 if name == "total" else 1.5}" points="{coords}"/>')
            elif not markers:  # a lone sample between gaps still shows
                out.append(f'<circle cx="{sx(run[0][0]):.1f}" cy="{sy(run[0][1]):.1f}" r="2" fill="{color}"/>')
        if markers:
            for x, y in pts:
                out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}">'
                           f'<title>{esc(name)} {fmt_time(x)}: {fmt_number(y)} {esc(unit)}</title></circle>')
        ly = upper + 14 + 18 * i
        out.append(f'<rect x="{left + plot_w + 14}" y="{ly - 9}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text class="legend" x="{left + plot_w + 32}" y="{ly + 1}">{esc(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(bars: Sequence[Sequence[float]], *, title: str, unit: str, width: int = 760, height: int = 200) -> str:
    """An SVG bar chart of ``[[hour epoch ms, value], ...]`` (one bar per hour, labels in UTC)."""
    if not bars or not any(v for _, v in bars):
        return f'<p class="empty">{esc(title)}: nothing yet.</p>'
    left, right, upper, lower = 64, 16, 14, 30
    plot_w, plot_h = width - left - right, height - upper - lower
    top, step = nice_scale(max(v for _, v in bars), integer=True)
    slot = plot_w / len(bars)
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" aria-label="{esc(title)}">', f"<title>{esc(title)}</title>"]
    for i in range(round(top / step) + 1):
        y = upper + plot_h - i * step / top * plot_h
        out.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt_number(i * step, 2)}</text>')
    label_every = max(1, math.ceil(len(bars) / 12))
    for i, (hour, value) in enumerate(bars):
        h = value / top * plot_h
        x = left + i * slot
        out.append(f'<rect class="bar" x="{x + 1:.1f}" y="{upper + plot_h - h:.1f}" width="{max(1.0, slot - 2):.1f}" '
                   f'height="{h:.1f}"><title>{fmt_hour(hour)}: {fmt_number(value)} {esc(unit)}</title></rect>')
        if i % label_every == 0:
            label = datetime.fromtimestamp(hour / 1000, tz=timezone.utc).strftime("%H:00")
            out.append(f'<text class="tick" x="{x + slot / 2:.1f}" y="{height - 10}" '
                       f'text-anchor="middle">{label}</text>')
    out.append(f'<text class="tick" x="4" y="{upper - 2}">{esc(unit)}</text></svg>')
    return "".join(out)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    """An HTML table; cells are already HTML (escape values with :func:`esc` / format them first)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{esc(css)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_lag(report: Mapping[str, Any], now_ms: float) -> str:
    """The group's status and totals, then the per-partition table (``lambdaflow lag`` in HTML)."""
    status = report.get("status", "?")
    rows = []
    for p in report.get("partitions", []):
        rows.append([
            f'<span class="partition">{esc(p.get("partition"))}</span>',
            fmt_number(p.get("log_start_offset")), fmt_number(p.get("log_end_offset")),
            fmt_number(p.get("committed_offset")), fmt_number(p.get("lag")),
            fmt_number(p.get("lag_seconds")),
            esc(fmt_age(p.get("last_landed_at"), now_ms)) if p.get("committed_offset") is not None else "never",
            fmt_number(p.get("group_offset"))
            + (f' {badge(p["disagreement"], "warn")}' if p.get("disagreement") else ""),
            badge(p.get("status", "?"), STATUS_CLASS.get(p.get("status", ""), "idle")),
            esc(p.get("reason", "")),
        ])
    window = report.get("window") or {}
    return (f'<p class="figures">group <code>{esc(report.get("group"))}</code> on topic '
            f'<code>{esc(report.get("topic"))}</code>: {badge(status, STATUS_CLASS.get(status, "idle"))} '
            f'total lag <strong>{fmt_number(report.get("total_lag"))}</strong> records, sampled '
            f'{esc(fmt_time(report.get("sampled_at")))}, judged over {fmt_number(window.get("samples", 1))} '
            f'sample(s)</p>'
            + table(["partition", "log start", "log end", "landed up to", "lag (records)", "lag (s)",
                     "last landed", "group offset", "status", "reason"], rows, "lag"))


def render_lag_history(history: Mapping[str, Any], hours: float, now_ms: float) -> str:
    window = (now_ms - hours * HOUR_MS, now_ms)
    statuses = ", ".join(f"{esc(k)} {fmt_number(v)}" for k, v in sorted(history.get("statuses", {}).items()))
    return (f'<p class="figures">{fmt_number(history.get("samples", 0))} stored sample(s) in the last '
            f'{fmt_number(float(hours))} h{f" ({statuses})" if statuses else ""}; the '
            f'<code>weblogs_lag_monitor</code> DAG records one a minute.</p>'
            + line_chart(history.get("records", {}), title="Lag in records by partition", unit="records",
                         integer=True, x_range=window)
            + line_chart(history.get("seconds", {}), title="Lag in seconds (age of the oldest record not landed)",
                         unit="seconds", x_range=window))


def render_landing(totals: Mapping[str, Any], now_ms: float) -> str:
    share = totals.get("quarantine_share") or 0.0
    partial = ""
    if totals.get("partial"):
        partial = (f'<p class="note">Partial: {fmt_number(totals.get("manifests_read"))} of '
                   f'{fmt_number(totals.get("manifests_listed"))} manifests read so far; reload for the rest.</p>')
    figures = table(["committed batches", "landed rows", "quarantined rows", "event hours", "last commit"], [[
        fmt_number(totals.get("batches")), fmt_number(totals.get("landed_rows")),
        f'{fmt_number(totals.get("quarantined_rows"))} ({share * 100:.2f} %)',
        f'{fmt_number(totals.get("event_hours"))} ({esc(fmt_hour(totals.get("first_event_hour")))} … '
        f'{esc(fmt_hour(totals.get("last_event_hour")))})',
        f'{esc(fmt_time(totals.get("last_committed_at")))} ({esc(fmt_age(totals.get("last_committed_at"), now_ms))})'
        if totals.get("last_committed_at") is not None else "never",
    ]], "totals")
    reasons = [[f"<code>{esc(k)}</code>", fmt_number(v)] for k, v in (totals.get("quarantine_reasons") or {}).items()]
    if totals.get("quarantine_unattributed"):
        reasons.append(["<em>not recorded by the ingest</em>", fmt_number(totals["quarantine_unattributed"])])
    by_reason = table(["quarantine reason", "rows"], reasons, "reasons") if reasons else ""
    chart = bar_chart(totals.get("recent_hours") or [], title="Landed rows per event hour (latest hours)", unit="rows")
    return partial + figures + by_reason + chart


def render_batch(figures: Mapping[str, Any]) -> str:
    if figures.get("watermark") is None:
        head = ('<p class="figures">No hour recomputed yet: the serving query answers every hour from the speed '
                f'views. Batch views version {fmt_number(figures.get("version"))}.</p>')
    else:
        beyond = figures.get("beyond_watermark") or []
        head = (f'<p class="figures">Batch watermark <strong>{esc(fmt_hour(figures["watermark"]))}</strong>: '
                f'batch views are exact up to {esc(fmt_hour(figures.get("exact_until")))}, speed views serve the hours after. '
                f'{fmt_number(figures.get("covered_hours"))} hour(s) covered '
                f'({esc(fmt_hour(figures.get("first_hour")))} … {esc(fmt_hour(figures.get("last_hour")))}), '
                f'version {fmt_number(figures.get("version"))}.'
                + (f' Also recomputed, beyond the watermark: {", ".join(esc(fmt_hour(h)) for h in beyond)}.'
                   if beyond else "")
                + "</p>")
    columns = ("landed_rows", "activity_rows", "visitors_rows", "purchase_count", "add_to_cart_count", "page_view_count")
    rows = [[esc(fmt_hour(r.get("timestamp_hour"))), *(fmt_number(r.get(c)) for c in columns),
             esc(r.get("recomputed_at") or "–")] for r in figures.get("recent") or []]
    return head + (table(["hour", "landed rows", "activity rows", "visitors rows", "purchases", "add to cart",
                          "page views", "recomputed at"], rows, "batch") if rows else "")


def render_dags(dags: Sequence[Mapping[str, Any]], airflow_base: str) -> str:
    rows = []
    for d in dags:
        dag_id = d["dag_id"]
        state = d.get("last_run_state")
        rows.append([
            f'<a href="{esc(airflow_base)}/dags/{esc(dag_id)}" target="_top">{esc(dag_id)}</a>',
            "–" if d.get("is_paused") is None else ("paused" if d["is_paused"] else "active"),
            badge(state, RUN_STATE_CLASS.get(str(state), "idle")) if state
            else ("no run" if d.get("known_to_airflow") else "–"),
            esc(d.get("last_run_after") or "–"),
        ])
    return table(["DAG", "status", "last run", "last run after"], rows, "dags")


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#017cee;color:#fff;padding:10px 20px;display:flex;flex-wrap:wrap;gap:6px 18px;align-items:baseline}
header h1{font-size:18px;margin:0}header a{color:#fff}nav a{margin-right:8px}nav a.current{font-weight:700;text-decoration:none}
main{padding:8px 20px 24px;max-width:1200px}section{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:14px 0;padding:6px 16px 14px}
h2{font-size:16px;margin:8px 0}table{border-collapse:collapse;margin:6px 0 10px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e5e8ec;padding:4px 10px;text-align:right;vertical-align:top}th{background:#f0f2f5;font-weight:600}
td:first-child,th:first-child,table.dags td,table.reasons td:first-child{text-align:left}td:last-child{text-align:left}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;color:#fff}
.ok{background:#2e8540}.warn{background:#d98200}.bad{background:#c62828}.idle{background:#7a8290}
.error{border:1px solid #c62828;background:#fdecea;color:#8e1c1c;border-radius:6px;padding:8px 12px;margin:6px 0}
.error p{margin:4px 0 0;font-family:ui-monospace,monospace;font-size:13px;white-space:pre-wrap}
.empty,.note{color:#5c6470;font-style:italic}.chart{display:block;margin:6px 0;max-width:100%;height:auto}
.chart .grid{stroke:#e5e8ec;stroke-width:1}.chart .tick,.chart .legend{font-size:11px;fill:#5c6470}.chart .bar{fill:#017cee}
footer{color:#5c6470;font-size:12px;padding:0 20px 20px}code{font-size:13px}
"""


def render_page(summary: Mapping[str, Any], base_path: str = "/lambdaflow", airflow_base: str = "") -> str:
    """The whole page: every section with its content, or its error box when its source failed."""
    now = summary.get("generated_at") or int(time.time() * 1000)
    hours = summary.get("window_hours", DEFAULT_HOURS)
    sections = summary.get("sections", {})

    def section(name: str, title: str, render: Callable[[Any], str]) -> str:
        s = sections.get(name) or {"ok": False, "error": "not gathered"}
        try:
            body = render(s["data"]) if s.get("ok") else error_box(title, s.get("error") or "unknown error")
        except Exception as exc:  # a source returning an odd shape must not take the page down
            log.exception("dashboard section %s could not be rendered", name)
            body = error_box(title, f"cannot render: {describe_error(exc)}")
        return f'<section id="{esc(name)}"><h2>{esc(title)}</h2>{body}</section>'

    current = ' class="current"'
    windows = " ".join(f'<a href="?hours={h}"{current if float(h) == float(hours) else ""}>{esc(label)}</a>'
                       for h, label in HOUR_CHOICES.items())
    return "".join([
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_S}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>lambdaflow · {esc(summary.get('topic'))}</title><style>{_CSS}</style></head><body>",
        f'<header><h1>lambdaflow</h1><span>topic <code>{esc(summary.get("topic"))}</code> · group '
        f'<code>{esc(summary.get("group"))}</code> · landing zone <code>{esc(summary.get("landing_path"))}</code></span>'
        f'<nav>chart window: {windows}</nav>'
        f'<span><a href="{esc(base_path)}/api/summary?hours={esc(hours)}">JSON</a> · '
        f'<a href="{esc(airflow_base)}/" target="_top">Airflow</a></span></header><main>',
        section("lag", "Ingest lag now", lambda d: render_lag(d, now)),
        section("lag_history", "Lag over time", lambda d: render_lag_history(d, hours, now)),
        section("landing", "Landing zone (master dataset)", lambda d: render_landing(d, now)),
        section("batch", "Batch layer", render_batch),
        section("dags", "Airflow DAGs", lambda d: render_dags(d, airflow_base)),
        f'</main><footer>Generated {esc(fmt_time(now))} from Kafka at <code>{esc(summary.get("kafka_bootstrap"))}</code> '
        f'and WebHDFS at <code>{esc(summary.get("webhdfs_url"))}</code>; reloads every {REFRESH_S} s. '
        'Read-only: the lag shown is sampled, not recorded.</footer></body></html>',
    ])


# ==================================================================================== the app
def parse_hours(text: str | None) -> float:
    """The chart window from ``?hours=``: a number of hours within (0, 7 days], else the default."""
    try:
        hours = float(text) if text is not None else DEFAULT_HOURS
    except ValueError:
        return DEFAULT_HOURS
    if not math.isfinite(hours) or hours <= 0:
        return DEFAULT_HOURS
    return min(hours, MAX_HOURS)


def create_app(sources: Sources | None = None,
               settings_factory: Callable[[], Settings] = Settings.from_env) -> FastAPI:
    """The dashboard as a FastAPI app; mounted under ``/lambdaflow`` by the Airflow plugin.

    Links are built from the mount point (``root_path``), so the page also works behind a proxy prefix.
    """
    sources = sources or Sources()
    app = FastAPI(title="lambdaflow dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    no_store = {"Cache-Control": "no-store"}

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    def page(request: Request, hours: str | None = None) -> HTMLResponse:
        summary = gather(settings_factory(), parse_hours(hours), sources)
        base_path = request.scope.get("root_path", "").rstrip("/")
        airflow_base = base_path.rsplit("/", 1)[0] if base_path else ""
        return HTMLResponse(render_page(summary, base_path=base_path, airflow_base=airflow_base), headers=no_store)

    @app.api_route("/api/summary", methods=["GET", "HEAD"])
    def summary(hours: str | None = None) -> JSONResponse:
        return JSONResponse(gather(settings_factory(), parse_hours(hours), sources), headers=no_store)

    return app
