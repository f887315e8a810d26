"""The deployment's topologies as data: which daemons run, on which ports, with which settings.

Two topologies:

- ``local`` (alias ``single``): today's ``lambdaflow up``: one KRaft broker, one NameNode and one
  DataNode, Spark in ``local[2]`` inside each driver, Airflow on PostgreSQL.
- ``cluster``: 3 KRaft brokers (each broker and controller; ``weblogs`` with RF 3 and
  ``min.insync.replicas=2``), a NameNode and 2 DataNodes (replication 2), a Spark standalone master
  and 2 workers, Airflow on PostgreSQL. Its ports do not collide with ``local``'s, so both can run
  on one machine, and its heaps fit a 2-core, 24 GiB machine.

The same definition places the daemons in two ways (``network``): ``"host"``, every daemon a
process on this machine reached at ``localhost`` (``lambdaflow up --topology cluster``), or
``"compose"``, every daemon a container reached by its service name (``docker-compose.yaml``,
generated from this module by ``python -m lambdaflow.stack.compose``). Ports are the same in both.

Settings here are the cluster's own: clients (Spark sessions, spark-submit, Kafka producers) take
them from :meth:`Topology.spark_conf` and friends instead of forcing their own.
"""

from __future__ import annotations

import dataclasses
import re
from types import MappingProxyType
from typing import Mapping

HOST = "host"        # every daemon a process on this machine, reached at localhost
COMPOSE = "compose"  # every daemon a container, reached by its service name
NETWORKS = (HOST, COMPOSE)

# Roles: what a daemon is, whichever its name.
KAFKA_BROKER = "kafka-broker"            # a KRaft broker that is also a controller
HDFS_NAMENODE = "hdfs-namenode"
HDFS_DATANODE = "hdfs-datanode"
SPARK_MASTER = "spark-master"
SPARK_WORKER = "spark-worker"
SPARK_CONNECT = "spark-connect"          # the batch layer's long-lived Spark application (gRPC)
SPARK_CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"  # in pyspark's jars
POSTGRES = "postgres"                    # Airflow's metadata DB
AIRFLOW_API_SERVER = "airflow-api-server"
AIRFLOW_SCHEDULER = "airflow-scheduler"
AIRFLOW_DAG_PROCESSOR = "airflow-dag-processor"
AIRFLOW_TRIGGERER = "airflow-triggerer"
ROLES = (KAFKA_BROKER, HDFS_NAMENODE, HDFS_DATANODE, SPARK_MASTER, SPARK_WORKER, SPARK_CONNECT, POSTGRES,
         AIRFLOW_API_SERVER, AIRFLOW_SCHEDULER, AIRFLOW_DAG_PROCESSOR, AIRFLOW_TRIGGERER)

# Spark applications of the pipeline, each with its own core cap on a standalone master.
INGEST = "ingest"  # the long-running streaming ingest
BATCH = "batch"    # batch recomputes, compaction, validation
SPARK_APPS = (INGEST, BATCH)


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclasses.dataclass(frozen=True)
class Service:
    """One daemon of a topology.

    ``ports`` names each port the daemon listens on (``{"broker": 29092, "controller": 29093}``);
    ``data_dir`` is relative to the deployment's data directory (``.run/data`` on this machine, a
    volume in compose); ``heap`` caps the JVM heap (``-Xmx``), or PostgreSQL's shared buffers;
    ``settings`` are the daemon's own configuration keys (server.properties, hdfs-site.xml, spark
    daemon options, Airflow's ``AIRFLOW__*``); ``depends_on`` the services it needs up first.
    """

    name: str
    role: str
    ports: Mapping[str, int]
    data_dir: str | None = None
    heap: str | None = None
    settings: Mapping[str, str] = dataclasses.field(default_factory=dict)
    depends_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert self.role in ROLES, self.role
        object.__setattr__(self, "ports", _frozen(self.ports))
        object.__setattr__(self, "settings", _frozen(self.settings))

    def port(self, name: str) -> int:
        return self.ports[name]


@dataclasses.dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    replication_factor: int
    min_insync_replicas: int


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str
    services: tuple[Service, ...]
    topic: Topic
    hdfs_replication: int
    # spark.master for the applications: "local[2]" or None (the topology's standalone master)
    spark_local_master: str | None
    # per application (INGEST, BATCH): the Spark configuration it is submitted with
    spark_apps: Mapping[str, Mapping[str, str]]
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "spark_apps", _frozen({k: _frozen(v) for k, v in self.spark_apps.items()}))

    # -- finding services ----------------------------------------------------------------------
    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"no service {name!r} in the {self.name} topology; "
                       f"known: {', '.join(s.name for s in self.services)}")

    def by_role(self, role: str) -> list[Service]:
        return [s for s in self.services if s.role == role]

    def one(self, role: str) -> Service:
        (service,) = self.by_role(role)
        return service

    @property
    def ports(self) -> list[int]:
        return sorted(p for s in self.services for p in s.ports.values())

    # -- addresses -----------------------------------------------------------------------------
    @staticmethod
    def host(service: Service | str, network: str = HOST) -> str:
        """Where a client reaches a service: localhost on this machine, its name in compose."""
        assert network in NETWORKS, network
        return "localhost" if network == HOST else (service if isinstance(service, str) else service.name)

    def kafka_bootstrap(self, network: str = HOST) -> str:
        return ",".join(f"{self.host(b, network)}:{b.port('broker')}" for b in self.by_role(KAFKA_BROKER))

    def hdfs_url(self, network: str = HOST) -> str:
        namenode = self.one(HDFS_NAMENODE)
        return f"hdfs://{self.host(namenode, network)}:{namenode.port('rpc')}"

    def webhdfs_url(self, network: str = HOST) -> str:
        namenode = self.one(HDFS_NAMENODE)
        return f"http://{self.host(namenode, network)}:{namenode.port('http')}"

    def spark_master_url(self, network: str = HOST) -> str:
        if self.spark_local_master:
            return self.spark_local_master
        master = self.one(SPARK_MASTER)
        return f"spark://{self.host(master, network)}:{master.port('rpc')}"

    def spark_master_ui(self, network: str = HOST) -> str | None:
        if self.spark_local_master:
            return None
        master = self.one(SPARK_MASTER)
        return f"http://{self.host(master, network)}:{master.port('ui')}"

    def spark_connect_url(self, network: str = HOST) -> str:
        """The batch layer's Spark Connect server (``sc://host:port``)."""
        server = self.one(SPARK_CONNECT)
        return f"sc://{self.host(server, network)}:{server.port('grpc')}"

    def spark_connect_server_conf(self, network: str = HOST, port: int | None = None) -> dict[str, str]:
        """What the Spark Connect server is submitted with on top of the batch application's conf:
        the gRPC address it binds and, in compose, the driver address executors call back on."""
        server = self.one(SPARK_CONNECT)
        conf = {"spark.connect.grpc.binding.address": "localhost" if network == HOST else "0.0.0.0",
                "spark.connect.grpc.binding.port": str(port or server.port("grpc")),
                # batch tasks run side by side (a backfill's hours): share the cores fairly
                "spark.scheduler.mode": "FAIR"}
        if network != HOST:
            conf.update({"spark.driver.host": server.name, "spark.driver.bindAddress": "0.0.0.0"})
        return conf

    def airflow_url(self, network: str = HOST) -> str:
        api = self.one(AIRFLOW_API_SERVER)
        return f"http://{self.host(api, network)}:{api.port('http')}"

    def metadata_db_address(self, network: str = HOST) -> str:
        db = self.one(POSTGRES)
        return f"{self.host(db, network)}:{db.port('postgres')}"

    # -- client configuration ------------------------------------------------------------------
    def spark_conf(self, app: str, network: str = HOST) -> dict[str, str]:
        """The Spark configuration an application of the pipeline is submitted with: master, core
        and memory caps, and the HDFS client settings of this topology (its replication)."""
        if app not in self.spark_apps:
            raise KeyError(f"unknown Spark application {app!r}; one of {', '.join(self.spark_apps)}")
        return {"spark.master": self.spark_master_url(network),
                "spark.hadoop.fs.defaultFS": self.hdfs_url(network),
                **self.hdfs_client_settings(),
                **self.spark_apps[app]}

    def hdfs_client_settings(self) -> dict[str, str]:
        """Hadoop client settings, as ``spark.hadoop.*`` keys (replication is the client's choice in
        HDFS: a client left on the default of 3 under-replicates every block of a 2-DataNode cluster)."""
        settings = {"dfs.replication": str(self.hdfs_replication),
                    "dfs.client.use.datanode.hostname": "true"}
        if len(self.by_role(HDFS_DATANODE)) <= 2:
            # with 2 DataNodes a write pipeline that loses one has no spare to replace it with:
            # carry on with the survivor (the NameNode re-replicates when the other returns)
            settings["dfs.client.block.write.replace-datanode-on-failure.best-effort"] = "true"
        return {f"spark.hadoop.{k}": v for k, v in settings.items()}

    # -- daemon configuration ------------------------------------------------------------------
    def kafka_properties(self, name: str, network: str = HOST, data_root: str = "/data") -> dict[str, str]:
        """server.properties of one broker; ``data_root`` is where the data directories live."""
        broker = self.service(name)
        assert broker.role == KAFKA_BROKER, name
        voters = ",".join(f"{b.settings['node.id']}@{self.host(b, network)}:{b.port('controller')}"
                          for b in self.by_role(KAFKA_BROKER))
        # on this machine every broker binds localhost; in a container every interface (an empty
        # host, as in Kafka's own compose examples: 0.0.0.0 may not be advertised)
        bind = "localhost" if network == HOST else ""
        return {
            "process.roles": "broker,controller",
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{bind}:{broker.port('broker')},CONTROLLER://{bind}:{broker.port('controller')}",
            "advertised.listeners": f"PLAINTEXT://{self.host(broker, network)}:{broker.port('broker')}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": f"{data_root}/{broker.data_dir}",
            **broker.settings,
        }

    def hadoop_site(self, name: str, network: str = HOST, data_root: str = "/data") -> dict[str, dict[str, str]]:
        """``{"core-site.xml": {...}, "hdfs-site.xml": {...}}`` for one HDFS daemon."""
        service = self.service(name)
        assert service.role in (HDFS_NAMENODE, HDFS_DATANODE), name
        namenode = self.one(HDFS_NAMENODE)
        nn_host = self.host(namenode, network)
        bind = "localhost" if network == HOST else "0.0.0.0"
        hdfs = {
            "dfs.namenode.rpc-address": f"{nn_host}:{namenode.port('rpc')}",
            "dfs.namenode.http-address": f"{nn_host}:{namenode.port('http')}",
            "dfs.replication": str(self.hdfs_replication),
            **{k: v for k, v in namenode.settings.items()},
        }
        if network == COMPOSE:
            hdfs["dfs.namenode.rpc-bind-host"] = bind
            hdfs["dfs.namenode.http-bind-host"] = bind
        if service.role == HDFS_NAMENODE:
            hdfs["dfs.namenode.name.dir"] = f"file://{data_root}/{service.data_dir}"
        else:
            hdfs.update({
                "dfs.datanode.data.dir": f"file://{data_root}/{service.data_dir}",
                "dfs.datanode.address": f"{bind}:{service.port('data')}",
                "dfs.datanode.http.address": f"{bind}:{service.port('http')}",
                "dfs.datanode.ipc.address": f"{bind}:{service.port('ipc')}",
                # WebHDFS and HDFS clients are sent to a DataNode by this name
                "dfs.datanode.hostname": self.host(service, network),
                **service.settings,
            })
        return {"core-site.xml": {"fs.defaultFS": self.hdfs_url(network)}, "hdfs-site.xml": hdfs}

    def spark_daemon(self, name: str, network: str = HOST, data_root: str = "/data") -> tuple[list[str], dict[str, str]]:
        """``(args, env)`` of a Spark master or worker: ``spark-class *args`` with ``env`` added.
        The RPC port binds the address clients use (``--host``); the web UI binds every interface."""
        service = self.service(name)
        host = self.host(service, network)
        env = {"SPARK_DAEMON_MEMORY": service.heap}
        if service.role == SPARK_MASTER:
            args = ["org.apache.spark.deploy.master.Master", "--host", host,
                    "--port", str(service.port("rpc")), "--webui-port", str(service.port("ui"))]
            env["SPARK_MASTER_OPTS"] = " ".join(f"-D{k}={v}" for k, v in service.settings.items())
        elif service.role == SPARK_WORKER:
            args = ["org.apache.spark.deploy.worker.Worker", "--host", host,
                    "--port", str(service.port("rpc")), "--webui-port", str(service.port("ui")),
                    "--cores", service.settings["cores"], "--memory", service.settings["memory"],
                    "--work-dir", f"{data_root}/{service.data_dir}", self.spark_master_url(network)]
        else:
            raise ValueError(f"{name} is not a Spark daemon")
        return args, env

    def airflow_config(self) -> dict[str, str]:
        """``AIRFLOW__*`` settings every Airflow process of this topology shares: its ports (the
        api-server fetches task logs from the scheduler's and triggerer's log servers) and sizes."""
        config = {}
        for service in self.services:
            if service.role.startswith("airflow-"):
                config.update(service.settings)
        api = self.one(AIRFLOW_API_SERVER)
        config["AIRFLOW__API__PORT"] = str(api.port("http"))
        scheduler, triggerer = self.one(AIRFLOW_SCHEDULER), self.one(AIRFLOW_TRIGGERER)
        if "health" in scheduler.ports:
            config["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] = str(scheduler.port("health"))
        if "logs" in scheduler.ports:
            config["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(scheduler.port("logs"))
        if "logs" in triggerer.ports:
            config["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(triggerer.port("logs"))
        return config

    # -- sizing --------------------------------------------------------------------------------
    def memory_mb(self) -> int:
        """Heap caps of every daemon plus the Spark executors and drivers the workers may host."""
        total = sum(to_mb(s.heap) for s in self.services if s.heap)
        # a Spark Connect service is the batch application's driver: its heap is counted above
        served = {BATCH} if self.by_role(SPARK_CONNECT) else set()
        for name, app in self.spark_apps.items():
            if name not in served:
                total += to_mb(app.get("spark.driver.memory", "1g"))
            if not self.spark_local_master:
                executors = int(app["spark.cores.max"]) // int(app["spark.executor.cores"])
                total += executors * to_mb(app["spark.executor.memory"])
        return total


def to_mb(size: str) -> int:
    """``"512m"`` -> 512, ``"2g"`` -> 2048 (JVM size syntax)."""
    m = re.fullmatch(r"(\d+)([kmgKMG])", size)
    if not m:
        raise ValueError(f"not a JVM size: {size!r}")
    n, unit = int(m.group(1)), m.group(2).lower()
    return {"k": n // 1024, "m": n, "g": n * 1024}[unit]


# ------------------------------------------------------------------------------------ local
_LOCAL_SPARK = {
    "spark.sql.shuffle.partitions": "3",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.driver.memory": "1g",
}

LOCAL = Topology(
    name="local",
    description="one KRaft broker, one NameNode and one DataNode, Spark local[2], Airflow on PostgreSQL",
    services=(
        Service("kafka", KAFKA_BROKER, {"broker": 9092, "controller": 9093}, data_dir="kafka", heap="512m",
                settings={"node.id": "1", "num.partitions": "3",
                          "offsets.topic.replication.factor": "1",
                          "transaction.state.log.replication.factor": "1", "transaction.state.log.min.isr": "1",
                          "share.coordinator.state.topic.replication.factor": "1",
                          "share.coordinator.state.topic.min.isr": "1"}),
        Service("namenode", HDFS_NAMENODE, {"rpc": 8020, "http": 9870}, data_dir="hdfs/name", heap="512m",
                settings={"dfs.namenode.safemode.extension": "0", "dfs.namenode.safemode.min.datanodes": "0",
                          "dfs.permissions.enabled": "false", "dfs.webhdfs.enabled": "true"}),
        Service("datanode", HDFS_DATANODE, {"data": 9866, "http": 9864, "ipc": 9867}, data_dir="hdfs/data",
                heap="384m", depends_on=("namenode",)),
        # the batch application's driver: its heap is the batch app's spark.driver.memory
        Service("spark-connect", SPARK_CONNECT, {"grpc": 15002}, heap=_LOCAL_SPARK["spark.driver.memory"],
                depends_on=("namenode",)),
        Service("postgres", POSTGRES, {"postgres": 5433}, data_dir="postgres", heap="64m"),
        Service("airflow-api-server", AIRFLOW_API_SERVER, {"http": 8080}, depends_on=("postgres",),
                settings={"AIRFLOW__CORE__PARALLELISM": "4"}),
        Service("airflow-scheduler", AIRFLOW_SCHEDULER, {}, depends_on=("postgres", "airflow-api-server")),
        Service("airflow-dag-processor", AIRFLOW_DAG_PROCESSOR, {}, depends_on=("postgres",)),
        Service("airflow-triggerer", AIRFLOW_TRIGGERER, {}, depends_on=("postgres", "airflow-api-server")),
    ),
    topic=Topic("weblogs", partitions=3, replication_factor=1, min_insync_replicas=1),
    hdfs_replication=1,
    spark_local_master="local[2]",
    spark_apps={INGEST: _LOCAL_SPARK, BATCH: _LOCAL_SPARK},
)


# ---------------------------------------------------------------------------------- cluster
# Ports: the local topology's plus 20000 (29092 is "Kafka", 28020 "NameNode RPC"), each further
# broker or DataNode 100 above the previous one, so `local` and `cluster` can run side by side.
_BROKERS = 3
_DATANODES = 2
_WORKERS = 2
# Task slots each worker offers (2 physical cores in all: slots, not CPUs). 3 per worker: the
# deployment's ingest, the Spark Connect server and one more application (another ingest, e.g.
# a test's or `make chaos`'s, or a spark-submit batch job) each get an executor on both workers.
_WORKER_CORES = 3
_WORKER_MEMORY = "2560m"  # what a worker may give its executors: 3 of 768m
_TOPIC = Topic("weblogs", partitions=3, replication_factor=3, min_insync_replicas=2)
_HDFS_REPLICATION = 2

_KAFKA_SETTINGS = {
    "num.partitions": str(_TOPIC.partitions),
    "default.replication.factor": str(_TOPIC.replication_factor),
    "min.insync.replicas": str(_TOPIC.min_insync_replicas),
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "unclean.leader.election.enable": "false",
    "auto.create.topics.enable": "false",
    "group.initial.rebalance.delay.ms": "0",
    "num.network.threads": "2",
    "num.io.threads": "2",
}

_HDFS_SETTINGS = {
    # No wait for DataNodes beyond the block reports: after a restart with data the NameNode leaves
    # safe mode as soon as the DataNodes (started without waiting for it) have reported.
    "dfs.namenode.safemode.extension": "0",
    "dfs.namenode.safemode.min.datanodes": "0",
    "dfs.namenode.datanode.registration.ip-hostname-check": "false",
    "dfs.permissions.enabled": "false",
    "dfs.webhdfs.enabled": "true",
    "dfs.heartbeat.interval": "2",
    "dfs.namenode.heartbeat.recheck-interval": "20000",  # a dead DataNode is noticed in ~1 minute
}

# Core caps: 2 workers x 3 slots = 6. The ingest and the batch application (the Spark Connect
# server) take 2 each, one executor of one core on each worker, so neither starves the other, with
# room for a third application; when a worker dies each keeps the executor on the survivor.
_SPARK_COMMON = {
    "spark.executor.cores": "1",
    "spark.executor.memory": "768m",
    "spark.driver.memory": "1g",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.ui.enabled": "true",
    "spark.ui.port": "24040",  # the local topology's drivers keep their UI off; these count up from here
}
_SPARK_APPS = {
    INGEST: {**_SPARK_COMMON, "spark.cores.max": "2"},
    BATCH: {**_SPARK_COMMON, "spark.cores.max": "2"},
}


def _cluster_services() -> tuple[Service, ...]:
    brokers = tuple(
        Service(f"kafka-{i}", KAFKA_BROKER,
                {"broker": 29092 + 100 * (i - 1), "controller": 29093 + 100 * (i - 1)},
                data_dir=f"kafka-{i}", heap="512m", settings={"node.id": str(i), **_KAFKA_SETTINGS})
        for i in range(1, _BROKERS + 1))
    namenode = Service("namenode", HDFS_NAMENODE, {"rpc": 28020, "http": 29870}, data_dir="hdfs/name",
                       heap="512m", settings=_HDFS_SETTINGS)
    # DataNodes start without waiting for the NameNode to leave safe mode: it needs their reports to
    datanodes = tuple(
        Service(f"datanode-{i}", HDFS_DATANODE,
                {"data": 29866 + 100 * (i - 1), "http": 29864 + 100 * (i - 1), "ipc": 29867 + 100 * (i - 1)},
                data_dir=f"hdfs/data-{i}", heap="384m", depends_on=("namenode",))
        for i in range(1, _DATANODES + 1))
    master = Service("spark-master", SPARK_MASTER, {"rpc": 27077, "ui": 28081}, heap="512m", settings={
                         # an application that sets no cap gets this many cores, never all of them
                         "spark.deploy.defaultCores": "1",
                         "spark.deploy.spreadOut": "true",
                         "spark.worker.timeout": "30",
                     })
    workers = tuple(
        Service(f"spark-worker-{i}", SPARK_WORKER, {"rpc": 27078 + 100 * (i - 1), "ui": 28082 + 100 * (i - 1)},
                data_dir=f"spark/worker-{i}", heap="512m", depends_on=("spark-master",),
                settings={"cores": str(_WORKER_CORES), "memory": _WORKER_MEMORY})
        for i in range(1, _WORKERS + 1))
    # the batch application's driver on the master (its executors count under BATCH below);
    # 25002, not 15002 + 20000: ports stay below Linux's ephemeral range (32768 and up)
    spark_connect = Service("spark-connect", SPARK_CONNECT, {"grpc": 25002}, heap=_SPARK_APPS[BATCH]["spark.driver.memory"],
                            depends_on=("spark-master", "namenode"))
    postgres = Service("postgres", POSTGRES, {"postgres": 25433}, data_dir="postgres", heap="64m")
    data = tuple(s.name for s in (*brokers, namenode, *datanodes, master, *workers, spark_connect))
    airflow_common = {
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    }
    airflow = (
        Service("airflow-api-server", AIRFLOW_API_SERVER, {"http": 28080}, depends_on=("postgres",),
                settings={**airflow_common, "AIRFLOW__API__WORKERS": "1"}),
        # the scheduler runs the tasks (LocalExecutor): spark-submit drivers, producers, the lag monitor
        Service("airflow-scheduler", AIRFLOW_SCHEDULER, {"health": 28974, "logs": 28793},
                depends_on=("postgres", "airflow-api-server", *data),
                settings={**airflow_common, "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True"}),
        Service("airflow-dag-processor", AIRFLOW_DAG_PROCESSOR, {}, depends_on=("postgres",),
                settings=airflow_common),
        Service("airflow-triggerer", AIRFLOW_TRIGGERER, {"logs": 28794},
                depends_on=("postgres", "airflow-api-server"), settings=airflow_common),
    )
    return (*brokers, namenode, *datanodes, master, *workers, spark_connect, postgres, *airflow)


CLUSTER = Topology(
    name="cluster",
    description="3 KRaft brokers (weblogs RF 3, min.insync.replicas 2), NameNode + 2 DataNodes "
                "(replication 2), Spark standalone master + 2 workers, Airflow on PostgreSQL",
    services=_cluster_services(),
    topic=_TOPIC,
    hdfs_replication=_HDFS_REPLICATION,
    spark_local_master=None,
    spark_apps=_SPARK_APPS,
)

TOPOLOGIES: dict[str, Topology] = {t.name: t for t in (LOCAL, CLUSTER)}
ALIASES = {"single": "local"}
DEFAULT = "local"


def topology(name: str = DEFAULT) -> Topology:
    """``topology("cluster").services``; ``"single"`` is another name for ``"local"``."""
    key = ALIASES.get(name, name)
    try:
        return TOPOLOGIES[key]
    except KeyError:
        raise ValueError(f"unknown topology {name!r}; one of: {', '.join(TOPOLOGIES)}") from None


def kafka_bootstrap(name: str = DEFAULT, network: str = HOST) -> str:
    return topology(name).kafka_bootstrap(network)


def spark_master_url(name: str = DEFAULT, network: str = HOST) -> str:
    return topology(name).spark_master_url(network)


def spark_master_ui(name: str = DEFAULT, network: str = HOST) -> str | None:
    return topology(name).spark_master_ui(network)


def hdfs_url(name: str = DEFAULT, network: str = HOST) -> str:
    return topology(name).hdfs_url(network)


def webhdfs_url(name: str = DEFAULT, network: str = HOST) -> str:
    return topology(name).webhdfs_url(network)


def spark_conf(app: str, name: str = DEFAULT, network: str = HOST) -> dict[str, str]:
    return topology(name).spark_conf(app, network)
