"""Alerts: what is sent, where it goes, what is kept, and when the lag monitor speaks up.

- **Payload** (:func:`make_alert`): one flat JSON object, ``{"at" (epoch ms), "kind", "severity",
  "title", "text", ...details}``. ``kind`` is ``task_failed`` (any DAG's failure callback) or
  ``lag_status`` (the lag monitor's status changed).
- **Delivery** (:func:`send`): always logged; POSTed as JSON to the webhook URL when one is given
  (the Airflow Connection ``lambdaflow_alerts``, resolved by :mod:`lambdaflow.monitoring.notifier`);
  a receiver that is down is logged, never raised: an alert must not fail the task it reports.
- **Alert log**: the last :data:`ALERT_LOG_SIZE` alerts, newest last, in one small JSON document
  ``{root}/monitoring/alerts/alert_log.json`` next to the lag history; the dashboard shows it.
- **Lag status changes** (:func:`track_lag_status`): the lag monitor samples every minute but
  notifies only when the status changes (OK→WARN, →STALL/STOP/REWIND, back to OK: "recovered"). The
  last status, since when it holds, and since when the ingest has been STOPped or STALLed (for
  remediation) are kept in ``{root}/monitoring/alerts/lag_state.json``, so the rule survives
  restarts and does not depend on the scheduler's memory.

The decisions are pure functions over plain dicts (:func:`lag_status_change`,
:func:`next_lag_state`); the storage is a tiny :class:`JsonStore` (HDFS in the deployment, a dict in
tests).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from lambdaflow.config import Settings

log = logging.getLogger(__name__)

ALERT_LOG_SIZE = 50
ALERT_LOG = "alert_log.json"
LAG_STATE = "lag_state.json"
WEBHOOK_TIMEOUT_S = 10.0

# The statuses of lambdaflow.lag, repeated here so that this module needs neither Kafka nor HDFS clients.
OK, WARN, NOT_STARTED, STALL, STOP, REWIND = "OK", "WARN", "NOT_STARTED", "STALL", "STOP", "REWIND"
SEVERITY = {OK: 0, WARN: 1, NOT_STARTED: 2, STALL: 3, STOP: 4, REWIND: 5}
# Statuses meaning "the ingest does not move": what remediation (a restart) can fix.
NOT_MOVING = frozenset({STALL, STOP})


def now_ms() -> int:
    return int(time.time() * 1000)


def alerts_dir(settings: Settings) -> str:
    return f"{settings.root}/monitoring/alerts"


# ------------------------------------------------------------------------------------- payloads
def make_alert(kind: str, title: str, text: str = "", severity: str = "error", at: int | None = None,
               **details: Any) -> dict[str, Any]:
    """An alert document (JSON-able; ``details`` are flattened in)."""
    return {"at": now_ms() if at is None else int(at), "kind": kind, "severity": severity, "title": title,
            "text": text, **details}


def task_failed_alert(dag_id: str, task_id: str | None, run_id: str | None, try_number: Any = None,
                      error: Any = None, log_url: str | None = None, at: int | None = None) -> dict[str, Any]:
    """What a DAG's failure callback reports."""
    error_text = " ".join(str(error).split())[:1000] if error is not None else ""
    where = f"{dag_id}.{task_id}" if task_id else dag_id
    return make_alert("task_failed", f"{where} failed", error_text, "error", at=at, dag_id=dag_id,
                      task_id=task_id, run_id=run_id, try_number=try_number, log_url=log_url)


# ------------------------------------------------------------------------------------- delivery
def post_webhook(url: str, payload: Mapping[str, Any], timeout_s: float = WEBHOOK_TIMEOUT_S) -> bool:
    """POST the payload as JSON; True when the receiver answered 2xx (failures are logged)."""
    body = json.dumps(payload, default=str).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "lambdaflow-alerts"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            log.info("alert posted to %s (HTTP %s)", url, response.status)
            return 200 <= response.status < 300
    except (OSError, urllib.error.HTTPError) as exc:  # URLError and timeouts are OSErrors
        log.error("could not post the alert to %s: %s", url, exc)
        return False


def send(payload: Mapping[str, Any], webhook_url: str | None = None, store: "JsonStore | None" = None,
         timeout_s: float = WEBHOOK_TIMEOUT_S) -> dict[str, Any]:
    """Log the alert, POST it to ``webhook_url`` when given, add it to the alert log in ``store``.

    Returns the alert as logged, with ``delivered``: True/False after a POST, None with no webhook.
    Never raises for an unreachable receiver or store.
    """
    entry = dict(payload)
    log.warning("lambdaflow alert: %s", json.dumps(entry, default=str))
    entry["delivered"] = post_webhook(webhook_url, entry, timeout_s) if webhook_url else None
    if store is not None:
        try:
            record_alert(store, entry)
        except Exception as exc:  # the alert log is a convenience; the alert itself went out
            log.error("could not add the alert to the alert log: %s", exc)
    return entry


# ------------------------------------------------------------------------------------- storage
class JsonStore(Protocol):
    def load(self, name: str, default: Any = None) -> Any: ...

    def save(self, name: str, document: Any) -> None: ...


class MemoryStore:
    """A :class:`JsonStore` in a dict (tests, and callers without HDFS)."""

    def __init__(self) -> None:
        self.documents: dict[str, str] = {}
        self._lock = threading.Lock()

    def load(self, name: str, default: Any = None) -> Any:
        with self._lock:
            return json.loads(self.documents[name]) if name in self.documents else default

    def save(self, name: str, document: Any) -> None:
        with self._lock:
            self.documents[name] = json.dumps(document, default=str)


class HdfsStore:
    """A :class:`JsonStore` of small JSON documents under ``{root}/monitoring/alerts`` (atomic writes)."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.base = alerts_dir(settings)
        self.timeout_s = timeout_s

    def load(self, name: str, default: Any = None) -> Any:
        from lambdaflow import hdfs

        with hdfs.webhdfs_errors(self.settings):
            return hdfs.read_json(hdfs.client(self.settings, timeout=self.timeout_s), f"{self.base}/{name}", default)

    def save(self, name: str, document: Any) -> None:
        from lambdaflow import hdfs

        with hdfs.webhdfs_errors(self.settings):
            c = hdfs.client(self.settings, timeout=self.timeout_s)
            c.makedirs(self.base)
            hdfs.write_json(c, f"{self.base}/{name}", document)


def bounded_append(entries: Sequence[Mapping[str, Any]], entry: Mapping[str, Any],
                   limit: int = ALERT_LOG_SIZE) -> list[dict[str, Any]]:
    """The log with ``entry`` added last, keeping only the newest ``limit`` entries."""
    kept = [dict(e) for e in entries if isinstance(e, Mapping)]
    kept.append(dict(entry))
    return kept[-limit:] if limit > 0 else []


def record_alert(store: JsonStore, entry: Mapping[str, Any], limit: int = ALERT_LOG_SIZE) -> None:
    # Read-modify-write without a lock: two alerts at the same instant may lose one from the log
    # (never from the webhook or the task log); the log is a view for the dashboard.
    entries = store.load(ALERT_LOG, default=[])
    store.save(ALERT_LOG, bounded_append(entries if isinstance(entries, list) else [], entry, limit))


def recent_alerts(store: JsonStore, limit: int = 20) -> list[dict[str, Any]]:
    """The newest alerts first."""
    entries = store.load(ALERT_LOG, default=[])
    entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    return list(reversed(entries))[:limit]


def sent_recently(store: JsonStore, alert: Mapping[str, Any], within_s: float, now: int | None = None,
                  keys: Sequence[str] = ("kind", "dag_id", "task_id")) -> bool:
    """True when the alert log holds an alert like this one (same ``keys``) from the last ``within_s`` seconds."""
    now = now_ms() if now is None else now
    since = now - within_s * 1000
    return any(e.get("at", 0) >= since and all(e.get(k) == alert.get(k) for k in keys)
               for e in recent_alerts(store, limit=ALERT_LOG_SIZE))


# ------------------------------------------------------------------------------ lag status changes
def lag_alert_status(report: Mapping[str, Any], threshold_messages: Sequence[str] = ()) -> str:
    """The status alerts are about: the lag report's, or WARN when it is OK but a threshold is exceeded."""
    status = str(report.get("status") or OK)
    return WARN if status == OK and threshold_messages else status


def lag_status_change(notified: str | None, current: str) -> str | None:
    """The change to notify, or None: ``"recovered"`` (back to OK), ``"worse"`` or ``"better"``.

    ``notified`` is the last status notified (None: never). A first status of OK is no news.
    """
    if current == notified or (notified is None and current == OK):
        return None
    if current == OK:
        return "recovered"
    return "worse" if SEVERITY.get(current, 9) > SEVERITY.get(notified or OK, 9) else "better"


def next_lag_state(state: Mapping[str, Any] | None, status: str, at: int) -> dict[str, Any]:
    """The kept state after a sample with ``status`` at ``at`` (epoch ms).

    ``status``/``since``: the current status and when it began; ``not_moving_since``: when the
    current uninterrupted run of STALL/STOP samples began (None when the ingest moves);
    ``notified``: the last status notified; ``last_restart_at``: kept for remediation.
    """
    state = dict(state or {})
    previous = state.get("status")
    new = {
        "status": status,
        "since": state.get("since") if previous == status and state.get("since") is not None else at,
        "not_moving_since": (state.get("not_moving_since") if previous in NOT_MOVING and state.get("not_moving_since")
                             is not None else at) if status in NOT_MOVING else None,
        "notified": state.get("notified"),
        "last_restart_at": state.get("last_restart_at"),
        "sampled_at": at,
    }
    return new


def lag_status_alert(change: str, previous: str | None, report: Mapping[str, Any], status: str,
                     messages: Sequence[str] = (), at: int | None = None) -> dict[str, Any]:
    worst = [p for p in report.get("partitions", []) if p.get("status") not in (None, OK)]
    title = (f"ingest lag recovered: OK (was {previous})" if change == "recovered"
             else f"ingest lag {status} (was {previous or 'unknown'})")
    text = "; ".join(messages) if messages else "; ".join(
        f"partition {p.get('partition')}: {p.get('status')} ({p.get('reason', '')})" for p in worst)
    severity = "info" if change == "recovered" else "warning" if status == WARN else "error"
    return make_alert("lag_status", title, text, severity, at=at, status=status, previous=previous, change=change,
                      group=report.get("group"), topic=report.get("topic"), total_lag=report.get("total_lag"))


def track_lag_status(store: JsonStore, report: Mapping[str, Any], threshold_messages: Sequence[str] = (),
                     webhook_url: str | None = None, at: int | None = None) -> dict[str, Any]:
    """One lag monitor step: update the kept state, notify when the status changed; returns the state
    (with ``alert``: the alert sent, or None)."""
    at = now_ms() if at is None else at
    status = lag_alert_status(report, threshold_messages)
    previous = store.load(LAG_STATE, default=None)
    state = next_lag_state(previous if isinstance(previous, dict) else None, status, at)
    change = lag_status_change(state["notified"], status)
    sent = None
    if change:
        sent = send(lag_status_alert(change, state["notified"], report, status, threshold_messages, at),
                    webhook_url, store)
        state["notified"] = status
    elif state["notified"] is None:
        state["notified"] = status  # the first status, OK: the baseline later changes are told against
    store.save(LAG_STATE, state)
    return {**state, "alert": sent}
