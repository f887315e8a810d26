"""docker-compose.yaml, generated from the cluster topology (``lambdaflow.stack.topology``).

    python -m lambdaflow.stack.compose > docker-compose.yaml     # the committed file
    python -m lambdaflow.stack.compose env > .env                 # fresh secrets for `docker compose up`

Services, ports, replication, core caps and heaps all come from ``topology("cluster")`` with
``network="compose"`` (each daemon reached by its service name), so the compose cluster and the
cluster on this machine cannot drift; tests/unit/test_compose.py checks the committed file equals
this module's output. Images are built from ``docker/<image>/Dockerfile``; the JVM ones resolve
the local stack's own poms (``jars/<set>/pom.xml``) with Maven inside the build.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import sys
import xml.etree.ElementTree as ET

from lambdaflow.config import REPO_ROOT
from lambdaflow.stack import topology as topo

CLUSTER = topo.topology("cluster")
NET = topo.COMPOSE
DATA_ROOT = "/data"                          # each daemon's volume, inside its container
SPARK_CONF_DIR = "/opt/lambdaflow-spark-conf"  # spark-defaults.conf of the Airflow containers' spark-submit
HDFS_CONF_DIR = "/etc/hadoop"
KAFKA_PROPERTIES = "/etc/lambdaflow/server.properties"
HDFS_USER = "lambdaflow"
INGEST_GROUP = "lambdaflow-ingest"

# Variables read from .env. Secrets have no default: `docker compose` refuses to start without them.
SECRETS = {
    "AIRFLOW_ADMIN_USER": "the Airflow admin's login name",
    "AIRFLOW_ADMIN_PASSWORD": "the Airflow admin's password",
    "AIRFLOW_FERNET_KEY": "encrypts connection passwords in the metadata DB",
    "AIRFLOW_SECRET_KEY": "signs the API server's sessions",
    "AIRFLOW_JWT_SECRET": "signs the tokens every Airflow process exchanges",
    "POSTGRES_PASSWORD": "the metadata DB's password",
}
SETTINGS = {  # name: (default, what it is)
    "AIRFLOW_UID": ("50000", "the uid the Airflow containers run as (`id -u` on Linux keeps files in the mounted checkout yours)"),
    "AIRFLOW_UI_PORT": ("8080", "the host port of the Airflow UI and REST API (the only published port)"),
    "KAFKA_CLUSTER_ID": ("bGFtYmRhZmxvdy1rcmFmdA", "the KRaft cluster id: 16 bytes, base64url without padding (22 characters)"),
}
_REQUIRED_HINT = "is required in .env: python -m lambdaflow.stack.compose env > .env"


def required(name: str) -> str:
    return f"${{{name}:?{name} {_REQUIRED_HINT}}}"


def setting(name: str) -> str:
    return f"${{{name}:-{SETTINGS[name][0]}}}"


# ------------------------------------------------------------------------------- versions
def pom_property(jar_set: str, name: str) -> str:
    """A <properties> value of jars/<jar_set>/pom.xml (the version the local stack resolves)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(REPO_ROOT / "jars" / jar_set / "pom.xml").getroot()
    value = root.find(f"m:properties/m:{name}", ns)
    if value is None:
        raise KeyError(f"jars/{jar_set}/pom.xml has no property {name}")
    return value.text.strip()


def requirement_pin(package: str) -> str:
    text = (REPO_ROOT / "requirements.txt").read_text()
    m = re.search(rf"^{re.escape(package)}==(\S+)", text, re.M)
    if not m:
        raise KeyError(f"requirements.txt pins no {package}")
    return m.group(1)


def images() -> dict[str, dict]:
    """Image name and build of each image of the cluster, tagged with the version it runs."""
    return {
        "kafka": {"image": f"lambdaflow/kafka:{pom_property('kafka', 'kafka.version')}",
                  "build": {"context": ".", "dockerfile": "docker/kafka/Dockerfile"}},
        "hadoop": {"image": f"lambdaflow/hadoop:{pom_property('hadoop', 'hadoop.version')}",
                   "build": {"context": ".", "dockerfile": "docker/hadoop/Dockerfile"}},
        "spark": {"image": f"lambdaflow/spark:{requirement_pin('pyspark')}",
                  "build": {"context": ".", "dockerfile": "docker/spark/Dockerfile"}},
        "airflow": {"image": f"lambdaflow/airflow:{requirement_pin('apache-airflow')}",
                    "build": {"context": ".", "dockerfile": "docker/airflow/Dockerfile",
                              "args": {"AIRFLOW_VERSION": requirement_pin("apache-airflow")}}},
        "postgres": {"image": "postgres:18"},
    }


# ------------------------------------------------------------------------ configuration files
def properties(values: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


def site_xml(values: dict[str, str]) -> str:
    body = "".join(f"  <property><name>{k}</name><value>{v}</value></property>\n" for k, v in values.items())
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


def spark_defaults(values: dict[str, str]) -> str:
    return "".join(f"{k} {v}\n" for k, v in values.items())


def spark_defaults_conf() -> dict[str, str]:
    """spark-defaults.conf of every spark-submit in the Airflow containers. One file serves every
    application, so it holds the settings the ingest and the batch applications share (their core
    caps are equal in the cluster topology; a cap that differed would need the submitting code to
    pass ``topology.spark_conf(app)`` itself)."""
    ingest, batch = (CLUSTER.spark_conf(app, NET) for app in (topo.INGEST, topo.BATCH))
    return {k: v for k, v in batch.items() if ingest.get(k) == v}


def configs() -> dict[str, dict]:
    out = {}
    for broker in CLUSTER.by_role(topo.KAFKA_BROKER):
        out[f"{broker.name}-server-properties"] = {
            "content": properties(CLUSTER.kafka_properties(broker.name, NET, DATA_ROOT))}
    for service in [*CLUSTER.by_role(topo.HDFS_NAMENODE), *CLUSTER.by_role(topo.HDFS_DATANODE)]:
        for file, values in CLUSTER.hadoop_site(service.name, NET, DATA_ROOT).items():
            out[f"{service.name}-{file.replace('.xml', '')}"] = {"content": site_xml(values)}
    out["spark-defaults"] = {"content": spark_defaults(spark_defaults_conf())}
    return out


# ------------------------------------------------------------------------------- services
def healthcheck(test: list[str] | str, interval: str = "15s", retries: int = 20, start_period: str = "20s") -> dict:
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    return {"test": test, "interval": interval, "timeout": "10s", "retries": retries, "start_period": start_period}


def healthy(*names: str) -> dict:
    return {name: {"condition": "service_healthy"} for name in names}


def tcp_probe(host: str, port: int) -> str:
    return f"bash -c '</dev/tcp/{host}/{port}'"


def _volume(service: topo.Service) -> str:
    return f"{service.name}-data"


def kafka_services() -> dict[str, dict]:
    image = images()["kafka"]
    services = {}
    brokers = CLUSTER.by_role(topo.KAFKA_BROKER)
    for broker in brokers:
        services[broker.name] = {
            **image,
            "hostname": broker.name,
            "restart": "unless-stopped",
            "environment": {"KAFKA_CLUSTER_ID": setting("KAFKA_CLUSTER_ID"), "KAFKA_HEAP": broker.heap},
            "configs": [{"source": f"{broker.name}-server-properties", "target": KAFKA_PROPERTIES}],
            "volumes": [f"{_volume(broker)}:{DATA_ROOT}"],
            # the broker's PLAINTEXT listener, at the name it advertises
            "healthcheck": healthcheck(tcp_probe(broker.name, broker.port("broker"))),
        }
    topic = CLUSTER.topic
    bootstrap = CLUSTER.kafka_bootstrap(NET)
    create = (f"kafka-run org.apache.kafka.tools.TopicCommand --bootstrap-server {bootstrap} --create --if-not-exists"
              f" --topic {topic.name} --partitions {topic.partitions} --replication-factor {topic.replication_factor}"
              f" --config min.insync.replicas={topic.min_insync_replicas}")
    services["kafka-init"] = {
        # Creates the topic (idempotent; retried until the quorum answers), then stays up:
        # healthy means "the topic exists".
        **image,
        "init": True,
        "restart": "no",
        "entrypoint": ["/bin/bash", "-c"],
        "command": [
            "set -u\n"
            f"until {create}; do sleep 5; done\n"
            f"kafka-run org.apache.kafka.tools.TopicCommand --bootstrap-server {bootstrap} --describe --topic {topic.name}\n"
            "touch /tmp/topic-ready\n"
            "exec sleep infinity\n"],
        "healthcheck": healthcheck("test -f /tmp/topic-ready", interval="5s", retries=120, start_period="10s"),
        "depends_on": healthy(*(b.name for b in brokers)),
    }
    return services


def hdfs_services() -> dict[str, dict]:
    image = images()["hadoop"]
    services = {}
    for service in [*CLUSTER.by_role(topo.HDFS_NAMENODE), *CLUSTER.by_role(topo.HDFS_DATANODE)]:
        namenode = service.role == topo.HDFS_NAMENODE
        probe = (f"curl -fsS 'http://{service.name}:{service.port('http')}/jmx?qry=Hadoop:service=NameNode,name=NameNodeStatus'"
                 " | grep -Eq '\"State\" *: *\"active\"'" if namenode
                 else f"curl -fsS -o /dev/null http://{service.name}:{service.port('http')}/jmx")
        services[service.name] = {
            **image,
            "hostname": service.name,
            "restart": "unless-stopped",
            "command": ["hdfs", "namenode" if namenode else "datanode"],
            "environment": {"HDFS_HEAP": service.heap, "HADOOP_USER_NAME": HDFS_USER},
            "configs": [{"source": f"{service.name}-{f}-site", "target": f"{HDFS_CONF_DIR}/{f}-site.xml"}
                        for f in ("core", "hdfs")],
            "volumes": [f"{_volume(service)}:{DATA_ROOT}"],
            # Up, not "out of safe mode": after a restart with data the NameNode leaves safe mode only
            # once the DataNodes, which wait for this check, have reported their blocks.
            "healthcheck": healthcheck(probe),
            **({"depends_on": healthy(*service.depends_on)} if service.depends_on else {}),
        }
    datanodes = [d.name for d in CLUSTER.by_role(topo.HDFS_DATANODE)]
    from lambdaflow.config import Settings
    from lambdaflow.stack.services import hdfs_tree

    tree = " ".join(hdfs_tree(Settings()))
    services["hdfs-init"] = {
        # Waits for the NameNode to leave safe mode (the DataNodes have reported), makes the
        # landing zone's tree, then stays up: healthy means "HDFS takes writes".
        **image,
        "init": True,
        "restart": "no",
        "entrypoint": ["/bin/bash", "-c"],
        "command": ["set -eu\n"
                    "hdfs dfsadmin -safemode wait\n"
                    f"hdfs dfs -mkdir -p {tree}\n"
                    "touch /tmp/hdfs-ready\n"
                    "exec sleep infinity\n"],
        "environment": {"HADOOP_USER_NAME": HDFS_USER},
        "configs": [{"source": "namenode-core-site", "target": f"{HDFS_CONF_DIR}/core-site.xml"},
                    {"source": "namenode-hdfs-site", "target": f"{HDFS_CONF_DIR}/hdfs-site.xml"}],
        "healthcheck": healthcheck("test -f /tmp/hdfs-ready", interval="5s", retries=120, start_period="10s"),
        "depends_on": healthy(*datanodes),
    }
    return services


def spark_services() -> dict[str, dict]:
    image = images()["spark"]
    master = CLUSTER.one(topo.SPARK_MASTER)
    master_args, master_env = CLUSTER.spark_daemon(master.name, NET, DATA_ROOT)
    services = {
        master.name: {
            **image,
            "hostname": master.name,
            "restart": "unless-stopped",
            # The master binds its RPC port on --host (this container's name, the spark:// URL's
            # host); its web UI binds every interface.
            "command": ["spark-class", *master_args],
            "environment": master_env,
            "healthcheck": healthcheck(
                f"curl -fsS http://{master.name}:{master.port('ui')}/json/ | grep -Eq '\"status\" *: *\"ALIVE\"'"
                f" && {tcp_probe(master.name, master.port('rpc'))}"),
        },
    }
    for worker in CLUSTER.by_role(topo.SPARK_WORKER):
        args, env = CLUSTER.spark_daemon(worker.name, NET, DATA_ROOT)
        services[worker.name] = {
            **image,
            "hostname": worker.name,
            "restart": "unless-stopped",
            "command": ["spark-class", *args],
            "environment": env,
            "volumes": [f"{_volume(worker)}:{DATA_ROOT}"],
            "healthcheck": healthcheck(
                f"curl -fsS http://{worker.name}:{worker.port('ui')}/json/ | grep -q {CLUSTER.spark_master_url(NET)}"),
            "depends_on": healthy(*worker.depends_on),
        }
    return services


def spark_connect_service() -> dict[str, dict]:
    """The batch layer's Spark Connect server: a driver on the Spark image, its executors on the
    workers (the batch application's core cap), reached by the Airflow containers' batch tasks."""
    server = CLUSTER.one(topo.SPARK_CONNECT)
    conf = {**{k: v for k, v in CLUSTER.spark_conf(topo.BATCH, NET).items()
               if k not in ("spark.master", "spark.driver.memory")},
            **CLUSTER.spark_connect_server_conf(NET)}
    command = ["spark-submit", "--class", topo.SPARK_CONNECT_CLASS, "--name", "lambdaflow-spark-connect",
               "--master", CLUSTER.spark_master_url(NET), "--driver-memory", server.heap]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    return {server.name: {
        **images()["spark"],
        "hostname": server.name,
        "restart": "unless-stopped",
        "command": command,
        "environment": {"HADOOP_USER_NAME": HDFS_USER},
        "healthcheck": healthcheck(tcp_probe(server.name, server.port("grpc"))),
        "depends_on": healthy(*[("hdfs-init" if CLUSTER.service(n).role == topo.HDFS_NAMENODE else n)
                                for n in server.depends_on]),
    }}


def airflow_environment() -> dict[str, str]:
    namenode = CLUSTER.one(topo.HDFS_NAMENODE)
    master = CLUSTER.one(topo.SPARK_MASTER)
    bootstrap = CLUSTER.kafka_bootstrap(NET)
    import json

    return {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
            f"postgresql+psycopg2://airflow:{required('POSTGRES_PASSWORD')}@{CLUSTER.metadata_db_address(NET)}/airflow",
        "AIRFLOW__CORE__FERNET_KEY": required("AIRFLOW_FERNET_KEY"),
        # shared by every Airflow process: tokens signed by the scheduler are checked by the api-server
        "AIRFLOW__API__SECRET_KEY": required("AIRFLOW_SECRET_KEY"),
        "AIRFLOW__API_AUTH__JWT_SECRET": required("AIRFLOW_JWT_SECRET"),
        "AIRFLOW__API__HOST": "0.0.0.0",
        "AIRFLOW__API__BASE_URL": f"http://localhost:{setting('AIRFLOW_UI_PORT')}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{CLUSTER.airflow_url(NET)}/execution/",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "0.0.0.0",
        "AIRFLOW__CORE__DAGS_FOLDER": "/opt/lambdaflow/dags",
        "AIRFLOW__CORE__PLUGINS_FOLDER": "/opt/lambdaflow/plugins",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        **CLUSTER.airflow_config(),
        # lambdaflow: the checkout is mounted at /opt/lambdaflow; the jars are in the image
        "PYTHONPATH": "/opt/lambdaflow",
        "VIRTUAL_ENV": "/home/airflow/.local",  # where pip put spark-submit in this image
        "LAMBDAFLOW_TOPOLOGY": CLUSTER.name,
        "LAMBDAFLOW_RUN_DIR": "/opt/lambdaflow-run",  # not the checkout's .run (the local stack's)
        "KAFKA_BOOTSTRAP": bootstrap,
        "LAMBDAFLOW_TOPIC": CLUSTER.topic.name,
        "LAMBDAFLOW_PARTITIONS": str(CLUSTER.topic.partitions),
        "LAMBDAFLOW_INGEST_GROUP": INGEST_GROUP,
        "HDFS_URL": CLUSTER.hdfs_url(NET),
        "WEBHDFS_URL": CLUSTER.webhdfs_url(NET),
        "HADOOP_USER_NAME": HDFS_USER,
        "SPARK_MASTER": CLUSTER.spark_master_url(NET),
        "LAMBDAFLOW_SPARK_CONNECT": CLUSTER.spark_connect_url(NET),
        "SPARK_CONF_DIR": SPARK_CONF_DIR,
        # connections (ARCHITECTURE: kafka_default, spark_default, webhdfs_default through AIRFLOW_CONN_*)
        "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(
            {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap, "group.id": INGEST_GROUP}}),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(
            {"conn_type": "spark", "host": f"spark://{master.name}", "port": master.port("rpc"),
             "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"}}),
        "AIRFLOW_CONN_SPARK_CONNECT_DEFAULT": json.dumps(
            {"conn_type": "spark_connect", "host": CLUSTER.one(topo.SPARK_CONNECT).name,
             "port": CLUSTER.one(topo.SPARK_CONNECT).port("grpc")}),
        "AIRFLOW_CONN_WEBHDFS_DEFAULT": json.dumps(
            {"conn_type": "webhdfs", "host": namenode.name, "port": namenode.port("http"),
             "extra": {"hdfs_url": CLUSTER.hdfs_url(NET)}}),
    }


def airflow_services() -> dict[str, dict]:
    image = images()["airflow"]
    db = CLUSTER.one(topo.POSTGRES)
    common = {
        **image,
        "user": f"{setting('AIRFLOW_UID')}:0",
        "restart": "unless-stopped",
        "environment": airflow_environment(),
        "configs": [{"source": "spark-defaults", "target": f"{SPARK_CONF_DIR}/spark-defaults.conf"}],
        "volumes": [".:/opt/lambdaflow", "airflow-logs:/opt/airflow/logs", "lambdaflow-run:/opt/lambdaflow-run"],
    }
    services = {
        db.name: {
            "image": images()["postgres"]["image"],
            "hostname": db.name,
            "restart": "unless-stopped",
            "command": ["postgres", "-c", f"port={db.port('postgres')}", "-c", f"shared_buffers={db.heap.upper()}B"],
            "environment": {"POSTGRES_USER": "airflow", "POSTGRES_PASSWORD": required("POSTGRES_PASSWORD"),
                            "POSTGRES_DB": "airflow"},
            "volumes": [f"{_volume(db)}:/var/lib/postgresql"],
            "healthcheck": healthcheck(f"pg_isready -h localhost -p {db.port('postgres')} -U airflow -d airflow",
                                       interval="10s"),
        },
        "airflow-init": {
            **common,
            # Migrates the metadata DB and creates the admin (the image's entrypoint does both), then
            # stays up: healthy means "initialised".
            "init": True,
            "restart": "no",
            "entrypoint": ["/bin/bash", "-c"],
            "command": ["set -euo pipefail\n/entrypoint airflow version\ntouch /tmp/airflow-init-done\nexec sleep infinity\n"],
            "environment": {
                **common["environment"],
                "_AIRFLOW_DB_MIGRATE": "true",
                "_AIRFLOW_WWW_USER_CREATE": "true",
                "_AIRFLOW_WWW_USER_USERNAME": required("AIRFLOW_ADMIN_USER"),
                "_AIRFLOW_WWW_USER_PASSWORD": required("AIRFLOW_ADMIN_PASSWORD"),
            },
            "healthcheck": healthcheck("test -f /tmp/airflow-init-done", interval="5s", retries=120,
                                       start_period="30s"),
            "depends_on": healthy(db.name),
        },
    }
    # compose's set-up jobs stand for what a topology dependency needs ready: the topic, HDFS out of safe mode
    init_of = {topo.KAFKA_BROKER: "kafka-init", topo.HDFS_NAMENODE: "hdfs-init", topo.HDFS_DATANODE: "hdfs-init"}
    for service in CLUSTER.services:
        if not service.role.startswith("airflow-"):
            continue
        needs = ["airflow-init"]
        for name in service.depends_on:
            target = init_of.get(CLUSTER.service(name).role, name)
            if target not in needs:
                needs.append(target)
        command = {topo.AIRFLOW_API_SERVER: "api-server", topo.AIRFLOW_SCHEDULER: "scheduler",
                   topo.AIRFLOW_DAG_PROCESSOR: "dag-processor", topo.AIRFLOW_TRIGGERER: "triggerer"}[service.role]
        if service.role == topo.AIRFLOW_API_SERVER:
            check = healthcheck(["CMD", "curl", "--fail", f"http://localhost:{service.port('http')}/api/v2/monitor/health"],
                                interval="30s", retries=5, start_period="30s")
        elif service.role == topo.AIRFLOW_SCHEDULER:
            check = healthcheck(["CMD", "curl", "--fail", f"http://localhost:{service.port('health')}/health"],
                                interval="30s", retries=5, start_period="30s")
        else:
            job = {topo.AIRFLOW_DAG_PROCESSOR: "DagProcessorJob", topo.AIRFLOW_TRIGGERER: "TriggererJob"}[service.role]
            check = healthcheck(f'airflow jobs check --job-type {job} --hostname "$${{HOSTNAME}}"',
                                interval="30s", retries=5, start_period="30s")
        services[service.name] = {
            **common,
            "command": command,
            # only the Airflow UI is published; Kafka, HDFS and Spark stay on the compose network
            **({"ports": [f"{setting('AIRFLOW_UI_PORT')}:{service.port('http')}"]}
               if service.role == topo.AIRFLOW_API_SERVER else {}),
            "healthcheck": check,
            "depends_on": healthy(*needs),
        }
    return services


def document() -> dict:
    services = {**kafka_services(), **hdfs_services(), **spark_services(), **spark_connect_service(),
                **airflow_services()}
    volumes = {}
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                volumes[source] = None
    return {"name": "lambdaflow", "services": services, "configs": configs(), "volumes": volumes}


HEADER = """\
# GENERATED from lambdaflow/stack/topology.py (the "cluster" topology) by
#   python -m lambdaflow.stack.compose > docker-compose.yaml
# Edit the topology or lambdaflow/stack/compose.py, not this file: a test fails when they differ.
#
# lambdaflow on a multi-node cluster: Kafka (3 KRaft brokers, weblogs RF 3, min.insync.replicas 2),
# HDFS (NameNode + 2 DataNodes, replication 2), Spark standalone (master + 2 workers, core caps per
# application) and Airflow 3 on PostgreSQL. Images are built from docker/<image>/Dockerfile; the JVM
# jars come from the same poms as the local stack's (jars/<set>/pom.xml), resolved inside the build.
#
#   python -m lambdaflow.stack.compose env > .env     # secrets (required: compose refuses to start without them)
#   docker compose up -d --build                      # Docker Compose >= 2.23.1 (inline configs)
#   open http://localhost:8080                        # Airflow, the only published port (AIRFLOW_UI_PORT)
#
# Start-up order: every dependant waits for `condition: service_healthy`. The set-up jobs kafka-init
# (the topic), hdfs-init (out of safe mode, the landing zone's tree) and airflow-init (DB migration, the
# admin) stay up after their work and report healthy once it is done. DataNodes wait only for the
# NameNode to run, never for it to leave safe mode (which needs their block reports).
"""


class _Dumper:
    @staticmethod
    def dump(data: dict) -> str:
        import yaml

        class Dumper(yaml.SafeDumper):
            def ignore_aliases(self, data):  # spelled out in each service: a reader sees it all
                return True

        def text(dumper, value: str):
            style = "|" if "\n" in value else None
            return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

        def none(dumper, _):
            return dumper.represent_scalar("tag:yaml.org,2002:null", "")

        Dumper.add_representer(str, text)
        Dumper.add_representer(type(None), none)
        return yaml.dump(data, Dumper=Dumper, sort_keys=False, width=200, default_flow_style=False)


def render() -> str:
    """The text of docker-compose.yaml."""
    return HEADER + "\n" + _Dumper.dump(document())


# ------------------------------------------------------------------------------------ .env
def env_example() -> str:
    """docker/env.example: every variable docker-compose.yaml reads, secrets left empty."""
    lines = ["# Variables of docker-compose.yaml. Make a .env with fresh secrets in one step:",
             "#   python -m lambdaflow.stack.compose env > .env",
             "# or copy this file to .env and fill in the secrets, e.g. with",
             "#   python3 -c \"import secrets; print(secrets.token_urlsafe(32))\"",
             "#   python3 -c \"import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())\"   (AIRFLOW_FERNET_KEY)",
             "", "# Required: no defaults, `docker compose` refuses to start without them."]
    for name, what in SECRETS.items():
        lines += [f"# {what}", f"{name}="]
    lines += ["", "# Optional: the values below are the defaults."]
    for name, (default, what) in SETTINGS.items():
        lines += [f"# {what}", f"{name}={default}"]
    return "\n".join(lines) + "\n"


def fresh_env() -> str:
    """A .env with newly generated secrets (the admin login is `admin`)."""
    values = {
        "AIRFLOW_ADMIN_USER": "admin",
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "AIRFLOW_SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(32),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
    }
    assert values.keys() == SECRETS.keys()
    return "".join(f"{k}={v}\n" for k, v in values.items())


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "compose"
    if what == "compose":
        sys.stdout.write(render())
    elif what == "env":
        sys.stdout.write(fresh_env())
    elif what == "env-example":
        sys.stdout.write(env_example())
    else:
        print("usage: python -m lambdaflow.stack.compose [compose | env | env-example]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
