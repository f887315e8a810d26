"""
### weblogs_lag_monitor

Every minute, measures how far the streaming ingest (`weblogs_ingest`) is behind Kafka on every
partition of the `weblogs` topic: log-end offset, the ingest's committed position (from the
landing zone's offset-range manifests, cross-checked with the consumer group `lambdaflow-ingest`),
lag in records and in seconds, and a Burrow-style status (OK / WARN / STALL / STOP / REWIND /
NOT_STARTED) over the last samples. Each sample is kept in HDFS (`/lambda/monitoring/lag`), so
the window survives restarts and the dashboard can plot lag over time.

- `sample_lag` records a sample and evaluates it (fails when Kafka or HDFS cannot be reached).
- `check_lag` fails the run when the status is not OK or a partition's lag exceeds
  `max_lag_records` / `max_lag_seconds`, naming the partitions and figures in the log.
- `should_restart_ingest` → `trigger_ingest`: remediation, off by default; when enabled and the
  ingest is STOPped, triggers a run of `weblogs_ingest`.

Settings (Params override Airflow Variables per run; defaults in `lambdaflow.lag`):
`lambdaflow_lag_max_records`, `lambdaflow_lag_max_seconds`, `lambdaflow_lag_remediate` and
`lambdaflow_lag_webhook_url` (failures are logged, and POSTed as JSON there when set).
The same measurement from a shell: `lambdaflow lag`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, Variable, dag, task

from lambdaflow import lag
from lambdaflow.config import Settings


def _setting(params: dict[str, Any], param: str, variable: str, default: Any, kind: type) -> Any:
    """A run's Param when given, else the Airflow Variable, else the default."""
    if params.get(param) is not None:
        return kind(params[param])
    value = Variable.get(variable, default=None)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on") if kind is bool else kind(value)


def notify_failure(context: dict[str, Any]) -> None:
    """on_failure_callback: log the failure, and POST it to `lambdaflow_lag_webhook_url` when set."""
    ti = context["ti"]
    payload = {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id,
               "try_number": ti.try_number, "error": str(context.get("exception"))}
    lag.notify(payload, Variable.get("lambdaflow_lag_webhook_url", default=None))


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
        "on_failure_callback": notify_failure,
    },
    params={
        "window": Param(lag.DEFAULT_WINDOW, type="integer", minimum=1,
                        description="samples the status looks at, this one included"),
        "stop_after_s": Param(lag.DEFAULT_STOP_AFTER_S, type="number", minimum=0,
                              description="STOP when nothing landed for this long while lagging"),
        "max_lag_records": Param(None, type=["null", "integer"], minimum=0,
                                 description="overrides Variable lambdaflow_lag_max_records"),
        "max_lag_seconds": Param(None, type=["null", "number"], minimum=0,
                                 description="overrides Variable lambdaflow_lag_max_seconds"),
        "remediate": Param(None, type=["null", "boolean"],
                           description="overrides Variable lambdaflow_lag_remediate: trigger weblogs_ingest on STOP"),
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
    def check_lag(report: dict[str, Any], params: dict[str, Any]) -> None:
        """Fail with the partitions and figures when the ingest does not keep up."""
        messages = lag.alerts(
            report,
            max_lag_records=_setting(params, "max_lag_records", "lambdaflow_lag_max_records",
                                     lag.DEFAULT_MAX_LAG_RECORDS, int),
            max_lag_seconds=_setting(params, "max_lag_seconds", "lambdaflow_lag_max_seconds",
                                     lag.DEFAULT_MAX_LAG_SECONDS, float))
        if messages:
            raise lag.LagAlert(lag.alert_message(report, messages))

    @task.short_circuit
    def should_restart_ingest(report: dict[str, Any], params: dict[str, Any]) -> bool:
        """True only when remediation is enabled and the ingest is STOPped."""
        return report["status"] == lag.STOP and _setting(params, "remediate", "lambdaflow_lag_remediate", False, bool)

    report = sample_lag()
    check_lag(report)
    should_restart_ingest(report) >> TriggerDagRunOperator(
        task_id="trigger_ingest", trigger_dag_id="weblogs_ingest",
        conf={"triggered_by": "weblogs_lag_monitor", "reason": "ingest STOPped"})


weblogs_lag_monitor()
