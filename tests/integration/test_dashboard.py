"""The dashboard as the Airflow api-server serves it, against the real Kafka, HDFS and Airflow.

The api-server reads the deployment's default settings (topic ``weblogs``, root ``/lambda``), so the
test reads those too. It records one lag sample, as ``lambdaflow lag`` does, so that the lag history
has a point to draw. It changes nothing else, and it stops the Airflow daemons it started.
"""

from __future__ import annotations

import json
import re
from urllib.request import Request, urlopen

import pytest

from lambdaflow import dashboard, lag
from lambdaflow import stack as local_stack
from lambdaflow.stack.services import airflow_url

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
    with urlopen(Request(url), timeout=timeout) as response:
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
    assert "ok" in sections["batch"]  # another part owns the batch layer: present, ok or an error box

    report = sections["lag"]["data"]
    assert [p["partition"] for p in report["partitions"]] == list(range(stack.partitions))
    for live, recorded in zip(report["partitions"], recorded_sample["partitions"]):
        assert live["log_end_offset"] >= recorded["log_end_offset"]  # the log only grows
        assert live["status"] in lag.SEVERITY

    history = sections["lag_history"]["data"]
    assert history["samples"] >= 1 and history["last_sampled_at"] >= recorded_sample["sampled_at"]
    assert set(history["records"]) >= {f"p{p}" for p in range(stack.partitions)}

    landing = sections["landing"]["data"]
    assert landing["batches"] == landing["manifests_listed"] >= 0 and not landing["partial"]

    dags = {row["dag_id"]: row for row in sections["dags"]["data"]}
    for dag_id in dashboard.KNOWN_DAGS:
        assert dags[dag_id]["known_to_airflow"], f"{dag_id} not in Airflow's metadata DB"
        assert isinstance(dags[dag_id]["is_paused"], bool)


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
    with urlopen(f"{airflow}/lambdaflow?hours=1", timeout=90) as response:  # follows the 307
        assert response.url == f"{airflow}/lambdaflow/?hours=1"
        assert response.status == 200 and "<title>lambdaflow" in response.read().decode()
