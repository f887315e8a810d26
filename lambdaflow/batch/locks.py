"""One recomputation of an hour at a time: the per-hour HDFS lock."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Iterable

from lambdaflow.config import Settings
from lambdaflow.errors import UserError

from lambdaflow.batch.layout import *  # noqa: F401,F403 - the shared layout and helpers
from lambdaflow.batch.layout import Log, _print  # noqa: F401


# ------------------------------------------------------------------------ per-hour exclusion
class LockTimeout(UserError):
    """An hour's lock stayed held by another recomputation longer than the wait allowed."""


class HourLocks:
    """One recomputation of an hour at a time: ``_locks/<h>.lock`` per hour, created with
    create-if-absent (``overwrite=false``, one NameNode operation: exactly one racing caller wins).

    Taken by hourly runs, backfills and their late-data hours, compactions and full recomputations,
    always in ascending hour order (so two runs wanting overlapping hours never deadlock). A caller
    that finds an hour locked waits (polling) up to ``wait_s``, then fails. The holder touches its
    lock files every quarter of ``stale_s`` (a heartbeat thread); a lock not touched for ``stale_s``
    belongs to a dead holder and is taken over. Released in ``__exit__`` (only locks still carrying
    the holder's token are deleted). A narrow race remains only between two callers taking over the
    same stale lock at once.
    """

    def __init__(self, fs: BatchFs, settings: Settings, hours: Iterable[int], log: Log = _print,
                 stale_s: float | None = None, wait_s: float | None = None, poll_s: float = 1.0):
        self.fs, self.settings, self.log = fs, settings, log
        self.hours = sorted(set(hours))
        self.stale_ms = int((stale_s if stale_s is not None else LOCK_STALE_SECONDS) * 1000)
        self.wait_s = wait_s if wait_s is not None else LOCK_WAIT_SECONDS
        self.poll_s = poll_s
        self.token = uuid.uuid4().hex
        self.held: list[str] = []
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> "HourLocks":
        try:
            for hour in self.hours:
                self._acquire(hour)
        except BaseException:
            self._release()
            raise
        self._beat = threading.Thread(target=self._heartbeat, name="hour-locks-heartbeat", daemon=True)
        self._beat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=10)
        self._release()

    def _acquire(self, hour: int) -> None:
        path = hour_lock_path(self.settings, hour)
        holder = json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                             "taken_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        deadline = time.monotonic() + self.wait_s
        reported = False
        while True:
            if self.fs.create_new(path, holder):
                self.held.append(path)
                return
            try:
                age_ms = int(time.time() * 1000) - self.fs.modification_time_ms(path)
            except Exception:  # noqa: BLE001 - released meanwhile: try again at once
                continue
            if age_ms > self.stale_ms:
                self.log(f"lock of {iso(hour)} not touched for {age_ms / 1000:.0f} s: its holder died, taking over")
                self.fs.delete(path, recursive=False)
                continue
            if time.monotonic() > deadline:
                raise LockTimeout(f"hour {iso(hour)} is being recomputed by another run "
                                  f"({self.fs.read_json(path)}) for longer than {self.wait_s:.0f} s")
            if not reported:
                self.log(f"hour {iso(hour)} is being recomputed by another run: waiting for {path}")
                reported = True
            time.sleep(self.poll_s)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.stale_ms / 4000):
            for path in list(self.held):
                try:
                    self.fs.touch(path, int(time.time() * 1000))
                except Exception as exc:  # noqa: BLE001 - a missed beat is retried; stale only after 4
                    self.log(f"heartbeat of {path} failed: {exc}")

    def _release(self) -> None:
        for path in reversed(self.held):
            try:
                if (self.fs.read_json(path) or {}).get("token") == self.token:
                    self.fs.delete(path, recursive=False)
            except Exception as exc:  # noqa: BLE001 - a lock left behind goes stale and is taken over
                self.log(f"could not release {path}: {exc}")
        self.held = []
