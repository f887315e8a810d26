"""
### weblogs_producer

Sends realistic clickstream events (page views, add-to-cart, purchases) to the Kafka topic
`weblogs`, keyed by visitor: the load generator of the pipeline, triggered by hand from the
**Trigger** form (no schedule).

- `produce_events` runs `lambdaflow.producer.produce` with the form's values and returns its
  summary as XCom: `sent`, `acked`, `failed`, `bad_injected` (by kind), `events_per_s`,
  `per_partition`, `seed`, the simulated time span. It fails when any record was not acked.
- Give a **count** of events, or a **duration** in seconds (a duration, when set, wins over the count).
- **Seed**: the same seed, count and rate send the same events; empty picks one (shown in the summary).
- **Time multiplier** / **start**: simulated time runs that many times faster than the send rate
  implies, from the start (default: midnight UTC before the span it needs, so nothing lies in the future).
- **Bad fraction**: share of malformed records (garbage, empty, missing field, wrong type, unknown
  action, bad timestamp, truncated TSV) for exercising the ingest's quarantine.

Kafka is reached through the `kafka_default` connection (extra `bootstrap.servers`), else
`$KAFKA_BOOTSTRAP`. A failed run notifies through the one lambdaflow notifier (Connection
`lambdaflow_alerts`). The same run from a shell: `lambdaflow produce --count 10000 --rate 1000`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import Asset, Param, dag, task

from lambdaflow import events, producer
from lambdaflow.config import Settings
from lambdaflow.monitoring.notifier import failure_notifier

WEBLOGS_TOPIC = Asset(name="weblogs", uri="kafka://localhost:9092/weblogs")


def _kafka_settings() -> Settings:
    """Settings with the bootstrap servers of the `kafka_default` connection, when defined."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    settings = Settings.from_env()
    try:
        conn = BaseHook.get_connection("kafka_default")
    except AirflowNotFoundException:
        return settings
    servers = conn.extra_dejson.get("bootstrap.servers") or (
        f"{conn.host}:{conn.port or 9092}" if conn.host else None)
    return settings.replace(kafka_bootstrap=servers) if servers else settings


@dag(
    dag_id="weblogs_producer",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    doc_md=__doc__,
    tags=["lambdaflow", "kafka"],
    default_args={"owner": "lambdaflow", "retries": 1, "retry_delay": timedelta(seconds=5),
                  "on_failure_callback": failure_notifier()},
    params={
        "count": Param(10_000, type=["null", "integer"], minimum=1, maximum=1_000_000_000, title="Number of events",
                       description="How many events to send. Leave empty when giving a duration."),
        "duration": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=604_800, title="Duration (seconds)",
                          description="Send for this many seconds instead; when set, the count is ignored."),
        "rate": Param(producer.DEFAULT_RATE, type="number", minimum=0, maximum=10_000_000, title="Rate (events/s)",
                      description="Events per second; 0 sends as fast as the broker acknowledges."),
        "seed": Param(None, type=["null", "integer"], minimum=0, title="Random seed",
                      description="The same seed, count and rate send the same events. "
                                  "Empty: a random seed, reported in the summary."),
        "time_multiplier": Param(events.DEFAULT_TIME_MULTIPLIER, type="number", exclusiveMinimum=0,
                                 title="Time multiplier",
                                 description="Simulated time runs this many times faster than the rate "
                                             "implies (480: one real minute covers eight simulated hours)."),
        "start": Param(None, type=["null", "string"], format="date-time",
                       # the format is a hint for the form; the pattern is what validation enforces
                       pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?$",
                       title="Simulated start (UTC)",
                       description="Simulated time of the first event, e.g. 2026-11-24T10:00:00Z. Empty: "
                                   "midnight UTC before the span the run needs, so no event is in the future."),
        "bad_fraction": Param(0.0, type="number", minimum=0, maximum=1, title="Bad fraction",
                              description="Share of malformed records (0 to 1) to exercise the quarantine."),
        "format": Param("json", type="string", enum=sorted(events.SERIALISERS), title="Value format",
                        description="JSON object, or the course's tab-separated line."),
    },
)
def weblogs_producer() -> None:
    @task(outlets=[WEBLOGS_TOPIC])
    def produce_events(params: dict[str, Any]) -> dict[str, Any]:
        """Send the events and return the delivery summary (XCom)."""
        duration = params["duration"]
        summary = producer.produce(
            _kafka_settings(), count=None if duration else params["count"], duration=duration,
            rate=params["rate"], seed=params["seed"], fmt=params["format"],
            bad_fraction=params["bad_fraction"], time_multiplier=params["time_multiplier"],
            start=params["start"])
        print(producer.format_summary(summary))
        if summary["failed"]:
            raise RuntimeError(f"{summary['failed']} of {summary['sent']} records were not acknowledged: "
                               f"{'; '.join(summary['errors'])}")
        return summary

    produce_events()


weblogs_producer()
