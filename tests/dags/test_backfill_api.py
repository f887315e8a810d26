"""Used-by scenarios through Airflow's REST API, the way the UI drives it, against the running
api-server and scheduler with the streaming ingest running:

- trigger `weblogs_producer` with a Params form's values → the run succeeds and the events arrive
  in Kafka and land;
- a backfill of `weblogs_batch` over 6 closed hours (the UI's Backfill button) → every run succeeds
  and each hour's batch view matches the rows landed for it."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from lambdaflow import batch, hdfs, kafka_admin, landing, producer
from lambdaflow import stack as local_stack
from lambdaflow.config import Settings
from lambdaflow.stack import ingest_service
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

HOUR = dt.timedelta(hours=1)
HOURS = 6


def iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")



@pytest.fixture(scope="module")
def deployment(stack: Settings):
    """Airflow on PostgreSQL and the deployment's streaming ingest, as `make demo` runs them."""
    airflow = local_stack.METADATA_DB + local_stack.AIRFLOW
    already = {name: local_stack.SERVICES[name].is_up() for name in airflow}
    local_stack.up(services=airflow, quiet=True)
    settings = local_stack.default_settings()
    ingest_was_running = ingest_service.state(settings)["state"] == "running"
    ingest_service.ensure_running(settings)
    yield settings
    local_stack.api("PATCH", "/dags/weblogs_batch", {"is_paused": True})
    if not ingest_was_running:
        ingest_service.stop(settings)
    started_here = [n for n, up in already.items() if not up and n in local_stack.AIRFLOW]
    if started_here:  # the Spark-heavy tests that follow need the cores
        local_stack.down(services=started_here, quiet=True)


def test_trigger_producer_with_form_values_and_the_events_land(deployment: Settings) -> None:
    settings = deployment
    before = sum(kafka_admin.end_offsets(settings).values())
    local_stack.wait_for_dags(["weblogs_producer"], timeout_s=180)
    form = {"count": 500, "duration": None, "rate": 0, "seed": 5, "time_multiplier": 480,
            "start": None, "bad_fraction": 0.1, "format": "tsv"}  # what the trigger form posts
    run = local_stack.api("POST", "/dags/weblogs_producer/dagRuns", {"logical_date": None, "conf": form})
    local_stack.api("PATCH", "/dags/weblogs_producer", {"is_paused": False})
    try:
        state = wait_until("the producer run to finish", lambda: (r := local_stack.api(
            "GET", f"/dags/weblogs_producer/dagRuns/{run['dag_run_id']}")["state"]) in ("success", "failed") and r,
            timeout_s=300, every=2)
    finally:
        local_stack.api("PATCH", "/dags/weblogs_producer", {"is_paused": True})
    assert state == "success"
    assert sum(kafka_admin.end_offsets(settings).values()) == before + 500
    client = hdfs.client(settings)
    wait_until("the ingest to land them", lambda: landing.positions(client, settings.landing_path)
               == kafka_admin.end_offsets(settings), timeout_s=300, every=2)


def test_backfill_of_closed_hours_succeeds_and_matches_the_landing_zone(deployment: Settings) -> None:
    settings = deployment
    # events spread over the two hours before the current one (simulated time, the demo's way)
    end = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    first_hour = end - HOURS * HOUR
    count, rate = 1200, 600
    summary = producer.produce(settings, count=count, rate=rate, seed=11, start=iso(first_hour),
                               time_multiplier=HOURS * 3600 / (count / rate) * 0.99, progress=False)
    assert summary["acked"] == count
    client = hdfs.client(settings)
    wait_until("the ingest to land the events", lambda: landing.positions(client, settings.landing_path)
               == kafka_admin.end_offsets(settings), timeout_s=300, every=5)

    local_stack.wait_for_dags(["weblogs_batch"], timeout_s=180)
    for old in local_stack.api("GET", "/backfills?dag_id=weblogs_batch&limit=100").get("backfills", []):
        if not old.get("completed_at"):
            local_stack.api("PUT", f"/backfills/{old['id']}/cancel")
    # a run's logical date is the start of its hour
    created = local_stack.api("POST", "/backfills", {
        "dag_id": "weblogs_batch", "from_date": iso(first_hour), "to_date": iso(end - HOUR),
        "reprocess_behavior": "completed", "max_active_runs": 2,
        "dag_run_conf": {"allowed_lateness_seconds": 0}})
    local_stack.api("PATCH", "/dags/weblogs_batch", {"is_paused": False})

    def runs() -> list[dict]:
        query = f"logical_date_gte={iso(first_hour)}&logical_date_lte={iso(end - HOUR)}&limit=100"
        return local_stack.api("GET", f"/dags/weblogs_batch/dagRuns?{query}")["dag_runs"]

    wait_until(f"backfill {created['id']} to complete",
               lambda: local_stack.api("GET", f"/backfills/{created['id']}").get("completed_at"), timeout_s=900, every=5)
    finished = wait_until("every hour's run to finish", lambda: (r := runs()) and len(r) == HOURS
                          and all(x["state"] in ("success", "failed") for x in r) and r, timeout_s=900, every=5)
    assert [r["state"] for r in finished] == ["success"] * HOURS, finished

    landed = landing.landed_rows_by_hour(client, settings.landing_path)
    for hour in (first_hour, first_hour + HOUR):
        hour_ms = int(hour.timestamp() * 1000)
        assert landed.get(hour_ms, 0) > 0
        assert batch.validate_hour(settings, hour_ms)["landed_rows"] == landed[hour_ms]
