"""The landing zone's commit log, bounded: cumulative roll-ups plus a short tail of manifests.

Every committed micro-batch writes one manifest ``_manifests/<commit key>.json`` (the commit point,
:mod:`lambdaflow.landing`). At the default 1 s trigger that is up to 86,400 files a day, so the
log is **rolled up**: a roll-up ``_rollups/<seq>.json`` is the *cumulative* state of every manifest
committed before it (offset intervals per partition, rows per event hour, quarantined rows per
reason, batches, the last commit time per partition), and the manifests it covers are then
deleted. Readers take the newest roll-up plus the manifests it does not cover (the *tail*), so
every reader's work is O(tail + hours), never O(micro-batches ever committed)::

    _manifests/<key>.json              the tail: commits since the newest roll-up
    _manifests/replay-<id>.json        a quarantine replay's commit (no ranges; moves rows)
    _rollups/<seq, 12 digits>.json     cumulative roll-ups; the newest two are kept

**Coverage, not deletion, decides.** A manifest is covered when every one of its ranges lies
inside the roll-up's offset intervals (a replay: when its id is in the roll-up's ``replays``).
So a reader that sees a roll-up *and* a manifest it covers (the roll-up was created, its
manifests not yet deleted) counts the manifest once; roll-ups race safely (the sequence number is
taken with an atomic create-if-absent, the loser gives up and the winner's roll-up is as good).

**What may be rolled up.** Only manifests whose batch is fully in place: a manifest whose
``_staging/<key>`` still exists is a batch still moving its files (recovery needs its file list),
so it stays in the tail. Listing manifests *before* staging makes "no staging" mean "all moved".

**Retention.** Removing landed hours never loses the accounting: :func:`archive_hours` moves the
hours' row counts to ``archived_hours`` in a new roll-up before the data goes; ``landed_rows``
stays the total ever landed, ``hours`` what the landing zone holds now.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Iterable, Mapping, Protocol

from lambdaflow import landing
from lambdaflow.storage.fs import WebFs

log = logging.getLogger("lambdaflow.storage.commit_log")

ROLLUPS = "_rollups"
REPLAY_PREFIX = "replay-"
KEEP_ROLLUPS = 2
ROLLUP_VERSION = 1


class LogStore(Protocol):
    """What the commit log needs from HDFS; :class:`WebLogStore` and :class:`JvmLogStore` provide it."""

    def list_names(self, path: str) -> list[str]: ...

    def list_mtimes(self, path: str) -> dict[str, int]: ...

    def read_json(self, path: str) -> Any: ...

    def create_new(self, path: str, text: str) -> bool: ...

    def delete(self, path: str) -> None: ...


# The commit log over WebHDFS (lag monitor, sensors, dashboard, CLI, the batch layer: no JVM).
WebLogStore = WebFs


class JvmLogStore:
    """The commit log through Spark's JVM (the ingest, the batch job): a :class:`~lambdaflow.storage.fs.JvmFs`."""

    def __init__(self, fs) -> None:
        self.fs = fs

    def list_names(self, path: str) -> list[str]:
        return [p.rsplit("/", 1)[1] for p in self.fs.list(path)]

    def list_mtimes(self, path: str) -> dict[str, int]:
        if not self.fs.exists(path):
            return {}
        return {s.getPath().getName(): int(s.getModificationTime()) for s in self.fs._fs.listStatus(self.fs._path(path))}

    def read_json(self, path: str) -> Any:
        return self.fs.read_json(path)  # None when absent, also when deleted meanwhile

    def create_new(self, path: str, text: str) -> bool:
        return self.fs.create_new(path, text)

    def delete(self, path: str) -> None:
        self.fs.delete(path, recursive=False)


def store_for(fs_or_client) -> LogStore:
    """A :class:`LogStore` for a JvmFs, a WebHDFS client, or a store already."""
    if hasattr(fs_or_client, "list_mtimes"):
        return fs_or_client
    if hasattr(fs_or_client, "_fs"):
        return JvmLogStore(fs_or_client)
    return WebFs(fs_or_client)


# ------------------------------------------------------------------------------- names and paths
def manifests_dir(landing_path: str) -> str:
    return f"{landing_path}/{landing.MANIFESTS}"


def rollups_dir(landing_path: str) -> str:
    return f"{landing_path}/{ROLLUPS}"


def is_replay_name(name: str) -> bool:
    return name.startswith(REPLAY_PREFIX) and name.endswith(".json")


def is_entry_name(name: str) -> bool:
    """A committed tail entry: a range manifest or a replay's manifest (not a temp file)."""
    return landing.is_manifest_name(name) or is_replay_name(name)


def rollup_name(seq: int) -> str:
    return f"{seq:012d}.json"


def _rollup_seq(name: str) -> int | None:
    stem = name.removesuffix(".json")
    return int(stem) if name.endswith(".json") and stem.isdigit() else None


# ------------------------------------------------------------------------------- the roll-up state
def empty_rollup() -> dict:
    return {"version": ROLLUP_VERSION, "seq": 0, "batches": 0, "replays": [], "intervals": {},
            "landed_rows": 0, "quarantined_rows": 0, "quarantine_reasons": {}, "hours": {},
            "archived_hours": {}, "landed_at_ms": {}, "max_epoch": None, "created_at_ms": None}


def _merge_intervals(intervals: list[list[int]], add: Iterable[tuple[int, int]]) -> list[list[int]]:
    merged: list[list[int]] = []
    for start, end in sorted([tuple(i) for i in intervals] + list(add)):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def covers(rollup: Mapping, name: str) -> bool:
    """Whether the roll-up already counts the tail entry ``name``."""
    if is_replay_name(name):
        return name.removesuffix(".json")[len(REPLAY_PREFIX):] in set(rollup.get("replays", []))
    intervals = rollup.get("intervals", {})
    for r in landing.parse_commit_key(name):
        if not any(start <= r.from_offset and r.until_offset <= end for start, end in intervals.get(str(r.partition), [])):
            return False
    return True


def fold(rollup: Mapping, entries: Mapping[str, Mapping]) -> dict:
    """A new cumulative state: ``rollup`` plus the tail entries ``{name: manifest document}``.

    Pure. Entries the roll-up already covers are skipped, so folding twice counts once."""
    state = json.loads(json.dumps(rollup)) if rollup else empty_rollup()
    added: dict[str, list[tuple[int, int]]] = {}  # merged into the intervals once, at the end
    for name, doc in sorted(entries.items()):
        if covers(state, name):  # the input roll-up's intervals (commits never overlap each other)
            continue
        if is_replay_name(name):
            state["replays"] = sorted(set(state["replays"]) | {name.removesuffix(".json")[len(REPLAY_PREFIX):]})
        else:
            state["batches"] += 1
            for r in landing.parse_commit_key(name):
                added.setdefault(str(r.partition), []).append((r.from_offset, r.until_offset))
                at = doc.get("committed_at_ms")
                if at is not None:
                    state["landed_at_ms"][str(r.partition)] = max(state["landed_at_ms"].get(str(r.partition), 0), int(at))
        state["landed_rows"] += int(doc.get("landed_rows", 0))
        state["quarantined_rows"] += int(doc.get("quarantined_rows", 0))
        for reason, n in doc.get("quarantine_reasons", {}).items():
            state["quarantine_reasons"][reason] = state["quarantine_reasons"].get(reason, 0) + int(n)
        for hour, n in doc.get("hours", {}).items():
            state["hours"][str(hour)] = state["hours"].get(str(hour), 0) + int(n)
        if doc.get("epoch") is not None:
            state["max_epoch"] = max(state["max_epoch"] or 0, int(doc["epoch"]))
    for partition, add in added.items():
        state["intervals"][partition] = _merge_intervals(state["intervals"].get(partition, []), add)
    state["quarantine_reasons"] = {k: v for k, v in sorted(state["quarantine_reasons"].items()) if v}
    state["hours"] = {k: v for k, v in sorted(state["hours"].items(), key=lambda kv: int(kv[0])) if v}
    return state


@dataclasses.dataclass
class LogState:
    """The newest roll-up and the tail entries it does not cover (names, with mtimes)."""

    rollup: dict
    tail: dict[str, int | None]  # name -> modification time ms
    rollup_name: str | None

    @property
    def positions(self) -> dict[int, int]:
        """Landing position per partition: the largest ``until`` committed (roll-up and tail)."""
        out = {int(p): max(end for _, end in spans) for p, spans in self.rollup["intervals"].items() if spans}
        for p, until in landing.positions_from_keys(n for n in self.tail if landing.is_manifest_name(n)).items():
            out[p] = max(out.get(p, 0), until)
        return out

    def settled_positions(self, moving: Iterable[str]) -> dict[int, int]:
        """Positions up to which every batch is in place: tail commits whose staging directory (in
        ``moving``, listed after the manifests) still exists are left out (a roll-up never holds one)."""
        moving = set(moving)
        settled = LogState(self.rollup, {n: t for n, t in self.tail.items() if n.removesuffix(".json") not in moving},
                           self.rollup_name)
        return settled.positions

    @property
    def range_names(self) -> list[str]:
        return sorted(n for n in self.tail if landing.is_manifest_name(n))

    def progress(self) -> dict[int, tuple[int, int | None]]:
        """``{partition: (position, last landed at ms)}``: the roll-up's times, then the tail's mtimes."""
        out: dict[int, tuple[int, int | None]] = {}
        for p, spans in self.rollup["intervals"].items():
            if spans:
                out[int(p)] = (max(e for _, e in spans), self.rollup["landed_at_ms"].get(p))
        for name in self.range_names:
            mtime = self.tail[name]
            for r in landing.parse_commit_key(name):
                position, at = out.get(r.partition, (r.until_offset, mtime))
                times = [t for t in (at, mtime) if t is not None]
                out[r.partition] = (max(position, r.until_offset), max(times, default=None))
        return out


def read_state(store: LogStore, landing_path: str, attempts: int = 5) -> LogState:
    """The newest roll-up and the uncovered tail, consistent against a concurrent roll-up: the roll-ups
    are listed before and after the manifests, and the read is repeated when a new one appeared."""
    store = store_for(store)
    for _ in range(attempts):
        before = _newest_rollup_name(store, landing_path)
        names = {n: t for n, t in store.list_mtimes(manifests_dir(landing_path)).items() if is_entry_name(n)}
        after = _newest_rollup_name(store, landing_path)
        if before != after:
            continue
        rollup = store.read_json(f"{rollups_dir(landing_path)}/{after}") if after else None
        if after and rollup is None:  # removed meanwhile by a newer roll-up
            continue
        rollup = rollup or empty_rollup()
        return LogState(rollup, {n: t for n, t in names.items() if not covers(rollup, n)}, after)
    raise RuntimeError(f"the commit log of {landing_path} kept changing under the reader ({attempts} attempts)")


def _newest_rollup_name(store: LogStore, landing_path: str) -> str | None:
    seqs = [s for s in map(_rollup_seq, store.list_names(rollups_dir(landing_path))) if s is not None]
    return rollup_name(max(seqs)) if seqs else None


def read_tail(store: LogStore, landing_path: str, state: LogState) -> dict[str, dict]:
    """The tail manifests' documents (a manifest rolled up meanwhile is dropped: re-read the state)."""
    store = store_for(store)
    out = {}
    for name in sorted(state.tail):
        doc = store.read_json(f"{manifests_dir(landing_path)}/{name}")
        if doc is not None:
            out[name] = doc
    return out


def current(store: LogStore, landing_path: str, attempts: int = 5) -> dict:
    """The whole commit log folded into one cumulative state (the newest roll-up plus the tail)."""
    store = store_for(store)
    for _ in range(attempts):
        state = read_state(store, landing_path)
        docs = read_tail(store, landing_path, state)
        if len(docs) == len(state.tail):
            return fold(state.rollup, docs)
    raise RuntimeError(f"the commit log of {landing_path} kept changing under the reader")


# ------------------------------------------------------------------------------- readers' figures
def positions(fs_or_client, landing_path: str) -> dict[int, int]:
    return read_state(store_for(fs_or_client), landing_path).positions


def landed_rows_by_hour(fs_or_client, landing_path: str) -> dict[int, int]:
    """Rows per event hour the landing zone holds (archived hours excluded)."""
    return {int(h): n for h, n in current(store_for(fs_or_client), landing_path)["hours"].items()}


def totals(fs_or_client, landing_path: str) -> dict:
    """``{batches, landed_rows, quarantined_rows, quarantine_reasons, archived_rows}`` of the whole log."""
    state = current(store_for(fs_or_client), landing_path)
    return {"batches": state["batches"], "landed_rows": state["landed_rows"],
            "quarantined_rows": state["quarantined_rows"], "quarantine_reasons": state["quarantine_reasons"],
            "archived_rows": sum(state["archived_hours"].values()), "positions": {
                int(p): max(e for _, e in spans) for p, spans in state["intervals"].items() if spans}}


# ------------------------------------------------------------------------------- writing roll-ups
def roll_up(fs_or_client, landing_path: str, pending: Mapping[str, Mapping] | None = None,
            keep_tail: int = 0, now_ms: int | None = None) -> int:
    """Fold the tail (and ``pending``: documents the caller committed and still holds in memory, so
    the ingest reads nothing back) into a new roll-up, then delete the manifests it covers and the
    roll-ups older than the newest :data:`KEEP_ROLLUPS`. Returns the number of entries rolled up.

    Manifests whose batch is still moving into place (``_staging/<key>`` exists) stay in the tail;
    so do the ``keep_tail`` most recently written ones (any subset of the tail may be rolled up).
    Safe to run from several processes at once."""
    store = store_for(fs_or_client)
    pending = dict(pending or {})
    state = read_state(store, landing_path)
    moving = set(store.list_names(f"{landing_path}/{landing.STAGING}"))  # listed after the manifests
    names = [n for n in sorted(state.tail, key=lambda n: (state.tail[n] or 0, n))
             if n.removesuffix(".json") not in moving]
    if keep_tail:
        names = names[:-keep_tail] if len(names) > keep_tail else []
    docs = {n: pending[n] for n in names if n in pending}
    for name in names:
        if name not in docs:
            doc = store.read_json(f"{manifests_dir(landing_path)}/{name}")
            if doc is not None:
                docs[name] = doc
    extra = {n: d for n, d in pending.items() if n not in state.tail and not covers(state.rollup, n)
             and n.removesuffix(".json") not in moving}  # synthetic or never-written commits
    docs.update(extra)
    if not docs:
        return 0
    new = fold(state.rollup, docs)
    seq = int(state.rollup.get("seq", 0)) + 1
    new["seq"] = seq
    new["created_at_ms"] = now_ms if now_ms is not None else int(time.time() * 1000)
    if not store.create_new(f"{rollups_dir(landing_path)}/{rollup_name(seq)}", json.dumps(new, sort_keys=True)):
        log.info("roll-up %d of %s was written by another process; leaving it to that one", seq, landing_path)
        return 0
    _prune(store, landing_path, new, seq)
    log.info("rolled up %d commit(s) of %s into %s", len(docs), landing_path, rollup_name(seq))
    return len(docs)


def _prune(store: LogStore, landing_path: str, rollup: Mapping, seq: int) -> None:
    """Delete the manifests ``rollup`` covers and old roll-ups; nothing when a newer roll-up exists (a
    writer that read a stale state may re-create a sequence number already pruned: its roll-up is
    never the newest, so readers ignore it, and it must not prune what the newest does not cover)."""
    newest = _newest_rollup_name(store, landing_path)
    if newest is not None and _rollup_seq(newest) > seq:
        log.info("roll-up %d of %s is not the newest (%s): pruning left to the newest", seq, landing_path, newest)
        return
    for name in store.list_names(manifests_dir(landing_path)):
        if is_entry_name(name) and covers(rollup, name):
            try:
                store.delete(f"{manifests_dir(landing_path)}/{name}")
            except Exception as exc:  # a concurrent pruner deleted it first: fine
                log.debug("could not delete %s: %s", name, exc)
    for name in store.list_names(rollups_dir(landing_path)):
        old = _rollup_seq(name)
        if old is not None and old <= seq - KEEP_ROLLUPS:
            store.delete(f"{rollups_dir(landing_path)}/{name}")


def archive_hours(fs_or_client, landing_path: str, hours: Mapping[int, int] | Iterable[int],
                  now_ms: int | None = None) -> dict[int, int]:
    """Record ``hours`` as archived (retention is about to delete their data): a new roll-up moves
    their row counts from ``hours`` to ``archived_hours``. Returns the counts archived. Call it
    *before* deleting the hours' files; archiving an hour twice is a no-op."""
    store = store_for(fs_or_client)
    wanted = set(int(h) for h in hours)
    for _ in range(5):
        roll_up(store, landing_path, now_ms=now_ms)
        state = read_state(store, landing_path)
        new = json.loads(json.dumps(state.rollup))  # the tail stays uncovered (same intervals)
        moved = {h: new["hours"].pop(str(h)) for h in sorted(wanted) if str(h) in new["hours"]}
        if not moved:
            return {}
        for h, n in moved.items():
            new["archived_hours"][str(h)] = new["archived_hours"].get(str(h), 0) + n
        seq = int(state.rollup.get("seq", 0)) + 1
        new["seq"] = seq
        new["created_at_ms"] = now_ms if now_ms is not None else int(time.time() * 1000)
        if store.create_new(f"{rollups_dir(landing_path)}/{rollup_name(seq)}", json.dumps(new, sort_keys=True)):
            _prune(store, landing_path, new, seq)
            return moved
    raise RuntimeError(f"could not archive hours of {landing_path}: the commit log kept changing")
