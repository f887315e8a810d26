"""docker-compose.yaml checked offline: the Compose specification's JSON schema, then the cluster's shape.

No Docker engine is needed. Variables are resolved the way Compose does it (``${VAR:-default}``,
``${VAR:?error}``; ``$$`` is a literal ``$``), with the secrets a ``.env`` would hold.

The file is generated from the cluster topology (``python -m lambdaflow.stack.compose``); the checks
below read the document itself, so a hand edit, or a generator bug, fails them. Each check is a
plain function of the document, and ``test_each_check_fails_on_a_broken_document`` feeds each one a
deliberately broken copy: a check that cannot fail proves nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import xml.etree.ElementTree as ET
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest
import yaml

from lambdaflow.config import REPO_ROOT
from lambdaflow.stack import compose as generator
from lambdaflow.stack import topology as topo

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / "docker" / "env.example"
SCHEMA_FILE = Path(__file__).with_name("compose-spec.schema.json")
CLUSTER = topo.topology("cluster")
NET = topo.COMPOSE

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")
INIT_JOBS = {"kafka-init", "hdfs-init", "airflow-init"}
AIRFLOW_SERVICES = {"airflow-init", *(s.name for s in CLUSTER.services if s.role.startswith("airflow-"))}
# what a .env made by `python -m lambdaflow.stack.compose env` holds
TEST_SECRETS = {name: f"test-{name.lower().replace('_', '-')}" for name in generator.SECRETS}
LOOPBACK = {"localhost", "127.0.0.1"}


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
        if op == ":?" and not current or op == "?" and current is None:
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


@pytest.fixture(scope="module", params=["defaults", "env.example"])
def compose(request, raw: dict) -> dict:
    """The file with every variable resolved: by its defaults, or by docker/env.example; secrets set."""
    env = {} if request.param == "defaults" else read_env_file(ENV_EXAMPLE)
    return interpolate(raw, {**env, **TEST_SECRETS})


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


# -- reading a service ------------------------------------------------------------------------------

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


def command_options(service: dict) -> dict[str, str]:
    args = service.get("command") or []
    args = args if isinstance(args, list) else shlex.split(args)
    return {a: b for a, b in zip(args, args[1:]) if a.startswith("-") and not str(b).startswith("-")}


def healthcheck_text(service: dict) -> str:
    test = (service.get("healthcheck") or {}).get("test") or []
    return " ".join(test[1:]) if isinstance(test, list) else str(test)


def config_content(doc: dict, service: dict, target: str) -> str | None:
    for config in service.get("configs") or []:
        if isinstance(config, dict) and config.get("target") == target:
            return doc["configs"][config["source"]]["content"]
    return None


def parse_properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def parse_site(text: str) -> dict[str, str]:
    return {p.findtext("name"): p.findtext("value") for p in ET.fromstring(text).iter("property")}


def parse_spark_defaults(text: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))


def hadoop_site(doc: dict, name: str, file: str) -> dict[str, str]:
    content = config_content(doc, doc["services"][name], f"{generator.HDFS_CONF_DIR}/{file}")
    assert content is not None, f"{name} has no {file}"
    return parse_site(content)


def kafka_properties(doc: dict, name: str) -> dict[str, str]:
    content = config_content(doc, doc["services"][name], generator.KAFKA_PROPERTIES)
    assert content is not None, f"{name} has no server.properties"
    return parse_properties(content)


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "0.0.0.0", int(port)


def binds(doc: dict, name: str) -> set[tuple[str, int]]:
    """(address, port) pairs the service listens on, read from its own configuration."""
    service = doc["services"][name]
    env = environment(service)
    out: set[tuple[str, int]] = set()
    kafka = config_content(doc, service, generator.KAFKA_PROPERTIES)
    if kafka is not None:
        for listener in parse_properties(kafka)["listeners"].split(","):
            out.add(host_port(listener.split("://", 1)[1]))
    command = command_text(service)
    if re.search(r"\bhdfs (namenode|datanode)\b", command):
        site = hadoop_site(doc, name, "hdfs-site.xml")
        if "hdfs namenode" in command:
            for kind in ("rpc", "http"):
                host, port = host_port(site[f"dfs.namenode.{kind}-address"])
                out.add((site.get(f"dfs.namenode.{kind}-bind-host", host), port))
        else:
            for key in ("dfs.datanode.address", "dfs.datanode.http.address", "dfs.datanode.ipc.address"):
                out.add(host_port(site[key]))
    if "org.apache.spark.deploy." in command:
        options = command_options(service)
        out.add((options["--host"], int(options["--port"])))
        out.add(("0.0.0.0", int(options["--webui-port"])))  # Spark's web UIs bind every interface
    if "SparkConnectServer" in command:  # spark-submit --conf spark.connect.grpc.binding.*
        conf = dict(re.findall(r"--conf (spark\.connect\.grpc\.binding\.\w+)=(\S+)", command))
        out.add((conf["spark.connect.grpc.binding.address"], int(conf["spark.connect.grpc.binding.port"])))
    if command.startswith("postgres"):
        out.add(("0.0.0.0", int(re.search(r"-c port=(\d+)", command).group(1))))  # the image listens on '*'
    if command == "api-server":
        out.add((env["AIRFLOW__API__HOST"], int(env["AIRFLOW__API__PORT"])))
    if command == "scheduler":
        out.add((env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"],
                 int(env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"])))
    return out


_PROBES = [re.compile(p) for p in (r"https?://(?P<host>[\w.-]+):(?P<port>\d+)", r"/dev/tcp/(?P<host>[\w.-]+)/(?P<port>\d+)",
                                    r"pg_isready -h (?P<host>[\w.-]+) -p (?P<port>\d+)")]


def probes(service: dict) -> list[tuple[str, int]]:
    text = healthcheck_text(service)
    found = [(m.group("host"), int(m.group("port"))) for p in _PROBES for m in p.finditer(text)]
    for m in re.finditer(r"--bootstrap-server (\S+)", text):
        found += [host_port(a) for a in m.group(1).split(",")]
    return found


def depends_on(service: dict) -> dict:
    return service.get("depends_on") or {}


def needs(doc: dict, name: str) -> set[str]:
    """Every service ``name`` waits for, directly or through others."""
    seen: set[str] = set()
    todo = list(depends_on(doc["services"][name]))
    while todo:
        target = todo.pop()
        if target not in seen:
            seen.add(target)
            todo += list(depends_on(doc["services"].get(target, {})))
    return seen


def datanodes(doc: dict) -> list[str]:
    return [n for n, s in doc["services"].items() if re.search(r"\bhdfs datanode\b", command_text(s))]


# -- the checks: each a function of the resolved document ---------------------------------------------

def check_schema(doc: dict) -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA_FILE.read_text()))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:10])


def check_healthchecks_probe_what_the_service_binds(doc: dict) -> None:
    for name, service in doc["services"].items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"] and check["test"][0] in ("CMD", "CMD-SHELL"), name
        bound = binds(doc, name)
        probed = probes(service)
        if bound:
            assert probed, f"{name} listens on {sorted(bound)} but its healthcheck probes none of it"
        own_names = {name, service.get("hostname", name)}
        for host, port in probed:
            assert host in own_names | LOOPBACK, f"{name}'s healthcheck probes another service: {host}:{port}"
            ok = any(p == port and (b == "0.0.0.0" or b == host or (b in LOOPBACK and host in LOOPBACK))
                     for b, p in bound)
            assert ok, f"{name}'s healthcheck probes {host}:{port}, but it binds {sorted(bound)}"


def check_start_order(doc: dict) -> None:
    services = doc["services"]
    edges = {}
    for name, service in services.items():
        deps = depends_on(service)
        assert isinstance(deps, dict), f"{name}: depends_on must name a condition"
        for target, spec in deps.items():
            assert target in services, f"{name} depends on unknown {target}"
            assert spec["condition"] == "service_healthy", f"{name} -> {target}: {spec['condition']}"
        edges[name] = set(deps)
    try:
        TopologicalSorter(edges).prepare()
    except CycleError as cycle:
        raise AssertionError(f"depends_on has a cycle: {cycle.args[1]}") from None
    # A DataNode never waits for HDFS to leave safe mode: after a restart with data the NameNode
    # leaves it only once the DataNodes have reported their blocks.
    nodes = datanodes(doc)
    assert nodes, "no DataNodes"
    for node in nodes:
        for target in needs(doc, node):
            assert not re.search(r"safe.?mode", healthcheck_text(services[target]), re.I), (
                f"{node} waits for {target}, whose healthcheck waits for safe mode to end")


def check_images_pinned(doc: dict) -> None:
    versions = {
        "kafka": generator.pom_property("kafka", "kafka.version"),
        "hadoop": generator.pom_property("hadoop", "hadoop.version"),
        "spark": generator.requirement_pin("pyspark"),
        "airflow": generator.requirement_pin("apache-airflow"),
    }
    assert generator.pom_property("spark", "spark.version") == versions["spark"]  # the connector's Spark
    for name, service in doc["services"].items():
        image = service.get("image", "")
        repository, _, tag = image.rpartition(":")
        assert repository and re.match(r"\d", tag) and tag != "latest", f"{name}: image {image!r} is not pinned"
        assert "dockerfile_inline" not in (service.get("build") or {}), f"{name} builds from an inline Dockerfile"
        if repository.startswith("lambdaflow/"):
            kind = repository.removeprefix("lambdaflow/")
            assert tag == versions[kind], f"{name}: {image} but the repo pins {kind} {versions[kind]}"
            build = service.get("build") or {}
            assert build.get("dockerfile") == f"docker/{kind}/Dockerfile" and build.get("context") == ".", name
            if "args" in build:
                assert build["args"] == {"AIRFLOW_VERSION": versions["airflow"]}, name
        for volume in service.get("volumes") or []:
            assert ".cache" not in str(volume), f"{name} mounts jars built on the host: {volume}"
        assert "make jars" not in command_text(service), f"{name} needs jars built on the host"


def check_secrets_required(text: str) -> None:
    """Secrets and the admin login have no default anywhere; every other variable has one."""
    used: dict[str, set[tuple[str, str]]] = {}
    for m in variables_in(text):
        name = m.group("name") or m.group("bare")
        used.setdefault(name, set()).add((m.group("op"), m.group("arg")))
    assert set(generator.SECRETS) <= set(used), f"secrets not used: {set(generator.SECRETS) - set(used)}"
    for name, uses in used.items():
        ops = {op for op, _ in uses}
        if name in generator.SECRETS or re.search(r"PASSWORD|SECRET|FERNET|_KEY$|ADMIN", name):
            assert ops == {":?"}, f"${{{name}}} must be required (${{{name}:?...}}), found {ops}"
        else:
            assert ops == {":-"}, f"${{{name}}} has no default: {ops}"
            assert len(uses) == 1, f"{name} has different defaults in different places: {uses}"
    documented = read_env_file(ENV_EXAMPLE)
    assert set(used) == set(documented), (f"undocumented in docker/env.example: {sorted(set(used) - set(documented))}, "
                                          f"unused: {sorted(set(documented) - set(used))}")
    for name, uses in used.items():  # copying env.example changes no default; secrets stay empty there
        assert documented[name] == ("" if name in generator.SECRETS else next(iter(uses))[1]), name


def check_only_the_airflow_ui_is_published(doc: dict) -> None:
    api = CLUSTER.one(topo.AIRFLOW_API_SERVER)
    for name, service in doc["services"].items():
        assert service.get("network_mode") != "host", f"{name} shares the host's network"
        for port in service.get("ports") or []:
            if name == api.name:
                target = port["target"] if isinstance(port, dict) else str(port).rsplit(":", 1)[-1]
                assert int(target) == api.port("http"), f"{name} publishes {port}"
                continue
            host_ip = port.get("host_ip") if isinstance(port, dict) else (str(port).split(":")[0] if str(port).count(":") == 2 else None)
            assert host_ip == "127.0.0.1" and service.get("profiles"), (
                f"{name} publishes {port} by default; only the Airflow UI is published")
    assert doc["services"][api.name].get("ports"), "the Airflow UI is not published"


def check_matches_topology(doc: dict) -> None:
    services = doc["services"]
    assert set(services) == {s.name for s in CLUSTER.services} | INIT_JOBS, sorted(services)
    # start order: every dependency of the topology, directly or through a set-up job
    for service in CLUSTER.services:
        missing = set(service.depends_on) - needs(doc, service.name)
        assert not missing, f"{service.name} does not wait for {sorted(missing)}"
    # Kafka
    for broker in CLUSTER.by_role(topo.KAFKA_BROKER):
        expected = CLUSTER.kafka_properties(broker.name, NET, generator.DATA_ROOT)
        actual = kafka_properties(doc, broker.name)
        assert actual == expected, f"{broker.name}: {set(actual.items()) ^ set(expected.items())}"
        assert environment(services[broker.name])["KAFKA_HEAP"] == broker.heap, broker.name
        assert services[broker.name]["hostname"] == broker.name
    init = command_text(services["kafka-init"])
    create = shlex.split(next(line for line in init.splitlines() if "--create" in line).split(";")[0].removeprefix("until "))
    options = {a: b for a, b in zip(create, create[1:]) if a.startswith("--")}
    topic = CLUSTER.topic
    assert (options["--topic"], int(options["--partitions"]), int(options["--replication-factor"]),
            options["--config"]) == (topic.name, topic.partitions, topic.replication_factor,
                                     f"min.insync.replicas={topic.min_insync_replicas}"), f"kafka-init creates {options}"
    assert options["--bootstrap-server"] == CLUSTER.kafka_bootstrap(NET)
    # HDFS: each daemon's files are the topology's; no replication other than the cluster's anywhere
    for node in [*CLUSTER.by_role(topo.HDFS_NAMENODE), *CLUSTER.by_role(topo.HDFS_DATANODE)]:
        expected = CLUSTER.hadoop_site(node.name, NET, generator.DATA_ROOT)
        for file, values in expected.items():
            actual = hadoop_site(doc, node.name, file)
            assert actual == values, f"{node.name} {file}: {set(actual.items()) ^ set(values.items())}"
        assert environment(services[node.name])["HDFS_HEAP"] == node.heap
    for content in [c["content"] for c in doc["configs"].values()] + [json.dumps(s) for s in services.values()]:
        for value in re.findall(r"dfs\.replication\D{1,40}?(\d+)", content):
            assert int(value) == CLUSTER.hdfs_replication, f"dfs.replication={value} in the compose file"
    # Spark: ports, cores, memory, heaps
    master = CLUSTER.one(topo.SPARK_MASTER)
    options = command_options(services[master.name])
    assert (options["--host"], int(options["--port"]), int(options["--webui-port"])) == (
        master.name, master.port("rpc"), master.port("ui"))
    env = environment(services[master.name])
    assert env["SPARK_DAEMON_MEMORY"] == master.heap
    assert env["SPARK_MASTER_OPTS"].split() == [f"-D{k}={v}" for k, v in master.settings.items()]
    for worker in CLUSTER.by_role(topo.SPARK_WORKER):
        service = services[worker.name]
        options = command_options(service)
        assert (int(options["--port"]), int(options["--webui-port"]), options["--cores"], options["--memory"]) == (
            worker.port("rpc"), worker.port("ui"), worker.settings["cores"], worker.settings["memory"]), worker.name
        assert service["command"][-1] == CLUSTER.spark_master_url(NET)
        assert environment(service)["SPARK_DAEMON_MEMORY"] == worker.heap
    # every application submitted from the Airflow containers gets the topology's caps and replication
    for name in AIRFLOW_SERVICES:
        service = services[name]
        env = environment(service)
        conf_dir = env["SPARK_CONF_DIR"]
        defaults = config_content(doc, service, f"{conf_dir}/spark-defaults.conf")
        assert defaults is not None, f"{name} has no spark-defaults.conf in {conf_dir}"
        defaults = parse_spark_defaults(defaults)
        for app in topo.SPARK_APPS:
            conf = CLUSTER.spark_conf(app, NET)
            for key in ("spark.master", "spark.cores.max", "spark.executor.cores", "spark.executor.memory",
                        "spark.hadoop.dfs.replication"):
                assert defaults.get(key) == conf[key], f"{name}: {key} = {defaults.get(key)}, {app} needs {conf[key]}"
        assert (env["KAFKA_BOOTSTRAP"], env["HDFS_URL"], env["WEBHDFS_URL"], env["SPARK_MASTER"]) == (
            CLUSTER.kafka_bootstrap(NET), CLUSTER.hdfs_url(NET), CLUSTER.webhdfs_url(NET), CLUSTER.spark_master_url(NET))
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith(f"@{CLUSTER.metadata_db_address(NET)}/airflow")
        assert env["AIRFLOW__API__PORT"] == str(CLUSTER.one(topo.AIRFLOW_API_SERVER).port("http"))
        for key, value in CLUSTER.airflow_config().items():  # ports, parallelism: the topology's
            assert env.get(key) == value, f"{name}: {key} = {env.get(key)}, the topology says {value}"
    db = CLUSTER.one(topo.POSTGRES)
    assert f"-c port={db.port('postgres')}" in command_text(services[db.name])


def check_is_generated(text: str) -> None:
    assert text == generator.render(), (
        "docker-compose.yaml differs from the topology's: run python -m lambdaflow.stack.compose > docker-compose.yaml")


# -- the tests ----------------------------------------------------------------------------------------

def test_valid_against_the_compose_specification(raw: dict, compose: dict) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    check_schema(raw)
    check_schema(compose)


# The repo's copy of the Compose specification's schema (compose-spec/compose-spec, schema/compose-spec.json),
# pinned by content: an edited or truncated copy fails here instead of validating less.
SCHEMA_SHA256 = "1f91e091f16b2dd50ab8860e02bb391d22df553d91c145eacedb1b6eff9c3f0e"


def test_schema_is_the_pinned_compose_specification() -> None:
    data = SCHEMA_FILE.read_bytes()  # in the repo: a missing file fails, it never skips
    assert hashlib.sha256(data).hexdigest() == SCHEMA_SHA256, (
        f"{SCHEMA_FILE.name} changed; if it was updated from compose-spec on purpose, pin its new sha256")
    schema = json.loads(data)
    assert (schema["$id"], schema["title"]) == ("compose_spec.json", "Compose Specification")
    assert {"services", "networks", "volumes", "configs"} <= schema["properties"].keys()
    assert schema["properties"]["services"]["patternProperties"]["^[a-zA-Z0-9._-]+$"]["$ref"] == "#/definitions/service"
    # strict enough to catch a misspelt key in a service
    service = schema["definitions"]["service"]
    assert service["additionalProperties"] is False and "healthcheck" in service["properties"]
    assert "content" in schema["definitions"]["config"]["properties"]  # inline configs


def test_the_committed_file_is_the_generated_one(raw_text: str) -> None:
    check_is_generated(raw_text)
    assert ENV_EXAMPLE.read_text() == generator.env_example(), (
        "docker/env.example is stale: python -m lambdaflow.stack.compose env-example > docker/env.example")


def test_every_healthcheck_probes_an_address_its_service_binds(compose: dict) -> None:
    check_healthchecks_probe_what_the_service_binds(compose)


def test_start_order_has_no_cycle_and_no_wait_on_safe_mode(compose: dict) -> None:
    check_start_order(compose)
    order = list(TopologicalSorter({n: set(depends_on(s)) for n, s in compose["services"].items()}).static_order())
    assert order.index("postgres") < order.index("airflow-init") < order.index("airflow-scheduler")
    assert needs(compose, "airflow-scheduler") >= INIT_JOBS | {s.name for s in CLUSTER.services
                                                                if not s.role.startswith("airflow-")} - {"airflow-scheduler"}


def test_images_are_built_in_the_repo_from_pinned_versions(compose: dict) -> None:
    check_images_pinned(compose)


def test_dockerfiles_fetch_the_local_stacks_jars_from_its_poms() -> None:
    """Each JVM image resolves jars/<set>/pom.xml with the command lambdaflow.stack.jars runs, inside
    a Maven build stage; every base image is tagged; every file copied is in the build context."""
    jar_sets = {"kafka": ["kafka"], "hadoop": ["hadoop"], "airflow": ["spark"], "spark": []}
    for image, sets in jar_sets.items():
        dockerfile = REPO_ROOT / "docker" / image / "Dockerfile"
        text = dockerfile.read_text()
        for base in re.findall(r"^FROM\s+(\S+)", text, re.M):
            resolved = base.replace("${AIRFLOW_VERSION}", generator.requirement_pin("apache-airflow"))
            name, _, tag = resolved.partition(":")
            assert tag and tag != "latest" and re.search(r"\d", tag), f"{image}: base image {base} is not pinned"
        for jar_set in sets:
            assert f"COPY jars/{jar_set}/pom.xml" in text, f"{image} does not use jars/{jar_set}/pom.xml"
            assert re.search(r"RUN mvn .*dependency:copy-dependencies .*-DincludeScope=runtime", text), image
            assert "AS jars" in text and "COPY --from=jars" in text, f"{image}: no Maven build stage"
        if image == "airflow":
            default = re.search(r"^ARG AIRFLOW_VERSION=(\S+)", text, re.M).group(1)
            assert default == generator.requirement_pin("apache-airflow")
        if image == "spark":
            assert "constraints.txt" in text and "pyspark" in text  # the pinned pyspark's spark-class
        ignore = (dockerfile.parent / "Dockerfile.dockerignore").read_text().splitlines()
        allowed = {line[1:] for line in ignore if line.startswith("!")}
        assert "*" in ignore, f"{image}: the build context would be the whole checkout (.venv, .run)"
        for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, re.M):
            for source in line.split()[:-1]:
                assert (REPO_ROOT / source).exists(), f"{image} copies missing {source}"
                assert source in allowed, f"{image} copies {source}, which its .dockerignore leaves out"
                if line.split()[-1].startswith("/usr/local/bin"):
                    assert os.access(REPO_ROOT / source, os.X_OK), f"{source} is not executable"
    import lambdaflow.stack.jars as jars  # the same Maven goal and scope as the local stack's
    source = Path(jars.__file__).read_text()
    assert '"dependency:copy-dependencies"' in source and '"-DincludeScope=runtime"' in source


def test_secrets_are_required_and_documented(raw_text: str, raw: dict) -> None:
    check_secrets_required(raw_text)
    with pytest.raises(KeyError, match="is required"):
        interpolate(raw, {})
    with pytest.raises(KeyError, match="is required"):
        interpolate(raw, read_env_file(ENV_EXAMPLE))  # the example's secrets are empty on purpose
    fresh = read_env_file_text(generator.fresh_env())
    assert set(fresh) == set(generator.SECRETS) and all(len(v) >= 5 for v in fresh.values())
    assert fresh != read_env_file_text(generator.fresh_env())  # new secrets each time
    interpolate(raw, fresh)


def read_env_file_text(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_only_the_airflow_ui_is_published(compose: dict) -> None:
    check_only_the_airflow_ui_is_published(compose)


def test_replication_cores_and_ports_are_the_topologys(compose: dict) -> None:
    check_matches_topology(compose)


def test_connections_come_from_airflow_conn_variables(services: dict) -> None:
    env = environment(services["airflow-scheduler"])
    kafka = json.loads(env["AIRFLOW_CONN_KAFKA_DEFAULT"])
    spark = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
    webhdfs = json.loads(env["AIRFLOW_CONN_WEBHDFS_DEFAULT"])
    assert kafka["extra"]["bootstrap.servers"] == env["KAFKA_BOOTSTRAP"]
    assert kafka["extra"]["group.id"] == "lambdaflow-ingest"
    assert f"{spark['host']}:{spark['port']}" == env["SPARK_MASTER"] == CLUSTER.spark_master_url(NET)
    assert f"http://{webhdfs['host']}:{webhdfs['port']}" == env["WEBHDFS_URL"]
    assert webhdfs["extra"]["hdfs_url"] == env["HDFS_URL"]


def test_airflow_services_share_one_image_and_the_checkout(services: dict) -> None:
    airflow = {n for n, s in services.items() if s.get("image") == services["airflow-api-server"]["image"]}
    assert airflow == AIRFLOW_SERVICES
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"{CLUSTER.airflow_url(NET)}/execution/"
        assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/lambdaflow/plugins"  # the dashboard at /lambdaflow/
        assert ".:/opt/lambdaflow" in services[name]["volumes"]
    assert services["postgres"]["image"].startswith("postgres:")


def test_named_volumes_are_declared_and_each_daemon_keeps_its_own(compose: dict) -> None:
    declared = set(compose.get("volumes") or {})
    owners: dict[str, str] = {}
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            if source and not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
                if source.endswith("-data"):
                    assert owners.setdefault(source, name) == name, f"{source} shared by {owners[source]} and {name}"
    for service in CLUSTER.services:
        if service.data_dir:
            assert f"{service.name}-data" in owners, f"{service.name} keeps its data in no volume"


# -- every check can fail ------------------------------------------------------------------------------

def _set(path: list, value: Any) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _replace_config(name: str, old: str, new: str) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        content = doc["configs"][name]["content"]
        assert old in content, (name, old)
        doc["configs"][name]["content"] = content.replace(old, new)
    return mutate


def _drop_config_line(name: str, key: str) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        lines = doc["configs"][name]["content"].splitlines(keepends=True)
        doc["configs"][name]["content"] = "".join(line for line in lines if not line.startswith(key))
    return mutate


def _replace_in(path: list, old: str, new: str) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        value = node[path[-1]]
        if isinstance(value, list):
            node[path[-1]] = [str(v).replace(old, new) for v in value]
        else:
            assert old in value, (path, old)
            node[path[-1]] = value.replace(old, new)
    return mutate


BROKEN_DOCUMENTS = {
    # the defects named in issue 14, put back one at a time
    "spark master probed on localhost while it binds its hostname": (
        check_healthchecks_probe_what_the_service_binds,
        _set(["services", "spark-master", "healthcheck", "test"], ["CMD-SHELL", "bash -c '</dev/tcp/localhost/27077'"])),
    "healthcheck probing a port nothing binds": (
        check_healthchecks_probe_what_the_service_binds,
        _set(["services", "datanode-1", "healthcheck", "test"], ["CMD-SHELL", "curl -fsS http://datanode-1:9864/jmx"])),
    "healthcheck probing another service": (
        check_healthchecks_probe_what_the_service_binds,
        _set(["services", "spark-worker-1", "healthcheck", "test"], ["CMD", "curl", "-f", "http://spark-master:28081/json/"])),
    "healthcheck probing nothing": (
        check_healthchecks_probe_what_the_service_binds,
        _set(["services", "kafka-2", "healthcheck", "test"], ["CMD-SHELL", "true"])),
    "DataNodes wait for safe mode to end": (
        check_start_order,
        _set(["services", "namenode", "healthcheck", "test"],
             ["CMD-SHELL", "hdfs dfsadmin -safemode get | grep -q 'Safe mode is OFF' && curl -f http://namenode:29870/jmx"])),
    "a cycle in depends_on": (
        check_start_order,
        _set(["services", "namenode", "depends_on"], {"datanode-1": {"condition": "service_healthy"}})),
    "a dependant that does not wait for health": (
        check_start_order,
        _set(["services", "datanode-2", "depends_on"], {"namenode": {"condition": "service_started"}})),
    "streaming application without a core cap": (
        check_matches_topology, _drop_config_line("spark-defaults", "spark.cores.max")),
    "forced dfs.replication=1": (
        check_matches_topology, _replace_config("datanode-1-hdfs-site", "<name>dfs.replication</name><value>2",
                                                "<name>dfs.replication</name><value>1")),
    "client replication not the cluster's": (
        check_matches_topology, _replace_config("spark-defaults", "spark.hadoop.dfs.replication 2",
                                                "spark.hadoop.dfs.replication 1")),
    "topic with replication factor 1": (
        check_matches_topology, _replace_in(["services", "kafka-init", "command"], "--replication-factor 3",
                                            "--replication-factor 1")),
    "a broker on another port than the topology's": (
        check_matches_topology, _replace_config("kafka-2-server-properties", "PLAINTEXT://:29192",
                                                "PLAINTEXT://:9092")),
    "a log server port not the topology's": (
        check_matches_topology, _set(["services", "airflow-triggerer", "environment", "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"], "8794")),
    "worker cores not the topology's": (
        check_matches_topology, _replace_in(["services", "spark-worker-2", "command"], "2560m", "8g")),
    "a missing DataNode": (
        check_matches_topology, lambda doc: doc["services"].pop("datanode-2")),
    "scheduler not waiting for HDFS": (
        # directly or through the Spark Connect server it also waits for
        check_matches_topology, lambda doc: [doc["services"][name]["depends_on"].pop("hdfs-init")
                                             for name in ("airflow-scheduler", "spark-connect")]),
    "Kafka PLAINTEXT published on 0.0.0.0": (
        check_only_the_airflow_ui_is_published, _set(["services", "kafka-1", "ports"], ["29092:29092"])),
    "WebHDFS published on 0.0.0.0": (
        check_only_the_airflow_ui_is_published,
        _set(["services", "namenode", "ports"], [{"target": 29870, "published": "9870"}])),
    "jars built on the host first": (
        check_images_pinned, _set(["services", "airflow-scheduler", "volumes"], ["./.cache/jars:/opt/lambdaflow-jars"])),
    "an image off the poms' version": (
        check_images_pinned, _set(["services", "kafka-3", "image"], "lambdaflow/kafka:4.2.0")),
    "an unpinned image": (
        check_images_pinned, _set(["services", "postgres", "image"], "postgres:latest")),
    "an inline Dockerfile": (
        check_images_pinned, _set(["services", "spark-master", "build"], {"context": ".", "dockerfile_inline": "FROM x"})),
    "a misspelt key": (
        check_schema, _set(["services", "kafka-1", "healthchek"], {"test": ["CMD", "true"]})),
}

BROKEN_TEXTS = {
    "a secret with a public default": (
        check_secrets_required, lambda t: t.replace("${AIRFLOW_JWT_SECRET:?", "${AIRFLOW_JWT_SECRET:-dev-secret}${X:?")),
    "the admin password with a default": (
        check_secrets_required, lambda t: t.replace("${AIRFLOW_ADMIN_PASSWORD:?", "${AIRFLOW_ADMIN_PASSWORD:-admin}${Y:?")),
    "an undocumented variable": (
        check_secrets_required, lambda t: t.replace("${AIRFLOW_UID:-50000}", "${AIRFLOW_GID:-0}")),
    "a hand edit": (check_is_generated, lambda t: t.replace("retries: 20", "retries: 3", 1)),
}


@pytest.mark.parametrize("defect", sorted(BROKEN_DOCUMENTS))
def test_each_check_fails_on_a_broken_document(defect: str, compose: dict) -> None:
    check, mutate = BROKEN_DOCUMENTS[defect]
    check(compose)  # the real document passes ...
    broken = copy.deepcopy(compose)
    mutate(broken)
    with pytest.raises(AssertionError):  # ... and the broken copy does not
        check(broken)


@pytest.mark.parametrize("defect", sorted(BROKEN_TEXTS))
def test_each_text_check_fails_on_a_broken_file(defect: str, raw_text: str) -> None:
    check, mutate = BROKEN_TEXTS[defect]
    check(raw_text)
    broken = mutate(raw_text)
    assert broken != raw_text
    with pytest.raises(AssertionError):
        check(broken)


def test_interpolation_helper() -> None:
    assert interpolate("${A:-x} ${B-y} $${C} $$D ${E}", {"A": "", "B": "", "E": "e"}) == "x  ${C} $D e"
    with pytest.raises(KeyError):
        interpolate("${A:?needed}", {})
    with pytest.raises(KeyError):
        interpolate("${A:?needed}", {"A": ""})
    assert interpolate("${A:?needed}", {"A": "a"}) == "a"
