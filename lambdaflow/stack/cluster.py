"""The cluster topology on this machine: ``lambdaflow up --topology cluster``.

Every daemon of ``lambdaflow.stack.topology.CLUSTER`` that runs on the JVM, as a process of its own
started from the same jars as the local stack: 3 KRaft brokers (each broker and controller, one
cluster id, a quorum of the 3), a NameNode and 2 DataNodes (replication 2), a Spark standalone master
and 2 workers (``spark-class`` of the pyspark distribution in the virtualenv). Ports, heaps and
settings are the topology's; pid files, logs, configuration and data live under ``.run/cluster/``,
apart from the local stack's, so both can run side by side and each can be stopped alone.

The cluster's Spark Connect server, PostgreSQL and Airflow daemons are the local stack's
(``lambdaflow.stack.services``) run in the cluster's environment (:func:`environment`: its run
directory ``.run/cluster``, its ports, ``LAMBDAFLOW_TOPOLOGY=cluster``), so there is one definition
of each; ``up`` starts them through ``python -m lambdaflow.stack up NAME...`` in that environment,
after the JVM daemons they depend on. Every ``lambdaflow`` job command (produce, ingest, batch,
demo, ...) addressing the cluster runs in the same environment (``lambdaflow.cli``).

Which topology commands address: env ``LAMBDAFLOW_TOPOLOGY``, else the one the last
``lambdaflow up --topology`` chose (``.run/topology``), else ``local`` (``lambdaflow.config``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

from lambdaflow.config import TOPOLOGY_FILE, Settings, topology_name
from lambdaflow.stack import jars
from lambdaflow.stack.daemon import RUN_DIR, Daemon, ServiceError, port_open, session_members
from lambdaflow.stack.topology import (
    AIRFLOW_API_SERVER, AIRFLOW_DAG_PROCESSOR, AIRFLOW_SCHEDULER, AIRFLOW_TRIGGERER, HDFS_DATANODE, HDFS_NAMENODE,
    KAFKA_BROKER, POSTGRES, SPARK_CONNECT, SPARK_MASTER, SPARK_WORKER, Service, Topology, topology,
)

TOPOLOGY: Topology = topology("cluster")
# A process in the cluster's environment has LAMBDAFLOW_RUN_DIR=.run/cluster: this stays the same dir
CLUSTER_DIR = Path(os.environ.get("LAMBDAFLOW_CLUSTER_DIR") or RUN_DIR / "cluster")
LOG_DIR = CLUSTER_DIR / "logs"
PID_DIR = CLUSTER_DIR / "pids"
DATA_DIR = CLUSTER_DIR / "data"
CONF_DIR = CLUSTER_DIR / "conf"
# the roles of the JVM daemons this module starts itself, in start-up order
JVM_ROLES = (KAFKA_BROKER, HDFS_NAMENODE, HDFS_DATANODE, SPARK_MASTER, SPARK_WORKER)
# the roles the local stack's code runs in the cluster's environment, in start-up order
STACK_ROLES = (SPARK_CONNECT, POSTGRES, AIRFLOW_API_SERVER, AIRFLOW_SCHEDULER, AIRFLOW_DAG_PROCESSOR,
               AIRFLOW_TRIGGERER)
ROLES = JVM_ROLES + STACK_ROLES


class ClusterDaemon(Daemon):
    """A daemon whose pid file and log live under ``.run/cluster/``; it can be launched without
    waiting, so the 3 brokers (no quorum until 2 run) start together."""

    @property
    def log_file(self) -> Path:
        return LOG_DIR / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return PID_DIR / f"{self.name}.pid"

    def launch(self, quiet: bool = False) -> bool:
        """Start the process unless it runs (up or booting); returns True when it had to."""
        if self.pid() is not None:
            return False
        self._reap_leftovers(quiet)
        self.spawn(quiet)
        return True

    def wait_ready(self) -> None:
        pid = self.pid()
        if pid is None:
            raise ServiceError(f"{self.name} is not running; see {self.log_file}:\n{self.tail()}")
        self._wait_ready(pid)


def _java() -> str:
    from lambdaflow.stack.services import JAVA

    return JAVA


def _data_root() -> str:
    return str(DATA_DIR)


# --------------------------------------------------------------------------------------- Kafka
CLUSTER_ID_FILE = DATA_DIR / "kafka-cluster-id"


def kafka_properties_text(name: str, data_root: str) -> str:
    return "".join(f"{k}={v}\n" for k, v in TOPOLOGY.kafka_properties(name, data_root=data_root).items())


def _kafka_properties_file(name: str) -> Path:
    return CONF_DIR / f"{name}.properties"


def kafka_cluster_id() -> str:
    """One id for the 3 brokers' storage, made at the first start and kept beside their data."""
    from lambdaflow.stack.services import new_kafka_cluster_id

    if CLUSTER_ID_FILE.exists():
        kept = CLUSTER_ID_FILE.read_text().strip()
        if kept and not kept.startswith("-"):
            return kept
        # an id with a leading '-' (written before this was checked) never formatted a broker: replace it
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    cluster_id = new_kafka_cluster_id()
    CLUSTER_ID_FILE.write_text(cluster_id)
    return cluster_id


def _kafka_java(main: str, heap: str, log_level: str = "INFO") -> list[str]:
    from lambdaflow.stack.services import CONF_DIR as LOG4J_DIR

    return [_java(), f"-Xmx{heap}", "-Xms64m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_DIR / 'kafka-log4j2.properties'}",
            f"-Dlambdaflow.log.level={log_level}", "-cp", jars.classpath("kafka"), main]


def _prepare_broker(broker: Service) -> None:
    jars.resolve("kafka")
    properties = _kafka_properties_file(broker.name)
    properties.parent.mkdir(parents=True, exist_ok=True)
    properties.write_text(kafka_properties_text(broker.name, _data_root()))
    if (DATA_DIR / broker.data_dir / "meta.properties").exists():
        return
    cmd = _kafka_java("kafka.tools.StorageTool", "256m", "WARN") + [
        "format", f"--cluster-id={kafka_cluster_id()}", "-c", str(properties)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"formatting {broker.name}'s storage failed:\n{result.stdout}{result.stderr}")


def live_brokers(bootstrap: str) -> list[int]:
    """Node ids of the brokers the cluster's metadata lists as alive."""
    from kafka import KafkaAdminClient

    client = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        brokers = client.describe_cluster()["brokers"]
    finally:
        client.close()
    return sorted(b.get("broker_id", b.get("node_id")) for b in brokers if not b.get("is_fenced"))


def _broker_ready(broker: Service) -> bool:
    if not port_open(broker.port("broker")):
        return False
    return int(broker.settings["node.id"]) in live_brokers(f"localhost:{broker.port('broker')}")


def _broker(broker: Service) -> ClusterDaemon:
    return ClusterDaemon(
        name=broker.name,
        command=lambda: _kafka_java("kafka.Kafka", broker.heap) + [str(_kafka_properties_file(broker.name))],
        ready=lambda: _broker_ready(broker), ports=tuple(broker.ports.values()),
        prepare=lambda: _prepare_broker(broker), timeout_s=180.0)


# ---------------------------------------------------------------------------------------- HDFS
def hadoop_conf_files(name: str, data_root: str) -> dict[str, str]:
    """core-site.xml and hdfs-site.xml of one HDFS daemon of the cluster."""
    from lambdaflow.stack.services import _site

    site = TOPOLOGY.hadoop_site(name, data_root=data_root)
    core = {**site["core-site.xml"], "hadoop.tmp.dir": f"{data_root}/tmp/{name}"}
    return {"core-site.xml": _site(core), "hdfs-site.xml": _site(site["hdfs-site.xml"])}


def _hadoop_conf_dir(name: str) -> Path:
    return CONF_DIR / f"hadoop-{name}"


def _write_hadoop_conf(name: str) -> None:
    from lambdaflow.stack.services import CONF_DIR as LOG4J_DIR

    conf = _hadoop_conf_dir(name)
    conf.mkdir(parents=True, exist_ok=True)
    for file, text in hadoop_conf_files(name, _data_root()).items():
        (conf / file).write_text(text)
    (conf / "log4j.properties").write_text((LOG4J_DIR / "hadoop-log4j.properties").read_text())
    # the Maven jars lack the distribution's web apps: empty ones (WebHDFS and /jmx are in code)
    for app in ("hdfs", "datanode", "secondary", "static"):
        web_inf = conf / "webapps" / app / "WEB-INF"
        web_inf.mkdir(parents=True, exist_ok=True)
        (web_inf / "web.xml").write_text(
            '<?xml version="1.0"?>\n<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee" version="3.1"/>\n')


def _hadoop_java(name: str, main: str, heap: str) -> list[str]:
    conf = _hadoop_conf_dir(name)
    return [_java(), f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{conf / 'log4j.properties'}", f"-Dhadoop.log.dir={LOG_DIR}",
            "-cp", jars.classpath("hadoop", conf), main]


NAMENODE_MAIN = "org.apache.hadoop.hdfs.server.namenode.NameNode"
DATANODE_MAIN = "org.apache.hadoop.hdfs.server.datanode.DataNode"


def _prepare_namenode(namenode: Service) -> None:
    jars.resolve("hadoop")
    _write_hadoop_conf(namenode.name)
    if (DATA_DIR / namenode.data_dir / "current" / "VERSION").exists():
        return
    cmd = _hadoop_java(namenode.name, NAMENODE_MAIN, "256m") + [
        "-format", "-nonInteractive", "-clusterid", "lambdaflow-cluster"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"formatting the cluster's NameNode failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


def namenode_jmx(webhdfs_url: str, bean: str) -> dict:
    with urlopen(f"{webhdfs_url}/jmx?qry={bean}", timeout=3) as response:
        return json.load(response)["beans"][0]


def live_datanode_ports(namenode_info: dict) -> list[int]:
    """Transfer ports of the live DataNodes in the NameNode's ``NameNodeInfo`` bean."""
    live = json.loads(namenode_info.get("LiveNodes") or "{}")
    return sorted(int(node.get("xferaddr", key).rsplit(":", 1)[1]) for key, node in live.items())


def live_datanodes(webhdfs_url: str) -> int:
    return int(namenode_jmx(webhdfs_url, "Hadoop:service=NameNode,name=FSNamesystemState").get("NumLiveDataNodes", 0))


def _namenode_ready(namenode: Service) -> bool:
    if not port_open(namenode.port("rpc")) or not port_open(namenode.port("http")):
        return False
    return namenode_jmx(TOPOLOGY.webhdfs_url(), "Hadoop:service=NameNode,name=NameNodeStatus").get("State") == "active"


def _datanode_ready(datanode: Service) -> bool:
    if not port_open(datanode.port("data")):
        return False
    info = namenode_jmx(TOPOLOGY.webhdfs_url(), "Hadoop:service=NameNode,name=NameNodeInfo")
    return datanode.port("data") in live_datanode_ports(info) and not info.get("Safemode")


def _hdfs_daemon(service: Service) -> ClusterDaemon:
    if service.role == HDFS_NAMENODE:
        return ClusterDaemon(name=service.name, command=lambda: _hadoop_java(service.name, NAMENODE_MAIN, service.heap),
                             ready=lambda: _namenode_ready(service), ports=tuple(service.ports.values()),
                             prepare=lambda: _prepare_namenode(service))
    return ClusterDaemon(name=service.name, command=lambda: _hadoop_java(service.name, DATANODE_MAIN, service.heap),
                         ready=lambda: _datanode_ready(service), ports=tuple(service.ports.values()),
                         prepare=lambda: (jars.resolve("hadoop"), _write_hadoop_conf(service.name)))


# --------------------------------------------------------------------------------------- Spark
def spark_home() -> Path:
    """The pyspark package directory: a Spark distribution (bin/spark-class, jars/)."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyspark is missing from the virtualenv; run `make venv`")
    return Path(list(spec.submodule_search_locations)[0])


def spark_command(name: str, data_root: str) -> tuple[list[str], dict[str, str]]:
    """``spark-class`` command line and environment of the master or a worker."""
    args, env = TOPOLOGY.spark_daemon(name, data_root=data_root)
    home = spark_home()
    env = {**env, "SPARK_HOME": str(home), "SPARK_CONF_DIR": str(CONF_DIR / "spark"),
           "SPARK_LOG_DIR": str(LOG_DIR), "SPARK_LOCAL_IP": "127.0.0.1"}
    return [str(home / "bin" / "spark-class"), *args], env


def master_state(master_ui: str) -> dict:
    """The standalone master's JSON (``/json/``): status, workers with their state, applications."""
    with urlopen(f"{master_ui}/json/", timeout=3) as response:
        return json.load(response)


def alive_worker_ports(state: dict) -> list[int]:
    return sorted(w["port"] for w in state.get("workers", []) if w.get("state") == "ALIVE")


def _master_ready() -> bool:
    return master_state(TOPOLOGY.spark_master_ui()).get("status") == "ALIVE"


def _worker_ready(worker: Service) -> bool:
    return worker.port("rpc") in alive_worker_ports(master_state(TOPOLOGY.spark_master_ui()))


def _prepare_spark(service: Service) -> None:
    (CONF_DIR / "spark").mkdir(parents=True, exist_ok=True)  # empty: settings come on the command line
    if service.data_dir:
        (DATA_DIR / service.data_dir).mkdir(parents=True, exist_ok=True)


def _spark_daemon(service: Service) -> ClusterDaemon:
    ready = _master_ready if service.role == SPARK_MASTER else (lambda: _worker_ready(service))
    return ClusterDaemon(name=service.name, command=lambda: spark_command(service.name, _data_root())[0],
                         env=lambda: spark_command(service.name, _data_root())[1], ready=ready,
                         ports=tuple(service.ports.values()), prepare=lambda: _prepare_spark(service))


# ------------------------------------------- Spark Connect, PostgreSQL, Airflow: the stack's code
# Variables that address one deployment: a process in the cluster's environment takes its own
_ADDRESS_VARS = ("KAFKA_BOOTSTRAP", "HDFS_URL", "WEBHDFS_URL", "SPARK_MASTER", "LAMBDAFLOW_SPARK_CONNECT",
                 "AIRFLOW_HOME", "KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "HDFS_NAMENODE_PORT", "HDFS_HTTP_PORT",
                 "HDFS_DATANODE_PORT", "HDFS_DATANODE_HTTP_PORT", "HDFS_DATANODE_IPC_PORT")


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process addressing the cluster with the local stack's code: the
    cluster's run directory and ports, ``LAMBDAFLOW_TOPOLOGY=cluster``, and none of another
    deployment's addresses or Airflow settings (a test session exports the local one's)."""
    base = dict(os.environ if base is None else base)
    env = {k: v for k, v in base.items()
           if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_")) and k not in _ADDRESS_VARS}
    env.update({
        "LAMBDAFLOW_TOPOLOGY": TOPOLOGY.name,
        "LAMBDAFLOW_RUN_DIR": str(CLUSTER_DIR),
        "LAMBDAFLOW_CLUSTER_DIR": str(CLUSTER_DIR),
        "AIRFLOW_PORT": str(TOPOLOGY.one(AIRFLOW_API_SERVER).port("http")),
        "AIRFLOW_DB_PORT": str(TOPOLOGY.one(POSTGRES).port("postgres")),
        "SPARK_CONNECT_PORT": str(TOPOLOGY.one(SPARK_CONNECT).port("grpc")),
    })
    return env


def in_environment() -> bool:
    """Whether this process runs in the cluster's environment (see :func:`environment`)."""
    return (os.environ.get("LAMBDAFLOW_RUN_DIR") == str(CLUSTER_DIR)
            and os.environ.get("LAMBDAFLOW_TOPOLOGY") == TOPOLOGY.name)


def airflow_url() -> str:
    return TOPOLOGY.airflow_url()


def _airflow_health(component: str | None) -> bool:
    with urlopen(f"{airflow_url()}/api/v2/monitor/health", timeout=3) as response:
        health = json.load(response)
    return component is None or health.get(component, {}).get("status") == "healthy"


def _postgres_ready(service: Service) -> bool:
    import psycopg2

    if not port_open(service.port("postgres")):
        return False
    secrets = json.loads((CLUSTER_DIR / "airflow" / "lambdaflow-secrets.json").read_text())
    psycopg2.connect(host="localhost", port=service.port("postgres"), user="airflow",
                     password=secrets["db_password"], dbname="postgres", connect_timeout=3).close()
    return True


class StackService(ClusterDaemon):
    """A service of the cluster run by the local stack's code in the cluster's environment: its pid
    file and log are under ``.run/cluster/``, so status and stop work from here; ``up`` starts
    every such service at once in a child process (``python -m lambdaflow.stack up``)."""

    def launch(self, quiet: bool = False) -> bool:
        return not self.is_up()

    def wait_ready(self) -> None:
        pass  # the child process waited for each


_STACK_READY = {
    SPARK_CONNECT: lambda s: port_open(s.port("grpc")),
    POSTGRES: _postgres_ready,
    AIRFLOW_API_SERVER: lambda s: _airflow_health(None),
    AIRFLOW_SCHEDULER: lambda s: _airflow_health("scheduler"),
    AIRFLOW_DAG_PROCESSOR: lambda s: _airflow_health("dag_processor"),
    AIRFLOW_TRIGGERER: lambda s: _airflow_health("triggerer"),
}


def _stack_service(service: Service) -> StackService:
    from lambdaflow.stack.services import _postgres_fast_shutdown

    return StackService(name=service.name, command=lambda: [], ready=lambda: _STACK_READY[service.role](service),
                        ports=tuple(service.ports.values()),
                        shutdown=_postgres_fast_shutdown if service.role == POSTGRES else None)


def _start_stack_services(names: list[str], quiet: bool) -> None:
    """Start (and wait for) the named stack services in the cluster's environment."""
    cmd = [sys.executable, "-m", "lambdaflow.stack", "up", *names] + (["--quiet"] if quiet else [])
    result = subprocess.run(cmd, env=environment())
    if result.returncode != 0:
        raise ServiceError(f"starting the cluster's {', '.join(names)} failed (exit {result.returncode}); "
                           f"logs in {LOG_DIR}")


# ------------------------------------------------------------------------------------ the whole
def _daemon(service: Service) -> ClusterDaemon:
    if service.role == KAFKA_BROKER:
        return _broker(service)
    if service.role in (HDFS_NAMENODE, HDFS_DATANODE):
        return _hdfs_daemon(service)
    if service.role in STACK_ROLES:
        return _stack_service(service)
    return _spark_daemon(service)


SERVICES: dict[str, ClusterDaemon] = {s.name: _daemon(s) for role in ROLES for s in TOPOLOGY.by_role(role)}
ALL_PORTS = sorted({p for d in SERVICES.values() for p in d.ports})


def settings() -> Settings:
    """Settings addressing the cluster, whatever the environment says about addresses."""
    return Settings.from_env().replace(kafka_bootstrap=TOPOLOGY.kafka_bootstrap(), hdfs_url=TOPOLOGY.hdfs_url(),
                                       webhdfs_url=TOPOLOGY.webhdfs_url(), partitions=TOPOLOGY.topic.partitions)


def up(services: list[str] | None = None, quiet: bool = False) -> dict[str, bool]:
    """Start the cluster's daemons that are not running, all at once, then wait for each (in
    dependency order); create the topic and the HDFS tree. Returns {name: started_now}."""
    names = list(SERVICES) if services is None else services
    unknown = set(names) - SERVICES.keys()
    if unknown:
        raise ValueError(f"unknown services {sorted(unknown)}; known in the cluster: {', '.join(SERVICES)}")
    for jar_set in ("kafka", "hadoop"):
        jars.resolve(jar_set, quiet=quiet)
    started = {}
    for name in SERVICES:
        if name in names and name not in _stack_names():
            started[name] = SERVICES[name].launch(quiet=quiet)
    for name in started:
        SERVICES[name].wait_ready()
    if all(n in names for n in _names(KAFKA_BROKER)):
        _ensure_topic(quiet)
    if all(n in names for n in _names(HDFS_NAMENODE) + _names(HDFS_DATANODE)):
        _ensure_hdfs_tree()
    stack_names = [n for n in _stack_names() if n in names]
    for name in stack_names:
        started[name] = SERVICES[name].launch(quiet=quiet)
    if any(started[n] for n in stack_names):
        _start_stack_services(stack_names, quiet)
    return started


def _stack_names() -> list[str]:
    return [s.name for role in STACK_ROLES for s in TOPOLOGY.by_role(role)]


def _names(role: str) -> list[str]:
    return [s.name for s in TOPOLOGY.by_role(role)]


def _ensure_topic(quiet: bool) -> None:
    from lambdaflow import kafka_admin

    topic = TOPOLOGY.topic
    s = settings()
    if kafka_admin.ensure_topic(s, partitions=topic.partitions, replication_factor=topic.replication_factor,
                                configs={"min.insync.replicas": str(topic.min_insync_replicas)}) and not quiet:
        print(f"[up] created topic {s.topic} with {topic.partitions} partitions, replication factor "
              f"{topic.replication_factor}, min.insync.replicas {topic.min_insync_replicas}", flush=True)


def _ensure_hdfs_tree() -> None:
    from lambdaflow import hdfs
    from lambdaflow.stack.services import hdfs_tree

    s = settings()
    client = hdfs.client(s)
    deadline = time.monotonic() + 60
    for path in hdfs_tree(s):
        while True:
            try:
                client.makedirs(path)
                break
            except Exception:  # right after start-up the NameNode may still be in safe mode
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


def down(quiet: bool = False) -> list[str]:
    """Stop every daemon of the cluster (Spark first, Kafka last), each with its whole session."""
    from concurrent.futures import ThreadPoolExecutor

    from lambdaflow.stack import stop_jobs

    # the streaming ingest and other jobs of the cluster's environment first (the batch commits)
    stopped = stop_jobs(quiet, pid_dir=PID_DIR, services=SERVICES)
    # the brokers go together: stopped one by one, the last would wait for a quorum that is gone
    brokers = _names(KAFKA_BROKER)
    for group in [[n] for n in reversed(list(SERVICES)) if n not in brokers] + [brokers]:
        with ThreadPoolExecutor(len(group)) as pool:
            results = list(pool.map(lambda n: SERVICES[n].stop(), group))
        for name, was_running in zip(group, results):
            if was_running:
                stopped.append(name)
                if not quiet:
                    print(f"[down] stopped {name}", flush=True)
    deadline = time.monotonic() + 10  # a killed JVM's sockets close a moment after it is gone
    while (busy := [p for p in ALL_PORTS if port_open(p)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    if busy:
        raise ServiceError(f"cluster ports still listening after down: {busy} (another process holds them?)")
    return stopped


def processes() -> list[int]:
    """Live processes of every cluster daemon's session (what `down` must leave none of)."""
    pids = []
    for daemon in SERVICES.values():
        sid = daemon.recorded_pid()
        if sid is not None:
            pids += session_members(sid)
    return pids


# ------------------------------------------------------------------------------------- status
def summary(topo: Topology, s: Settings) -> dict:
    """The topology keys of ``status --json``: what runs where, and how much of it is up."""
    def probe(fn, default=0):
        try:
            return fn()
        except Exception:  # a daemon down answers nothing: it counts as none up
            return default

    kafka_ports = [b.port("broker") for b in topo.by_role(KAFKA_BROKER)]
    brokers = probe(lambda: len(live_brokers(s.kafka_bootstrap))) if any(port_open(p) for p in kafka_ports) else 0
    master_ui = topo.spark_master_ui()
    workers = probe(lambda: len(alive_worker_ports(master_state(master_ui)))) if master_ui else 0
    return {
        "topology": topo.name,
        "kafka": {"bootstrap": s.kafka_bootstrap, "brokers": brokers, "topic": s.topic},
        "hdfs": {"url": s.hdfs_url, "webhdfs": s.webhdfs_url, "replication": topo.hdfs_replication,
                 "datanodes": probe(lambda: live_datanodes(s.webhdfs_url))},
        "spark": {"master": topo.spark_master_url(), "master_ui": master_ui, "workers": workers},
    }


def status() -> dict:
    from lambdaflow.stack.services import AIRFLOW_USER

    document = {"services": {name: ("up" if d.is_up() else "down") for name, d in SERVICES.items()},
                **summary(TOPOLOGY, settings()), "logs": str(LOG_DIR),
                "airflow": {"url": airflow_url(), "username": AIRFLOW_USER,
                            "password_file": str(CLUSTER_DIR / "airflow" / "simple_auth_manager_passwords.json"),
                            "metadata_db": "postgresql", "metadata_db_address": f"{TOPOLOGY.metadata_db_address()}/airflow"}}
    document["spark"]["connect"] = TOPOLOGY.spark_connect_url()
    return document


# ---------------------------------------------------------------------- remembering the choice
def remember(name: str) -> None:
    """Make ``name`` the topology later commands address (``local``: forget any other)."""
    name = topology(name).name
    if name == "local":
        TOPOLOGY_FILE.unlink(missing_ok=True)
    else:
        TOPOLOGY_FILE.parent.mkdir(parents=True, exist_ok=True)
        TOPOLOGY_FILE.write_text(name + "\n")


def forget(name: str) -> None:
    """After ``down`` of ``name``: commands go back to the local topology if ``name`` was remembered."""
    try:
        if TOPOLOGY_FILE.read_text().strip() == topology(name).name:
            TOPOLOGY_FILE.unlink()
    except OSError:
        pass


def run_command(args) -> int | None:
    """`lambdaflow up|down|status` for the cluster; None when the command is the local stack's
    alone (the caller carries on with it)."""
    chosen = getattr(args, "topology", None)
    if args.command == "up":
        if chosen:
            remember(chosen)
        elif not os.environ.get("LAMBDAFLOW_TOPOLOGY"):
            remember("local")  # a plain `up` is the local deployment's
        if topology(chosen or topology_name()).name != "cluster":
            return None
        up(services=args.services)
        document = status()
        wanted = args.services or list(SERVICES)
        print(f"[up] cluster: {', '.join(f'{n}={s}' for n, s in document['services'].items())}")
        print(f"[up] kafka {document['kafka']['bootstrap']} ({document['kafka']['brokers']} brokers), "
              f"hdfs {document['hdfs']['url']} ({document['hdfs']['datanodes']} DataNodes), "
              f"spark {document['spark']['master']} ({document['spark']['workers']} workers, UI "
              f"{document['spark']['master_ui']})")
        return 1 if any(document["services"][n] != "up" for n in wanted) else 0
    if args.command == "down":
        if chosen and topology(chosen).name == "local":
            return None
        if args.services and not chosen:
            return None  # named services are the local stack's unless --topology cluster says otherwise
        down_names = args.services
        if down_names:
            for name in down_names:
                SERVICES[name].stop()
        else:
            down()
            forget("cluster")
        return 0 if chosen else None  # no --topology: the local stack goes too
    if args.command == "status":
        if topology(chosen or topology_name()).name != "cluster":
            return None
        document = status()
        if args.json:
            print(json.dumps(document, indent=2))
        else:
            for name, state in document["services"].items():
                print(f"{name:24} {state}")
            for key in ("kafka", "hdfs", "spark"):
                print(f"{key}: " + ", ".join(f"{k}={v}" for k, v in document[key].items()))
        return 0 if all(s == "up" for s in document["services"].values()) else 3
    return None


__all__ = ["up", "down", "status", "summary", "SERVICES", "TOPOLOGY", "remember", "forget", "run_command"]
