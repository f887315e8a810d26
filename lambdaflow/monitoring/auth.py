"""The dashboard behind Airflow's login: Airflow's own auth manager decides, there is no second user store.

:func:`airflow_login_required` is a FastAPI dependency for the plugin's routes. It authenticates
the way Airflow's REST API does (:func:`airflow.api_fastapi.core_api.security.get_user`): a
``Authorization: Bearer <JWT>`` header (from ``POST /auth/token``) wins, else the UI session's
``_token`` cookie, validated by ``get_auth_manager().get_user_from_token``. Then the auth manager
must allow the user the ``WEBSITE`` view (what any UI user has). No credentials → 401, an expired
token → 401, an invalid one → 403 (Airflow's answers); :func:`login_redirect` turns those into a
redirect to Airflow's login page (``/auth/login?next=...``) for a browser (``Accept: text/html``).

Airflow is imported when a request comes, never when the plugin is loaded, so the dashboard module
stays importable (and testable) without an api-server.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response


async def airflow_login_required(request: Request) -> Any:
    """The authenticated Airflow user allowed to see the website; raises 401/403 otherwise."""
    from fastapi.security import HTTPBearer

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import get_user

    credentials = await HTTPBearer(auto_error=False)(request)
    user = await get_user(request, _oauth_token=None, bearer_credentials=credentials)
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(status_code=403, detail="Forbidden")
    return user


def wants_html(request: Request) -> bool:
    """A browser navigating (``Accept: text/html``), as opposed to an API client or curl's ``*/*``."""
    return "text/html" in request.headers.get("accept", "").lower()


def login_redirect(request: Request, exc: HTTPException) -> Response:
    """Exception handler for the dashboard app: a browser without a valid session goes to Airflow's login
    page and comes back afterwards; everyone else gets the status (401/403) as JSON, like Airflow's API."""
    if exc.status_code in (401, 403) and request.method in ("GET", "HEAD") and wants_html(request):
        root = request.scope.get("root_path", "").rstrip("/")
        airflow_base = root.rsplit("/", 1)[0] if root else ""
        # Mounted apps see the full path in scope["path"] (Starlette >= 0.33); older ones, and test
        # clients given a root_path, see it without the mount point.
        path = request.scope.get("path", "/")
        full = path if (root and (path == root or path.startswith(root + "/"))) else f"{root}{path}"
        target = str(request.url.replace(path=full))
        return RedirectResponse(f"{airflow_base}/auth/login?{urlencode({'next': target})}", status_code=307)
    headers = getattr(exc, "headers", None) or {}
    if exc.status_code == 401:
        headers = {"WWW-Authenticate": "Bearer", **headers}
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)
