"""The lag monitor's remediation: restart the ingest when it has not moved for too long.

**When** (:func:`restart_decision`, pure): the lag status is STALL or STOP, it has been one of those
without interruption for at least ``restart_after_s`` (``not_moving_since`` in the state kept by
:func:`lambdaflow.monitoring.alerts.track_lag_status`), remediation is enabled, and the last restart
is at least ``min_interval_s`` ago (a restart that does not help is not repeated every minute).

**How** (:func:`restart_ingest`, the one place to swap): the stack-managed ingest service
(:mod:`lambdaflow.stack.ingest_service`) is stopped (SIGTERM: the running batch commits, then the
job exits; a job that does not exit in time is killed) and started again in one step under the
service's start lock, which resumes where the landing zone ends. Only when the service was last
started for the same root and topic (a monitor of other settings never touches it), and never when
it was stopped on request.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import Any

from lambdaflow.config import Settings
from lambdaflow.monitoring.alerts import NOT_MOVING

log = logging.getLogger(__name__)

DEFAULT_RESTART_AFTER_S = 120.0
DEFAULT_MIN_INTERVAL_S = 900.0
STOP_TIMEOUT_S = 60.0  # a clean stop commits the running batch within seconds; a hung job is killed after this


def restart_decision(state: Mapping[str, Any], now_ms: int, restart_after_s: float = DEFAULT_RESTART_AFTER_S,
                     min_interval_s: float = DEFAULT_MIN_INTERVAL_S, enabled: bool = True) -> tuple[bool, str]:
    """``(restart?, why)`` for the kept lag state (``status``, ``not_moving_since``, ``last_restart_at``)."""
    status = state.get("status")
    since = state.get("not_moving_since")
    if status not in NOT_MOVING or since is None:
        return False, f"status {status}: nothing to restart"
    stuck_s = max(0.0, (now_ms - since) / 1000)
    if not enabled:
        return False, f"{status} for {stuck_s:.0f} s, but remediation is disabled"
    if stuck_s < restart_after_s:
        return False, f"{status} for {stuck_s:.0f} s; restart after {restart_after_s:.0f} s"
    last = state.get("last_restart_at")
    if last is not None and (now_ms - last) / 1000 < min_interval_s:
        return False, (f"{status} for {stuck_s:.0f} s, but the ingest was restarted {(now_ms - last) / 1000:.0f} s "
                       f"ago (at most once every {min_interval_s:.0f} s)")
    return True, f"{status} for {stuck_s:.0f} s (restart after {restart_after_s:.0f} s)"


def restart_ingest(settings: Settings, service_name: str | None = None) -> dict[str, Any]:
    """Restart the streaming ingest for real (see the module doc); returns what was done.

    ``service_name`` picks another instance of the ingest service than the deployment's (tests).
    """
    service = importlib.import_module("lambdaflow.stack").ingest_service
    named = {} if service_name is None else {"name": service_name}
    running_for = service.state(settings, **named)
    if (running_for.get("root"), running_for.get("topic")) != (settings.root, settings.topic):
        # never stop (or start) the service for other settings: a monitor of a test root must not
        # restart the deployment's ingest
        return {"how": "skipped", "why": f"the ingest service runs for root {running_for.get('root')} and topic "
                                         f"{running_for.get('topic')}, not {settings.root} and {settings.topic}"}
    if running_for.get("state") == "stopped" and service.stopped_on_request(running_for.get("name")):
        # stopped on purpose (`lambdaflow ingest --stop`, make down): not the monitor's to undo
        return {"how": "skipped", "why": f"the ingest service {running_for.get('name')} was stopped on request"}
    # one step under the service's start lock; a hung job ignores SIGTERM: killed after STOP_TIMEOUT_S
    result = service.restart(settings, timeout_s=STOP_TIMEOUT_S, **named)
    return {"how": "ingest service stopped and started", **result}
