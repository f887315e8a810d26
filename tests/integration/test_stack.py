"""The local deployment: real Kafka, HDFS and Spark, reached by clients the project did not write."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer

from lambdaflow import hdfs
from lambdaflow import stack as local_stack
from lambdaflow.config import Settings

pytestmark = pytest.mark.integration


def test_up_again_is_a_quick_no_op(stack: Settings) -> None:
    started = time.monotonic()
    result = stack_up_core()
    assert result == {"kafka": False, "namenode": False, "datanode": False}
    assert time.monotonic() - started < 15


def stack_up_core() -> dict[str, bool]:
    return local_stack.up(services=["kafka", "namenode", "datanode"], quiet=True)


def test_kafka_round_trip_with_kafka_python(isolated: Settings) -> None:
    producer = KafkaProducer(bootstrap_servers=isolated.kafka_bootstrap, acks="all")
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(30)}
    for key, value in sent.items():
        producer.send(isolated.topic, key=key, value=value)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(isolated.topic, bootstrap_servers=isolated.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    received = {m.key: m.value for m in consumer}
    consumer.close()
    assert received == sent


def test_weblogs_topic_has_three_partitions(stack: Settings) -> None:
    from lambdaflow import kafka_admin

    assert kafka_admin.topic_partitions(stack, "weblogs") == [0, 1, 2]


def test_kafka_console_tools_run_through_the_project(isolated: Settings) -> None:
    producer = KafkaProducer(bootstrap_servers=isolated.kafka_bootstrap)
    for i in range(5):
        producer.send(isolated.topic, value=f"line-{i}".encode())
    producer.flush()
    producer.close()
    command = local_stack.kafka_tool_command("console-consumer", [
        "--bootstrap-server", isolated.kafka_bootstrap, "--topic", isolated.topic, "--from-beginning",
        "--max-messages", "5", "--group", isolated.ingest_group, "--timeout-ms", "20000"])
    out = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == [f"line-{i}" for i in range(5)]
    describe = subprocess.run(local_stack.kafka_tool_command("consumer-groups", [
        "--bootstrap-server", isolated.kafka_bootstrap, "--describe", "--group", isolated.ingest_group]),
        capture_output=True, text=True, timeout=90)
    assert describe.returncode == 0, describe.stderr
    assert isolated.topic in describe.stdout


def test_hdfs_write_read_list_through_webhdfs(isolated: Settings) -> None:
    client = hdfs.client(isolated)
    path = f"{isolated.root}/smoke/hello.txt"
    client.write(path, data="hello hdfs", overwrite=True, encoding="utf-8")
    with client.read(path, encoding="utf-8") as reader:
        assert reader.read() == "hello hdfs"
    assert client.list(f"{isolated.root}/smoke") == ["hello.txt"]
    assert {"landing", "quarantine", "batch", "speed", "checkpoints"} <= set(client.list("/lambda"))


def test_spark_reads_kafka_and_writes_parquet_to_hdfs(isolated: Settings, spark) -> None:
    producer = KafkaProducer(bootstrap_servers=isolated.kafka_bootstrap)
    for i in range(60):
        producer.send(isolated.topic, key=str(i).encode(), value=f'{{"n": {i}}}'.encode())
    producer.flush()
    producer.close()
    df = (spark.read.format("kafka").option("kafka.bootstrap.servers", isolated.kafka_bootstrap)
          .option("subscribe", isolated.topic).load())
    target = isolated.uri(f"{isolated.root}/smoke/parquet")
    df.selectExpr("CAST(key AS STRING) AS key", "partition", "offset").write.parquet(target)
    back = spark.read.parquet(target)
    assert back.count() == 60
    assert {r.key for r in back.collect()} == {str(i) for i in range(60)}
    assert back.select("partition").distinct().count() == 3
    assert hdfs.client(isolated).status(f"{isolated.root}/smoke/parquet/_SUCCESS") is not None


def test_killed_datanode_is_reported_down_and_brought_back(stack: Settings) -> None:
    datanode = local_stack.SERVICES["datanode"]
    pid = datanode.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while datanode.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert local_stack.status()["services"]["datanode"] == "down"
    assert stack_up_core()["datanode"] is True
    assert local_stack.status()["services"]["datanode"] == "up"
    client = hdfs.client(stack)
    path = f"/lambda-test/after-restart-{uuid.uuid4().hex[:8]}.txt"
    client.write(path, data="still here", encoding="utf-8")
    with client.read(path, encoding="utf-8") as reader:
        assert reader.read() == "still here"



def test_a_daemon_killed_with_sigkill_leaves_nothing_behind_after_up_or_down() -> None:
    """What `airflow scheduler` does to its LocalExecutor workers, with a shell and its children:
    kill -9 of the leader leaves them running; `up` (start) and `down` (stop) end them by session."""
    from lambdaflow.stack.daemon import Daemon, orphans_of_run_dir, session_members

    name = f"orphan-test-{uuid.uuid4().hex[:6]}"
    fake = Daemon(name=name, command=lambda: ["sh", "-c", "sleep 600 & sleep 600 & wait"], ready=lambda: True)
    try:
        for reap in ("start", "stop"):
            assert fake.start(quiet=True) is True
            leader = fake.pid()
            deadline = time.monotonic() + 10
            while len(session_members(leader)) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            children = set(session_members(leader)) - {leader}
            assert len(children) == 2
            os.kill(leader, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while leader in session_members(leader) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert set(fake.leftovers()) == children
            assert set(orphans_of_run_dir()[leader]) == children
            if reap == "start":
                assert fake.start(quiet=True) is True  # up: the leftovers go, a new leader starts
                assert session_members(leader) == []
                fake.stop(timeout_s=5)
            else:
                assert fake.stop(timeout_s=5) is True  # down: stops what the dead leader left
                assert session_members(leader) == []
    finally:
        fake.stop(timeout_s=5)
        fake.log_file.unlink(missing_ok=True)
