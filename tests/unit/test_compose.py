"""docker-compose.yaml checked offline: the Compose specification's JSON schema, then the cluster's shape.

No Docker engine is needed. Variables are resolved the way Compose does it for ``${VAR:-default}``
(``$$`` is a literal ``$``), first with the file's own defaults, then with ``.env.example``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from lambdaflow.config import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
SCHEMA_FILE = Path(__file__).with_name("compose-spec.schema.json")

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")
AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}


def variables_in(text: str) -> list[re.Match]:
    return list(_VARIABLE.finditer(text.replace("$$", "")))


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``."""
    if isinstance(value, dict):
        return {interpolate(k, env): interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def resolve(m: re.Match) -> str:
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg")
        current = env.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?") and not current:
            raise KeyError(f"{name} is required: {arg}")
        return current or ""

    parts = value.split("$$")
    return "$".join(_VARIABLE.sub(resolve, part) for part in parts)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name.strip()] = value.strip()
    return env


@pytest.fixture(scope="module")
def raw_text() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def raw(raw_text: str) -> dict:
    return yaml.safe_load(raw_text)


@pytest.fixture(scope="module", params=["defaults", ".env.example"])
def compose(request, raw: dict) -> dict:
    """The file with every variable resolved: by its defaults alone, or with .env.example."""
    env = {} if request.param == "defaults" else read_env_file(ENV_EXAMPLE)
    return interpolate(raw, env)


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_text(service: dict) -> str:
    parts: list[Any] = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        parts += value if isinstance(value, list) else [value]
    return " ".join(str(p) for p in parts)


def published_ports(service: dict) -> list[int]:
    ports = []
    for port in service.get("ports") or []:
        text = str(port["published"]) if isinstance(port, dict) else str(port)
        if ":" in text:
            ports.append(int(text.rsplit(":", 1)[0].split(":")[-1]))
    return ports


# -- the specification --------------------------------------------------------------------------

def test_valid_against_the_compose_specification(raw: dict, compose: dict) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for document in (raw, compose):
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10])


# The repo's copy of the Compose specification's schema (compose-spec/compose-spec, schema/compose-spec.json),
# pinned by content: an edited or truncated copy fails here instead of validating less.
SCHEMA_SHA256 = "1f91e091f16b2dd50ab8860e02bb391d22df553d91c145eacedb1b6eff9c3f0e"


def test_schema_is_the_pinned_compose_specification() -> None:
    data = SCHEMA_FILE.read_bytes()  # in the repo: a missing file fails, it never skips
    assert hashlib.sha256(data).hexdigest() == SCHEMA_SHA256, (
        f"{SCHEMA_FILE.name} changed; if it was updated from compose-spec on purpose, pin its new sha256")
    schema = json.loads(data)
    assert (schema["$id"], schema["title"]) == ("compose_spec.json", "Compose Specification")
    assert {"services", "networks", "volumes"} <= schema["properties"].keys()
    assert schema["properties"]["services"]["patternProperties"]["^[a-zA-Z0-9._-]+$"]["$ref"] == "#/definitions/service"
    # strict enough to catch a misspelt key in a service
    service = schema["definitions"]["service"]
    assert service["additionalProperties"] is False and "healthcheck" in service["properties"]


def test_every_variable_has_a_default_and_is_documented_in_env_example(raw_text: str) -> None:
    documented = read_env_file(ENV_EXAMPLE)
    used: dict[str, set[str]] = {}
    for m in variables_in(raw_text):
        name = m.group("name") or m.group("bare")
        assert m.group("op") in (":-", "-"), f"${{{name}}} has no default in docker-compose.yaml"
        used.setdefault(name, set()).add(m.group("arg"))
    assert used, "docker-compose.yaml should be .env-driven"
    for name, defaults in used.items():
        assert len(defaults) == 1, f"{name} has different defaults in different places: {defaults}"
    assert set(used) == set(documented), (f"undocumented: {sorted(set(used) - set(documented))}, "
                                          f"unused: {sorted(set(documented) - set(used))}")
    # copying .env.example to .env changes nothing until someone edits it
    assert {name: next(iter(defaults)) for name, defaults in used.items()} == documented


# -- health and start-up order ----------------------------------------------------------------------

def test_every_service_has_a_healthcheck(services: dict) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"] and check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_dependants_wait_for_healthy_services(services: dict) -> None:
    edges = {}
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on must name a condition"
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on unknown {target}"
            assert target != name, f"{name} depends on itself"
            assert spec["condition"] == "service_healthy", f"{name} -> {target}: {spec['condition']}"
        edges[name] = set(depends_on)
    order = list(TopologicalSorter(edges).static_order())  # raises CycleError on a cycle
    assert order.index("postgres") < order.index("airflow-init") < order.index("airflow-scheduler")


def test_scheduler_waits_for_the_data_services(services: dict) -> None:
    needs = set(services["airflow-scheduler"]["depends_on"])
    assert {"airflow-init", "postgres", "airflow-apiserver", "kafka-init", "datanode-1", "datanode-2",
            "spark-worker-1", "spark-worker-2"} <= needs


# -- Kafka ------------------------------------------------------------------------------------------

def brokers(services: dict) -> dict[str, dict]:
    return {n: s for n, s in services.items() if "broker" in environment(s).get("KAFKA_PROCESS_ROLES", "")}


def test_three_kraft_brokers_from_the_official_image(services: dict) -> None:
    kafka = brokers(services)
    assert len(kafka) == 3
    ids = set()
    for name, service in kafka.items():
        env = environment(service)
        assert service["image"].startswith("apache/kafka:4.")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert "zookeeper" not in json.dumps(service).lower()
        voters = dict(v.split("@") for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        assert set(voters.values()) == {f"{n}:9093" for n in kafka}
        assert voters[env["KAFKA_NODE_ID"]] == f"{service['hostname']}:9093"
        assert f"INTERNAL://{service['hostname']}:19092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) >= 2
        assert len(env["CLUSTER_ID"]) == 22
        ids.add(env["KAFKA_NODE_ID"])
    assert ids == {"1", "2", "3"}
    assert len({environment(s)["CLUSTER_ID"] for s in kafka.values()}) == 1


def test_weblogs_topic_created_with_replication_of_at_least_two(services: dict) -> None:
    init = services["kafka-init"]
    script = command_text(init).replace("\\\n", " ")
    create = next(line for line in script.splitlines() if "kafka-topics.sh" in line and "--create" in line)
    args = shlex.split(create)
    options = {a: b for a, b in zip(args, args[1:]) if a.startswith("--") and not b.startswith("--")}
    assert options["--topic"] == "weblogs"
    assert int(options["--partitions"]) == 3
    rf = int(options["--replication-factor"])
    assert 2 <= rf <= len(brokers(services))
    assert "--if-not-exists" in args
    min_isr = int(options["--config"].removeprefix("min.insync.replicas="))
    assert 1 <= min_isr < rf  # one broker down still accepts writes
    bootstrap = re.search(r"^\s*bootstrap=(\S+)$", script, re.M).group(1)
    internal = ",".join(f"{s['hostname']}:19092" for s in brokers(services).values())
    assert bootstrap == internal == environment(services["airflow-scheduler"])["KAFKA_BOOTSTRAP"]
    assert set(init["depends_on"]) == set(brokers(services))


# -- HDFS -------------------------------------------------------------------------------------------

def test_namenode_and_two_datanodes(services: dict) -> None:
    datanodes = {n: s for n, s in services.items() if re.search(r"\bhdfs datanode\b", command_text(s))}
    namenodes = {n: s for n, s in services.items() if re.search(r"\bhdfs namenode\b", command_text(s))}
    assert set(namenodes) == {"namenode"} and len(datanodes) == 2
    for service in [*datanodes.values(), *namenodes.values()]:
        assert service["image"].startswith("apache/hadoop:3")
        env = environment(service)
        assert env["CORE-SITE.XML_fs.defaultFS"] == "hdfs://namenode:8020"
        assert 2 <= int(env["HDFS-SITE.XML_dfs.replication"]) <= len(datanodes)
    for service in datanodes.values():
        assert service["depends_on"] == {"namenode": {"condition": "service_healthy"}}
    volumes = [v for s in datanodes.values() for v in s["volumes"]]
    assert len(set(volumes)) == 2  # each DataNode keeps its own blocks


# -- Spark ------------------------------------------------------------------------------------------

def test_spark_master_and_two_workers_of_the_pyspark_version(services: dict) -> None:
    master = services["spark-master"]
    assert "org.apache.spark.deploy.master.Master" in command_text(master)
    workers = {n: s for n, s in services.items() if "org.apache.spark.deploy.worker.Worker" in command_text(s)}
    assert len(workers) == 2
    pyspark = re.search(r"^pyspark==(\S+)", (REPO_ROOT / "requirements.txt").read_text(), re.M).group(1)
    for service in [master, *workers.values()]:
        assert service["image"] == f"apache/spark:{pyspark}"
    for service in workers.values():
        assert "spark://spark-master:7077" in command_text(service)


# -- Airflow ----------------------------------------------------------------------------------------

def test_airflow_services_share_one_anchor(raw: dict, services: dict) -> None:
    common = raw["x-airflow-common"]
    assert "FROM apache/airflow:${AIRFLOW_VERSION:-3.3.2}" in common["build"]["dockerfile_inline"]
    assert "requirements.txt" in common["build"]["dockerfile_inline"]
    airflow = {n for n, s in services.items() if s.get("image") == services["airflow-apiserver"]["image"]}
    assert airflow == AIRFLOW_SERVICES
    commands = {n: command_text(services[n]) for n in AIRFLOW_SERVICES}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-triggerer"] == "triggerer"
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert "@postgres:5432/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/lambdaflow/plugins"  # the dashboard at /lambdaflow/
        assert ".:/opt/lambdaflow" in services[name]["volumes"]
    assert services["postgres"]["image"].startswith("postgres:")


def test_connections_come_from_airflow_conn_variables(services: dict) -> None:
    env = environment(services["airflow-scheduler"])
    kafka = json.loads(env["AIRFLOW_CONN_KAFKA_DEFAULT"])
    spark = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
    webhdfs = json.loads(env["AIRFLOW_CONN_WEBHDFS_DEFAULT"])
    assert kafka["extra"]["bootstrap.servers"] == env["KAFKA_BOOTSTRAP"]
    assert kafka["extra"]["group.id"] == "lambdaflow-ingest"
    assert (spark["conn_type"], spark["host"], spark["port"]) == ("spark", "spark://spark-master", 7077)
    assert (webhdfs["host"], webhdfs["port"]) == ("namenode", 9870)
    assert webhdfs["extra"]["hdfs_url"] == env["HDFS_URL"] == "hdfs://namenode:8020"


def test_no_two_services_publish_the_same_host_port(services: dict) -> None:
    ports = [p for s in services.values() for p in published_ports(s)]
    assert len(ports) == len(set(ports)), sorted(ports)
    assert 8080 in published_ports(services["airflow-apiserver"])


def test_named_volumes_are_declared(compose: dict) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            if source and not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_interpolation_helper() -> None:
    assert interpolate("${A:-x} ${B-y} $${C} $$D ${E}", {"A": "", "B": "", "E": "e"}) == "x  ${C} $D e"
    with pytest.raises(KeyError):
        interpolate("${A:?needed}", {})
