"""Spark settings come from the topology the deployment runs: nothing in code overrides a cluster's own."""

from __future__ import annotations

from lambdaflow import spark
from lambdaflow.config import Settings
from lambdaflow.stack import topology


def test_the_local_topology_keeps_the_small_machine_settings(monkeypatch) -> None:
    monkeypatch.delenv("LAMBDAFLOW_TOPOLOGY", raising=False)
    monkeypatch.delenv("SPARK_MASTER", raising=False)
    conf = spark.spark_conf(Settings(), "ingest")
    assert conf["spark.hadoop.dfs.replication"] == "1" and conf["spark.sql.shuffle.partitions"] == "3"
    assert spark.default_master() == "local[2]"


def test_the_cluster_topology_gets_its_replication_master_and_core_caps(monkeypatch) -> None:
    monkeypatch.setenv("LAMBDAFLOW_TOPOLOGY", "cluster")
    monkeypatch.delenv("SPARK_MASTER", raising=False)
    for app in ("ingest", "batch"):
        conf = spark.spark_conf(Settings(hdfs_url="hdfs://nn:28020"), app)
        expected = topology.spark_conf(app, "cluster")
        assert conf["spark.hadoop.dfs.replication"] == "2" == expected["spark.hadoop.dfs.replication"]
        assert conf["spark.cores.max"] == expected["spark.cores.max"]
        assert conf["spark.hadoop.fs.defaultFS"] == "hdfs://nn:28020"  # the settings' address
    assert spark.default_master() == topology.spark_master_url("cluster")
    command = spark.submit_command("stream_ingest.py", [], Settings())
    assert command[command.index("--master") + 1] == topology.spark_master_url("cluster")


def test_no_pipeline_default_overrides_a_topology_setting() -> None:
    for name in ("local", "cluster"):
        for app in ("ingest", "batch"):
            assert not set(spark.DEFAULT_CONF) & set(topology.spark_conf(app, name)), (name, app)
