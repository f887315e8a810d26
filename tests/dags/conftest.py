"""DAG tests run against this deployment's Airflow configuration and metadata DB (PostgreSQL,
started and migrated here if needed; `airflow dags test` needs no other Airflow daemon)."""

from __future__ import annotations

import os

from lambdaflow.stack import airflow_env, ensure_migrated

# Set before anything imports airflow: its configuration is read once, at import.
os.environ.update(airflow_env())
ensure_migrated()
