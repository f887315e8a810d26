"""The streaming ingest as a service of the stack: it outlives a kill -9 of Airflow's scheduler, the
next supervisor adopts the same job, and `up` leaves no orphan of the dead scheduler behind."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from lambdaflow import hdfs, kafka_admin, landing, producer
from lambdaflow import stack as local_stack
from lambdaflow.config import Settings
from lambdaflow.stack import ingest_service
from lambdaflow.stack.daemon import pid_alive, session_members
from tests.waiting import wait_until

pytestmark = pytest.mark.integration



def caught_up(settings: Settings) -> bool:
    ends = kafka_admin.end_offsets(settings)
    return sum(ends.values()) > 0 and landing.positions(hdfs.client(settings), settings.landing_path) == ends


def produce(settings: Settings, count: int, seed: int) -> None:
    summary = producer.produce(settings, count=count, rate=0, seed=seed, progress=False)
    assert summary["acked"] == count


@pytest.fixture
def service(isolated: Settings):
    name = f"ingest-test-{uuid.uuid4().hex[:6]}"
    # the scheduler is ready when the api-server's health endpoint says so: both are needed
    needed = ["airflow-api-server", "airflow-scheduler"]
    was_up = {n: local_stack.SERVICES[n].is_up() for n in needed}
    yield isolated, name
    ingest_service.stop(isolated, name)
    for n in needed:
        if not was_up[n]:  # the Spark-heavy tests that follow need the cores
            local_stack.SERVICES[n].stop()


def test_ingest_outlives_a_killed_scheduler_and_is_adopted(service) -> None:
    settings, name = service
    produce(settings, 500, seed=1)
    first = ingest_service.ensure_running(settings, name, trigger_interval="1 second")
    assert first["action"] == "started"
    pid = first["pid"]
    wait_until("the first events to land", lambda: caught_up(settings))

    local_stack.up(services=["postgres", "airflow-api-server", "airflow-scheduler"], quiet=True)
    scheduler = local_stack.SERVICES["airflow-scheduler"]
    scheduler_sid = scheduler.pid()
    wait_until("the scheduler's LocalExecutor workers", lambda: len(session_members(scheduler_sid)) > 1, 60)
    os.kill(scheduler_sid, signal.SIGKILL)
    wait_until("the scheduler to die", lambda: not pid_alive(scheduler_sid), 30, 0.2)
    assert scheduler.leftovers(), "the dead scheduler's workers are expected to outlive it"

    # the stream goes on, in the same process, while the scheduler is gone
    produce(settings, 500, seed=2)
    wait_until("events sent after the kill to land", lambda: caught_up(settings))
    assert ingest_service.state(settings, name)["pid"] == pid and pid_alive(pid)

    # `up` restores the scheduler and stops what the dead one left; the ingest is untouched
    assert local_stack.up(services=["airflow-scheduler"], quiet=True) == {"airflow-scheduler": True}
    assert session_members(scheduler_sid) == []
    assert scheduler.pid() not in (None, scheduler_sid)
    assert pid_alive(pid)

    # the next supervisor adopts the running job instead of starting another
    again = ingest_service.ensure_running(settings, name)
    assert again == {"action": "adopted", "name": name, "pid": pid, "log": first["log"]}

    # a clean stop through the stop marker: the job finishes its batch and exits 0
    from lambdaflow.ingest import request_stop

    request_stop(settings)
    wait_until("the job to stop on the marker", lambda: not pid_alive(pid), 120)
    assert ingest_service.stopped_on_request(name)

    # started again, then stopped the way `make down` does: the driver finishes its batch and exits
    produce(settings, 300, seed=3)
    second = ingest_service.ensure_running(settings, name)
    assert second["action"] == "started" and second["pid"] != pid
    wait_until("the events sent meanwhile to land", lambda: caught_up(settings))
    assert ingest_service.stop(settings, name) is True
    assert not pid_alive(second["pid"]) and ingest_service.stopped_on_request(name)
    manifests = landing.read_manifests(hdfs.client(settings), settings.landing_path)
    assert sum(m["landed_rows"] + m["quarantined_rows"] for m in manifests) == 1300
