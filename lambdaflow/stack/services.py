"""The local deployment's daemons: a KRaft Kafka broker, an HDFS NameNode and DataNode, Airflow.

All run from this checkout: the JVM daemons from jars resolved from Maven Central
(``lambdaflow.stack.jars``), Airflow from the virtualenv. Ports come from environment variables
so a second deployment (or a busy machine) can move them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.request import urlopen

from lambdaflow.config import REPO_ROOT, Settings
from lambdaflow.stack import jars
from lambdaflow.stack.daemon import DATA_DIR, RUN_DIR, Daemon, port_open

CONF_DIR = Path(__file__).parent / "conf"
VENV_BIN = Path(sys.executable).parent


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


KAFKA_PORT = _port("KAFKA_PORT", 9092)
KAFKA_CONTROLLER_PORT = _port("KAFKA_CONTROLLER_PORT", 9093)
NAMENODE_PORT = _port("HDFS_NAMENODE_PORT", 8020)
NAMENODE_HTTP_PORT = _port("HDFS_HTTP_PORT", 9870)
DATANODE_PORT = _port("HDFS_DATANODE_PORT", 9866)
DATANODE_HTTP_PORT = _port("HDFS_DATANODE_HTTP_PORT", 9864)
DATANODE_IPC_PORT = _port("HDFS_DATANODE_IPC_PORT", 9867)
AIRFLOW_PORT = _port("AIRFLOW_PORT", 8080)

JAVA = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else "java"


def default_settings() -> Settings:
    """Settings that point at this deployment (its ports, unless the environment says otherwise)."""
    return Settings.from_env()


# --------------------------------------------------------------------------------------- Kafka
KAFKA_DIR = DATA_DIR / "kafka"
KAFKA_PROPERTIES = RUN_DIR / "conf" / "kafka-server.properties"


def _kafka_properties() -> str:
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@localhost:{KAFKA_CONTROLLER_PORT}",
        f"listeners=PLAINTEXT://localhost:{KAFKA_PORT},CONTROLLER://localhost:{KAFKA_CONTROLLER_PORT}",
        f"advertised.listeners=PLAINTEXT://localhost:{KAFKA_PORT}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={KAFKA_DIR}",
        f"num.partitions={default_settings().partitions}",
        # one node: every internal topic has a single replica
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=false",
        "log.retention.hours=168",
        "num.network.threads=2",
        "num.io.threads=4",
        "",
    ])


def _kafka_java(main: str, heap: str = "512m", log_level: str = "INFO") -> list[str]:
    return [JAVA, f"-Xmx{heap}", f"-Xms{heap}" if heap == "512m" else "-Xms64m", "-XX:+UseG1GC",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={CONF_DIR / 'kafka-log4j2.properties'}",
            f"-Dlambdaflow.log.level={log_level}",
            "-cp", jars.classpath("kafka"), main]


def _prepare_kafka() -> None:
    jars.resolve("kafka")
    KAFKA_PROPERTIES.parent.mkdir(parents=True, exist_ok=True)
    KAFKA_PROPERTIES.write_text(_kafka_properties())
    if (KAFKA_DIR / "meta.properties").exists():
        return
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    cmd = _kafka_java("kafka.tools.StorageTool", heap="256m", log_level="WARN") + [
        "format", "-t", cluster_id, "-c", str(KAFKA_PROPERTIES)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def _kafka_ready() -> bool:
    from kafka import KafkaAdminClient

    if not port_open(KAFKA_PORT):
        return False
    client = KafkaAdminClient(bootstrap_servers=f"localhost:{KAFKA_PORT}", request_timeout_ms=3000)
    try:
        client.list_topics()
        return True
    finally:
        client.close()


KAFKA = Daemon(
    name="kafka",
    command=lambda: _kafka_java("kafka.Kafka") + [str(KAFKA_PROPERTIES)],
    ready=_kafka_ready,
    ports=(KAFKA_PORT, KAFKA_CONTROLLER_PORT),
    prepare=_prepare_kafka,
)

# Kafka's own command-line tools, by the name of their kafka-*.sh script.
KAFKA_TOOLS = {
    "console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "topics": "org.apache.kafka.tools.TopicCommand",
    "producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "consumer-perf-test": "org.apache.kafka.tools.ConsumerPerformance",
    "get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "log-dirs": "org.apache.kafka.tools.LogDirsCommand",
    "delete-records": "org.apache.kafka.tools.DeleteRecordsCommand",
    "storage": "kafka.tools.StorageTool",
}


def kafka_tool_command(tool: str, args: list[str]) -> list[str]:
    """The java command line of one of Kafka's tools, e.g. ``("consumer-groups", ["--list", ...])``."""
    try:
        main = KAFKA_TOOLS[tool]
    except KeyError:
        raise ValueError(f"unknown Kafka tool {tool!r}; one of: {', '.join(sorted(KAFKA_TOOLS))}") from None
    return _kafka_java(main, heap="256m", log_level="WARN") + list(args)


# ---------------------------------------------------------------------------------------- HDFS
HADOOP_CONF_DIR = RUN_DIR / "conf" / "hadoop"
HDFS_DIR = DATA_DIR / "hdfs"


def _site(properties: dict[str, str]) -> str:
    body = "".join(f"  <property><name>{k}</name><value>{v}</value></property>\n" for k, v in properties.items())
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


def _write_hadoop_conf() -> None:
    HADOOP_CONF_DIR.mkdir(parents=True, exist_ok=True)
    (HADOOP_CONF_DIR / "core-site.xml").write_text(_site({
        "fs.defaultFS": f"hdfs://localhost:{NAMENODE_PORT}",
        "hadoop.tmp.dir": str(HDFS_DIR / "tmp"),
    }))
    (HADOOP_CONF_DIR / "hdfs-site.xml").write_text(_site({
        "dfs.namenode.name.dir": f"file://{HDFS_DIR / 'name'}",
        "dfs.datanode.data.dir": f"file://{HDFS_DIR / 'data'}",
        "dfs.namenode.rpc-address": f"localhost:{NAMENODE_PORT}",
        "dfs.namenode.http-address": f"localhost:{NAMENODE_HTTP_PORT}",
        "dfs.datanode.address": f"localhost:{DATANODE_PORT}",
        "dfs.datanode.http.address": f"localhost:{DATANODE_HTTP_PORT}",
        "dfs.datanode.ipc.address": f"localhost:{DATANODE_IPC_PORT}",
        "dfs.datanode.hostname": "localhost",  # WebHDFS redirects clients to the DataNode by name
        "dfs.namenode.datanode.registration.ip-hostname-check": "false",
        "dfs.replication": "1",
        "dfs.namenode.safemode.extension": "0",
        "dfs.namenode.safemode.min.datanodes": "0",
        "dfs.permissions.enabled": "false",
        "dfs.webhdfs.enabled": "true",
        "dfs.heartbeat.interval": "2",
        "dfs.namenode.heartbeat.recheck-interval": "20000",
        "dfs.blocksize": "67108864",
        "dfs.namenode.file.close.num-committed-allowed": "1",
    }))
    (HADOOP_CONF_DIR / "log4j.properties").write_text((CONF_DIR / "hadoop-log4j.properties").read_text())
    # The daemons' HTTP servers look up webapps/<name> on the classpath. The Maven jars don't ship
    # the distribution's web UI, so give them empty web apps: WebHDFS and /jmx are registered in code.
    for app in ("hdfs", "datanode", "secondary", "static"):
        web_inf = HADOOP_CONF_DIR / "webapps" / app / "WEB-INF"
        web_inf.mkdir(parents=True, exist_ok=True)
        (web_inf / "web.xml").write_text(
            '<?xml version="1.0"?>\n<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee" version="3.1"/>\n')


def _hadoop_java(main: str, heap: str) -> list[str]:
    return [JAVA, f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{HADOOP_CONF_DIR / 'log4j.properties'}",
            f"-Dhadoop.log.dir={RUN_DIR / 'logs'}",
            "-cp", jars.classpath("hadoop", HADOOP_CONF_DIR), main]


def _prepare_namenode() -> None:
    jars.resolve("hadoop")
    _write_hadoop_conf()
    if (HDFS_DIR / "name" / "current" / "VERSION").exists():
        return
    cmd = _hadoop_java("org.apache.hadoop.hdfs.server.namenode.NameNode", "256m") + [
        "-format", "-nonInteractive", "-clusterid", "lambdaflow"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"formatting the NameNode failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


def _jmx(bean: str) -> dict:
    url = f"http://localhost:{NAMENODE_HTTP_PORT}/jmx?qry={bean}"
    with urlopen(url, timeout=3) as response:
        return json.load(response)["beans"][0]


def _namenode_ready() -> bool:
    if not port_open(NAMENODE_PORT) or not port_open(NAMENODE_HTTP_PORT):
        return False
    return _jmx("Hadoop:service=NameNode,name=NameNodeStatus").get("State") == "active"


def _datanode_ready() -> bool:
    if not port_open(DATANODE_PORT) or not port_open(DATANODE_HTTP_PORT):
        return False
    state = _jmx("Hadoop:service=NameNode,name=FSNamesystemState")
    if state.get("NumLiveDataNodes", 0) < 1:
        return False
    info = _jmx("Hadoop:service=NameNode,name=NameNodeInfo")
    return not info.get("Safemode")


NAMENODE = Daemon(
    name="namenode",
    command=lambda: _hadoop_java("org.apache.hadoop.hdfs.server.namenode.NameNode", "512m"),
    ready=_namenode_ready,
    ports=(NAMENODE_PORT, NAMENODE_HTTP_PORT),
    prepare=_prepare_namenode,
)

DATANODE = Daemon(
    name="datanode",
    command=lambda: _hadoop_java("org.apache.hadoop.hdfs.server.datanode.DataNode", "384m"),
    ready=_datanode_ready,
    ports=(DATANODE_PORT, DATANODE_HTTP_PORT, DATANODE_IPC_PORT),
    prepare=_write_hadoop_conf,
)


def hdfs_tree(settings: Settings) -> list[str]:
    return [settings.root, f"{settings.root}/landing", f"{settings.root}/quarantine", f"{settings.root}/batch",
            f"{settings.root}/speed", f"{settings.root}/checkpoints", f"{settings.root}/monitoring"]


# ------------------------------------------------------------------------------------- Airflow
AIRFLOW_HOME = RUN_DIR / "airflow"
AIRFLOW_SECRETS = AIRFLOW_HOME / "lambdaflow-secrets.json"
AIRFLOW_PASSWORDS = AIRFLOW_HOME / "simple_auth_manager_passwords.json"
AIRFLOW_USER = "admin"


def airflow_url() -> str:
    return f"http://localhost:{AIRFLOW_PORT}"


def _airflow_secrets() -> dict[str, str]:
    """Secrets and start-up facts generated at first start, kept in the (git-ignored) run directory."""
    values = json.loads(AIRFLOW_SECRETS.read_text()) if AIRFLOW_SECRETS.exists() else {}
    first_hour = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=6)
    defaults = {
        # weblogs_batch catches up from here: six hours before the deployment's first start
        "batch_start_date": first_hour.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "jwt_secret": secrets.token_urlsafe(32),
        "secret_key": secrets.token_urlsafe(32),
        "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    if defaults.keys() - values.keys():
        values = {**defaults, **values}
        AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
        AIRFLOW_SECRETS.write_text(json.dumps(values))
        AIRFLOW_SECRETS.chmod(0o600)
    return values


def ensure_admin_password() -> Path:
    if not AIRFLOW_PASSWORDS.exists():
        AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
        AIRFLOW_PASSWORDS.write_text(json.dumps({AIRFLOW_USER: secrets.token_urlsafe(12)}))
        AIRFLOW_PASSWORDS.chmod(0o600)
    return AIRFLOW_PASSWORDS


def admin_password() -> str:
    return json.loads(ensure_admin_password().read_text())[AIRFLOW_USER]


def airflow_env(settings: Settings | None = None) -> dict[str, str]:
    """The environment every Airflow process of this deployment runs with (also `airflow dags test`)."""
    settings = settings or default_settings()
    s = _airflow_secrets()
    kafka_conn = {"conn_type": "kafka", "extra": {"bootstrap.servers": settings.kafka_bootstrap,
                                                   "group.id": settings.ingest_group}}
    spark_conn = {"conn_type": "spark", "host": os.environ.get("SPARK_MASTER", "local[2]"),
                  "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"}}
    webhdfs_conn = {"conn_type": "webhdfs", "host": "localhost", "port": NAMENODE_HTTP_PORT,
                    "extra": {"hdfs_url": settings.hdfs_url}}
    env = {
        **settings.env(),
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
        "AIRFLOW__CORE__FERNET_KEY": s["fernet_key"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(AIRFLOW_PASSWORDS),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{airflow_url()}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "lambdaflow.stack.services.SQLITE_CONNECT_ARGS",
        "AIRFLOW__API__PORT": str(AIRFLOW_PORT),
        "AIRFLOW__API__HOST": "localhost",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": airflow_url(),
        "AIRFLOW__API__SECRET_KEY": s["secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": s["jwt_secret"],
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "15",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "LAMBDAFLOW_BATCH_START_DATE": os.environ.get("LAMBDAFLOW_BATCH_START_DATE")
                                       or s["batch_start_date"],
        "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(kafka_conn),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(spark_conn),
        "AIRFLOW_CONN_WEBHDFS_DEFAULT": json.dumps(webhdfs_conn),
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(VENV_BIN.parent),
        "PYSPARK_PYTHON": sys.executable,  # spark-submit's driver runs in this virtualenv
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": "*",
    }
    return {**env, **{k: v for k, v in os.environ.items() if k.startswith("AIRFLOW__") and k not in env}}


# SQLite's busy timeout for Airflow's metadata DB (default 5 s): four daemons write to it at once.
SQLITE_CONNECT_ARGS = {"timeout": 30}


def airflow_command(*args: str) -> list[str]:
    return [str(VENV_BIN / "airflow"), *args]


def migrate_airflow_db(quiet: bool = False) -> None:
    """`airflow db migrate` (idempotent; skipped when the schema is already current)."""
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    ensure_admin_password()
    stamp = AIRFLOW_HOME / ".migrated"
    version = _airflow_version()
    if stamp.exists() and stamp.read_text() == version and (AIRFLOW_HOME / "airflow.db").exists():
        return
    if not quiet:
        print("[up] migrating the Airflow metadata database ...", flush=True)
    result = subprocess.run(airflow_command("db", "migrate"), env={**os.environ, **airflow_env()},
                            capture_output=True, text=True, cwd=AIRFLOW_HOME)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    stamp.write_text(version)


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def _api_ready() -> bool:
    with urlopen(f"{airflow_url()}/api/v2/monitor/health", timeout=3) as response:
        return response.status == 200


def _health_of(component: str) -> bool:
    with urlopen(f"{airflow_url()}/api/v2/monitor/health", timeout=3) as response:
        health = json.load(response)
    return health.get(component, {}).get("status") == "healthy"


def _airflow_daemon(name: str, args: list[str], ready, ports=()) -> Daemon:
    return Daemon(name=f"airflow-{name}", command=lambda: airflow_command(*args), ready=ready,
                  ports=ports, env=airflow_env, prepare=migrate_airflow_db, timeout_s=180.0)


AIRFLOW_API = _airflow_daemon("api-server", ["api-server", "--port", str(AIRFLOW_PORT)], _api_ready,
                              ports=(AIRFLOW_PORT,))
AIRFLOW_SCHEDULER = _airflow_daemon("scheduler", ["scheduler"], lambda: _health_of("scheduler"))
AIRFLOW_DAG_PROCESSOR = _airflow_daemon("dag-processor", ["dag-processor"], lambda: _health_of("dag_processor"))
AIRFLOW_TRIGGERER = _airflow_daemon("triggerer", ["triggerer"], lambda: _health_of("triggerer"))

SERVICES: dict[str, Daemon] = {d.name: d for d in (
    KAFKA, NAMENODE, DATANODE, AIRFLOW_API, AIRFLOW_SCHEDULER, AIRFLOW_DAG_PROCESSOR, AIRFLOW_TRIGGERER)}
ALL_PORTS = sorted({p for d in SERVICES.values() for p in d.ports})


def java_version_ok() -> bool:
    return shutil.which(JAVA) is not None or os.path.exists(JAVA)
