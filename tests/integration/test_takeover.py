"""The fenced single writer against the real stack: a paused ingest is taken over and never commits again.

The first ingest is frozen with SIGSTOP (as a long GC pause or a frozen VM would) while events flow,
past a short takeover timeout; a second ingest takes the lock (a new epoch) and carries on; the
first is resumed with SIGCONT and must exit with a message naming the new holder, having made
nothing visible. At rest no (partition, offset) is landed twice and the speed views equal the
exact counts.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from lambdaflow import hdfs, kafka_admin, landing, views
from lambdaflow.config import Settings
from lambdaflow.producer import produce
from tests.integration.test_ingest import assert_exactly_once, ingest, wait_for_manifests

pytestmark = pytest.mark.integration

STALE_S = 8


def test_paused_ingest_is_taken_over_and_commits_nothing_more(isolated: Settings, spark, monkeypatch) -> None:
    monkeypatch.setenv("LAMBDAFLOW_LOCK_STALE_S", str(STALE_S))
    produce(isolated, count=2000, rate=0, seed=51, bad_fraction=0.02, progress=False)
    first = ingest(isolated, "--max-offsets-per-trigger", "150", "--trigger-interval", "0 seconds", wait=False)
    second = None
    try:
        wait_for_manifests(isolated, 2, first, timeout=600)  # a loaded 2-core machine is slow
        os.killpg(first.pid, signal.SIGSTOP)  # the driver and its JVM freeze, mid-batch most likely
        produce(isolated, count=1000, rate=0, seed=52, progress=False)  # events keep flowing
        time.sleep(STALE_S + 2)
        second = ingest(isolated, "--max-offsets-per-trigger", "400", "--trigger-interval", "0 seconds", wait=False)
        client = hdfs.client(isolated)
        before = len(landing.manifest_keys(client, isolated.landing_path))
        wait_for_manifests(isolated, before + 1, second, timeout=600)  # the second ingest took over and commits
        os.killpg(first.pid, signal.SIGCONT)
        output, _ = first.communicate(timeout=300)
        assert first.returncode != 0, output[-3000:]
        assert f"lost the landing zone lock to host" in output and f"pid {second.pid}" in output, output[-3000:]

        deadline = time.monotonic() + 600
        while landing.positions(client, isolated.landing_path) != kafka_admin.end_offsets(isolated):
            assert second.poll() is None, second.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the second ingest did not catch up"
            time.sleep(1)
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=300)
        assert second.returncode == 0, output[-3000:]
    finally:
        for job in (first, second):
            if job is not None and job.poll() is None:
                os.killpg(job.pid, signal.SIGCONT)
                os.killpg(job.pid, signal.SIGKILL)

    landed, quarantined = assert_exactly_once(spark, isolated)
    assert landed + quarantined == 3000
    epochs = {hdfs.read_json(hdfs.client(isolated), f"{isolated.landing_path}/{landing.MANIFESTS}/{k}.json")["epoch"]
              for k in landing.manifest_keys(hdfs.client(isolated), isolated.landing_path)}
    assert len(epochs) >= 2 and None not in epochs
    rows = spark.read.parquet(isolated.uri(isolated.landing_path))
    speed = views.speed_activity_view(spark.read.parquet(isolated.uri(f"{isolated.speed_root}/activity_by_product")))
    from pyspark.testing import assertDataFrameEqual
    assertDataFrameEqual(speed, views.activity_by_product(rows))
