"""Airflow's daemons of the local deployment: on PostgreSQL, the UI logs in with the generated admin
password and lists the DAGs."""

from __future__ import annotations

import json
import stat
import subprocess
from urllib.request import Request, urlopen

import pytest

from lambdaflow import stack
from lambdaflow.stack.services import AIRFLOW_PASSWORDS

from .test_dag_integrity import EXPECTED_DAGS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def airflow_up():
    already = {name: d.is_up() for name, d in stack.SERVICES.items() if name in stack.AIRFLOW}
    stack.up(services=stack.AIRFLOW, quiet=True)
    yield stack.status()
    # The Spark-heavy tests that follow need the cores; stop what this test started.
    for name, was_up in already.items():
        if not was_up:
            stack.SERVICES[name].stop()


def test_airflow_daemons_report_up_with_credentials(airflow_up) -> None:
    assert all(airflow_up["services"][name] == "up" for name in stack.AIRFLOW)
    assert airflow_up["airflow"]["url"].startswith("http://localhost:")
    assert airflow_up["airflow"]["username"] == "admin"
    password_file = airflow_up["airflow"]["password_file"]
    assert password_file == str(AIRFLOW_PASSWORDS)
    assert stat.S_IMODE(AIRFLOW_PASSWORDS.stat().st_mode) == 0o600


def test_login_with_generated_password_lists_paused_dags(airflow_up) -> None:
    stack.wait_for_dags(sorted(EXPECTED_DAGS), timeout_s=180)
    dags = {d["dag_id"]: d for d in stack.api("GET", "/dags?limit=100")["dags"]}
    assert EXPECTED_DAGS <= dags.keys()


def test_wrong_password_is_refused(airflow_up) -> None:
    body = json.dumps({"username": "admin", "password": "not-the-password"}).encode()
    request = Request(f"{airflow_up['airflow']['url']}/auth/token", data=body,
                      headers={"Content-Type": "application/json"})
    with pytest.raises(Exception) as refused:
        urlopen(request, timeout=10)
    assert getattr(refused.value, "code", None) in (401, 403)


def test_status_reports_each_dag(airflow_up) -> None:
    stack.wait_for_dags(sorted(EXPECTED_DAGS), timeout_s=180)
    dags = stack.status()["dags"]
    assert EXPECTED_DAGS <= dags.keys()
    assert all("last_run_state" in info for info in dags.values())


def test_airflow_runs_on_the_stacks_postgresql(airflow_up) -> None:
    assert airflow_up["services"]["postgres"] == "up"
    assert airflow_up["airflow"]["metadata_db"] == "postgresql"
    out = subprocess.run([".venv/bin/lambdaflow", "status", "--json"], capture_output=True, text=True,
                         timeout=60, cwd=stack.services.REPO_ROOT)
    assert json.loads(out.stdout)["airflow"]["metadata_db"] == "postgresql"
    # the DAGs the dag-processor parsed are rows of the server's `dag` table, read with psql
    stack.wait_for_dags(sorted(EXPECTED_DAGS), timeout_s=180)
    psql = subprocess.run([".venv/bin/lambdaflow", "db-shell", "-At", "-c", "SELECT dag_id FROM dag"],
                          capture_output=True, text=True, timeout=60, cwd=stack.services.REPO_ROOT)
    assert psql.returncode == 0, psql.stderr
    assert EXPECTED_DAGS <= set(psql.stdout.split())
    env = stack.airflow_env()
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
