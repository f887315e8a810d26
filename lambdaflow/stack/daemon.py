"""A local daemon: started in its own process group, its pid and log under the run directory.

``make down`` kills whole process groups, so children (the scheduler's task processes, a
spark-submit launched by Airflow) go with their parent.
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
        if self.pid() is not None:  # alive but not ready: booting, or hung (e.g. a crashed scheduler
            try:                    # waiting forever for its running tasks); restart it if it stays so
                self._wait_ready(self.pid(), timeout_s=30)
                return False
            except ServiceError:
                if not quiet:
                    print(f"[up] {self.name} is running but not ready; restarting it (log: {self.log_file})", flush=True)
                self.stop()
        busy = [p for p in self.ports if port_open(p)]
        if busy:
            raise ServiceError(f"{self.name}: port(s) {busy} already in use by another process; "
                               f"stop it or override the port (see README, 'Ports')")
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        PID_DIR.mkdir(parents=True, exist_ok=True)
        self.prepare()
        if not quiet:
            print(f"[up] starting {self.name} (log: {self.log_file})", flush=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env={**os.environ, **self.env()},
                                    cwd=RUN_DIR, start_new_session=True)
        self.pid_file.write_text(str(proc.pid))
        self._wait_ready(proc.pid)
        return True

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

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM the process group, SIGKILL after the timeout. Returns True when it was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        kill_group(pid, timeout_s)
        self.pid_file.unlink(missing_ok=True)
        return True


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
