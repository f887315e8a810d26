"""Alerts end to end: ``airflow dags test weblogs_lag_monitor`` against the real Kafka and HDFS, with
the Connection ``lambdaflow_alerts`` pointing at a local HTTP receiver (http.server in a thread).

- A status change is notified once, not on every sample, and lands in the alert log in HDFS;
  ``check_lag`` failing the run sends nothing of its own.
- A task that fails (here: the monitored topic does not exist) is notified by the one notifier.

Each test uses its own topic and HDFS root; no Airflow daemon is needed (``dags test`` runs the
tasks in its own process against the metadata DB).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from lambdaflow import producer
from lambdaflow.config import REPO_ROOT
from lambdaflow.monitoring import alerts
from lambdaflow.stack import airflow_env, ensure_migrated
from tests.unit.test_alerts import Receiver

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def dags_test(settings, receiver: Receiver, dag_id: str = "weblogs_lag_monitor") -> subprocess.CompletedProcess:
    ensure_migrated()
    env = {**os.environ, **airflow_env(settings), "AIRFLOW_CONN_LAMBDAFLOW_ALERTS": receiver.url,
           "AIRFLOW_VAR_LAMBDAFLOW_LAG_REMEDIATE": "false"}
    return subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "airflow"), "dags", "test", dag_id], env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_lag_monitor_notifies_a_status_change_once(isolated, receiver) -> None:
    producer.produce(isolated, count=30, rate=0, seed=1, progress=False)  # nothing ingests it: NOT_STARTED
    first = dags_test(isolated, receiver)
    assert first.returncode != 0, "check_lag should fail the run while the ingest has not started"
    assert [(b["kind"], b["status"]) for b in receiver.bodies] == [("lag_status", "NOT_STARTED")], \
        first.stdout[-3000:] + first.stderr[-3000:]
    assert receiver.bodies[0]["previous"] is None and receiver.bodies[0]["topic"] == isolated.topic

    second = dags_test(isolated, receiver)
    assert second.returncode != 0
    assert len(receiver.bodies) == 1, "the same status again must not be notified again"

    kept = alerts.HdfsStore(isolated).load(alerts.LAG_STATE)
    assert kept["status"] == kept["notified"] == "NOT_STARTED"
    log = alerts.recent_alerts(alerts.HdfsStore(isolated))
    assert [(a["kind"], a["status"], a["delivered"]) for a in log] == [("lag_status", "NOT_STARTED", True)]


def test_a_failing_task_is_notified_through_the_connections_webhook(isolated, receiver) -> None:
    missing = isolated.replace(topic=f"{isolated.topic}-missing")  # sample_lag fails: the topic does not exist
    run = dags_test(missing, receiver)
    assert run.returncode != 0
    failed = [b for b in receiver.bodies if b["kind"] == "task_failed"]
    assert [(b["dag_id"], b["task_id"]) for b in failed] == [("weblogs_lag_monitor", "sample_lag")], \
        run.stdout[-3000:] + run.stderr[-3000:]
    assert missing.topic in failed[0]["text"]
    assert alerts.recent_alerts(alerts.HdfsStore(missing))[0]["title"] == "weblogs_lag_monitor.sample_lag failed"
