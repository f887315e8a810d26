"""The cluster topology's pure parts: daemon configuration, readiness parsing, the remembered topology."""

from __future__ import annotations

import json

import pytest

from lambdaflow import config
from lambdaflow.config import Settings
from lambdaflow.stack import cluster
from lambdaflow.stack.topology import topology

CLUSTER = topology("cluster")


def _properties(name: str) -> dict[str, str]:
    lines = cluster.kafka_properties_text(name, "/data").splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def test_three_brokers_form_one_quorum_on_ports_and_dirs_of_their_own() -> None:
    brokers = [_properties(f"kafka-{i}") for i in (1, 2, 3)]
    assert {b["controller.quorum.voters"] for b in brokers} == {
        "1@localhost:29093,2@localhost:29193,3@localhost:29293"}
    assert [b["node.id"] for b in brokers] == ["1", "2", "3"]
    assert len({b["listeners"] for b in brokers}) == 3
    assert len({b["log.dirs"] for b in brokers}) == 3
    assert all(b["min.insync.replicas"] == "2" and b["offsets.topic.replication.factor"] == "3" for b in brokers)


def test_datanodes_have_distinct_ports_and_data_dirs_and_replication_2() -> None:
    sites = [cluster.hadoop_conf_files(f"datanode-{i}", "/data")["hdfs-site.xml"] for i in (1, 2)]
    assert "file:///data/hdfs/data-1" in sites[0] and "file:///data/hdfs/data-2" in sites[1]
    assert "localhost:29866" in sites[0] and "localhost:29966" in sites[1]
    assert all("<name>dfs.replication</name><value>2</value>" in s for s in sites)
    core = cluster.hadoop_conf_files("namenode", "/data")["core-site.xml"]
    assert "hdfs://localhost:28020" in core


def test_spark_daemons_run_spark_class_of_the_venvs_pyspark_with_capped_heaps() -> None:
    master, env = cluster.spark_command("spark-master", "/data")
    assert master[0].endswith("pyspark/bin/spark-class")
    assert master[1] == "org.apache.spark.deploy.master.Master" and "27077" in master and "28081" in master
    assert env["SPARK_DAEMON_MEMORY"] == "512m"
    worker, env = cluster.spark_command("spark-worker-2", "/data")
    assert worker[-1] == "spark://localhost:27077"
    assert worker[worker.index("--work-dir") + 1] == "/data/spark/worker-2"
    assert env["SPARK_DAEMON_MEMORY"] == "512m"


def test_every_cluster_daemon_keeps_its_pid_and_log_under_run_cluster() -> None:
    assert list(cluster.SERVICES) == ["kafka-1", "kafka-2", "kafka-3", "namenode", "datanode-1", "datanode-2",
                                      "spark-master", "spark-worker-1", "spark-worker-2", "spark-connect",
                                      "postgres", "airflow-api-server", "airflow-scheduler",
                                      "airflow-dag-processor", "airflow-triggerer"]
    for daemon in cluster.SERVICES.values():
        assert daemon.pid_file.parent == cluster.PID_DIR and daemon.log_file.parent == cluster.LOG_DIR
    local_ports = {p for s in topology("local").services for p in s.ports.values()}
    assert not local_ports & set(cluster.ALL_PORTS)


def test_readiness_parsers() -> None:
    info = {"LiveNodes": json.dumps({"localhost:29866": {"xferaddr": "127.0.0.1:29866"},
                                     "localhost:29966": {"xferaddr": "127.0.0.1:29966"}})}
    assert cluster.live_datanode_ports(info) == [29866, 29966]
    assert cluster.live_datanode_ports({"LiveNodes": "{}"}) == []
    state = {"status": "ALIVE", "workers": [{"port": 27078, "state": "ALIVE"}, {"port": 27178, "state": "DEAD"},
                                            {"port": 27178, "state": "ALIVE"}]}
    assert cluster.alive_worker_ports(state) == [27078, 27178]


@pytest.fixture
def topology_file(tmp_path, monkeypatch):
    path = tmp_path / "topology"
    monkeypatch.setattr(config, "TOPOLOGY_FILE", path)
    monkeypatch.setattr(cluster, "TOPOLOGY_FILE", path)
    for name in ("LAMBDAFLOW_TOPOLOGY", "KAFKA_BOOTSTRAP", "HDFS_URL", "WEBHDFS_URL", "KAFKA_PORT",
                 "HDFS_NAMENODE_PORT", "HDFS_HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    return path


def test_the_remembered_topology_moves_every_address(topology_file, monkeypatch) -> None:
    assert config.topology_name() == "local"
    assert Settings.from_env().kafka_bootstrap == "localhost:9092"
    cluster.remember("cluster")
    assert topology_file.read_text().strip() == "cluster"
    settings = Settings.from_env()
    assert settings.kafka_bootstrap == CLUSTER.kafka_bootstrap()
    assert (settings.hdfs_url, settings.webhdfs_url) == ("hdfs://localhost:28020", "http://localhost:29870")
    monkeypatch.setenv("LAMBDAFLOW_TOPOLOGY", "local")  # the environment wins over the file
    assert Settings.from_env().hdfs_url == "hdfs://localhost:8020"
    monkeypatch.delenv("LAMBDAFLOW_TOPOLOGY")
    monkeypatch.setenv("HDFS_URL", "hdfs://elsewhere:8020")  # and an explicit address over both
    assert Settings.from_env().hdfs_url == "hdfs://elsewhere:8020"
    cluster.forget("cluster")
    assert not topology_file.exists() and config.topology_name() == "local"


def test_up_remembers_only_an_explicit_choice(topology_file, monkeypatch) -> None:
    import argparse

    up = argparse.Namespace(command="up", topology="local", services=None)
    assert cluster.run_command(up) is None  # the local stack's turn
    cluster.remember("cluster")
    monkeypatch.setenv("LAMBDAFLOW_TOPOLOGY", "local")
    assert cluster.run_command(argparse.Namespace(command="up", topology=None, services=None)) is None
    assert topology_file.exists()  # chosen by the environment: the remembered choice stays
    monkeypatch.delenv("LAMBDAFLOW_TOPOLOGY")
    assert cluster.run_command(argparse.Namespace(command="up", topology=None, services=None)) is None
    assert not topology_file.exists()  # a plain `up` is the local deployment's


def test_the_local_summary_reports_one_broker_master_local_and_no_workers(monkeypatch) -> None:
    monkeypatch.setattr(cluster, "port_open", lambda port, host="localhost", timeout=0.5: False)
    monkeypatch.setattr(cluster, "live_datanodes", lambda url: 1)
    local = Settings()
    summary = cluster.summary(topology("local"), local)
    assert summary["topology"] == "local"
    assert summary["kafka"]["bootstrap"] == "localhost:9092" and summary["kafka"]["brokers"] == 0
    assert summary["hdfs"]["datanodes"] == 1
    assert summary["spark"] == {"master": "local[2]", "master_ui": None, "workers": 0}


def test_down_without_topology_stops_the_cluster_then_hands_over_to_the_local_stack(topology_file,
                                                                                   monkeypatch) -> None:
    import argparse

    calls = []
    monkeypatch.setattr(cluster, "down", lambda quiet=False: calls.append("cluster") or [])
    cluster.remember("cluster")
    assert cluster.run_command(argparse.Namespace(command="down", topology=None, services=None)) is None
    assert calls == ["cluster"] and not topology_file.exists()  # `make down`: the local stack goes next
    assert cluster.run_command(argparse.Namespace(command="down", topology="local", services=None)) is None
    assert cluster.run_command(argparse.Namespace(command="down", topology=None, services=["kafka"])) is None
    assert calls == ["cluster"]  # neither touched the cluster
    assert cluster.run_command(argparse.Namespace(command="down", topology="cluster", services=None)) == 0
    assert calls == ["cluster", "cluster"]  # only the cluster: no hand-over


def test_the_clusters_environment_is_its_own_deployment_and_drops_anothers_addresses() -> None:
    local = {"KAFKA_BOOTSTRAP": "localhost:9092", "HDFS_URL": "hdfs://localhost:8020", "AIRFLOW_HOME": "/x",
             "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow:p@localhost:5433/airflow",
             "AIRFLOW_CONN_KAFKA_DEFAULT": "{}", "LAMBDAFLOW_SPARK_CONNECT": "sc://localhost:15002",
             "LAMBDAFLOW_TOPIC": "weblogs", "PATH": "/usr/bin"}
    env = cluster.environment(local)
    assert env["LAMBDAFLOW_TOPOLOGY"] == "cluster"
    assert env["LAMBDAFLOW_RUN_DIR"] == env["LAMBDAFLOW_CLUSTER_DIR"] == str(cluster.CLUSTER_DIR)
    assert (env["AIRFLOW_PORT"], env["AIRFLOW_DB_PORT"], env["SPARK_CONNECT_PORT"]) == ("28080", "25433", "25002")
    for key in ("KAFKA_BOOTSTRAP", "HDFS_URL", "AIRFLOW_HOME", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                "AIRFLOW_CONN_KAFKA_DEFAULT", "LAMBDAFLOW_SPARK_CONNECT"):
        assert key not in env
    assert env["LAMBDAFLOW_TOPIC"] == "weblogs" and env["PATH"] == "/usr/bin"  # the user's own choices stay


def test_settings_in_the_clusters_environment_address_the_cluster(monkeypatch) -> None:
    from lambdaflow.config import Settings

    for key, value in cluster.environment({}).items():
        monkeypatch.setenv(key, value)
    for key in ("KAFKA_BOOTSTRAP", "HDFS_URL", "WEBHDFS_URL", "LAMBDAFLOW_SPARK_CONNECT"):
        monkeypatch.delenv(key, raising=False)
    s = Settings.from_env()
    assert s.kafka_bootstrap == "localhost:29092,localhost:29192,localhost:29292"
    assert (s.hdfs_url, s.webhdfs_url) == ("hdfs://localhost:28020", "http://localhost:29870")
    assert s.spark_connect == "sc://localhost:25002"


def test_kafka_cluster_ids_never_start_with_a_dash(monkeypatch, tmp_path) -> None:
    """kafka-storage's parser reads '-xyz' as an option: 1 id in 64 broke `lambdaflow up` (CI, stop 22)."""
    import base64

    from lambdaflow.stack import services

    ids = [services.new_kafka_cluster_id() for _ in range(3000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
    monkeypatch.setattr(cluster, "DATA_DIR", tmp_path)
    monkeypatch.setattr(cluster, "CLUSTER_ID_FILE", tmp_path / "cluster-id")
    (tmp_path / "cluster-id").write_text("-Ab3kqJ0TUe1cGz4fYw9xA")  # kept by a run before the check
    replaced = cluster.kafka_cluster_id()
    assert not replaced.startswith("-") and cluster.kafka_cluster_id() == replaced
