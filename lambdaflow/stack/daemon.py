"""A local daemon: started in its own session, its pid and log under the run directory.

``make down`` kills whole sessions, so children go with their parent, including those that moved
to a process group of their own (Airflow runs each task in one) and those a daemon left behind
when it was killed with SIGKILL (the scheduler's LocalExecutor workers, ``airflow serve-logs``):
they keep the session id, which is the pid recorded in the pid file.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

from lambdaflow.config import REPO_ROOT

RUN_DIR = Path(os.environ.get("LAMBDAFLOW_RUN_DIR", REPO_ROOT / ".run"))
LOG_DIR = RUN_DIR / "logs"
PID_DIR = RUN_DIR / "pids"
DATA_DIR = RUN_DIR / "data"


class ServiceError(RuntimeError):
    """A service failed to start or to become ready; the message names it and its log file."""


def port_open(port: int, host: str = "localhost", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


@dataclasses.dataclass
class Daemon:
    name: str
    command: Callable[[], list[str]]
    ready: Callable[[], bool]
    ports: tuple[int, ...] = ()
    env: Callable[[], dict[str, str]] = dict
    prepare: Callable[[], None] = lambda: None
    timeout_s: float = 120.0
    user: Callable[[], str | None] = lambda: None  # run as this OS user (PostgreSQL refuses root)
    shutdown: Callable[[int], None] | None = None  # a gentler first step than SIGTERM to the session

    @property
    def log_file(self) -> Path:
        return LOG_DIR / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return PID_DIR / f"{self.name}.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def is_up(self) -> bool:
        if self.pid() is None:
            return False
        try:
            return bool(self.ready())
        except Exception:  # a probe that times out or is refused means "not ready", not a crash
            return False

    def start(self, quiet: bool = False) -> bool:
        """Start unless already up; wait for readiness. Returns True when it had to start."""
        if self.is_up():
            return False
        self._reap_leftovers(quiet)
        if self.pid() is not None:  # alive but not ready: booting, or hung (e.g. a crashed scheduler
            try:                    # waiting forever for its running tasks); restart it if it stays so
                self._wait_ready(self.pid(), timeout_s=30)
                return False
            except ServiceError:
                if not quiet:
                    print(f"[up] {self.name} is running but not ready; restarting it (log: {self.log_file})", flush=True)
                self.stop()
        self._wait_ready(self.spawn(quiet))
        return True

    def spawn(self, quiet: bool = False) -> int:
        """Launch the process in a session of its own (ports checked free first); returns its pid."""
        busy = [p for p in self.ports if port_open(p)]
        if busy:
            raise ServiceError(f"{self.name}: port(s) {busy} already in use by another process; "
                               f"stop it or override the port (see README, 'Ports')")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.prepare()
        if not quiet:
            print(f"[up] starting {self.name} (log: {self.log_file})", flush=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=_child_env(self.env()),
                                    cwd=RUN_DIR, start_new_session=True, user=self.user())
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def _wait_ready(self, pid: int, timeout_s: float | None = None) -> None:
        timeout_s = timeout_s or self.timeout_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                raise ServiceError(f"{self.name} exited during start-up; see {self.log_file}:\n{self.tail()}")
            try:
                if self.ready():
                    return
            except Exception:  # readiness probes fail in many ways while a daemon boots
                pass
            time.sleep(0.5)
        raise ServiceError(f"{self.name} not ready after {timeout_s:.0f}s; see {self.log_file}:\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def recorded_pid(self) -> int | None:
        """The pid in the pid file, alive or not: the id of the session the daemon was started in."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def leftovers(self) -> list[int]:
        """Live processes of the session of a daemon whose leader died (e.g. killed with SIGKILL)."""
        sid = self.recorded_pid()
        if sid is None or pid_alive(sid):
            return []
        return session_members(sid)

    def _reap_leftovers(self, quiet: bool) -> None:
        orphans = self.leftovers()
        if orphans:
            if not quiet:
                print(f"[up] {self.name} died and left {len(orphans)} process(es) behind "
                      f"(pids {orphans[:8]}); stopping them", flush=True)
            kill_session(self.recorded_pid(), timeout_s=20)
            self.pid_file.unlink(missing_ok=True)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the whole session: SIGTERM, SIGKILL after the timeout. Also stops what a dead leader
        left behind. Returns True when something was running."""
        sid = self.recorded_pid()
        if sid is None:
            return False
        running = bool(session_members(sid))
        if running and self.shutdown is not None and pid_alive(sid):
            try:
                self.shutdown(sid)
            except Exception:  # the session kill below is the fallback
                pass
        if session_members(sid):
            kill_session(sid, timeout_s)
        self.pid_file.unlink(missing_ok=True)
        return running


# Set in a process by pyspark once it holds a Spark Connect session: a daemon started from that
# process (a spark-submit job) would take itself for a Connect client and fail to build its session.
_CLIENT_ONLY_VARS = ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE")


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ONLY_VARS}
    return {**env, **extra}


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry))
    return members


def orphans_of_run_dir() -> dict[int, list[int]]:
    """{session id: pids} of live processes started in the run directory (every daemon of the stack
    is, and its children inherit it) whose session leader is gone: what a daemon killed with SIGKILL
    left behind, even when its pid file went missing."""
    orphans: dict[int, list[int]] = {}
    run_dir = str(RUN_DIR.resolve())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") != run_dir:
                continue
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        sid = int(fields[3])
        if fields[0] != "Z" and sid != int(entry) and not pid_alive(sid):
            orphans.setdefault(sid, []).append(int(entry))
    return orphans


def reap_orphans(quiet: bool = False, verb: str = "up") -> int:
    """Stop every orphan of the run directory (see ``orphans_of_run_dir``); returns how many."""
    orphans = orphans_of_run_dir()
    for sid, pids in orphans.items():
        if not quiet:
            print(f"[{verb}] stopping {len(pids)} process(es) left by a dead daemon (session {sid}, "
                  f"pids {pids[:8]})", flush=True)
        kill_session(sid, timeout_s=20)
    return sum(len(p) for p in orphans.values())


def kill_session(sid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM every process of the session, then SIGKILL what is left after the timeout."""
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        members = session_members(sid)
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not session_members(sid):
                return
            time.sleep(0.2)


def kill_group(pid: int, timeout_s: float = 30.0) -> None:
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().split(") ", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False
