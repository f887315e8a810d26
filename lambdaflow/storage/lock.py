"""The fenced single writer of a landing zone.

One ingest at a time may commit to a landing zone. Timing alone cannot guarantee it: a driver
paused past the takeover timeout (GC, SIGSTOP, a frozen VM) is taken over, then resumes as if
nothing happened. So every holder gets a strictly increasing **epoch**, and the commit point
itself is conditional on the epoch still being current, using only atomic NameNode operations
(:mod:`lambdaflow.storage.fs`).

Layout under ``<landing>/_writer/`` (bookkeeping: readers skip names starting with ``_``)::

    epochs/<n>       one file per epoch, created with create-if-absent (overwrite=false): of several
                     racing ingests exactly one gets epoch n. Holds the holder (host, pid, start
                     time; ``released_ms`` after a clean stop). Its modification time is the
                     holder's heartbeat. The current epoch is the largest n.
    outbox-<n>/      epoch n's outbox, created by holder n after it won epoch n.

**Taking the lock** (:meth:`WriterLock.acquire`): read the current epoch n. If its holder is alive
(heartbeat younger than the takeover timeout, env ``LAMBDAFLOW_LOCK_STALE_S``, default 60 s; not released, not a dead pid on this host), refuse,
naming the holder. Otherwise create ``epochs/<n+1>`` (create-if-absent; on losing the race,
re-read and decide again), then **fence** every older epoch by deleting its outbox, create our
outbox, and check that no newer epoch appeared meanwhile (a holder that won epoch n, paused, and
created its outbox after epoch n+1's fencing would otherwise keep an outbox: n+1 was created
before that check, so the check sees it).

**The commit point** (:meth:`WriterLock.commit`): the manifest is created in our outbox with
create-if-absent *non-recursively* (fails if the outbox is gone), then renamed from the outbox into
``_manifests/`` (an HDFS rename fails when its source is gone). Fencing deletes the outbox, so at
the NameNode each commit is ordered either before the fence, and the new holder sees it (it lists
the manifests only after fencing), or after it, and then it fails and nothing becomes visible.
No reader needs to filter: a stale epoch cannot put a manifest in ``_manifests/``; its staged files
(``_staging/<key>/e<n>``, per epoch so that two writers never share a directory) are invisible and
rolled back by the next recovery. Each manifest records its epoch.

The streaming checkpoint is shared by the epochs (a takeover resumes it). A resumed stale driver
cannot corrupt it: Spark writes each ``offsets/<n>`` and ``commits/<n>`` file create-if-absent, so
its writes of batches the new holder already logged fail, and fail its query; at worst it logs a
batch the new holder has not reached yet, which then fails the new holder's query once (the
restart replays that batch; the landing zone, fenced, stays exact).

**Heartbeat**: every quarter of the takeover timeout the holder checks that its epoch is still the current one,
then sets the modification time of its *own* epoch file (it never writes another holder's file).
On finding a newer epoch it stops beating and reports the loss; the next commit would fail anyway.
A driver that lost the lock exits with :class:`LockLost`, naming the new holder.

``epochs/`` keeps the last ``KEEP_EPOCHS`` files (the newest is never removed, so epochs never repeat).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Callable

from lambdaflow.errors import UserError

log = logging.getLogger("lambdaflow.storage.lock")

KEEP_EPOCHS = 20
WRITER = "_writer"


def stale_after_s() -> float:
    """The takeover timeout: a holder whose heartbeat is older is taken over (env LAMBDAFLOW_LOCK_STALE_S)."""
    return float(os.environ.get("LAMBDAFLOW_LOCK_STALE_S", "") or 60.0)


class LockHeld(UserError):
    """Another live ingest holds the landing zone's lock."""


class LockLost(UserError):
    """This ingest was taken over (it was paused past the timeout); it commits nothing more."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except PermissionError:
        return True


def describe(holder: dict | None, epoch: int) -> str:
    if not holder:
        return f"epoch {epoch} (holder unknown)"
    return f"host {holder.get('host')} pid {holder.get('pid')} (epoch {epoch})"


class WriterLock:
    """The fenced lock of one landing zone; ``fs`` is a :class:`lambdaflow.storage.fs.JvmFs`."""

    def __init__(self, fs, landing_path: str, stale_s: float | None = None,
                 on_lost: Callable[[], None] | None = None) -> None:
        self.fs = fs
        self.root = f"{landing_path}/{WRITER}"
        self.epochs = f"{self.root}/epochs"
        self.stale_s = stale_s if stale_s is not None else stale_after_s()
        self.on_lost = on_lost
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "started_ms": _now_ms()}
        self.epoch: int | None = None
        self.lost: LockLost | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- paths ----------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return f"{self.epochs}/{self.epoch}"

    @property
    def outbox(self) -> str:
        return f"{self.root}/outbox-{self.epoch}"

    # -- state ----------------------------------------------------------------------------------
    def current(self) -> tuple[int, dict | None, int | None]:
        """(epoch, holder, heartbeat ms) of the newest epoch; (0, None, None) before the first."""
        numbers = [int(n) for n in (p.rsplit("/", 1)[1] for p in self.fs.list(self.epochs)) if n.isdigit()]
        if not numbers:
            return 0, None, None
        n = max(numbers)
        path = f"{self.epochs}/{n}"
        try:
            return n, json.loads(self.fs.read_text(path) or "{}"), self.fs.modification_time_ms(path)
        except Exception:  # pruned or being written: judge it by its number only
            return n, None, None

    def _takeable(self, holder: dict | None, heartbeat_ms: int | None) -> bool:
        if holder is None or holder.get("released_ms"):
            return True
        if holder.get("host") == self.holder["host"] and not _pid_alive(holder.get("pid")):
            return True
        return heartbeat_ms is None or (_now_ms() - heartbeat_ms) / 1000 >= self.stale_s

    # -- acquire / release ----------------------------------------------------------------------
    def acquire(self) -> int:
        """Take the lock (see the module docstring); returns the new epoch. Raises :class:`LockHeld`."""
        for _ in range(10):
            n, holder, beat = self.current()
            if not self._takeable(holder, beat):
                age = (_now_ms() - beat) / 1000 if beat else float("nan")
                raise LockHeld(f"another ingest holds the landing zone lock {self.epochs}/{n}: "
                               f"{describe(holder, n)}, heartbeat {age:.0f}s ago (takeover after "
                               f"{self.stale_s:g}s); stop it first")
            if holder and not holder.get("released_ms"):
                log.warning("taking over the landing zone lock from %s", describe(holder, n))
            if self.fs.create_new(f"{self.epochs}/{n + 1}", json.dumps({**self.holder, "epoch": n + 1})):
                self.epoch = n + 1
                break
        else:
            raise LockHeld(f"could not take the landing zone lock {self.epochs}: other ingests keep taking it")
        for path in self.fs.list(self.root):
            name = path.rsplit("/", 1)[1]
            if name.startswith("outbox-") and name[7:].isdigit() and int(name[7:]) < self.epoch:
                self.fs.delete(path)  # the fence: an older epoch's commit fails from now on
        self.fs.mkdirs(self.outbox)
        self.check()
        self._prune()
        log.info("landing zone lock taken: epoch %d (%s)", self.epoch, self.path)
        self._thread = threading.Thread(target=self._heartbeat, name="landing-lock-heartbeat", daemon=True)
        self._thread.start()
        return self.epoch

    def _prune(self) -> None:
        numbers = sorted(int(p.rsplit("/", 1)[1]) for p in self.fs.list(self.epochs) if p.rsplit("/", 1)[1].isdigit())
        for n in numbers[:-KEEP_EPOCHS]:
            if n < self.epoch:
                self.fs.delete(f"{self.epochs}/{n}", recursive=False)

    def release(self) -> None:
        """Stop the heartbeat; mark the epoch released if it is still current (a restart needs no wait)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self.epoch is None or self.lost is not None:
            return
        try:
            n, _, _ = self.current()
            if n == self.epoch:  # only ever our own file
                self.fs.write_atomic(self.path, json.dumps({**self.holder, "epoch": self.epoch,
                                                            "released_ms": _now_ms()}))
                self.fs.delete(self.outbox)
        except Exception as exc:
            log.warning("could not release the landing zone lock %s: %s", self.path, exc)

    # -- fencing --------------------------------------------------------------------------------
    def _lost_to(self, n: int, holder: dict | None) -> LockLost:
        self.lost = LockLost(
            f"this ingest (host {self.holder['host']} pid {self.holder['pid']}, epoch {self.epoch}) lost the "
            f"landing zone lock to {describe(holder, n)}: it was taken over while this driver was paused "
            f"past the {self.stale_s:g}s takeover timeout; it commits nothing more and exits")
        return self.lost

    def check(self) -> None:
        """Raise :class:`LockLost` when a newer epoch exists (one NameNode listing)."""
        if self.lost is not None:
            raise self.lost
        n, holder, _ = self.current()
        if n != self.epoch:
            raise self._lost_to(n, holder)

    def commit(self, name: str, text: str, directory: str) -> None:
        """Make ``directory/name`` appear with ``text`` iff this epoch is still current (see the docstring).

        Raises :class:`LockLost` when fenced; nothing is visible then.
        """
        if self.lost is not None:
            raise self.lost
        staged = f"{self.outbox}/{name}"
        try:
            if not self.fs.create_new(staged, text, make_parents=False):
                if self.fs.exists(staged):  # a leftover of an attempt that failed before its rename
                    self.fs.delete(staged, recursive=False)
                    if not self.fs.create_new(staged, text, make_parents=False):
                        raise RuntimeError(f"cannot create {staged}")
                else:
                    self.check()
                    raise RuntimeError(f"cannot create {staged}: the outbox is missing")
            if not self.fs.try_rename(staged, f"{directory}/{name}"):
                self.check()  # the outbox is gone: fenced between the create and the rename
                self.fs.delete(staged, recursive=False)
                raise RuntimeError(f"cannot commit {directory}/{name}: it exists already or its directory is missing")
        except LockLost:
            raise
        except Exception as exc:
            self.check()  # a failure caused by the fence (outbox deleted under an open file) is a lost lock
            raise exc

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.stale_s / 4):
            try:
                n, holder, _ = self.current()
                if n != self.epoch:
                    log.error("%s", self._lost_to(n, holder))
                    if self.on_lost:
                        self.on_lost()
                    return
                self.fs.touch(self.path, _now_ms())
            except Exception as exc:  # the next beat retries; a missed beat only ages the heartbeat
                log.warning("landing zone lock heartbeat failed: %s", exc)
