"""`airflow dags test weblogs_ingest` on a topic and HDFS root of its own: the run starts the
streaming job as a service of the stack, watches it, ends after `watch_hours`, and leaves the job
running for the next run to adopt; a second run adopts the same process."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from lambdaflow import hdfs, kafka_admin, landing, producer
from lambdaflow.config import Settings
from lambdaflow.stack import airflow_env, ingest_service
from lambdaflow.stack.daemon import pid_alive
from lambdaflow.stack.services import airflow_command

pytestmark = pytest.mark.integration


def dags_test(settings: Settings, dag_id: str, conf: dict) -> str:
    env = {**os.environ, **airflow_env(settings)}
    result = subprocess.run(airflow_command("dags", "test", dag_id, "-c", json.dumps(conf)), env=env,
                            capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{dag_id} failed:\n{output[-6000:]}"
    return output


def test_weblogs_ingest_starts_then_adopts_the_service(isolated: Settings) -> None:
    assert producer.produce(isolated, count=400, rate=0, seed=5, progress=False)["acked"] == 400
    name = ingest_service.service_name(isolated)
    assert name != ingest_service.NAME  # an isolated root never touches the deployment's job
    try:
        dags_test(isolated, "weblogs_ingest", {"watch_hours": 0.01})
        first = ingest_service.state(isolated)
        assert first["state"] == "running" and first["root"] == isolated.root
        client = hdfs.client(isolated)
        deadline = time.monotonic() + 180
        while landing.positions(client, isolated.landing_path) != kafka_admin.end_offsets(isolated):
            assert time.monotonic() < deadline, "the service did not land the topic"
            time.sleep(2)

        output = dags_test(isolated, "weblogs_ingest", {"watch_hours": 0})
        assert "streaming ingest adopted" in output
        assert ingest_service.state(isolated)["pid"] == first["pid"] and pid_alive(first["pid"])
    finally:
        ingest_service.stop(isolated)
    assert ingest_service.stopped_on_request(name)
