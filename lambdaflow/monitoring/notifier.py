"""The one notifier of every lambdaflow DAG: ``default_args={"on_failure_callback": failure_notifier(), ...}``.

An Airflow notifier (:class:`airflow.sdk.BaseNotifier`), so that it also fits ``on_*_callback``
parameters and deadline alerts. Its target is the Airflow Connection ``lambdaflow_alerts`` (type
``http``), set like the others through the environment, e.g.::

    AIRFLOW_CONN_LAMBDAFLOW_ALERTS='http://alerts.example:8099/hooks/lambdaflow'
    AIRFLOW_CONN_LAMBDAFLOW_ALERTS='{"conn_type": "http", "extra": {"url": "https://hooks.example/T0/B0"}}'

The webhook URL is the connection's extra ``url`` when given, else built from its host, port and
schema (the URI's path). Without the connection, alerts are only logged (and kept in the alert log
the dashboard shows). What is sent: :func:`lambdaflow.monitoring.alerts.task_failed_alert`.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseNotifier

from lambdaflow.config import Settings
from lambdaflow.monitoring import alerts

log = logging.getLogger(__name__)

ALERTS_CONN_ID = "lambdaflow_alerts"


def url_from_connection(conn: Any) -> str | None:
    """The webhook URL an ``http`` connection describes (see the module doc), or None."""
    extra = getattr(conn, "extra_dejson", None) or {}
    if extra.get("url"):
        return str(extra["url"])
    host = (getattr(conn, "host", None) or "").strip()
    if not host:
        return None
    if "://" in host:  # a full URL typed into the host field
        return host
    scheme = extra.get("scheme") or ("https" if getattr(conn, "conn_type", None) == "https" else "http")
    port = getattr(conn, "port", None)
    path = (getattr(conn, "schema", None) or "").strip("/")
    return f"{scheme}://{host}{f':{port}' if port else ''}/{path}"


def webhook_url(conn_id: str = ALERTS_CONN_ID) -> str | None:
    """The target of the connection ``conn_id``; None when it is not defined (alerts are then logged only)."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException, or a secrets backend that fails: log only
        log.info("no alert connection %r (%s): alerts are logged only", conn_id, exc.__class__.__name__)
        return None
    return url_from_connection(conn)


def alert_from_context(context: Any) -> dict[str, Any]:
    """The ``task_failed`` alert for a failure callback's context."""
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag, "dag_id", None) or "?"
    run = context.get("dag_run")
    return alerts.task_failed_alert(
        dag_id=dag_id, task_id=getattr(ti, "task_id", None),
        run_id=getattr(ti, "run_id", None) or getattr(run, "run_id", None) or context.get("run_id"),
        try_number=getattr(ti, "try_number", None), error=context.get("exception") or context.get("reason"),
        log_url=getattr(ti, "log_url", None))


class LambdaflowNotifier(BaseNotifier):
    """Logs a task failure, POSTs it to the ``lambdaflow_alerts`` webhook and adds it to the alert log.

    ``repeat_after_s`` > 0: a failure of the same task already in the alert log within that many
    seconds is logged only, not posted again (for tasks that run every minute and fail for as long
    as a problem lasts, e.g. the lag monitor's ``sample_lag`` while Kafka is down). When the alert
    log cannot be read, the alert goes out: better twice than never.
    """

    template_fields = ("conn_id",)

    def __init__(self, conn_id: str = ALERTS_CONN_ID, record: bool = True, repeat_after_s: float = 0) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.record = record
        self.repeat_after_s = repeat_after_s

    def store(self) -> alerts.JsonStore | None:
        return alerts.HdfsStore(Settings.from_env(), timeout_s=5.0) if self.record else None

    def notify(self, context: Any) -> None:
        alert, store = alert_from_context(context), self.store()
        if self.repeat_after_s > 0 and store is not None:
            try:
                repeated = alerts.sent_recently(store, alert, self.repeat_after_s, now=alert["at"])
            except Exception as exc:  # HDFS down: cannot tell, so send
                log.info("alert log unreadable (%s): sending", exc)
                repeated = False
            if repeated:
                log.warning("lambdaflow alert (already sent within %g s, not posted again): %s",
                            self.repeat_after_s, alert["title"])
                return
        alerts.send(alert, webhook_url(self.conn_id), store)


def failure_notifier(conn_id: str = ALERTS_CONN_ID, repeat_after_s: float = 0) -> LambdaflowNotifier:
    """The ``on_failure_callback`` for ``default_args`` (no I/O until a task fails)."""
    return LambdaflowNotifier(conn_id, repeat_after_s=repeat_after_s)
