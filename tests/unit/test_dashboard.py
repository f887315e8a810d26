"""The dashboard's pure parts (figures, SVG charts, HTML) and its app with fake sources: no services."""

from __future__ import annotations

import io
import json
import re
import time
import warnings

import pytest

with warnings.catch_warnings():  # starlette's TestClient would rather have httpx2; httpx is what Airflow pins
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from fastapi import HTTPException, Request

from lambdaflow import dashboard as d
from lambdaflow.config import Settings
from lambdaflow.kafka_admin import KafkaUnavailable

HOUR = 3_600_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % HOUR
MINUTE = 60_000


@pytest.fixture(autouse=True)
def default_spark_ui(monkeypatch) -> None:
    """The Spark UI link as it is by default (the tests below set these themselves where they matter)."""
    monkeypatch.delenv("LAMBDAFLOW_INGEST_UI_URL", raising=False)
    monkeypatch.delenv("LAMBDAFLOW_INGEST_UI_PORT", raising=False)


def sample(minute: int, lags: list[int], seconds: list[float | None] | None = None, status: str = "OK") -> dict:
    seconds = seconds or [None] * len(lags)
    return {"sampled_at": T0 + minute * MINUTE, "status": status, "partitions": [
        {"partition": p, "lag": lag, "lag_seconds": s} for p, (lag, s) in enumerate(zip(lags, seconds))]}


def polyline_points(svg: str) -> dict[str, list[tuple[float, float]]]:
    """Points of every polyline, by series name (runs of one series are concatenated)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for name, points in re.findall(r'<polyline[^>]*data-series="([^"]+)"[^>]*points="([^"]+)"', svg):
        series.setdefault(name, []).extend(tuple(map(float, p.split(","))) for p in points.split())
    return series


LAG_REPORT = {
    "group": "lambdaflow-ingest", "topic": "weblogs", "sampled_at": T0, "status": "WARN", "total_lag": 130,
    "window": {"samples": 3, "size": 10},
    "partitions": [
        {"partition": 0, "log_start_offset": 0, "log_end_offset": 1000, "committed_offset": 1000, "lag": 0,
         "lag_seconds": 0.0, "last_landed_at": T0 - 5000, "group_offset": 1000, "disagreement": None,
         "status": "OK", "reason": "caught up"},
        {"partition": 1, "log_start_offset": 0, "log_end_offset": 1130, "committed_offset": 1000, "lag": 130,
         "lag_seconds": 12.5, "last_landed_at": T0 - 5000, "group_offset": 990, "disagreement": "group_behind",
         "status": "WARN", "reason": "lag grew from 20 to 130 records over 3 samples (120 s)"},
        {"partition": 2, "log_start_offset": 0, "log_end_offset": 0, "committed_offset": None, "lag": 0,
         "lag_seconds": 0.0, "last_landed_at": None, "group_offset": None, "disagreement": None,
         "status": "OK", "reason": "caught up"},
    ],
}
MANIFESTS = [
    {"landed_rows": 90, "quarantined_rows": 10, "quarantine_reasons": {"unparseable": 6, "bad_timestamp": 4},
     "hours": {str(T0): 50, str(T0 + HOUR): 40}, "committed_at_ms": T0 + 10},
    {"landed_rows": 20, "quarantined_rows": 3, "hours": {str(T0 + 3 * HOUR): 20}, "committed_at_ms": T0 + 99},
]


def progress(second: int, rows: int, input_rate: float, processed_rate: float, duration_ms: int, batch_id: int = 0,
             start: dict | None = None, end: dict | None = None, latest: dict | None = None, run_id: str = "run-1") -> dict:
    """A record as ``stream_progress.progress_record`` makes it (``at`` = T0 + ``second`` s)."""
    return {"at": T0 + second * 1000, "batch_id": batch_id, "rows": rows, "input_rows_per_s": input_rate,
            "processed_rows_per_s": processed_rate, "batch_duration_ms": duration_ms,
            "durations_ms": {"addBatch": duration_ms - 100, "triggerExecution": duration_ms, "walCommit": 40},
            "start_offsets": start, "end_offsets": end, "latest_offsets": latest, "run_id": run_id}


PROGRESS = [
    progress(-600, 400, 100.0, 500.0, 800, 7, {"0": 0, "1": 0}, {"0": 200, "1": 200}, {"0": 200, "1": 200}),
    progress(-300, 1200, 300.0, 600.0, 2000, 8, {"0": 200, "1": 200}, {"0": 800, "1": 800}, {"0": 900, "1": 800}),
    progress(-60, 600, 200.0, 1500.0, 400, 9, {"0": 800, "1": 800, "2": 0}, {"0": 1100, "1": 1100, "2": 0},
             {"0": 1150, "1": 1100, "2": 0}, run_id="run-2"),
]


ALERT = {"at": T0 - 5 * MINUTE, "kind": "lag_status", "severity": "error", "title": "ingest lag STOP (was OK)",
         "text": "partition 1: STOP (<no batch for 400 s>)", "delivered": True}


def ok(data) -> dict:
    return {"ok": True, "data": data}


def full_summary(**overrides) -> dict:
    sections = {
        "lag": ok(LAG_REPORT),
        "lag_history": ok(d.lag_series([sample(-30, [5, 20, 0], [1.0, 2.0, 0.0]), sample(-20, [3, 60, 0], [0.5, 6.0, 0.0]),
                                         sample(-10, [0, 130, 0], [0.0, 12.5, 0.0])])),
        "stream": ok(d.stream_series(PROGRESS)),
        "landing": ok(d.landing_totals(MANIFESTS)),
        "batch": ok(d.batch_figures({"version": 2, "hours": [T0, T0 + HOUR], "watermark": T0 + HOUR},
                                    [{"timestamp_hour": T0 + HOUR, "landed_rows": 40, "recomputed_at": "x"}])),
        "alerts": ok([ALERT]),
        "dags": ok(d.dag_table({"weblogs_ingest": {"is_paused": False, "last_run_state": "running"}})),
    }
    sections.update(overrides)
    return {"generated_at": T0, "window_hours": 1.0, "topic": "weblogs", "group": "lambdaflow-ingest",
            "kafka_bootstrap": "localhost:9092", "webhdfs_url": "http://localhost:9870",
            "landing_path": "/lambda/landing/weblogs", "sections": sections}


# -- figures ------------------------------------------------------------------------------------------

def test_lag_series_by_partition_with_total_and_known_seconds_only() -> None:
    series = d.lag_series([sample(0, [5, 7], [1.5, None], "OK"), sample(1, [0, 9], [0.0, 4.0], "WARN")])
    assert series["samples"] == 2
    assert series["records"] == {"p0": [[T0, 5], [T0 + MINUTE, 0]], "p1": [[T0, 7], [T0 + MINUTE, 9]],
                                 "total": [[T0, 12], [T0 + MINUTE, 9]]}
    assert series["seconds"] == {"p0": [[T0, 1.5], [T0 + MINUTE, 0.0]], "p1": [[T0 + MINUTE, 4.0]]}
    assert series["statuses"] == {"OK": 1, "WARN": 1}
    assert d.lag_series([])["records"] == {} and d.lag_series([])["first_sampled_at"] is None


def test_one_partition_has_no_total_line() -> None:
    assert set(d.lag_series([sample(0, [3])])["records"]) == {"p0"}


def test_downsampling_keeps_each_buckets_peak() -> None:
    points = [[i, 0] for i in range(1000)]
    points[537][1] = 99
    thinned = d.downsample_max(points, 100)
    assert len(thinned) == 100
    assert [537, 99] in thinned
    assert d.downsample_max(points[:5], 100) == points[:5]


def test_landing_totals_count_rows_reasons_and_unattributed_quarantine() -> None:
    totals = d.landing_totals(MANIFESTS, chart_hours=4)
    assert totals["batches"] == 2
    assert totals["landed_rows"] == 110 and totals["quarantined_rows"] == 13
    assert totals["quarantine_reasons"] == {"unparseable": 6, "bad_timestamp": 4}
    assert totals["quarantine_unattributed"] == 3  # the manifest written before reasons were recorded
    assert totals["first_committed_at"] == T0 + 10 and totals["last_committed_at"] == T0 + 99
    assert totals["event_hours"] == 3
    assert totals["recent_hours"] == [[T0, 50], [T0 + HOUR, 40], [T0 + 2 * HOUR, 0], [T0 + 3 * HOUR, 20]]
    assert totals["quarantine_share"] == pytest.approx(13 / 123)
    assert d.landing_totals([])["recent_hours"] == [] and d.landing_totals([])["quarantine_share"] == 0.0


def test_manifest_figures_keep_only_what_the_totals_need() -> None:
    kept = d.manifest_figures({**MANIFESTS[0], "ranges": [{"partition": 0}], "files": ["x"] * 100})
    assert kept == {"landed_rows": 90, "quarantined_rows": 10, "quarantine_reasons": {"unparseable": 6, "bad_timestamp": 4},
                    "hours": {T0: 50, T0 + HOUR: 40}, "committed_at_ms": T0 + 10}
    assert d.manifest_figures(MANIFESTS[1])["quarantine_reasons"] is None
    assert d.landing_totals([d.manifest_figures(m) for m in MANIFESTS]) == d.landing_totals(MANIFESTS)


def test_batch_figures_watermark_and_hours_beyond_it() -> None:
    figures = d.batch_figures({"version": 3, "hours": [T0 + 5 * HOUR, T0, T0 + HOUR], "watermark": T0 + HOUR})
    assert figures["exact_until"] == T0 + 2 * HOUR
    assert figures["covered_hours"] == 3 and figures["first_hour"] == T0 and figures["last_hour"] == T0 + 5 * HOUR
    assert figures["beyond_watermark"] == [T0 + 5 * HOUR]
    empty = d.batch_figures({"version": 1, "hours": [], "watermark": None})
    assert empty["exact_until"] is None and empty["beyond_watermark"] == []


def test_dag_table_lists_known_dags_first_then_others() -> None:
    rows = d.dag_table({"zzz_other": {"last_run_state": "failed"}, "weblogs_batch": {"is_paused": True}})
    assert [r["dag_id"] for r in rows] == [*d.KNOWN_DAGS, "zzz_other"]
    by_id = {r["dag_id"]: r for r in rows}
    assert by_id["weblogs_batch"]["known_to_airflow"] and by_id["weblogs_batch"]["is_paused"] is True
    assert not by_id["weblogs_ingest"]["known_to_airflow"]


@pytest.mark.parametrize(("top", "expected"), [(0, (1.0, 0.25)), (7, (8.0, 2.0)), (130, (200.0, 50.0)),
                                               (20000, (20000.0, 5000.0)), (0.3, (0.4, 0.1))])
def test_nice_scale(top, expected) -> None:
    assert d.nice_scale(top) == pytest.approx(expected)


def test_nice_scale_for_counts_uses_whole_steps() -> None:
    assert d.nice_scale(2, integer=True) == (4.0, 1.0)


def test_time_ticks_are_round_and_inside_the_range() -> None:
    ticks = d.time_ticks(T0 + 7 * MINUTE + 3, T0 + 67 * MINUTE)
    assert ticks and len(ticks) <= 6
    assert all(T0 + 7 * MINUTE <= t <= T0 + 67 * MINUTE and t % (10 * MINUTE) == 0 for t in ticks)
    assert len(d.time_ticks(T0, T0 + 7 * 24 * HOUR)) <= 6


def test_split_gaps_breaks_lines_where_sampling_paused() -> None:
    points = [[T0 + m * MINUTE, 1] for m in (0, 1, 2, 3, 60, 61)]
    runs = d.split_gaps(points)
    assert [len(r) for r in runs] == [4, 2]
    assert d.split_gaps([]) == [] and d.split_gaps([[T0, 1]]) == [[[T0, 1]]]


# -- charts ---------------------------------------------------------------------------------------------

def test_line_chart_draws_every_point_of_every_series() -> None:
    series = {"p0": [[T0, 0], [T0 + MINUTE, 50], [T0 + 2 * MINUTE, 100]], "p1": [[T0, 100], [T0 + 2 * MINUTE, 25]]}
    svg = d.line_chart(series, title="Lag", unit="records", integer=True)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    points = polyline_points(svg)
    assert {k: len(v) for k, v in points.items()} == {"p0": 3, "p1": 2}
    # x grows with time; a higher value is drawn higher (smaller y); equal values at equal heights
    (x0, y0), (x1, y1), (x2, y2) = points["p0"]
    assert x0 < x1 < x2 and y0 > y1 > y2
    assert points["p1"][0][1] == y2
    assert svg.count("<circle") == 5
    assert "p0 " in svg and ">p1<" in svg  # tooltips and legend
    assert "100 records" in svg


def test_line_chart_spans_the_requested_window_and_drops_points_outside() -> None:
    series = {"p0": [[T0 - HOUR, 9], [T0 + 30 * MINUTE, 4], [T0 + 45 * MINUTE, 6]]}
    svg = d.line_chart(series, title="Lag", unit="records", x_range=(T0, T0 + HOUR))
    xs = [x for x, _ in polyline_points(svg)["p0"]]
    assert len(xs) == 2
    left, width = 64, 760 - 64 - 104
    assert xs[0] == pytest.approx(left + 0.5 * width, abs=0.1) and xs[1] == pytest.approx(left + 0.75 * width, abs=0.1)


def test_line_chart_without_points_says_so_instead_of_drawing() -> None:
    html = d.line_chart({"p0": [], "p1": [[T0, None]]}, title="Lag in seconds", unit="s")
    assert "<svg" not in html and "no samples" in html


def test_line_chart_of_a_long_history_stays_small() -> None:
    series = {"p0": [[T0 + i * 1000, i % 97] for i in range(20_000)]}
    svg = d.line_chart(series, title="Lag", unit="records")
    assert len(polyline_points(svg)["p0"]) <= d.MAX_CHART_POINTS
    assert "<circle" not in svg  # no markers for long series
    assert len(svg) < 30_000


def test_bar_chart_one_bar_per_hour() -> None:
    svg = d.bar_chart([[T0, 50], [T0 + HOUR, 0], [T0 + 2 * HOUR, 25]], title="Rows", unit="rows")
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]*height="([0-9.]+)"', svg)]
    assert len(heights) == 3 and heights[0] == pytest.approx(2 * heights[2], abs=0.2) and heights[1] == 0
    assert "<svg" not in d.bar_chart([], title="Rows", unit="rows")


# -- page -----------------------------------------------------------------------------------------------

def test_page_shows_every_section() -> None:
    html = d.render_page(full_summary(), base_path="/lambdaflow", airflow_base="")
    assert html.startswith("<!doctype html>") and 'class="error"' not in html
    assert html.count('<span class="partition">') == 3
    assert 'badge warn">WARN<' in html and "group_behind" in html and "12.5" in html
    # lag in records, lag in seconds, stream rates, batch duration, rows per batch, landed rows per hour
    assert html.count("<svg") == 6
    assert "1,000" in html and "110" in html and "unparseable" in html and "not recorded by the ingest" in html
    assert "Batch watermark" in html
    assert d.fmt_hour(T0 + HOUR) in html and d.fmt_hour(T0 + 2 * HOUR) in html  # watermark, exact until
    for dag_id in d.KNOWN_DAGS:
        assert f'href="/dags/{dag_id}"' in html
    assert 'href="/lambdaflow/api/summary?hours=1.0"' in html
    # nothing loaded from elsewhere: the only other URLs are the WebHDFS address shown and a link to the Spark UI
    assert "<script" not in html and " src=" not in html and "@import" not in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "").replace("http://localhost:9870", "") \
        .replace('href="http://localhost:4040/StreamingQuery/"', "")


def test_failed_sources_show_error_boxes_and_the_rest_still_renders() -> None:
    down = {"ok": False, "error": "cannot reach Kafka at localhost:9092 <refused>"}
    html = d.render_page(full_summary(lag=down, landing={"ok": False, "error": "cannot reach WebHDFS"}))
    boxes = re.findall(r'<div class="error" role="alert"><strong>([^<]+)</strong><p>([^<]*)</p></div>', html)
    assert boxes == [("Ingest lag now unavailable", "cannot reach Kafka at localhost:9092 &lt;refused&gt;"),
                     ("Landing zone (master dataset) unavailable", "cannot reach WebHDFS")]
    assert "<refused>" not in html
    assert "Batch watermark" in html and html.count("<svg") == 5


def test_a_section_with_an_odd_shape_becomes_an_error_box() -> None:
    html = d.render_page(full_summary(batch=ok({"watermark": "not a number"})))
    assert 'id="batch"' in html and "cannot render" in html
    assert html.count('<span class="partition">') == 3


def test_error_box_escapes() -> None:
    box = d.error_box("Lag", "<script>alert(1)</script>")
    assert "<script>" not in box and "&lt;script&gt;" in box and 'class="error"' in box


def test_empty_landing_zone_and_batch_layer() -> None:
    html = d.render_page(full_summary(landing=ok(d.landing_totals([])),
                                      batch=ok(d.batch_figures({"version": 1, "hours": [], "watermark": None}))))
    assert "No hour recomputed yet" in html and "nothing yet" in html and 'class="error"' not in html


# -- gathering --------------------------------------------------------------------------------------------

def fake_sources(**overrides) -> d.Sources:
    def kafka_down(settings: Settings) -> dict:
        raise KafkaUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}; is the broker up?")

    now_minute = (int(time.time() * 1000) - T0) // MINUTE
    values = dict(lag=lambda s: LAG_REPORT,
                  lag_history=lambda s, h: d.lag_series([sample(now_minute - 2, [1, 2, 3], [0.5, 1.0, 1.5]),
                                                         sample(now_minute - 1, [0, 2, 1], [0.0, 1.0, 0.5])]),
                  stream=lambda s, h: d.stream_series([{**r, "at": r["at"] + now_minute * MINUTE}
                                                       for r in PROGRESS]),
                  landing=lambda s: d.landing_totals(MANIFESTS),
                  batch=lambda s: d.batch_figures({"version": 1, "hours": [], "watermark": None}),
                  dags=lambda: {"weblogs_ingest": {"is_paused": False}},
                  alerts=lambda s: [ALERT])
    values.update({k: (kafka_down if v == "kafka_down" else v) for k, v in overrides.items()})
    return d.Sources(**values)


def test_gather_isolates_each_failing_source() -> None:
    def boom(settings):
        raise ValueError("x" * 1000)

    summary = d.gather(Settings(), 2.0, fake_sources(lag="kafka_down", batch=boom))
    sections = summary["sections"]
    assert set(sections) == set(d.SECTIONS)
    assert sections["lag"] == {"ok": False, "error": "cannot reach Kafka at localhost:9092; is the broker up?"}
    assert not sections["batch"]["ok"] and sections["batch"]["error"].startswith("ValueError: xxx")
    assert len(sections["batch"]["error"]) < 450
    assert sections["landing"]["ok"] and sections["landing"]["data"]["landed_rows"] == 110
    assert sections["dags"]["data"][1] == {"dag_id": "weblogs_ingest", "known_to_airflow": True, "is_paused": False}
    assert summary["window_hours"] == 2.0 and summary["topic"] == "weblogs"
    json.dumps(summary, allow_nan=False)


def test_gather_does_not_wait_for_a_hung_source() -> None:
    started = time.monotonic()
    summary = d.gather(Settings(), 1.0, fake_sources(landing=lambda s: time.sleep(5)), timeout_s=0.5)
    assert time.monotonic() - started < 3
    assert summary["sections"]["landing"] == {"ok": False, "error": "no answer within 0.5 s"}
    assert summary["sections"]["lag"]["ok"]


def test_gather_without_airflow_still_lists_the_dags() -> None:
    summary = d.gather(Settings(), 1.0, fake_sources(dags=None))
    assert [r["dag_id"] for r in summary["sections"]["dags"]["data"]] == list(d.KNOWN_DAGS)


@pytest.mark.parametrize(("text", "hours"), [(None, d.DEFAULT_HOURS), ("24", 24.0), ("0.5", 0.5), ("-1", d.DEFAULT_HOURS),
                                             ("nan", d.DEFAULT_HOURS), ("abc", d.DEFAULT_HOURS), ("100000", d.MAX_HOURS)])
def test_parse_hours(text, hours) -> None:
    assert d.parse_hours(text) == hours


# -- the landing zone's manifest cache (a fake WebHDFS client) ------------------------------------------------

class FakeWebHdfs:
    """The few InsecureClient calls the manifest reader makes, counting reads."""

    def __init__(self, files: dict[str, dict]):
        self.files = files
        self.reads = 0

    def status(self, path: str, strict: bool = True):
        exists = path in self.files or any(p.startswith(path + "/") for p in self.files)
        return {"type": "FILE" if path in self.files else "DIRECTORY"} if exists else None

    def list(self, path: str, status: bool = False):
        names = sorted({p[len(path) + 1:].split("/")[0] for p in self.files if p.startswith(path + "/")})
        return [(n, {"modificationTime": 0}) for n in names] if status else names

    def read(self, path: str, encoding: str | None = None):
        self.reads += 1
        return io.StringIO(json.dumps(self.files[path]))


def test_manifest_cache_reads_each_manifest_once_and_follows_the_listing() -> None:
    settings = Settings()
    base = f"{settings.landing_path}/_manifests"
    client = FakeWebHdfs({f"{base}/0-0-100.json": MANIFESTS[0], f"{base}/_tmp.0-100-200.json.7": {},
                          f"{settings.landing_path}/timestamp_hour={T0}/part-0-0-100-0.parquet": {}})
    cache = d.ManifestCache(reads_per_request=1)
    first = cache.totals(settings, client)
    assert first["landed_rows"] == 90 and first["manifests_listed"] == 1 and not first["partial"]
    assert client.reads == 1
    client.files[f"{base}/0-100-150_1-0-9.json"] = MANIFESTS[1]
    client.files[f"{base}/1-9-10.json"] = {"landed_rows": 1, "quarantined_rows": 0, "hours": {}}
    second = cache.totals(settings, client)  # reads at most one new manifest per request
    assert second["partial"] and second["manifests_read"] == 2 and second["manifests_listed"] == 3
    third = cache.totals(settings, client)
    assert not third["partial"] and third["landed_rows"] == 111 and client.reads == 3
    del client.files[f"{base}/0-0-100.json"]
    assert cache.totals(settings, client)["landed_rows"] == 21 and client.reads == 3
    # A roll-up covering the first two commits: its figures count once, the covered manifests are not read.
    from lambdaflow.storage import commit_log

    rollup = commit_log.fold({}, {"0-0-100.json": MANIFESTS[0], "0-100-150_1-0-9.json": MANIFESTS[1]})
    client.files[f"{settings.landing_path}/_rollups/{commit_log.rollup_name(1)}"] = {**rollup, "seq": 1}
    client.files[f"{base}/0-0-100.json"] = MANIFESTS[0]  # not yet pruned: covered, so not counted twice
    fourth = cache.totals(settings, client)
    assert fourth["landed_rows"] == 111 and fourth["manifests_listed"] == 1 and client.reads == 4
    assert fourth["batches"] == 3


def test_webhdfs_down_is_one_clear_line() -> None:
    settings = Settings(webhdfs_url="http://127.0.0.1:9")
    with pytest.raises(d.SourceUnavailable, match=r"cannot reach WebHDFS at http://127.0.0.1:9 .*lambdaflow status"):
        d.ManifestCache().totals(settings)


# -- the app --------------------------------------------------------------------------------------------

def test_app_serves_the_page_and_the_summary_even_when_kafka_is_down() -> None:
    app = d.create_app(fake_sources(lag="kafka_down"), settings_factory=Settings)
    client = TestClient(app, root_path="/lambdaflow")
    page = client.get("/", params={"hours": "24"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "Ingest lag now unavailable" in page.text and "cannot reach Kafka at localhost:9092" in page.text
    assert 'href="/lambdaflow/api/summary?hours=24.0"' in page.text and 'href="/dags/weblogs_batch"' in page.text
    assert page.text.count("<svg") == 6
    summary = client.get("/api/summary")
    assert summary.status_code == 200
    body = summary.json()
    assert body["window_hours"] == d.DEFAULT_HOURS
    assert body["sections"]["lag"]["ok"] is False and body["sections"]["landing"]["data"]["batches"] == 2


def test_real_sources_with_kafka_and_hdfs_down_give_error_boxes_not_a_500() -> None:
    down = Settings(kafka_bootstrap="127.0.0.1:9", webhdfs_url="http://127.0.0.1:9")  # nothing listens there
    client = TestClient(d.create_app(settings_factory=lambda: down), root_path="/lambdaflow")
    started = time.monotonic()
    page = client.get("/")
    assert page.status_code == 200
    assert time.monotonic() - started < 20
    for title in ("Ingest lag now", "Lag over time", "Stream progress (micro-batches)", "Landing zone (master dataset)",
                  "Batch layer", "Recent alerts"):
        assert f"{title} unavailable" in page.text
    assert "cannot reach Kafka at 127.0.0.1:9" in page.text
    assert "cannot reach WebHDFS at http://127.0.0.1:9" in page.text
    assert 'href="/dags/weblogs_ingest"' in page.text  # the DAG links stay
    sections = client.get("/api/summary").json()["sections"]
    assert [name for name, s in sections.items() if not s["ok"]] == ["lag", "lag_history", "stream", "landing", "batch",
                                                                     "alerts"]
    assert 'href="http://testserver:4040/StreamingQuery/"' in page.text  # the Spark UI link stays too


# -- bounded work, escaping, the login check ---------------------------------------------------------------

def test_sections_are_cached_for_a_few_seconds_so_a_reload_loop_reads_each_source_once() -> None:
    calls = {"lag": 0}

    def lag_source(settings):
        calls["lag"] += 1
        return LAG_REPORT

    gatherer = d.Gatherer(fake_sources(lag=lag_source), cache_s=60)
    client = TestClient(d.create_app(gatherer=gatherer, settings_factory=Settings), root_path="/lambdaflow")
    for _ in range(5):
        assert client.get("/").status_code == 200
        assert client.get("/api/summary").json()["sections"]["lag"]["ok"]
    assert calls["lag"] == 1
    gatherer.close()


def test_a_hung_source_holds_one_thread_however_many_requests_come() -> None:
    import threading

    started, release = [], threading.Event()

    def hung(settings):
        started.append(1)
        release.wait(10)
        return d.landing_totals([])

    gatherer = d.Gatherer(fake_sources(landing=hung), cache_s=0, timeout_s=0.2, threads=3)
    try:
        before = threading.active_count()
        for _ in range(20):
            summary = gatherer.gather(Settings(), 1.0)
            assert summary["sections"]["landing"] == {"ok": False, "error": "no answer within 0.2 s"}
            assert summary["sections"]["lag"]["ok"]
        assert len(started) == 1  # later requests wait for the call in flight instead of starting another
        assert threading.active_count() <= before + 3
    finally:
        release.set()
        gatherer.close()


def test_page_escapes_what_the_sources_say() -> None:
    evil = "<script>alert(1)</script>"
    report = {**LAG_REPORT, "topic": evil, "partitions": [{**LAG_REPORT["partitions"][1], "reason": evil}]}
    summary = full_summary(lag=ok(report), alerts=ok([{**ALERT, "title": evil, "text": evil}]))
    summary["landing_path"] = evil
    html = d.render_page(summary)
    assert "<script" not in html and html.count("&lt;script&gt;") >= 4


def test_alerts_section_lists_the_newest_alerts() -> None:
    html = d.render_page(full_summary())
    section = re.search(r'<section id="alerts">(.*?)</section>', html, re.S).group(1)
    assert "ingest lag STOP (was OK)" in section and 'badge bad">error<' in section and "sent" in section
    assert "&lt;no batch for 400 s&gt;" in section
    empty = d.render_page(full_summary(alerts=ok([])))
    assert "No alert yet" in empty


def deny(request: Request) -> None:
    if request.headers.get("authorization") != "Bearer good":
        raise HTTPException(status_code=401, detail="Not authenticated")


@pytest.mark.parametrize("path", ["/", "/api/summary"])
def test_without_credentials_api_clients_get_401_and_browsers_go_to_the_login_page(path) -> None:
    client = TestClient(d.create_app(fake_sources(), settings_factory=Settings, auth=deny),
                        base_url="http://localhost:8080", root_path="/lambdaflow", follow_redirects=False)
    answer = client.get(path, params={"hours": "1"})
    assert answer.status_code == 401 and answer.json() == {"detail": "Not authenticated"}
    assert answer.headers["www-authenticate"] == "Bearer"
    browser = client.get(path, params={"hours": "1"}, headers={"Accept": "text/html,application/xhtml+xml"})
    assert browser.status_code == 307
    location = browser.headers["location"]
    assert location.startswith("/auth/login?next=")
    from urllib.parse import parse_qs, urlparse
    assert parse_qs(urlparse(location).query)["next"] == [f"http://localhost:8080/lambdaflow{path}?hours=1"]
    assert client.get(path, headers={"Authorization": "Bearer good"}).status_code == 200


# -- stream progress (the ingest's StreamingQueryListener records) and the Spark UI link -------------------

def test_stream_series_from_progress_records() -> None:
    series = d.stream_series(PROGRESS)
    at = [r["at"] for r in PROGRESS]
    assert series["rates"] == {"input": [[at[0], 100.0], [at[1], 300.0], [at[2], 200.0]],
                               "processed": [[at[0], 500.0], [at[1], 600.0], [at[2], 1500.0]]}
    assert series["duration_s"] == {"batch duration": [[at[0], 0.8], [at[1], 2.0], [at[2], 0.4]]}
    assert series["rows"] == {"rows per batch": [[at[0], 400], [at[1], 1200], [at[2], 600]]}
    assert (series["batches"], series["rows_total"], series["runs"]) == (3, 2200, 2)
    assert (series["first_at"], series["last_at"]) == (at[0], at[2])
    latest = series["latest"]
    assert latest["batch_id"] == 9 and latest["rows"] == 600
    assert list(latest["durations_ms"]) == ["triggerExecution", "addBatch", "walCommit"]  # largest first
    assert latest["offsets"] == [
        {"partition": "0", "start": 800, "end": 1100, "latest": 1150, "rows": 300, "behind": 50},
        {"partition": "1", "start": 800, "end": 1100, "latest": 1100, "rows": 300, "behind": 0},
        {"partition": "2", "start": 0, "end": 0, "latest": 0, "rows": 0, "behind": 0}]
    json.dumps(series, allow_nan=False)
    empty = d.stream_series([])
    assert empty["batches"] == 0 and empty["latest"] is None and empty["rates"] == {} and empty["rows"] == {}


def test_source_offsets_in_partition_order_and_unknowns_stay_unknown() -> None:
    record = {"start_offsets": {"10": 5, "2": 1}, "end_offsets": {"10": 9, "2": 4}, "latest_offsets": None}
    rows = d.source_offsets(record)
    assert [r["partition"] for r in rows] == ["2", "10"]  # numbers, not text, order partitions
    assert rows[1] == {"partition": "10", "start": 5, "end": 9, "latest": None, "rows": 4, "behind": None}
    assert d.source_offsets({"start_offsets": None, "end_offsets": None, "latest_offsets": None}) == []


def test_stream_series_of_a_day_of_one_second_batches_stays_bounded_and_keeps_the_peaks() -> None:
    records = [progress(i, 10, 10.0, 50.0, 900) for i in range(86_400)]
    records[40_000] = progress(40_000, 9_999, 10.0, 50.0, 45_000)  # one slow, large batch
    series = d.stream_series(records)
    for group in ("rates", "duration_s", "rows"):
        for name, points in series[group].items():
            assert 0 < len(points) <= d.MAX_CHART_POINTS, (group, name)
    assert max(y for _, y in series["duration_s"]["batch duration"]) == 45.0
    assert max(y for _, y in series["rows"]["rows per batch"]) == 9_999
    assert series["batches"] == 86_400 and series["latest"]["at"] == records[-1]["at"]
    svg = d.render_stream(series, 24.0, T0 + 86_400_000)
    assert len(svg) < 100_000


def stream_section(html: str) -> str:
    return re.search(r'<section id="stream">(.*?)</section>', html, re.S).group(1)


def test_page_charts_the_stream_progress_beside_the_lag_with_the_source_offsets() -> None:
    html = d.render_page(full_summary())
    names = re.findall(r'<section id="([a-z_]+)">', html)
    assert names.index("stream") == names.index("lag_history") + 1  # right under the lag charts
    section = stream_section(html)
    charts = {m.group(1): polyline_points(m.group(0))
              for m in re.finditer(r'<svg[^>]*aria-label="([^"]+)".*?</svg>', section, re.S)}
    assert set(charts) == {"Input and processing rate per micro-batch", "Micro-batch duration", "Rows per micro-batch"}
    rates = charts["Input and processing rate per micro-batch"]
    assert {k: len(v) for k, v in rates.items()} == {"input": 3, "processed": 3}
    # processed 1,500 rows/s in the last batch is drawn above its input of 200 rows/s (smaller y)
    assert rates["processed"][2][1] < rates["input"][2][1]
    duration = charts["Micro-batch duration"]["batch duration"]
    assert duration[1][1] < duration[0][1] < duration[2][1]  # 2.0 s highest, 0.4 s lowest
    # the same window as the lag charts: one hour ending at generated_at (T0), so 10 min ago is at 5/6
    left, width = 64, 760 - 64 - 104
    assert duration[0][0] == pytest.approx(left + 50 / 60 * width, abs=0.1)
    offsets = re.findall(r'<tr><td><span class="source-partition">(\d+)</span></td>((?:<td>[^<]*</td>)+)</tr>', section)
    assert [(p, re.findall(r"<td>([^<]*)</td>", cells)) for p, cells in offsets] == [
        ("0", ["800", "1,100", "1,150", "300", "50"]), ("1", ["800", "1,100", "1,100", "300", "0"]),
        ("2", ["0", "0", "0", "0", "0"])]
    assert "batch <strong>9</strong>" in section and "over 2 runs" in section and 'class="error"' not in section


def test_page_links_the_ingest_spark_ui_and_documents_its_port(monkeypatch) -> None:
    monkeypatch.setenv("LAMBDAFLOW_INGEST_UI_PORT", "4141")
    html = d.render_page(full_summary(), spark_ui=d.ingest_ui("dash.example"))
    link = 'href="http://dash.example:4141/StreamingQuery/"'
    header = re.search(r"<header>(.*?)</header>", html, re.S).group(1)
    assert link in header and "Structured Streaming" in header
    section = stream_section(html)
    assert link in section and "port 4141" in section and "LAMBDAFLOW_INGEST_UI_PORT" in section


@pytest.mark.parametrize(("host", "env", "url"), [
    (None, {}, "http://localhost:4040/StreamingQuery/"),
    ("airflow.internal", {}, "http://airflow.internal:4040/StreamingQuery/"),
    ("10.0.0.7", {"LAMBDAFLOW_INGEST_UI_PORT": "4050"}, "http://10.0.0.7:4050/StreamingQuery/"),
    ("::1", {}, "http://[::1]:4040/StreamingQuery/"),
    ("airflow.internal", {"LAMBDAFLOW_INGEST_UI_URL": "https://spark.example/ingest/"},
     "https://spark.example/ingest/StreamingQuery/"),
    ("airflow.internal", {"LAMBDAFLOW_INGEST_UI_URL": "http://h:4040/StreamingQuery"}, "http://h:4040/StreamingQuery/"),
    ("h", {"LAMBDAFLOW_INGEST_UI_PORT": "not-a-port"}, "http://h:4040/StreamingQuery/"),  # a link never fails the page
])
def test_ingest_ui_url(host, env, url) -> None:
    assert d.ingest_ui_url(host, env) == url


def test_stream_source_failing_shows_an_error_box_and_keeps_the_spark_ui_link() -> None:
    html = d.render_page(full_summary(stream={"ok": False, "error": "cannot reach WebHDFS at http://127.0.0.1:9 <x>"}))
    section = stream_section(html)
    assert re.findall(r'<div class="error" role="alert"><strong>([^<]+)</strong><p>([^<]*)</p></div>', section) == [
        ("Stream progress (micro-batches) unavailable", "cannot reach WebHDFS at http://127.0.0.1:9 &lt;x&gt;")]
    assert "<svg" not in section and 'href="http://localhost:4040/StreamingQuery/"' in section
    assert html.count("<svg") == 3  # the lag and landing charts still render


def test_stream_with_no_recorded_batch_says_so() -> None:
    section = stream_section(d.render_page(full_summary(stream=ok(d.stream_series([])))))
    assert "No micro-batch recorded in the last 1 h" in section and "<svg" not in section and "error" not in section


def test_app_serves_the_stream_section_and_the_spark_ui_link(monkeypatch) -> None:
    windows = []

    def stream(settings, hours):
        windows.append(hours)
        return d.stream_series(PROGRESS)

    gatherer = d.Gatherer(fake_sources(stream=stream), cache_s=60)
    client = TestClient(d.create_app(gatherer=gatherer, settings_factory=Settings), root_path="/lambdaflow")
    try:
        body = client.get("/api/summary", params={"hours": "24"}).json()
        assert body["sections"]["stream"] == json.loads(json.dumps(ok(d.stream_series(PROGRESS))))
        assert body["ingest_ui"] == {"url": "http://testserver:4040/StreamingQuery/", "port": 4040, "overridden": False}
        page = client.get("/", params={"hours": "24"}).text
        assert 'href="http://testserver:4040/StreamingQuery/"' in page
        assert stream_section(page).count("<svg") == 0  # T0 records fall outside the window ending now
        client.get("/", params={"hours": "1"})
        assert windows == [24.0, 1.0]  # cached per window, like the lag history
        monkeypatch.setenv("LAMBDAFLOW_INGEST_UI_URL", "http://spark-driver.example:4040")
        assert client.get("/api/summary").json()["ingest_ui"]["url"] == "http://spark-driver.example:4040/StreamingQuery/"
    finally:
        gatherer.close()


def test_stream_source_with_webhdfs_down_is_an_error_box_in_the_app() -> None:
    down = Settings(webhdfs_url="http://127.0.0.1:9")
    with pytest.raises(d.SourceUnavailable, match=r"cannot reach WebHDFS at http://127.0.0.1:9"):
        d.stream_history(down, 1.0)
    client = TestClient(d.create_app(fake_sources(stream=d.stream_history), settings_factory=lambda: down),
                        root_path="/lambdaflow")
    summary = client.get("/api/summary").json()
    assert not summary["sections"]["stream"]["ok"] and "cannot reach WebHDFS" in summary["sections"]["stream"]["error"]
    assert summary["sections"]["lag"]["ok"]  # the other sources are fakes and still answer
    assert "Stream progress (micro-batches) unavailable" in client.get("/").text


def test_stream_source_reads_the_recorded_history(monkeypatch) -> None:
    from lambdaflow.monitoring import stream_progress

    asked = {}

    def history(settings, hours=24.0, limit=None):
        asked.update(hours=hours, limit=limit)
        return PROGRESS

    monkeypatch.setattr(stream_progress, "history", history)
    assert d.stream_history(Settings(), 6.0) == {**d.stream_series(PROGRESS), "truncated": False}
    assert asked == {"hours": 6.0, "limit": d.MAX_STREAM_RECORDS}
    monkeypatch.setattr(d, "MAX_STREAM_RECORDS", 3)  # a window holding more batches than are read
    truncated = d.stream_history(Settings(), 6.0)
    assert truncated["truncated"] and asked["limit"] == 3
    section = stream_section(d.render_page(full_summary(stream=ok(truncated))))
    assert f"Only the newest 3 micro-batches of the window are read: the charts start at {d.fmt_time(PROGRESS[0]['at'])}" \
        in section
