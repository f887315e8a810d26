"""The batch layer as the deployment runs it: `lambdaflow batch` as a client of the Spark Connect
server (`lambdaflow up` starts it), against events landed by the real ingest.

The CLI runs with JAVA_HOME pointing nowhere: a batch run that started a JVM of its own (a local
SparkSession) would fail, so a success proves the work ran on the server. Two runs over overlapping
hours at once end with the right views and no nested hour directories (the per-hour locks).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pyspark.testing import assertDataFrameEqual

from lambdaflow import batch
from lambdaflow.stack import services
from tests.integration.test_batch import (ACTIVITY, ACTIVITY_COLUMNS, H0, HOUR, VISITORS, LandingWriter,
                                          _nested_hour_dirs, batch_view)

pytestmark = pytest.mark.integration

LAMBDAFLOW = str(Path(sys.executable).parent / "lambdaflow")


@pytest.fixture
def writer(spark, isolated) -> LandingWriter:
    writer = LandingWriter(spark, isolated, seed=23)
    yield writer
    writer.close()


def batch_cli(settings, *argv: str) -> str:
    env = {**os.environ, **settings.env(), "JAVA_HOME": "/nonexistent/no-jvm-for-batch-clients"}
    result = subprocess.run([LAMBDAFLOW, "batch", *argv], env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "starting a local Spark session" not in output
    return output


def test_status_reports_the_spark_connect_server(stack) -> None:
    from lambdaflow import stack as local_stack

    document = local_stack.status()
    assert document["services"]["spark-connect"] == "up"
    assert document["spark"]["connect"] == services.spark_connect_url() == stack.spark_connect
    assert document["spark"]["connect"].startswith("sc://")


def test_batch_cli_runs_on_the_spark_connect_server_and_equals_the_landed_events(spark, isolated, writer) -> None:
    hours = [H0, H0 + HOUR, H0 + 2 * HOUR]
    writer.land_hours(hours)
    output = batch_cli(isolated, "--from", batch.iso(H0), "--to", batch.iso(H0 + 3 * HOUR))
    assert "3 hour(s)" in output
    assertDataFrameEqual(batch_view(spark, isolated, "activity_by_product").select(*ACTIVITY_COLUMNS),
                         spark.createDataFrame(writer.activity(), ACTIVITY))
    assertDataFrameEqual(batch_view(spark, isolated, "visitors_by_product").select(
        "product", "timestamp_hour", "unique_visitors"), spark.createDataFrame(writer.visitors(), VISITORS))
    for hour in hours:
        assert batch.validate_hour(isolated, hour)["landed_rows"] == writer.landed(hour)


def test_concurrent_cli_runs_over_overlapping_hours_end_with_the_right_views(spark, isolated, writer) -> None:
    writer.land_hours([H0, H0 + HOUR, H0 + 2 * HOUR, H0 + 3 * HOUR], per_hour=200)
    intervals = [(H0, H0 + 3 * HOUR), (H0 + HOUR, H0 + 4 * HOUR), (H0, H0 + 4 * HOUR)]
    with ThreadPoolExecutor(max_workers=len(intervals)) as pool:
        outputs = list(pool.map(lambda iv: batch_cli(isolated, "--from", batch.iso(iv[0]), "--to", batch.iso(iv[1]),
                                                      "--no-late"), intervals))
    assert any("is being recomputed by another run" in o for o in outputs), "the runs never overlapped"
    assert _nested_hour_dirs(batch.BatchFs(isolated), isolated) == []
    assertDataFrameEqual(batch_view(spark, isolated, "activity_by_product").select(*ACTIVITY_COLUMNS),
                         spark.createDataFrame(writer.activity(), ACTIVITY))
    assertDataFrameEqual(batch_view(spark, isolated, "visitors_by_product").select(
        "product", "timestamp_hour", "unique_visitors"), spark.createDataFrame(writer.visitors(), VISITORS))
