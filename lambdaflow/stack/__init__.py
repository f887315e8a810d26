"""Local stack control: ``lambdaflow up`` / ``down`` / ``status``.

Starts a real Kafka broker (KRaft), a real HDFS NameNode and DataNode, PostgreSQL (Airflow's
metadata DB) and Airflow's daemons from this checkout, with logs and pid files under ``.run/`` (git-ignored). Start-up is
idempotent: a service that is already up is left alone, one that died is started again.
"""

from __future__ import annotations

import json
import os
import time
from urllib.request import Request, urlopen

from lambdaflow.stack.daemon import LOG_DIR, RUN_DIR, ServiceError, port_open, reap_orphans
from lambdaflow.stack.services import (
    AIRFLOW_DB_PORT, AIRFLOW_PASSWORDS, AIRFLOW_USER, ALL_PORTS, SERVICES, admin_password, airflow_env,
    airflow_url, default_settings, hdfs_tree, kafka_tool_command, metadata_db_kind, migrate_airflow_db,
    spark_connect_url, uses_own_postgres,
)
from lambdaflow.stack import ingest_service, jars

__all__ = ["up", "down", "status", "stop_jobs", "kafka_tool_command", "airflow_env", "ServiceError", "SERVICES",
           "RUN_DIR", "LOG_DIR", "default_settings"]

CORE = ["kafka", "namenode", "datanode"]
METADATA_DB = ["postgres"] if uses_own_postgres() else []
SPARK = ["spark-connect"]  # the batch layer's Spark Connect server
AIRFLOW = ["airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"]


def up(services: list[str] | None = None, quiet: bool = False) -> dict[str, bool]:
    """Start the services (all by default) that are not up; returns {name: started_now}."""
    names = CORE + METADATA_DB + SPARK + AIRFLOW if services is None else services
    unknown = set(names) - SERVICES.keys()
    if unknown:
        raise ValueError(f"unknown services {sorted(unknown)}; known: {', '.join(SERVICES)}")
    if set(names) & set(CORE):
        jars.resolve_all(quiet=quiet)
    reap_orphans(quiet)
    started = {}
    for name in CORE + METADATA_DB + SPARK + AIRFLOW:
        if name in names:
            started[name] = SERVICES[name].start(quiet=quiet)
            if name == "kafka":
                _ensure_topic(quiet)
            if name == "datanode":
                _ensure_hdfs_tree()
    return started


def _ensure_topic(quiet: bool) -> None:
    from lambdaflow import kafka_admin

    settings = default_settings()
    if kafka_admin.ensure_topic(settings) and not quiet:
        print(f"[up] created topic {settings.topic} with {settings.partitions} partitions", flush=True)


def _ensure_hdfs_tree() -> None:
    from lambdaflow import hdfs

    client = hdfs.client(default_settings())
    for path in hdfs_tree(default_settings()):
        client.makedirs(path)


def down(services: list[str] | None = None, quiet: bool = False) -> list[str]:
    """Stop every service this checkout started (Airflow first: it may be running Spark jobs), or
    only the named ones. Each daemon's whole session goes, including what a killed daemon left."""
    names = list(SERVICES) if services is None else services  # [] stops nothing, never everything
    unknown = set(names) - SERVICES.keys()
    if unknown:
        raise ValueError(f"unknown services {sorted(unknown)}; known: {', '.join(SERVICES)}")
    stopped = []
    if services is None:
        stopped += stop_jobs(quiet)  # the streaming ingest and other jobs with a pid file
    for name in AIRFLOW + SPARK + METADATA_DB + list(reversed(CORE)):
        if name in names and SERVICES[name].stop():
            stopped.append(name)
            if not quiet:
                print(f"[down] stopped {name}", flush=True)
    reap_orphans(quiet, verb="down")
    ports = ALL_PORTS if services is None else sorted({p for n in names for p in SERVICES[n].ports})
    busy = [p for p in ports if port_open(p)]
    if busy:
        raise ServiceError(f"ports still listening after down: {busy} (another process holds them?)")
    return stopped


def stop_jobs(quiet: bool, pid_dir=None, services=None) -> list[str]:
    """Jobs with a pid file in ``pid_dir`` (the stack's) that are not daemons of `up` (the streaming
    ingest service, a `lambdaflow ingest` in the background), each in a session of its own."""
    from lambdaflow.stack.daemon import PID_DIR, kill_session, session_members

    pid_dir = PID_DIR if pid_dir is None else pid_dir
    services = SERVICES if services is None else services
    stopped = []
    for pid_file in pid_dir.glob("*.pid"):
        if pid_file.stem in services:
            continue
        try:
            pid = int(pid_file.read_text())
        except ValueError:
            pid = -1
        if pid > 0 and session_members(pid):
            if pid_file.stem.startswith(ingest_service.NAME):  # the running batch commits first
                ingest_service.finish_batch_then_exit(pid)
            kill_session(pid, timeout_s=30)
            stopped.append(pid_file.stem)
            if not quiet:
                print(f"[down] stopped {pid_file.stem} (pid {pid})", flush=True)
        pid_file.unlink(missing_ok=True)
    return stopped


def status() -> dict:
    """The contract's status document: services, Airflow access, last DAG run states."""
    services = {name: ("up" if daemon.is_up() else "down") for name, daemon in SERVICES.items()}
    document = {
        "services": services,
        "airflow": {"url": airflow_url(), "username": AIRFLOW_USER, "password_file": str(AIRFLOW_PASSWORDS),
                    "metadata_db": metadata_db_kind(),
                    **({"metadata_db_address": f"localhost:{AIRFLOW_DB_PORT}/airflow"} if uses_own_postgres() else {})},
        "logs": str(LOG_DIR),
        "ingest": ingest_service.state(),  # the streaming job, started and supervised by weblogs_ingest
        "dags": {},
    }
    from lambdaflow.stack import cluster, topology  # topology, kafka, hdfs, spark: as the cluster reports them

    document.update(cluster.summary(topology.topology("local"), default_settings()))
    document["spark"]["connect"] = spark_connect_url()  # batch tasks' Spark (services["spark-connect"]: up?)
    if services["airflow-api-server"] == "up":
        try:
            document["dags"] = dag_states()
        except Exception as exc:  # the status command must answer even when the API misbehaves
            document["dags_error"] = str(exc)
    return document


def api_token() -> str:
    body = json.dumps({"username": AIRFLOW_USER, "password": admin_password()}).encode()
    request = Request(f"{airflow_url()}/auth/token", data=body, headers={"Content-Type": "application/json"})
    with urlopen(request, timeout=10) as response:
        return json.load(response)["access_token"]


def api(method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
    """Call Airflow's REST API (v2) of this deployment as the admin user."""
    headers = {"Authorization": f"Bearer {token or api_token()}", "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body is not None else None
    request = Request(f"{airflow_url()}/api/v2{path}", data=data, headers=headers, method=method)
    with urlopen(request, timeout=30) as response:
        raw = response.read()
    return json.loads(raw) if raw else {}


def dag_states() -> dict[str, dict]:
    token = api_token()
    dags = api("GET", "/dags?limit=100", token=token).get("dags", [])
    states = {}
    for dag in dags:
        runs = api("GET", f"/dags/{dag['dag_id']}/dagRuns?order_by=-run_after&limit=1", token=token)
        run = (runs.get("dag_runs") or [None])[0]
        states[dag["dag_id"]] = {"last_run_state": run["state"] if run else None,
                                 "is_paused": dag.get("is_paused")}
    return states


def wait_for_dags(dag_ids: list[str], timeout_s: float = 120) -> None:
    """Wait until the dag-processor has parsed these DAGs into the metadata DB."""
    deadline = time.monotonic() + timeout_s
    while True:
        known = {d["dag_id"] for d in api("GET", "/dags?limit=100").get("dags", [])}
        if set(dag_ids) <= known:
            return
        if time.monotonic() > deadline:
            raise ServiceError(f"DAGs {sorted(set(dag_ids) - known)} not parsed after {timeout_s}s; "
                               f"see {LOG_DIR}/airflow-dag-processor.log")
        time.sleep(2)


def ensure_migrated() -> None:
    migrate_airflow_db(quiet=True)


os.environ.setdefault("NO_PROXY", "*")
