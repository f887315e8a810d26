"""Alerts: the notifier every DAG uses, the webhook POST, the bounded alert log and the lag monitor's
status-change rule, against a real HTTP receiver (http.server in a thread). No other service."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from lambdaflow.monitoring import alerts
from lambdaflow.monitoring import notifier as n

T0 = 1_800_000_000_000
MINUTE = 60_000


class Receiver:
    """A webhook receiver on a free local port that keeps every JSON body POSTed to it."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                received.paths.append(self.path)
                received.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/lambdaflow"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def report(status: str, lags: tuple[int, ...] = (0, 0, 0)) -> dict:
    return {"group": "lambdaflow-ingest", "topic": "weblogs", "status": status, "total_lag": sum(lags),
            "partitions": [{"partition": p, "lag": lag, "status": status if lag else "OK", "reason": f"lag {lag}"}
                           for p, lag in enumerate(lags)]}


# -- the status-change rule -------------------------------------------------------------------------------

@pytest.mark.parametrize(("notified", "current", "change"), [
    (None, "OK", None), ("OK", "OK", None), ("WARN", "WARN", None), ("STOP", "STOP", None),
    ("OK", "WARN", "worse"), (None, "WARN", "worse"), ("WARN", "STOP", "worse"), ("OK", "STALL", "worse"),
    ("STOP", "WARN", "better"), ("STOP", "OK", "recovered"), ("WARN", "OK", "recovered"),
])
def test_lag_status_change(notified, current, change) -> None:
    assert alerts.lag_status_change(notified, current) == change


def test_thresholds_exceeded_while_ok_count_as_warn() -> None:
    assert alerts.lag_alert_status(report("OK"), ["partition 1: lag 20000 > 10000 records"]) == "WARN"
    assert alerts.lag_alert_status(report("STOP"), []) == "STOP"
    assert alerts.lag_alert_status(report("OK"), []) == "OK"


def test_next_lag_state_keeps_when_the_status_began_and_since_when_the_ingest_does_not_move() -> None:
    s1 = alerts.next_lag_state(None, "OK", T0)
    assert s1["since"] == T0 and s1["not_moving_since"] is None
    s2 = alerts.next_lag_state(s1, "STALL", T0 + MINUTE)
    assert s2["since"] == T0 + MINUTE and s2["not_moving_since"] == T0 + MINUTE
    s3 = alerts.next_lag_state(s2, "STOP", T0 + 2 * MINUTE)  # still not moving: the clock keeps running
    assert s3["since"] == T0 + 2 * MINUTE and s3["not_moving_since"] == T0 + MINUTE
    s4 = alerts.next_lag_state(s3, "STOP", T0 + 3 * MINUTE)
    assert s4["since"] == T0 + 2 * MINUTE and s4["not_moving_since"] == T0 + MINUTE
    s5 = alerts.next_lag_state({**s4, "last_restart_at": T0}, "WARN", T0 + 4 * MINUTE)
    assert s5["not_moving_since"] is None and s5["last_restart_at"] == T0


def test_the_lag_monitor_notifies_changes_not_samples(receiver) -> None:
    store = alerts.MemoryStore()
    statuses = ["OK", "OK", "WARN", "WARN", "WARN", "STOP", "STOP", "STOP", "OK", "OK"]
    sent = []
    for minute, status in enumerate(statuses):
        state = alerts.track_lag_status(store, report(status, (0, 500 if status != "OK" else 0, 0)),
                                        webhook_url=receiver.url, at=T0 + minute * MINUTE)
        if state["alert"]:
            sent.append(state["alert"]["title"])
    assert sent == ["ingest lag WARN (was OK)", "ingest lag STOP (was WARN)",
                    "ingest lag recovered: OK (was STOP)"]
    assert [b["status"] for b in receiver.bodies] == ["WARN", "STOP", "OK"]
    assert [b["change"] for b in receiver.bodies] == ["worse", "worse", "recovered"]
    assert receiver.paths == ["/hooks/lambdaflow"] * 3
    assert receiver.bodies[1]["kind"] == "lag_status" and receiver.bodies[1]["severity"] == "error"
    assert "partition 1" in receiver.bodies[1]["text"]
    log = alerts.recent_alerts(store)
    assert [a["status"] for a in log] == ["OK", "STOP", "WARN"]  # newest first
    assert all(a["delivered"] is True for a in log)


def test_state_survives_a_new_monitor_process() -> None:
    store = alerts.MemoryStore()
    alerts.track_lag_status(store, report("STOP", (0, 9, 0)), at=T0)
    # a new task (another process) reads the kept state: no second alert for the same status
    again = alerts.track_lag_status(store, report("STOP", (0, 9, 0)), at=T0 + MINUTE)
    assert again["alert"] is None and again["not_moving_since"] == T0


def test_a_receiver_that_is_down_is_logged_not_raised(caplog) -> None:
    dead = Receiver()
    url = dead.url
    dead.close()
    store = alerts.MemoryStore()
    entry = alerts.send(alerts.make_alert("task_failed", "x failed"), url, store, timeout_s=2)
    assert entry["delivered"] is False
    assert alerts.recent_alerts(store)[0]["delivered"] is False
    assert "could not post the alert" in caplog.text


def test_a_receiver_answering_500_counts_as_not_delivered() -> None:
    r = Receiver(status=500)
    try:
        assert alerts.send(alerts.make_alert("task_failed", "x failed"), r.url)["delivered"] is False
        assert len(r.bodies) == 1
    finally:
        r.close()


def test_the_alert_log_is_bounded() -> None:
    store = alerts.MemoryStore()
    for i in range(alerts.ALERT_LOG_SIZE + 15):
        alerts.record_alert(store, alerts.make_alert("task_failed", f"alert {i}", at=T0 + i))
    kept = store.load(alerts.ALERT_LOG)
    assert len(kept) == alerts.ALERT_LOG_SIZE
    assert kept[-1]["title"] == f"alert {alerts.ALERT_LOG_SIZE + 14}"
    assert [a["title"] for a in alerts.recent_alerts(store, limit=2)] == [
        f"alert {alerts.ALERT_LOG_SIZE + 14}", f"alert {alerts.ALERT_LOG_SIZE + 13}"]


# -- the notifier -----------------------------------------------------------------------------------------

def test_webhook_url_from_an_http_connection() -> None:
    from airflow.models.connection import Connection

    uri = Connection(conn_id="lambdaflow_alerts", uri="http://alerts.example:8099/hooks/lambdaflow")
    assert n.url_from_connection(uri) == "http://alerts.example:8099/hooks/lambdaflow"
    extra = Connection.from_json('{"conn_type": "http", "extra": {"url": "https://hooks.example/T0/B0"}}')
    assert n.url_from_connection(extra) == "https://hooks.example/T0/B0"
    host = Connection(conn_id="x", conn_type="http", host="http://h.example:81/path")
    assert n.url_from_connection(host) == "http://h.example:81/path"
    assert n.url_from_connection(Connection(conn_id="x", conn_type="http")) is None


def failure_context(exception: Exception) -> dict:
    ti = SimpleNamespace(dag_id="weblogs_batch", task_id="recompute_hour", run_id="scheduled__2026-11-30T01:00:00+00:00",
                         try_number=3, log_url="http://localhost:8080/dags/weblogs_batch/runs/x")
    return {"ti": ti, "task_instance": ti, "exception": exception}


def test_the_notifier_posts_a_task_failure_to_the_connections_webhook(receiver, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LAMBDAFLOW_ALERTS", receiver.url)
    n.LambdaflowNotifier(record=False)(failure_context(RuntimeError("spark-submit exited with 1")))
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["kind"] == "task_failed" and body["title"] == "weblogs_batch.recompute_hour failed"
    assert body["text"] == "spark-submit exited with 1" and body["try_number"] == 3
    assert body["run_id"] == "scheduled__2026-11-30T01:00:00+00:00" and body["dag_id"] == "weblogs_batch"


def test_without_the_connection_the_notifier_only_logs(monkeypatch, caplog) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_LAMBDAFLOW_ALERTS", raising=False)
    assert n.webhook_url() is None
    n.LambdaflowNotifier(record=False)(failure_context(ValueError("boom")))
    assert "weblogs_batch.recompute_hour failed" in caplog.text


def test_a_task_failing_every_minute_is_posted_once_per_repeat_interval(receiver, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LAMBDAFLOW_ALERTS", receiver.url)
    store = alerts.MemoryStore()
    notifier = n.LambdaflowNotifier(repeat_after_s=1800)
    monkeypatch.setattr(notifier, "store", lambda: store)
    clock = iter(T0 + m * MINUTE for m in (0, 1, 2, 31, 32))
    monkeypatch.setattr(alerts, "now_ms", lambda: next(clock))
    for _ in range(5):
        notifier(failure_context(RuntimeError("cannot reach Kafka")))
    assert len(receiver.bodies) == 2  # minute 0 and minute 31
    other = failure_context(RuntimeError("x"))
    other["ti"] = other["task_instance"] = SimpleNamespace(**{**vars(other["ti"]), "task_id": "validate_hour"})
    monkeypatch.setattr(alerts, "now_ms", lambda: T0 + 33 * MINUTE)
    notifier(other)  # another task's failure is news
    assert len(receiver.bodies) == 3


def test_without_a_readable_alert_log_a_repeated_failure_is_still_sent(receiver, monkeypatch) -> None:
    class Down:
        def load(self, name, default=None):
            raise OSError("HDFS down")

        def save(self, name, document):
            raise OSError("HDFS down")

    monkeypatch.setenv("AIRFLOW_CONN_LAMBDAFLOW_ALERTS", receiver.url)
    notifier = n.LambdaflowNotifier(repeat_after_s=1800)
    monkeypatch.setattr(notifier, "store", lambda: Down())
    notifier(failure_context(RuntimeError("a")))
    notifier(failure_context(RuntimeError("a")))
    assert len(receiver.bodies) == 2
