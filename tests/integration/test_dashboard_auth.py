"""The dashboard behind Airflow's login, as the api-server serves it (``lambdaflow up`` starts it).

Without credentials ``/lambdaflow/`` and ``/lambdaflow/api/*`` answer 401, and a browser is sent to
Airflow's login page; with a token from ``POST /auth/token`` (Bearer) or the UI session cookie
(``_token``) they answer 200. Airflow's own auth manager decides: there is no user store of ours.
"""

from __future__ import annotations

import json
import time
from urllib.error import HTTPError
from urllib.parse import parse_qs, urlparse
from urllib.request import HTTPRedirectHandler, Request, build_opener

import pytest

from lambdaflow import stack as local_stack

pytestmark = pytest.mark.integration


class NoRedirects(HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = build_opener(NoRedirects)


@pytest.fixture(scope="module")
def airflow(stack):
    """The api-server up (started if needed, stopped afterwards if this module started it)."""
    was_up = local_stack.SERVICES["airflow-api-server"].pid() is not None
    local_stack.up(services=local_stack.METADATA_DB + ["airflow-api-server"], quiet=True)
    yield local_stack.airflow_url()
    if not was_up:
        local_stack.SERVICES["airflow-api-server"].stop()


def call(url: str, headers: dict[str, str] | None = None, timeout: float = 90) -> tuple[int, dict, bytes]:
    try:
        with OPENER.open(Request(url, headers=headers or {}), timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except HTTPError as error:  # 3xx (not followed) and 4xx
        return error.code, dict(error.headers), error.read()


PATHS = ["/lambdaflow/", "/lambdaflow/api/summary?hours=1"]


@pytest.mark.parametrize("path", PATHS)
def test_without_credentials_401(airflow, path) -> None:
    status, headers, body = call(f"{airflow}{path}")
    assert status == 401, body[:300]
    assert json.loads(body) == {"detail": "Not authenticated"}
    assert b"landing" not in body and b"kafka_bootstrap" not in body


@pytest.mark.parametrize("path", PATHS)
def test_a_browser_without_a_session_goes_to_airflows_login(airflow, path) -> None:
    status, headers, _ = call(f"{airflow}{path}", {"Accept": "text/html,application/xhtml+xml"})
    assert status == 307
    location = urlparse(headers["location"])
    assert location.path == "/auth/login"
    assert parse_qs(location.query)["next"] == [f"{airflow}{path}"]
    login, _, _ = call(headers["location"] if location.netloc else f"{airflow}{headers['location']}")
    assert login in (200, 307), "Airflow's login must accept the next URL as safe"


def test_an_invalid_token_is_refused(airflow) -> None:
    status, _, _ = call(f"{airflow}/lambdaflow/api/summary", {"Authorization": "Bearer not-a-jwt"})
    assert status in (401, 403)


@pytest.mark.parametrize("path", PATHS)
def test_a_bearer_token_or_the_ui_session_cookie_gets_200(airflow, path) -> None:
    token = local_stack.api_token()
    status, headers, body = call(f"{airflow}{path}", {"Authorization": f"Bearer {token}"})
    assert status == 200, body[:300]
    status, _, body = call(f"{airflow}{path}", {"Cookie": f"_token={token}"})
    assert status == 200, body[:300]
    if "api/summary" in path:
        assert set(json.loads(body)["sections"]) >= {"lag", "landing", "alerts", "dags"}
    else:
        assert body.startswith(b"<!doctype html>") and b'<section id="alerts">' in body


def test_a_reload_loop_is_served_from_the_cache(airflow) -> None:
    token = local_stack.api_token()
    headers = {"Authorization": f"Bearer {token}"}
    call(f"{airflow}/lambdaflow/api/summary?hours=2", headers)  # warms the cache
    started = time.monotonic()
    for _ in range(20):
        status, _, _ = call(f"{airflow}/lambdaflow/api/summary?hours=2", headers)
        assert status == 200
    assert time.monotonic() - started < 20
