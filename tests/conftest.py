"""Shared fixtures.

Integration tests get the real services from the project's own start-up code
(``lambdaflow.stack.up``); when a service cannot be started the fixture fails loudly, it never
skips. Tests isolate themselves with unique topics and HDFS roots instead of wiping shared state.
"""

from __future__ import annotations

import uuid

import pytest

from lambdaflow.config import Settings


@pytest.fixture(scope="session")
def stack() -> Settings:
    """Kafka, NameNode, DataNode and the batch layer's Spark Connect server up (started if needed);
    Airflow daemons are not needed here."""
    from lambdaflow import stack as local_stack

    local_stack.up(services=["kafka", "namenode", "datanode", "spark-connect"], quiet=True)
    return Settings.from_env()


@pytest.fixture
def isolated(stack: Settings) -> Settings:
    """Settings with a fresh topic (3 partitions), HDFS root and consumer group for one test."""
    from lambdaflow import kafka_admin

    suffix = uuid.uuid4().hex[:10]
    settings = stack.replace(topic=f"weblogs-t{suffix}", root=f"/lambda-test/{suffix}",
                             ingest_group=f"lambdaflow-ingest-t{suffix}")
    kafka_admin.ensure_topic(settings)
    return settings


@pytest.fixture(scope="session")
def spark():
    """The one local SparkSession of the test session, with the Kafka connector; it reaches HDFS
    only when a test asks for a path there (integration tests also request ``stack``)."""
    from lambdaflow.spark import session

    spark = session("lambdaflow-tests", Settings.from_env(), master="local[2]")
    yield spark
    spark.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped or xfailed test fails the run: in CI a skip hides a missing service or install step."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    hidden = reporter.stats.get("skipped", []) + reporter.stats.get("xfailed", [])
    if hidden and exitstatus == 0:
        reporter.write_line(f"FAILED: {len(hidden)} test(s) skipped or xfailed; every test must run", red=True)
        session.exitstatus = 1
