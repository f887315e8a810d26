"""The ingest as Spark users observe it: the Spark UI's Structured Streaming tab on the documented
port, and every micro-batch's progress recorded by the StreamingQueryListener."""

from __future__ import annotations

import signal
import socket
import time

import pytest
import requests

from lambdaflow import hdfs, kafka_admin, landing
from lambdaflow.config import Settings
from lambdaflow.monitoring import stream_progress
from lambdaflow.producer import produce
from tests.integration.test_ingest import ingest

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_spark_ui_and_per_batch_progress_of_the_ingest(isolated: Settings, monkeypatch) -> None:
    port = _free_port()
    monkeypatch.setenv("LAMBDAFLOW_INGEST_UI_PORT", str(port))
    produce(isolated, count=1500, rate=0, seed=51, bad_fraction=0.05, progress=False)
    job = ingest(isolated, "--max-offsets-per-trigger", "300", "--trigger-interval", "1 second", wait=False)
    try:
        ends = kafka_admin.end_offsets(isolated)
        deadline = time.monotonic() + 240
        while landing.positions(hdfs.client(isolated), isolated.landing_path) != ends:
            assert job.poll() is None, job.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the ingest did not land everything"
            time.sleep(1)
        page = requests.get(f"http://localhost:{port}/StreamingQuery/", timeout=10)
        assert page.status_code == 200 and "Streaming Query" in page.text, page.text[:500]
    finally:
        job.send_signal(signal.SIGTERM)  # the driver: a clean stop, the recorder flushes what is queued
        output = job.communicate(timeout=120)[0]
    assert job.returncode == 0, output[-3000:]
    assert f":{port}" in output  # the UI's address is logged
    records = stream_progress.history(isolated, hours=1)
    assert sum(r["rows"] for r in records) == 1500  # every record read once, landed or quarantined
    assert len([r for r in records if r["rows"]]) >= 5  # 300 per trigger
    last = max((r for r in records if r["end_offsets"]), key=lambda r: r["batch_id"])
    assert {int(p): o for p, o in last["end_offsets"].items()} == ends
    assert all(r["batch_duration_ms"] > 0 and r["durations_ms"] for r in records if r["rows"])
