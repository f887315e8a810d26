"""The cluster topology on this machine: `lambdaflow up` with LAMBDAFLOW_TOPOLOGY=cluster brings up 3
KRaft brokers, a NameNode and 2 DataNodes, a Spark standalone master and 2 workers; `status --json`
counts them; the topic, HDFS and a Spark job show the cluster's replication and master; `down
--topology cluster` leaves no process behind.

The topology is chosen by the environment, not by `up --topology cluster`, so the remembered choice
(.run/topology) of this checkout is left alone for whoever else runs commands here meanwhile; the
local deployment's services are never touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from lambdaflow.stack import cluster
from lambdaflow.stack.daemon import port_open, session_members

pytestmark = pytest.mark.integration

LF = str(Path(sys.executable).parent / "lambdaflow")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP", "HDFS_URL", "WEBHDFS_URL", "SPARK_MASTER", "LAMBDAFLOW_TOPIC",
                        "LAMBDAFLOW_ROOT")}
    return {**env, "LAMBDAFLOW_TOPOLOGY": "cluster"}


def _lambdaflow(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([LF, *args], env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def running_cluster():
    started = time.monotonic()
    result = _lambdaflow("up")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"cluster up in {time.monotonic() - started:.0f}s")
    yield cluster.settings()
    # the last test stops it and checks nothing is left; this is the safety net if one failed before
    if cluster.processes():
        _lambdaflow("down", "--topology", "cluster")


def test_status_counts_3_brokers_2_datanodes_2_workers(running_cluster) -> None:
    result = _lambdaflow("status", "--json", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["topology"] == "cluster"
    assert document["kafka"]["bootstrap"] == "localhost:29092,localhost:29192,localhost:29292"
    assert document["kafka"]["brokers"] == 3
    assert document["hdfs"]["datanodes"] == 2
    assert document["spark"]["master"] == "spark://localhost:27077"
    assert document["spark"]["master_ui"] == "http://localhost:28081"
    assert document["spark"]["workers"] == 2


def test_up_again_is_a_quick_no_op(running_cluster) -> None:
    started = time.monotonic()
    assert cluster.up(quiet=True) == {name: False for name in cluster.SERVICES}
    assert time.monotonic() - started < 20


def test_weblogs_has_replication_factor_3_and_min_insync_replicas_2(running_cluster) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    client = KafkaAdminClient(bootstrap_servers=running_cluster.kafka_bootstrap)
    try:
        (topic,) = client.describe_topics([running_cluster.topic])
        assert len(topic["partitions"]) == 3
        assert all(len(p.get("replica_nodes", p.get("replicas", []))) == 3 for p in topic["partitions"]), topic
        configs = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, running_cluster.topic)])
        assert configs["topic"][running_cluster.topic]["min.insync.replicas"]["value"] == "2"
    finally:
        client.close()


def test_a_file_written_to_hdfs_has_replication_2(running_cluster) -> None:
    from lambdaflow import hdfs

    client = hdfs.client(running_cluster)
    path = f"/lambda-test/cluster-{uuid.uuid4().hex[:8]}/file.txt"
    client.write(path, data=b"x" * 1000)
    assert client.status(path)["replication"] == 2
    client.delete(path.rsplit("/", 1)[0], recursive=True)


def test_a_spark_job_runs_on_the_standalone_master(running_cluster) -> None:
    """Through the project's own session builder: master, core caps and HDFS replication are the
    topology's; the job writes Parquet to the cluster's HDFS and every block has 2 replicas."""
    root = f"/lambda-test/cluster-spark-{uuid.uuid4().hex[:8]}"
    script = (
        "from lambdaflow.spark import session\n"
        "from lambdaflow.config import Settings\n"
        "s = Settings.from_env()\n"
        "spark = session('cluster-topology-test', s)\n"
        "print('MASTER', spark.sparkContext.master)\n"
        "print('COUNT', spark.range(100).count())\n"
        f"spark.range(10).write.parquet(s.uri('{root}/p'))\n"
        "spark.stop()\n")
    result = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "MASTER spark://localhost:27077" in result.stdout
    assert "COUNT 100" in result.stdout
    from lambdaflow import hdfs

    client = hdfs.client(running_cluster)
    files = [f for f in client.list(f"{root}/p") if f.endswith(".parquet")]
    assert files and all(client.status(f"{root}/p/{f}")["replication"] == 2 for f in files)
    client.delete(root, recursive=True)


def test_the_clusters_airflow_runs_on_its_own_postgresql_with_connections_to_the_cluster(running_cluster) -> None:
    document = json.loads(_lambdaflow("status", "--json", timeout=60).stdout)
    assert document["airflow"]["url"] == "http://localhost:28080"
    assert document["airflow"]["metadata_db_address"] == "localhost:25433/airflow"
    assert document["spark"]["connect"] == "sc://localhost:25002"
    for name in ("postgres", "spark-connect", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer"):
        assert document["services"][name] == "up", name
    # a job command addressing the cluster runs in its environment: its Airflow, its connections
    result = _lambdaflow("airflow", "connections", "get", "spark_default", "-o", "json", timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (spark_default,) = json.loads(result.stdout)
    assert spark_default["host"] == "spark://localhost:27077"
    result = _lambdaflow("airflow", "config", "get-value", "database", "sql_alchemy_conn", timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("@localhost:25433/airflow"), result.stdout


def test_chaos_smoke_loses_and_duplicates_nothing(running_cluster, tmp_path) -> None:
    """`make chaos`'s harness, one occurrence of a few faults with small counts, so it cannot rot:
    each fault ends with the landing zone and quarantine accounting for every acked record once."""
    output = tmp_path / "chaos.json"
    faults = ["kill-ingest", "kill-broker", "malformed-flood"]
    result = _lambdaflow("chaos", "--smoke", "--seed", "7", "--faults", *faults, "--output", str(output),
                         timeout=1500)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    document = json.loads(output.read_text())
    assert document["topology"] == "cluster"
    assert [f["fault"] for f in document["faults"]] == faults
    for row in document["faults"]:
        assert row["produced"] > 0 and row["occurrences"] == 1, row
        assert (row["lost"], row["duplicated"]) == (0, 0), row
        assert row["landed"] + row["quarantined"] == row["details"]["in_topic"] >= row["produced"], row
        assert row["recovery_s"] is not None, row
    flood = document["faults"][2]
    assert flood["details"]["every_kind_injected"] and flood["details"]["quarantined_equals_injected"], flood
    assert flood["quarantined"] > flood["landed"]
    assert document["events_total"] == sum(f["produced"] for f in document["faults"])


def test_down_stops_every_cluster_process(running_cluster) -> None:
    sessions = [d.recorded_pid() for d in cluster.SERVICES.values()]
    assert None not in sessions and cluster.processes()
    result = _lambdaflow("down", "--topology", "cluster", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [pid for sid in sessions for pid in session_members(sid)] == []
    assert _processes_mentioning(str(cluster.CLUSTER_DIR)) == []
    assert [p for p in cluster.ALL_PORTS if port_open(p)] == []
    status = json.loads(_lambdaflow("status", "--json", timeout=60).stdout)
    assert set(status["services"].values()) == {"down"}


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name ``text`` (every cluster daemon names its directory:
    its configuration, classpath or work dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry}: {cmdline[:200]}")
    return found
