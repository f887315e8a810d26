"""The topology definitions (lambdaflow/stack/topology.py): the cluster the issue asks for, ports that
leave the local deployment alone, core caps where no application starves another, heaps that fit.

Each check is a function of a topology; ``test_each_check_fails_on_a_broken_topology`` feeds it a
deliberately broken copy, so none of them can pass by not looking.
"""

from __future__ import annotations

import dataclasses
import re
from graphlib import CycleError, TopologicalSorter
from typing import Callable

import pytest

from lambdaflow.config import REPO_ROOT
from lambdaflow.stack import topology as topo

LOCAL = topo.topology("local")
CLUSTER = topo.topology("cluster")
MACHINE_MEMORY_MB = 24 * 1024
# what the daemons' and Spark's heaps may take of it: the rest is for JVM overhead, Python
# (Airflow's daemons, the drivers' Python side), PostgreSQL and the OS
HEAP_BUDGET_MB = MACHINE_MEMORY_MB // 2


def _worker_slots(t: topo.Topology) -> int:
    return sum(int(w.settings["cores"]) for w in t.by_role(topo.SPARK_WORKER))


# -- checks -------------------------------------------------------------------------------------------

def check_cluster_shape(t: topo.Topology) -> None:
    brokers = t.by_role(topo.KAFKA_BROKER)
    assert len(brokers) == 3, f"{len(brokers)} brokers"
    assert (t.topic.name, t.topic.partitions, t.topic.replication_factor, t.topic.min_insync_replicas) == (
        "weblogs", 3, 3, 2), t.topic
    for broker in brokers:
        s = broker.settings
        assert int(s["min.insync.replicas"]) == t.topic.min_insync_replicas, broker.name
        assert int(s["default.replication.factor"]) == t.topic.replication_factor, broker.name
        assert int(s["offsets.topic.replication.factor"]) == len(brokers), broker.name  # consumer offsets survive a broker
        assert int(s["transaction.state.log.min.isr"]) == t.topic.min_insync_replicas, broker.name
        assert s["unclean.leader.election.enable"] == "false", broker.name
    assert len({b.settings["node.id"] for b in brokers}) == len(brokers), "node ids repeat"
    assert len(t.by_role(topo.HDFS_NAMENODE)) == 1
    assert len(t.by_role(topo.HDFS_DATANODE)) == 2 and t.hdfs_replication == 2, "NameNode + 2 DataNodes, replication 2"
    assert len(t.by_role(topo.SPARK_MASTER)) == 1 and len(t.by_role(topo.SPARK_WORKER)) == 2
    assert t.spark_local_master is None
    assert {s.role for s in t.services} >= {topo.POSTGRES, topo.AIRFLOW_API_SERVER, topo.AIRFLOW_SCHEDULER,
                                            topo.AIRFLOW_DAG_PROCESSOR, topo.AIRFLOW_TRIGGERER}


def check_replication_survives_one_loss(t: topo.Topology) -> None:
    brokers = len(t.by_role(topo.KAFKA_BROKER))
    assert 1 <= t.topic.min_insync_replicas < t.topic.replication_factor <= brokers, (
        f"RF {t.topic.replication_factor}, min ISR {t.topic.min_insync_replicas}, {brokers} brokers: "
        "one broker down must still take acknowledged writes")
    assert 2 <= t.hdfs_replication <= len(t.by_role(topo.HDFS_DATANODE)), "one DataNode down must lose no block"
    for app in topo.SPARK_APPS:
        assert t.spark_conf(app)["spark.hadoop.dfs.replication"] == str(t.hdfs_replication), app


def check_ports(t: topo.Topology) -> None:
    ports = t.ports
    assert len(ports) == len(set(ports)), f"ports repeat in {t.name}: {sorted(p for p in ports if ports.count(p) > 1)}"
    assert all(1024 < p < 32768 for p in ports), "ports outside the unprivileged, non-ephemeral range"
    if t.name != LOCAL.name:
        # Airflow's log servers default to 8793 / 8794 on the local topology, Spark's driver UI to 4040
        taken = set(LOCAL.ports) | {8793, 8794, 8974, 4040, 7077, 8081, 15002}
        clash = sorted(set(ports) & taken)
        assert not clash, f"{t.name} ports collide with the local deployment's: {clash}"


def check_core_caps(t: topo.Topology) -> None:
    slots = _worker_slots(t)
    caps = {app: int(t.spark_conf(app)["spark.cores.max"]) for app in topo.SPARK_APPS}
    assert all(cap > 0 for cap in caps.values()), caps
    # the ingest and a batch application fit side by side, with room for one more ingest (a test's or
    # `make chaos`'s beside the deployment's): none waits for another's cores
    assert sum(caps.values()) + caps[topo.INGEST] <= slots, f"caps {caps} and a spare ingest exceed {slots} slots"
    worker = t.by_role(topo.SPARK_WORKER)[0]
    for app in topo.SPARK_APPS:
        conf = t.spark_conf(app)
        per_executor = int(conf["spark.executor.cores"])
        assert caps[app] % per_executor == 0 and per_executor <= int(worker.settings["cores"]), app
    # every worker can host one executor of each application at once
    executor_mb = sum(topo.to_mb(t.spark_conf(app)["spark.executor.memory"])
                      for app in (*topo.SPARK_APPS, topo.INGEST))
    for w in t.by_role(topo.SPARK_WORKER):
        assert executor_mb <= topo.to_mb(w.settings["memory"]), f"{w.name}: {executor_mb} MB of executors"
    master = t.one(topo.SPARK_MASTER)
    assert int(master.settings["spark.deploy.defaultCores"]) < slots, "an uncapped application would take every core"


def check_heaps_fit(t: topo.Topology) -> None:
    jvm_roles = {topo.KAFKA_BROKER, topo.HDFS_NAMENODE, topo.HDFS_DATANODE, topo.SPARK_MASTER, topo.SPARK_WORKER}
    for service in t.services:
        if service.role in jvm_roles:
            assert service.heap, f"{service.name} has no heap cap"
    assert t.memory_mb() <= HEAP_BUDGET_MB, f"{t.name} caps add up to {t.memory_mb()} MB"


def check_start_order(t: topo.Topology) -> None:
    names = {s.name for s in t.services}
    for service in t.services:
        assert set(service.depends_on) <= names, f"{service.name} depends on {set(service.depends_on) - names}"
    try:
        TopologicalSorter({s.name: set(s.depends_on) for s in t.services}).prepare()
    except CycleError as cycle:
        raise AssertionError(f"start order has a cycle: {cycle.args[1]}") from None
    for node in t.by_role(topo.HDFS_DATANODE):
        assert set(node.depends_on) == {t.one(topo.HDFS_NAMENODE).name}, node.name
    for service in t.by_role(topo.KAFKA_BROKER):
        assert not service.depends_on, f"{service.name} waits for {service.depends_on}: brokers form the quorum together"


def check_data_dirs(t: topo.Topology) -> None:
    dirs = [s.data_dir for s in t.services if s.data_dir]
    assert len(dirs) == len(set(dirs)), f"data directories shared: {dirs}"
    stateful = {topo.KAFKA_BROKER, topo.HDFS_NAMENODE, topo.HDFS_DATANODE, topo.POSTGRES}
    for service in t.services:
        if service.role in stateful:
            assert service.data_dir, f"{service.name} keeps its data nowhere"


CLUSTER_CHECKS = [check_cluster_shape, check_replication_survives_one_loss, check_ports, check_core_caps,
                  check_heaps_fit, check_start_order, check_data_dirs]
LOCAL_CHECKS = [check_ports, check_heaps_fit, check_start_order, check_data_dirs]


# -- tests --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("check", CLUSTER_CHECKS, ids=lambda c: c.__name__)
def test_cluster(check: Callable) -> None:
    check(CLUSTER)


@pytest.mark.parametrize("check", LOCAL_CHECKS, ids=lambda c: c.__name__)
def test_local(check: Callable) -> None:
    check(LOCAL)


def test_local_topology_is_todays_local_deployment() -> None:
    """The ports services.py starts the local stack on (its defaults) are the local topology's."""
    source = (REPO_ROOT / "lambdaflow" / "stack" / "services.py").read_text()
    defaults = {name: int(port) for name, port in re.findall(r'_port\("(\w+)", (\d+)\)', source)}
    expected = {
        "KAFKA_PORT": LOCAL.service("kafka").port("broker"),
        "KAFKA_CONTROLLER_PORT": LOCAL.service("kafka").port("controller"),
        "HDFS_NAMENODE_PORT": LOCAL.service("namenode").port("rpc"),
        "HDFS_HTTP_PORT": LOCAL.service("namenode").port("http"),
        "HDFS_DATANODE_PORT": LOCAL.service("datanode").port("data"),
        "HDFS_DATANODE_HTTP_PORT": LOCAL.service("datanode").port("http"),
        "HDFS_DATANODE_IPC_PORT": LOCAL.service("datanode").port("ipc"),
        "AIRFLOW_PORT": LOCAL.service("airflow-api-server").port("http"),
        "SPARK_CONNECT_PORT": LOCAL.service("spark-connect").port("grpc"),
        "AIRFLOW_DB_PORT": LOCAL.service("postgres").port("postgres"),
    }
    assert defaults == expected
    from lambdaflow.stack.services import SERVICES

    assert {s.name for s in LOCAL.services} >= set(SERVICES) - {"postgres"}
    assert (LOCAL.topic.replication_factor, LOCAL.hdfs_replication, LOCAL.spark_master_url()) == (1, 1, "local[2]")


def test_addresses() -> None:
    assert topo.kafka_bootstrap("cluster") == "localhost:29092,localhost:29192,localhost:29292"
    assert topo.kafka_bootstrap("cluster", topo.COMPOSE) == "kafka-1:29092,kafka-2:29192,kafka-3:29292"
    assert topo.kafka_bootstrap("local") == "localhost:9092"
    assert topo.spark_master_url("cluster") == "spark://localhost:27077"
    assert topo.spark_master_url("cluster", topo.COMPOSE) == "spark://spark-master:27077"
    assert topo.spark_master_ui("cluster") == "http://localhost:28081"
    assert topo.spark_master_url("local") == "local[2]" and topo.spark_master_ui("local") is None
    assert topo.hdfs_url("cluster") == "hdfs://localhost:28020"
    assert topo.webhdfs_url("local") == "http://localhost:9870"
    assert topo.topology("single") is topo.topology("local")
    assert [s.name for s in topo.topology("cluster").services][:3] == ["kafka-1", "kafka-2", "kafka-3"]
    with pytest.raises(ValueError, match="unknown topology"):
        topo.topology("galaxy")
    with pytest.raises(KeyError):
        topo.spark_conf("streaming", "cluster")


def test_spark_conf_carries_the_topologys_settings() -> None:
    for app in topo.SPARK_APPS:
        conf = topo.spark_conf(app, "cluster")
        assert conf["spark.master"] == "spark://localhost:27077"
        assert conf["spark.hadoop.fs.defaultFS"] == "hdfs://localhost:28020"
        assert conf["spark.hadoop.dfs.replication"] == "2"
        assert conf["spark.cores.max"] == "2"
        # two DataNodes: a write pipeline that loses one carries on with the other
        assert conf["spark.hadoop.dfs.client.block.write.replace-datanode-on-failure.best-effort"] == "true"
    assert topo.spark_conf("ingest", "local")["spark.hadoop.dfs.replication"] == "1"


def test_daemon_configuration() -> None:
    props = CLUSTER.kafka_properties("kafka-2", topo.HOST, "/data")
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@localhost:29093,2@localhost:29193,3@localhost:29293"
    assert props["listeners"] == "PLAINTEXT://localhost:29192,CONTROLLER://localhost:29193"
    assert props["log.dirs"] == "/data/kafka-2"
    assert CLUSTER.kafka_properties("kafka-2", topo.COMPOSE)["advertised.listeners"] == "PLAINTEXT://kafka-2:29192"
    site = CLUSTER.hadoop_site("datanode-2", topo.HOST, "/run/data")
    hdfs = site["hdfs-site.xml"]
    assert site["core-site.xml"]["fs.defaultFS"] == "hdfs://localhost:28020"
    assert (hdfs["dfs.datanode.address"], hdfs["dfs.datanode.http.address"], hdfs["dfs.datanode.ipc.address"]) == (
        "localhost:29966", "localhost:29964", "localhost:29967")
    assert hdfs["dfs.datanode.data.dir"] == "file:///run/data/hdfs/data-2"
    assert hdfs["dfs.replication"] == "2" and hdfs["dfs.namenode.safemode.extension"] == "0"
    assert CLUSTER.hadoop_site("namenode", topo.COMPOSE)["hdfs-site.xml"]["dfs.namenode.rpc-bind-host"] == "0.0.0.0"
    args, env = CLUSTER.spark_daemon("spark-worker-2", topo.HOST, "/run/data")
    assert args == ["org.apache.spark.deploy.worker.Worker", "--host", "localhost", "--port", "27178",
                    "--webui-port", "28182", "--cores", "3", "--memory", "2560m", "--work-dir",
                    "/run/data/spark/worker-2", "spark://localhost:27077"]
    assert env == {"SPARK_DAEMON_MEMORY": "512m"}
    args, env = CLUSTER.spark_daemon("spark-master", topo.COMPOSE)
    assert args[args.index("--host") + 1] == "spark-master" and "-Dspark.deploy.defaultCores=1" in env["SPARK_MASTER_OPTS"]
    airflow = CLUSTER.airflow_config()
    assert (airflow["AIRFLOW__API__PORT"], airflow["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"],
            airflow["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"]) == ("28080", "28793", "28794")
    assert LOCAL.airflow_config()["AIRFLOW__API__PORT"] == "8080"
    with pytest.raises(ValueError):
        CLUSTER.spark_daemon("namenode")
    with pytest.raises(AssertionError):
        CLUSTER.kafka_properties("namenode")
    with pytest.raises(TypeError):
        CLUSTER.service("kafka-1").settings["min.insync.replicas"] = "1"  # read-only: one definition


# -- every check can fail ------------------------------------------------------------------------------

def _replace_service(t: topo.Topology, name: str, **changes) -> topo.Topology:
    return dataclasses.replace(t, services=tuple(dataclasses.replace(s, **changes) if s.name == name else s
                                                 for s in t.services))


def _with_app(t: topo.Topology, app: str, **conf: str) -> topo.Topology:
    return dataclasses.replace(t, spark_apps={**t.spark_apps, app: {**t.spark_apps[app], **conf}})


BROKEN_TOPOLOGIES = {
    "two brokers": (check_cluster_shape, lambda t: dataclasses.replace(
        t, services=tuple(s for s in t.services if s.name != "kafka-3"))),
    "topic RF 2": (check_cluster_shape, lambda t: dataclasses.replace(t, topic=dataclasses.replace(t.topic, replication_factor=2))),
    "min ISR equal to RF": (check_replication_survives_one_loss,
                            lambda t: dataclasses.replace(t, topic=dataclasses.replace(t.topic, min_insync_replicas=3))),
    "HDFS replication 1": (check_replication_survives_one_loss, lambda t: dataclasses.replace(t, hdfs_replication=1)),
    "a port of the local deployment": (check_ports, lambda t: _replace_service(t, "namenode", ports={"rpc": 8020, "http": 29870})),
    "a port twice": (check_ports, lambda t: _replace_service(t, "spark-worker-2", ports={"rpc": 27078, "ui": 28182})),
    "ingest without a real cap": (check_core_caps, lambda t: _with_app(t, topo.INGEST, **{"spark.cores.max": "4"})),
    "executors that do not fit a worker": (check_core_caps, lambda t: _with_app(t, topo.BATCH, **{"spark.executor.memory": "2g"})),
    "an uncapped broker heap": (check_heaps_fit, lambda t: _replace_service(t, "kafka-1", heap=None)),
    "heaps beyond the machine": (check_heaps_fit, lambda t: _replace_service(t, "namenode", heap="16g")),
    "DataNode waits for the scheduler": (check_start_order, lambda t: _replace_service(
        t, "datanode-1", depends_on=("namenode", "airflow-scheduler"))),
    "a broker waits for another": (check_start_order, lambda t: _replace_service(t, "kafka-2", depends_on=("kafka-1",))),
    "two DataNodes in one directory": (check_data_dirs, lambda t: _replace_service(t, "datanode-2", data_dir="hdfs/data-1")),
}


@pytest.mark.parametrize("defect", sorted(BROKEN_TOPOLOGIES))
def test_each_check_fails_on_a_broken_topology(defect: str) -> None:
    check, breaks = BROKEN_TOPOLOGIES[defect]
    check(CLUSTER)
    with pytest.raises(AssertionError):
        check(breaks(CLUSTER))
