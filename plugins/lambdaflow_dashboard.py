"""Airflow plugin: the lambdaflow dashboard, served by the api-server under ``/lambdaflow/``.

- ``GET /lambdaflow/``: ingest lag per partition (live, judged like the ``weblogs_lag_monitor`` DAG),
  lag over time, the landing zone's totals (landed and quarantined rows, quarantine reasons), the
  batch watermark, and the DAGs with their last runs and links.
- ``GET /lambdaflow/api/summary``: the same figures as JSON.

The logic lives in :mod:`lambdaflow.monitoring.dashboard`. This file only adds what needs Airflow: the
last run of each DAG, read from the metadata DB, the login check, and the registration. ``external_views`` adds a
"lambdaflow" entry to the Airflow UI's navigation that shows the page inside the UI (``url_route``);
the ``href`` has no leading slash, so it resolves against the UI's base URL. A small root middleware
redirects ``/lambdaflow`` to ``/lambdaflow/``: without the slash the path falls through to the
Airflow UI's catch-all route.

Auth: Airflow does not put plugin FastAPI apps behind its login, so every route depends on
:func:`lambdaflow.monitoring.auth.airflow_login_required`: Airflow's auth manager validates the
``Authorization: Bearer`` token (``POST /auth/token``) or the UI session's ``_token`` cookie.
Without credentials: 401, or for a browser a redirect to ``/auth/login?next=...``. There is no
user store of our own. After changing this file, restart the api-server.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin
from starlette.responses import RedirectResponse

from lambdaflow.monitoring.auth import airflow_login_required
from lambdaflow.monitoring.dashboard import Sources, create_app

URL_PREFIX = "/lambdaflow"


def dag_states() -> dict[str, dict[str, Any]]:
    """``{dag_id: {is_paused, last_run_id, last_run_state, last_run_after}}`` for every DAG that is not stale."""
    from sqlalchemy import select

    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    states: dict[str, dict[str, Any]] = {}
    with create_session() as session:
        dags = session.execute(select(DagModel.dag_id, DagModel.is_paused)
                               .where(DagModel.is_stale.is_(False)).order_by(DagModel.dag_id)).all()
        for dag_id, is_paused in dags:
            run = session.execute(select(DagRun.run_id, DagRun.state, DagRun.run_after)
                                  .where(DagRun.dag_id == dag_id)
                                  .order_by(DagRun.run_after.desc()).limit(1)).first()
            states[dag_id] = {
                "is_paused": bool(is_paused),
                "last_run_id": run.run_id if run else None,
                "last_run_state": str(getattr(run.state, "value", run.state)) if run and run.state else None,
                "last_run_after": run.run_after.isoformat(timespec="seconds") if run and run.run_after else None,
            }
    return states


class RedirectToDashboard:
    """``/lambdaflow`` without the slash would reach the Airflow UI's catch-all route: send it to ``/lambdaflow/``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == URL_PREFIX:
            query = scope.get("query_string", b"").decode("latin-1")
            target = f"{scope.get('root_path', '')}{URL_PREFIX}/" + (f"?{query}" if query else "")
            await RedirectResponse(target, status_code=307)(scope, receive, send)
            return
        await self.app(scope, receive, send)


app = create_app(Sources(dags=dag_states), auth=airflow_login_required)


class LambdaflowDashboardPlugin(AirflowPlugin):
    name = "lambdaflow_dashboard"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "lambdaflow dashboard"}]
    fastapi_root_middlewares = [{"middleware": RedirectToDashboard, "args": [], "kwargs": {},
                                 "name": "lambdaflow dashboard redirect"}]
    external_views = [{
        "name": "lambdaflow",
        "href": "lambdaflow/",
        "url_route": "lambdaflow",
        "destination": "nav",
    }]
