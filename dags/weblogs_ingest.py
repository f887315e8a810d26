"""
### weblogs_ingest

Supervises the long-running Spark Structured Streaming job that lands the Kafka topic `weblogs`
in the HDFS landing zone exactly once (with each micro-batch's offset ranges) and keeps the speed
views (`spark_jobs/stream_ingest.py`, logic in `lambdaflow.ingest`).

The job is a **service of the deployment, not a task**: it runs as `spark-submit` in a process
session of its own (pid `.run/pids/ingest.pid`, log `.run/logs/ingest.log`), so restarting or
killing any Airflow daemon — scheduler, api-server, dag-processor, triggerer — never touches it.

- `start_ingest` adopts the running job, or starts it when none runs (backing off when it keeps
  dying) and waits until its streaming query runs. Every start resumes exactly where the landing
  zone ends, so a restart loses and duplicates nothing.
- `watch_ingest` is a sensor in reschedule mode: every minute it checks that the job is alive and
  logs its landing positions against Kafka's log-end offsets. Between pokes it holds no worker slot
  and no process. When the job dies the sensor fails, and the next run (`@continuous`,
  `max_active_runs=1`) starts it again; after `watch_hours` the run ends and the next one adopts
  the same job.
- Params `trigger_interval` and `max_offsets_per_trigger` apply when a run has to start the job.
- **Stop** it: pause this DAG, then `lambdaflow ingest --stop` (the job finishes its batch and
  exits; the sensor ends the run as a success) — or `make down`.
- A one-off bounded ingest (land what Kafka holds now, then finish) is DAG `weblogs_ingest_once`.

Kafka and HDFS addresses come from the deployment's environment (`KAFKA_BOOTSTRAP`, `HDFS_URL`,
`LAMBDAFLOW_TOPIC`, `LAMBDAFLOW_ROOT`); `lambdaflow status --json` shows the job under `ingest`.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from airflow.sdk import Param, PokeReturnValue, dag, task

from lambdaflow.monitoring.notifier import failure_notifier


@dag(
    dag_id="weblogs_ingest",
    schedule="@continuous",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["lambdaflow", "ingest"],
    default_args={
        "owner": "lambdaflow",
        "retries": 3,
        "retry_delay": timedelta(seconds=15),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=5),
        "on_failure_callback": failure_notifier(),  # the one lambdaflow notifier (Connection lambdaflow_alerts)
    },
    params={
        "trigger_interval": Param("1 second", type="string", title="Trigger interval",
                                  description="Micro-batch trigger interval when this run starts the job, "
                                              "e.g. '1 second', '10 seconds'.",
                                  pattern=r"^\d+ (second|seconds|minute|minutes)$"),
        "max_offsets_per_trigger": Param(0, type="integer", minimum=0, title="Max offsets per trigger",
                                         description="Rate limit per micro-batch when this run starts the "
                                                     "job (0 = no limit)."),
        "watch_hours": Param(12, type="number", minimum=0, maximum=168, title="Watch hours",
                             description="How long one run watches the job before the next run adopts it "
                                         "(0: one check, then the run ends)."),
    },
)
def weblogs_ingest():
    @task
    def start_ingest(params=None) -> dict:
        """Adopt the running streaming job or start it; wait until its query runs."""
        from lambdaflow.stack import ingest_service

        result = ingest_service.ensure_running(trigger_interval=params["trigger_interval"],
                                               max_offsets_per_trigger=int(params["max_offsets_per_trigger"]),
                                               quiet=False)
        print(f"streaming ingest {result['action']}: pid {result['pid']}, log {result['log']}")
        return {**result, "watch_until": time.time() + float(params["watch_hours"]) * 3600}

    # a dead job fails the sensor at once (AirflowFailException: no retry); the next run restarts it
    @task.sensor(poke_interval=60, mode="reschedule", timeout=timedelta(days=8))
    def watch_ingest(started: dict) -> PokeReturnValue:
        """Alive? Landing positions against log-end offsets; fails when the job has died."""
        from airflow.sdk.exceptions import AirflowFailException

        from lambdaflow.stack import ingest_service

        name = started.get("name") or ingest_service.NAME
        state = ingest_service.state(name=name)
        if state["state"] != "running":
            if ingest_service.stopped_on_request(name):
                print("the streaming ingest stopped on request (stop marker or SIGTERM)")
                return PokeReturnValue(is_done=True, xcom_value="stopped")
            raise AirflowFailException(f"the streaming ingest (pid {started['pid']}) exited; see {state['log']}:\n"
                                       f"{ingest_service.log_tail(name)}")
        if state["pid"] != started["pid"]:
            print(f"the job now runs as pid {state['pid']} (started elsewhere); adopting it")
        print(ingest_service.progress_line())
        return PokeReturnValue(is_done=time.time() > started["watch_until"], xcom_value=state["pid"])

    watch_ingest(start_ingest())


weblogs_ingest()
