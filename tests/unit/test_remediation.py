"""When the lag monitor restarts the ingest (a pure policy) and which action it takes (fakes, no services)."""

from __future__ import annotations

import sys
import types

import pytest

from lambdaflow.config import Settings
from lambdaflow.monitoring import alerts, remediation

T0 = 1_800_000_000_000
S = 1000


def state(status: str, not_moving_for_s: float | None, last_restart_ago_s: float | None = None) -> dict:
    return {"status": status,
            "not_moving_since": None if not_moving_for_s is None else T0 - int(not_moving_for_s * S),
            "last_restart_at": None if last_restart_ago_s is None else T0 - int(last_restart_ago_s * S)}


@pytest.mark.parametrize(("kept", "restart"), [
    (state("OK", None), False),
    (state("WARN", None), False),
    (state("NOT_STARTED", None), False),  # never ran: starting it is weblogs_ingest's job
    (state("STOP", 60), False),  # not long enough
    (state("STALL", 119.9), False),
    (state("STOP", 120), True),
    (state("STALL", 3600), True),
    (state("STOP", 3600, last_restart_ago_s=300), False),  # at most once per interval
    (state("STOP", 3600, last_restart_ago_s=900), True),
])
def test_restart_decision(kept, restart) -> None:
    decided, why = remediation.restart_decision(kept, T0, restart_after_s=120, min_interval_s=900)
    assert decided is restart, why
    assert why


def test_disabled_remediation_never_restarts() -> None:
    decided, why = remediation.restart_decision(state("STOP", 3600), T0, enabled=False)
    assert not decided and "disabled" in why


def test_the_kept_state_drives_the_policy_across_samples() -> None:
    """STALL, then STOP, minute after minute: one restart once the threshold passed, none in the interval."""
    store = alerts.MemoryStore()
    restarts = []
    for minute, status in enumerate(["OK", "STALL", "STALL", "STOP", "STOP", "STOP", "STOP", "STOP", "STOP"]):
        now = T0 + minute * 60 * S
        kept = alerts.track_lag_status(store, {"status": status, "partitions": []}, at=now)
        decided, _ = remediation.restart_decision(kept, now, restart_after_s=150, min_interval_s=240)
        if decided:
            restarts.append(minute)
            store.save(alerts.LAG_STATE, {**store.load(alerts.LAG_STATE), "last_restart_at": now})
    assert restarts == [4, 8]  # stuck since minute 1: 180 s at minute 4; then 240 s later


def test_restart_ingest_stops_and_starts_the_ingest_service(monkeypatch) -> None:
    calls = []
    settings = Settings(root="/lambda", topic="weblogs")
    service = types.SimpleNamespace(
        restart=lambda settings, timeout_s: calls.append(("restart", timeout_s)) or {"was_running": True,
                                                                                     "action": "started", "pid": 7},
        state=lambda settings: {"state": "running", "name": "ingest", "root": "/lambda", "topic": "weblogs"},
        stopped_on_request=lambda name: False)
    fake = types.ModuleType("lambdaflow.stack")
    fake.ingest_service = service
    monkeypatch.setitem(sys.modules, "lambdaflow.stack", fake)
    done = remediation.restart_ingest(settings)
    assert calls == [("restart", remediation.STOP_TIMEOUT_S)]
    assert done["was_running"] is True and done["action"] == "started" and done["pid"] == 7

    calls.clear()  # an ingest stopped on purpose (`lambdaflow ingest --stop`) is not brought back
    service.state = lambda settings: {"state": "stopped", "name": "ingest", "root": "/lambda", "topic": "weblogs"}
    service.stopped_on_request = lambda name: name == "ingest"
    done = remediation.restart_ingest(settings)
    assert calls == [] and done["how"] == "skipped" and "stopped on request" in done["why"]
    service.stopped_on_request = lambda name: False  # one that died is
    assert remediation.restart_ingest(settings)["how"] == "ingest service stopped and started"

    calls.clear()  # a monitor of another root (a test's) never touches the deployment's service
    done = remediation.restart_ingest(settings.replace(root="/lambda-test/abc"))
    assert calls == [] and done["how"] == "skipped" and "/lambda-test/abc" in done["why"]
