"""The dashboard as the Airflow api-server serves it, against the real Kafka, HDFS and Airflow.

The api-server reads the deployment's default settings (topic ``weblogs``, root ``/lambda``), so the
test reads those too. It records one lag sample, as ``lambdaflow lag`` does, so that the lag history
has a point to draw. It changes nothing else, and it stops the Airflow daemons it started.
"""

from __future__ import annotations

import json
import re
import time
from urllib.request import Request, urlopen

import pytest

from lambdaflow import batch, dashboard, hdfs, lag, landing
from lambdaflow import stack as local_stack
from lambdaflow.stack.services import airflow_url
from lambdaflow.storage import commit_log

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def airflow(stack):
    """Airflow's daemons up (started if needed, stopped afterwards if this module started them)."""
    # A process of ours, even one still booting, is someone else's to stop (and probing its health
    # here could time out while it boots).
    already = {name: local_stack.SERVICES[name].pid() is not None for name in local_stack.AIRFLOW}
    local_stack.up(services=local_stack.AIRFLOW, quiet=True)
    yield airflow_url()
    for name, was_up in already.items():
        if not was_up:
            local_stack.SERVICES[name].stop()


@pytest.fixture(scope="module")
def recorded_sample(stack) -> dict:
    return lag.monitor(stack, record=True)


def get(url: str, timeout: float = 90) -> tuple[int, str, str]:
    """GET as the admin user (the dashboard is behind Airflow's login)."""
    request = Request(url, headers={"Authorization": f"Bearer {local_stack.api_token()}"})
    with urlopen(request, timeout=timeout) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def test_summary_has_live_lag_history_landing_batch_and_dags(airflow, stack, recorded_sample) -> None:
    local_stack.wait_for_dags(list(dashboard.KNOWN_DAGS), timeout_s=180)
    status, content_type, body = get(f"{airflow}/lambdaflow/api/summary?hours=24")
    assert status == 200 and content_type.startswith("application/json")
    summary = json.loads(body)
    assert (summary["topic"], summary["group"], summary["window_hours"]) == (stack.topic, stack.ingest_group, 24.0)
    sections = summary["sections"]
    for name in ("lag", "lag_history", "landing", "dags"):
        assert sections[name]["ok"], f"{name}: {sections[name].get('error')}"
    # the batch section is the batch layer's own state, read here directly
    expected_batch = batch.state(batch.web_store(stack), stack)
    assert sections["batch"]["ok"], sections["batch"].get("error")
    shown = sections["batch"]["data"]
    assert (shown["version"], shown["watermark"], shown["covered_hours"]) == (
        expected_batch["version"], expected_batch["watermark"], len(expected_batch["hours"]))

    report = sections["lag"]["data"]
    assert [p["partition"] for p in report["partitions"]] == list(range(stack.partitions))
    for live, recorded in zip(report["partitions"], recorded_sample["partitions"]):
        assert live["log_end_offset"] >= recorded["log_end_offset"]  # the log only grows
        assert live["status"] in lag.SEVERITY

    history = sections["lag_history"]["data"]
    assert history["samples"] >= 1 and history["last_sampled_at"] >= recorded_sample["sampled_at"]
    assert set(history["records"]) >= {f"p{p}" for p in range(stack.partitions)}

    shown = stable_landing_figures(airflow, stack, summary)
    assert shown["batches"] == shown["manifests_listed"] and not shown["partial"]

    dags = {row["dag_id"]: row for row in sections["dags"]["data"]}
    for dag_id in dashboard.KNOWN_DAGS:
        assert dags[dag_id]["known_to_airflow"], f"{dag_id} not in Airflow's metadata DB"
        assert isinstance(dags[dag_id]["is_paused"], bool)


def manifest_totals(settings) -> tuple[int, int, int]:
    """(batches, landed rows, quarantined rows) of a landing zone's whole commit log (roll-up + tail)."""
    totals = commit_log.totals(hdfs.client(settings), settings.landing_path)
    return totals["batches"], totals["landed_rows"], totals["quarantined_rows"]


def stable_landing_figures(airflow: str, settings, summary: dict, attempts: int = 6) -> dict:
    """The landing section equals the manifests read directly. The deployment's landing zone is shared
    (an ingest may be committing), so compare when it did not change around the request, and let the
    dashboard catch up when it reads the manifests over several requests (``partial``)."""
    for _ in range(attempts):
        before = manifest_totals(settings)
        section = summary["sections"]["landing"]
        assert section["ok"], section.get("error")
        shown = section["data"]
        after = manifest_totals(settings)
        if before == after and not shown["partial"]:
            assert (shown["batches"], shown["landed_rows"], shown["quarantined_rows"]) == before
            return shown
        time.sleep(dashboard.CACHE_S + 1)  # past the dashboard's cache
        summary = json.loads(get(f"{airflow}/lambdaflow/api/summary?hours=24")[2])
    pytest.fail(f"the landing zone kept changing or the dashboard stayed partial: {shown}")


def test_dashboard_figures_equal_the_landing_zone(spark, isolated) -> None:
    """On a landing zone of its own, filled by the real ingest: every figure the dashboard shows is
    checked against the data at rest (Spark), Kafka, and the stored lag sample."""
    from lambdaflow import kafka_admin
    from lambdaflow.producer import produce

    from .test_ingest import bounded

    produced = produce(isolated, count=900, rate=0, seed=71, bad_fraction=0.05, start="2026-11-24T10:00:00Z",
                       time_multiplier=3600, progress=False)
    bounded(isolated)
    recorded = lag.monitor(isolated, record=True)  # as the lag monitor DAG does

    sections = dashboard.gather(isolated, hours=24 * 7)["sections"]
    for name in ("lag", "lag_history", "landing"):
        assert sections[name]["ok"], f"{name}: {sections[name].get('error')}"

    # landing: totals, reasons and rows per hour, as the data at rest has them
    landed = spark.read.parquet(isolated.uri(isolated.landing_path))
    quarantined = spark.read.parquet(isolated.uri(isolated.quarantine_path))
    shown = sections["landing"]["data"]
    n_landed, n_quarantined = landed.count(), quarantined.count()
    assert n_landed + n_quarantined == produced["acked"] == 900
    assert n_quarantined == sum(produced["bad_injected"].values()) > 0
    assert (shown["landed_rows"], shown["quarantined_rows"]) == (n_landed, n_quarantined)
    keys = landing.manifest_keys(hdfs.client(isolated), isolated.landing_path)
    assert shown["batches"] == shown["manifests_listed"] == len(keys) and not shown["partial"]
    reasons = {r[0]: r[1] for r in quarantined.selectExpr("substring_index(reason, ':', 1) AS kind")
               .groupBy("kind").count().collect()}
    assert shown["quarantine_reasons"] == reasons and shown["quarantine_unattributed"] == 0
    assert shown["quarantine_share"] == pytest.approx(n_quarantined / 900)
    hours = {r[0]: r[1] for r in landed.groupBy("timestamp_hour").count().collect()}
    assert (shown["event_hours"], shown["first_event_hour"], shown["last_event_hour"]) == (
        len(hours), min(hours), max(hours))
    assert {h: n for h, n in shown["recent_hours"] if n} == hours

    # lag now: every partition at the log end, which is the landing position
    ends = kafka_admin.end_offsets(isolated)
    assert landing.positions(hdfs.client(isolated), isolated.landing_path) == ends
    report = sections["lag"]["data"]
    assert [(p["partition"], p["log_end_offset"], p["committed_offset"], p["lag"], p["status"])
            for p in report["partitions"]] == [(p, end, end, 0, lag.OK) for p, end in sorted(ends.items())]
    assert (report["total_lag"], report["status"]) == (0, lag.OK)

    # lag history: the one stored sample, one point per partition at lag 0
    history = sections["lag_history"]["data"]
    assert (history["samples"], history["last_sampled_at"]) == (1, recorded["sampled_at"])
    assert history["records"] == {name: [[recorded["sampled_at"], 0]] for name in [*(f"p{p}" for p in ends), "total"]}


def test_page_renders_the_tables_and_charts(airflow, stack, recorded_sample) -> None:
    status, content_type, html = get(f"{airflow}/lambdaflow/?hours=24")
    assert status == 200 and content_type.startswith("text/html")
    assert html.startswith("<!doctype html>")
    assert html.count('<span class="partition">') == stack.partitions
    for section in ("lag", "lag_history", "landing", "dags"):
        body = re.search(rf'<section id="{section}">(.*?)</section>', html, re.S).group(1)
        assert 'class="error"' not in body, f"{section}: {body[:500]}"
    chart = re.search(r'<svg[^>]*aria-label="Lag in records by partition".*?</svg>', html, re.S)
    assert chart and re.search(r"<(polyline|circle) ", chart.group(0))  # at least the recorded sample is drawn
    for dag_id in dashboard.KNOWN_DAGS:
        assert f'href="/dags/{dag_id}"' in html
    assert 'href="/lambdaflow/api/summary?hours=24.0"' in html
    assert "<script" not in html


def test_plugin_is_registered_with_a_nav_link(airflow) -> None:
    plugins = {p["name"]: p for p in local_stack.api("GET", "/plugins")["plugins"]}
    plugin = plugins["lambdaflow_dashboard"]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/lambdaflow"]
    assert any(v["href"] == "lambdaflow/" and v["destination"] == "nav" for v in plugin["external_views"])


def test_path_without_the_slash_reaches_the_dashboard(airflow) -> None:
    request = Request(f"{airflow}/lambdaflow?hours=1", headers={"Authorization": f"Bearer {local_stack.api_token()}"})
    with urlopen(request, timeout=90) as response:  # follows the 307, keeping the token
        assert response.url == f"{airflow}/lambdaflow/?hours=1"
        assert response.status == 200 and "<title>lambdaflow" in response.read().decode()
