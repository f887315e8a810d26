"""Remediation for real: an ingest service of its own (isolated topic, root and service name) hangs
(SIGSTOP), the lag monitor's samples go STOP, the policy decides to restart, the restart kills the
hung job and starts a new one, and the next samples show the ingest moving again: everything lands,
nothing twice."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from lambdaflow import hdfs, kafka_admin, lag, landing, producer
from lambdaflow.monitoring import alerts, remediation
from lambdaflow.stack import ingest_service
from lambdaflow.stack.daemon import pid_alive, session_members
from tests.waiting import wait_until

pytestmark = pytest.mark.integration



def caught_up(settings) -> bool:
    ends = kafka_admin.end_offsets(settings)
    return sum(ends.values()) > 0 and landing.positions(hdfs.client(settings), settings.landing_path) == ends


@pytest.fixture
def service(isolated):
    name = f"ingest-remediation-{uuid.uuid4().hex[:6]}"
    yield isolated, name
    ingest_service.stop(isolated, name, timeout_s=30)


def test_a_hung_ingest_is_restarted_and_moves_again(service, monkeypatch) -> None:
    settings, name = service
    assert producer.produce(settings, count=300, rate=0, seed=1, progress=False)["acked"] == 300
    first = ingest_service.ensure_running(settings, name)
    wait_until("the first events to land", lambda: caught_up(settings))

    sid = ingest_service.daemon(settings, name).recorded_pid()
    for pid in session_members(sid):  # the job hangs: alive, but nothing lands
        os.kill(pid, signal.SIGSTOP)
    assert producer.produce(settings, count=300, rate=0, seed=2, progress=False)["acked"] == 300

    store = alerts.MemoryStore()
    decisions = []

    def stuck_long_enough() -> bool:
        report = lag.monitor(settings, window=3, stop_after_s=5)
        kept = alerts.track_lag_status(store, report, at=report["sampled_at"])
        decisions.append((kept["status"], *remediation.restart_decision(kept, alerts.now_ms(), restart_after_s=5,
                                                                         min_interval_s=600)))
        return decisions[-1][1]

    wait_until("the lag monitor to decide on a restart", stuck_long_enough, 120, 2)
    assert decisions[-1][0] in ("STOP", "STALL"), decisions
    assert not decisions[0][1], "a fresh STOP must not restart at once"

    monkeypatch.setattr(remediation, "STOP_TIMEOUT_S", 10.0)
    done = remediation.restart_ingest(settings, service_name=name)
    assert done["how"] == "ingest service stopped and started" and done["was_running"] is True
    assert done["action"] == "started" and done["pid"] != first["pid"]
    assert not pid_alive(first["pid"])
    store.save(alerts.LAG_STATE, {**store.load(alerts.LAG_STATE), "last_restart_at": alerts.now_ms()})

    # the next samples show it moving: everything lands, and the policy does not restart again
    wait_until("the events sent while it hung to land", lambda: caught_up(settings))
    report = lag.monitor(settings, window=3, stop_after_s=5)
    assert report["total_lag"] == 0 and report["status"] == "OK"
    kept = alerts.track_lag_status(store, report, at=report["sampled_at"])
    assert kept["alert"]["change"] == "recovered"
    assert not remediation.restart_decision(kept, alerts.now_ms(), restart_after_s=5, min_interval_s=600)[0]

    client = hdfs.client(settings)
    manifests = [hdfs.read_json(client, f"{settings.landing_path}/{landing.MANIFESTS}/{key}.json")
                 for key in landing.manifest_keys(client, settings.landing_path)]
    assert sum(m["landed_rows"] + m["quarantined_rows"] for m in manifests) == 600  # every record once
