"""
### weblogs_lag_monitor

Every minute, measures how far the streaming ingest (`weblogs_ingest`) is behind Kafka on every
partition of the `weblogs` topic: log-end offset, the ingest's committed position (from the
landing zone's offset-range manifests, cross-checked with the consumer group `lambdaflow-ingest`),
lag in records and in seconds, and a Burrow-style status (OK / WARN / STALL / STOP / REWIND /
NOT_STARTED) over the last samples. Each sample is kept in HDFS (`/lambda/monitoring/lag`), so
the window survives restarts and the dashboard can plot lag over time.

- `sample_lag` records a sample and evaluates it (fails when Kafka or HDFS cannot be reached).
- `track_status` notifies **on a change of status only** (OK→WARN, →STALL/STOP/REWIND, back to OK:
  "recovered"), not on every sample; a lag above `max_lag_records` / `max_lag_seconds` while OK
  counts as WARN. The last notified status is kept in HDFS (`/lambda/monitoring/alerts`), so the
  rule survives restarts; every alert also goes to the alert log the dashboard shows.
- `check_lag` fails the run when the status is not OK or a threshold is exceeded, naming the
  partitions and figures in the log (a red run in the grid; it sends no alert of its own, the
  status change did).
- `restart_ingest_if_stuck`: **remediation**. When the status has been STALL or STOP for longer
  than `restart_after_s`, restarts the streaming ingest for real
  (`lambdaflow.monitoring.remediation.restart_ingest`), at most once every `restart_min_interval_s`.

Alerts go through the one notifier of every lambdaflow DAG (`lambdaflow.monitoring.notifier`): the
webhook of the Airflow Connection `lambdaflow_alerts` (type http), or the log only without it.

Settings (Params override Airflow Variables per run; defaults in `lambdaflow.lag` and
`lambdaflow.monitoring.remediation`): `lambdaflow_lag_max_records`, `lambdaflow_lag_max_seconds`,
`lambdaflow_lag_remediate`, `lambdaflow_lag_restart_after_s`, `lambdaflow_lag_restart_min_interval_s`.
The same measurement from a shell: `lambdaflow lag`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import Param, Variable, dag, task

from lambdaflow import lag
from lambdaflow.config import Settings
from lambdaflow.monitoring import alerts, remediation
from lambdaflow.monitoring.notifier import failure_notifier, webhook_url


def _setting(params: dict[str, Any], param: str, variable: str, default: Any, kind: type) -> Any:
    """A run's Param when given, else the Airflow Variable, else the default."""
    if params.get(param) is not None:
        return kind(params[param])
    value = Variable.get(variable, default=None)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on") if kind is bool else kind(value)


@dag(
    dag_id="weblogs_lag_monitor",
    schedule="* * * * *",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lambdaflow", "monitoring"],
    default_args={
        "owner": "lambdaflow",
        "retries": 1,
        "retry_delay": timedelta(seconds=5),
        # runs every minute: a failure lasting an hour (Kafka down) is one alert per half hour, not 60
        "on_failure_callback": failure_notifier(repeat_after_s=1800),
    },
    params={
        "window": Param(lag.DEFAULT_WINDOW, type="integer", minimum=1, maximum=1440, title="Window (samples)",
                        description="How many samples the status looks at, this one included (one a minute)."),
        "stop_after_s": Param(lag.DEFAULT_STOP_AFTER_S, type="number", minimum=0, maximum=86400,
                              title="STOP after (seconds)",
                              description="A partition is STOPped when nothing landed for this long while it lags."),
        "max_lag_records": Param(None, type=["null", "integer"], minimum=0, title="Max lag (records)",
                                 description="Alert above this lag in records. Empty: Variable "
                                             f"lambdaflow_lag_max_records, else {lag.DEFAULT_MAX_LAG_RECORDS}."),
        "max_lag_seconds": Param(None, type=["null", "number"], minimum=0, title="Max lag (seconds)",
                                 description="Alert when the oldest record not landed is older than this. Empty: "
                                             f"Variable lambdaflow_lag_max_seconds, else {lag.DEFAULT_MAX_LAG_SECONDS:g}."),
        "remediate": Param(None, type=["null", "boolean"], title="Restart a stuck ingest",
                           description="Restart the ingest when it is STALL or STOP for too long. Empty: Variable "
                                       "lambdaflow_lag_remediate, else on."),
        "restart_after_s": Param(None, type=["null", "number"], minimum=0, maximum=86400,
                                 title="Restart after (seconds)",
                                 description="How long the status must stay STALL/STOP before a restart. Empty: "
                                             "Variable lambdaflow_lag_restart_after_s, else "
                                             f"{remediation.DEFAULT_RESTART_AFTER_S:g}."),
        "restart_min_interval_s": Param(None, type=["null", "number"], minimum=0, maximum=604800,
                                        title="Min time between restarts (seconds)",
                                        description="At most one restart per this interval. Empty: Variable "
                                                    "lambdaflow_lag_restart_min_interval_s, else "
                                                    f"{remediation.DEFAULT_MIN_INTERVAL_S:g}."),
    },
)
def weblogs_lag_monitor() -> None:
    @task
    def sample_lag(params: dict[str, Any]) -> dict[str, Any]:
        """Record a lag sample and evaluate it over the window."""
        report = lag.monitor(Settings.from_env(), window=params["window"], stop_after_s=params["stop_after_s"])
        print(lag.format_table(report))
        return report

    @task
    def track_status(report: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """Keep the status; notify when it changed. Returns the kept state and the threshold messages."""
        messages = lag.alerts(
            report,
            max_lag_records=_setting(params, "max_lag_records", "lambdaflow_lag_max_records",
                                     lag.DEFAULT_MAX_LAG_RECORDS, int),
            max_lag_seconds=_setting(params, "max_lag_seconds", "lambdaflow_lag_max_seconds",
                                     lag.DEFAULT_MAX_LAG_SECONDS, float))
        state = alerts.track_lag_status(alerts.HdfsStore(Settings.from_env()), report, messages,
                                        webhook_url=webhook_url(), at=report["sampled_at"])
        print(f"status {state['status']} since {state['since']}; "
              + (f"notified: {state['alert']['title']}" if state["alert"] else "no change, nothing notified"))
        return {**state, "messages": messages, "report_message": lag.alert_message(report, messages)}

    @task(on_failure_callback=None)  # its failure is the lag status, notified by track_status on a change
    def check_lag(tracked: dict[str, Any]) -> None:
        """Fail with the partitions and figures when the ingest does not keep up."""
        if tracked["messages"]:
            raise lag.LagAlert(tracked["report_message"])

    @task
    def restart_ingest_if_stuck(tracked: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """Restart the ingest when it has been STALL/STOP for too long, at most once per interval."""
        now = alerts.now_ms()
        restart, why = remediation.restart_decision(
            tracked, now,
            restart_after_s=_setting(params, "restart_after_s", "lambdaflow_lag_restart_after_s",
                                     remediation.DEFAULT_RESTART_AFTER_S, float),
            min_interval_s=_setting(params, "restart_min_interval_s", "lambdaflow_lag_restart_min_interval_s",
                                    remediation.DEFAULT_MIN_INTERVAL_S, float),
            enabled=_setting(params, "remediate", "lambdaflow_lag_remediate", True, bool))
        print(("restarting the ingest: " if restart else "no restart: ") + why)
        if not restart:
            return {"restarted": False, "why": why}
        settings = Settings.from_env()
        store = alerts.HdfsStore(settings)
        state = store.load(alerts.LAG_STATE, default={}) or {}
        store.save(alerts.LAG_STATE, {**state, "last_restart_at": now})  # before acting: a failed restart counts
        done = remediation.restart_ingest(settings)
        restarted = done.get("how") != "skipped"
        title = "lag monitor restarted the ingest" if restarted else "lag monitor could not restart the ingest"
        alerts.send(alerts.make_alert("remediation", title, f"{why}; {done.get('how')} {done.get('why', '')}".strip(),
                                      "warning" if restarted else "error", status=tracked["status"], result=done),
                    webhook_url(), store)
        return {"restarted": restarted, "why": why, **done}

    tracked = track_status(sample_lag())
    check_lag(tracked)
    restart_ingest_if_stuck(tracked)


weblogs_lag_monitor()
