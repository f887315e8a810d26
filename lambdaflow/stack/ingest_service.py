"""The streaming ingest as a service of the stack, supervised by the ``weblogs_ingest`` DAG.

Why a service and not a task of Airflow's executor: a LocalExecutor task is a child of the
scheduler, so every scheduler restart (a deploy, a crash, kill -9) killed or orphaned the stream
and the next run started it again — a pause of about a minute and a lock take-over each time.
Here the job runs as ``spark-submit spark_jobs/stream_ingest.py`` in a session of its own, with
its pid in ``.run/pids/ingest.pid`` and its log in ``.run/logs/ingest.log``, like the stack's other
daemons. The DAG starts it when it is not running, adopts it when it is (by the pid file), and
watches it from a sensor in reschedule mode that holds no process between pokes: an Airflow
restart touches nothing the stream needs. ``make down`` stops it with the rest of the stack.

Clean stop: ``lambdaflow ingest --stop`` (a marker in HDFS the job polls between batches), or
SIGTERM to the session (the job finishes its batch, then exits).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator

from lambdaflow.config import Settings
from lambdaflow.stack.daemon import LOG_DIR, RUN_DIR, Daemon, ServiceError

NAME = "ingest"  # the deployment's own landing zone; another root gets "ingest-<hash of the root>"
READY_LINE = "ingest started"  # logged by lambdaflow.ingest once the streaming query runs
STARTS_FILE = RUN_DIR / "ingest-starts.json"
BACKOFF_S = (0, 15, 30, 60, 120, 300)  # before the n-th start within BACKOFF_WINDOW_S
BACKOFF_WINDOW_S = 1800


def service_name(settings: Settings) -> str:
    """One service per landing zone: ``ingest`` for the deployment's root, a name of its own for
    another (a test's, or `airflow dags test weblogs_ingest` on an isolated root)."""
    import hashlib

    if settings.root == Settings.root:
        return NAME
    return f"{NAME}-{hashlib.sha1(settings.root.encode()).hexdigest()[:8]}"


def daemon(settings: Settings | None = None, name: str | None = None, trigger_interval: str = "1 second",
           max_offsets_per_trigger: int = 0) -> Daemon:
    """The ingest service for these settings (topic, landing root, checkpoint)."""
    from lambdaflow import spark

    settings = settings or Settings.from_env()
    name = name or service_name(settings)
    args = ["--mode", "continuous", "--trigger-interval", trigger_interval,
            "--max-offsets-per-trigger", str(max_offsets_per_trigger)]

    def ready() -> bool:  # the log since the last start header (written by Daemon.start) says so
        return READY_LINE in _last_start_section(name)

    return Daemon(name=name, command=lambda: spark.submit_command("stream_ingest.py", args, settings),
                  ready=ready, env=lambda: spark.submit_env(settings), timeout_s=300.0,
                  shutdown=finish_batch_then_exit)


def finish_batch_then_exit(sid: int, timeout_s: float = 90.0) -> None:
    """SIGTERM to the Python driver only: it lets the running batch commit, stops the query and exits,
    and spark-submit's JVM with it. (SIGTERM to the whole session would take the JVM first.)"""
    import os
    import signal

    from lambdaflow.stack.daemon import pid_alive, session_members

    for pid in session_members(sid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"python" in os.path.basename(argv[0]) and any(a.endswith(b"stream_ingest.py") for a in argv):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(sid) and time.monotonic() < deadline:
        time.sleep(0.5)


def state(settings: Settings | None = None, name: str | None = None) -> dict:
    """``{"state": "running" | "stopped", "name", "pid", "log", "root", "topic"}`` of the service."""
    service = daemon(settings, name)
    name = service.name
    pid = service.pid()
    info = _read_starts().get(name, {})
    return {"state": "running" if pid else "stopped", "name": name, "pid": pid, "log": str(service.log_file),
            "root": info.get("root"), "topic": info.get("topic")}


@contextlib.contextmanager
def _exclusive(name: str) -> Iterator[None]:
    """One starter or stopper of this service at a time, across processes (the DAG's start task, the
    lag monitor's remediation, a user): the pid check, the back-off, the start and the pid file are
    one step, so two callers can never both start a job."""
    path = RUN_DIR / "pids" / f"{name}.starting.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_running(settings: Settings | None = None, name: str | None = None, trigger_interval: str = "1 second",
                   max_offsets_per_trigger: int = 0, quiet: bool = True) -> dict:
    """Adopt the running service or start it (after a back-off when it keeps dying); wait until its
    streaming query runs. Returns ``{"action": "adopted" | "started", "name", "pid", "log"}``."""
    settings = settings or Settings.from_env()
    service = daemon(settings, name, trigger_interval, max_offsets_per_trigger)
    with _exclusive(service.name):
        return _ensure_running(settings, service, quiet)


def _ensure_running(settings: Settings, service: Daemon, quiet: bool) -> dict:
    name = service.name
    if service.pid() is not None:
        running_for = _read_starts().get(name, {})
        if running_for.get("root") not in (None, settings.root):
            raise ServiceError(f"the ingest service {name} runs for {running_for.get('root')}, not {settings.root}")
        service._wait_ready(service.pid())  # a service still booting is adopted once its query runs
        return {"action": "adopted", "name": name, "pid": service.pid(), "log": str(service.log_file)}
    wait_s = _backoff_s(name)
    if wait_s:
        if not quiet:
            print(f"[ingest] restarting after {wait_s}s of back-off (it exited recently)", flush=True)
        time.sleep(wait_s)
    _record_start(name, settings)
    service.start(quiet=quiet)
    return {"action": "started", "name": name, "pid": service.pid(), "log": str(service.log_file)}


def stop(settings: Settings | None = None, name: str | None = None, timeout_s: float = 120.0) -> bool:
    """Stop the service cleanly (SIGTERM: the running batch commits first). True if it was running."""
    service = daemon(settings, name)
    with _exclusive(service.name):
        return service.stop(timeout_s=timeout_s)


def restart(settings: Settings | None = None, name: str | None = None, timeout_s: float = 120.0) -> dict:
    """Stop (a hung job is killed after ``timeout_s``) and start again, as one step: nobody else
    starts or stops the service in between."""
    settings = settings or Settings.from_env()
    service = daemon(settings, name)
    with _exclusive(service.name):
        was_running = service.stop(timeout_s=timeout_s)
        return {"was_running": bool(was_running), **_ensure_running(settings, service, quiet=True)}


def _read_starts() -> dict:
    try:
        return json.loads(STARTS_FILE.read_text())
    except (OSError, ValueError):
        return {}


def _record_start(name: str, settings: Settings) -> None:
    starts = _read_starts()
    now = time.time()
    entry = starts.get(name, {})
    recent = [t for t in entry.get("starts", []) if now - t < BACKOFF_WINDOW_S] + [now]
    starts[name] = {"starts": recent[-10:], "root": settings.root, "topic": settings.topic}
    STARTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    STARTS_FILE.write_text(json.dumps(starts))


def _backoff_s(name: str) -> float:
    """Exponential back-off for a service that keeps dying: the n-th start within half an hour waits
    BACKOFF_S[n] seconds counted from the previous start."""
    now = time.time()
    recent = [t for t in _read_starts().get(name, {}).get("starts", []) if now - t < BACKOFF_WINDOW_S]
    if not recent:
        return 0
    wanted = BACKOFF_S[min(len(recent), len(BACKOFF_S) - 1)]
    return max(0.0, round(recent[-1] + wanted - now, 1))


def _last_start_section(name: str = NAME) -> str:
    try:
        text = (LOG_DIR / f"{name}.log").read_text(errors="replace")
    except OSError:
        return ""
    return text[text.rfind(f"starting {name}\n"):]


def stopped_on_request(name: str = NAME) -> bool:
    """The last run of the service exited cleanly (stop marker or SIGTERM): it printed its totals."""
    return '{"ingest": ' in _last_start_section(name)


def log_tail(name: str = NAME, lines: int = 20) -> str:
    return "\n".join(_last_start_section(name).splitlines()[-lines:])


def progress_line(settings: Settings | None = None) -> str:
    """Landing positions against Kafka's log-end offsets, per partition, and the lag in records."""
    from lambdaflow import hdfs, kafka_admin, landing

    settings = settings or Settings.from_env()
    ends = kafka_admin.end_offsets(settings)
    positions = landing.positions(hdfs.client(settings), settings.landing_path)
    lag = sum(max(0, end - positions.get(p, 0)) for p, end in ends.items())
    return f"landing positions {dict(sorted(positions.items()))}, log-end offsets {dict(sorted(ends.items()))}, lag {lag}"
