"""Retention and the clean-up of leftovers: what the landing zone, quarantine, speed layer, lag
history and bookkeeping may drop after months of running, and what they keep.

Settings (environment; a value of ``0`` or unset means "keep forever" where it says so):

=========================================  ==========  ===============================================
``LAMBDAFLOW_RETENTION_LANDING_DAYS``      forever     landed hours (``timestamp_hour=<h>``) whose end is
                                                       older; only hours the batch layer covers go, and
                                                       their row counts are archived in the commit log
                                                       first (:func:`lambdaflow.storage.commit_log.archive_hours`)
``LAMBDAFLOW_RETENTION_QUARANTINE_DAYS``   30          quarantine hours (``arrival_hour=<h>``, the Kafka
                                                       timestamp's hour) older than this; 0 = forever
``LAMBDAFLOW_RETENTION_SPEED_GRACE_HOURS`` 24          speed partials of an hour the batch layer covers,
                                                       once the hour ended this long ago (serving answers
                                                       covered hours from the batch views anyway)
``LAMBDAFLOW_RETENTION_LAG_DAYS``          7           lag-history day files (``<group>/<topic>/<day>.jsonl``)
                                                       older than this; 0 = forever. Same default as
                                                       ``lambdaflow lag --retention-days``, which prunes too
``LAMBDAFLOW_RETENTION_LEFTOVER_HOURS``    24          batch ``<view>/_staging/<run>`` and ``_trash/<run>``
                                                       directories untouched for this long (and only while
                                                       no batch hour lock is live)
=========================================  ==========  ===============================================

Leftovers cleaned up besides (:func:`clean_leftovers`): batch per-hour locks ``_locks/<h>.lock``
that are stale by the batch layer's own rule (not touched for ``LAMBDAFLOW_BATCH_LOCK_STALE_S``,
600 s: their holder died; :class:`lambdaflow.batch.HourLocks` would take them over), and the
landing zone's ``_staging/<key>/e<n>`` directories of fenced epochs: ``n`` older than the current
writer epoch (:mod:`lambdaflow.storage.lock`) and the key not a committed manifest of the tail
(those are the ingest recovery's to roll forward). The current writer's staging is never touched.
Hour merges' ``_merging`` leftovers are finished by :func:`lambdaflow.storage.hour_merge.recover_merges`.

The planning functions (``plan_*``) are pure: listings and a time in, what to remove and what to
keep out. The ``apply_*`` functions list HDFS, plan, log, and (unless ``dry_run``) delete. They
work over WebHDFS (a ``hdfs.InsecureClient``) or Spark's JVM (a :class:`~lambdaflow.storage.fs.JvmFs`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping

from lambdaflow.config import Settings
from lambdaflow.monitoring import day_files

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
SPEED_VIEWS = ("activity_by_product", "visitors_by_product")
_EPOCH_DIR = re.compile(r"e(\d+)")

Log = Callable[[str], None]


def _float_env(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    text = (env.get(name) or "").strip()
    if not text:
        return default
    value = float(text)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {text}")
    return value


@dataclasses.dataclass(frozen=True)
class RetentionSettings:
    """Retention periods; ``None`` keeps forever (see the module docstring for the variables)."""

    landing_days: float | None = None
    quarantine_days: float | None = 30.0
    speed_grace_hours: float = 24.0
    lag_days: float | None = 7.0
    leftover_hours: float = 24.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "RetentionSettings":
        env = os.environ if env is None else env

        def days(name: str, default: float | None) -> float | None:
            value = _float_env(env, name, default)
            return None if not value else value  # 0 = keep forever

        return cls(landing_days=days("LAMBDAFLOW_RETENTION_LANDING_DAYS", cls.landing_days),
                   quarantine_days=days("LAMBDAFLOW_RETENTION_QUARANTINE_DAYS", cls.quarantine_days),
                   speed_grace_hours=_float_env(env, "LAMBDAFLOW_RETENTION_SPEED_GRACE_HOURS", cls.speed_grace_hours),
                   lag_days=days("LAMBDAFLOW_RETENTION_LAG_DAYS", cls.lag_days),
                   leftover_hours=_float_env(env, "LAMBDAFLOW_RETENTION_LEFTOVER_HOURS", cls.leftover_hours))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ======================================================================================= planning
@dataclasses.dataclass
class Plan:
    """What a retention step removes and keeps (hours as epoch ms, or names/paths)."""

    remove: list = dataclasses.field(default_factory=list)
    keep: list = dataclasses.field(default_factory=list)
    # kept although past the retention, with why (e.g. a landed hour the batch layer does not cover)
    held: dict = dataclasses.field(default_factory=dict)


def partition_hours(names: Iterable[str], column: str) -> list[int]:
    """Hours of ``<column>=<h>`` directory names (other names ignored), sorted."""
    pattern = re.compile(rf"{re.escape(column)}=(-?\d+)")
    return sorted(int(m.group(1)) for m in map(pattern.fullmatch, names) if m)


def _due(hour: int, now_ms: int, keep_ms: float) -> bool:
    """An hour is due once it *ended* longer than ``keep_ms`` ago."""
    return hour + HOUR_MS + keep_ms <= now_ms


def plan_landing(hours: Iterable[int], covered: Iterable[int], now_ms: int, days: float | None,
                 stale: Iterable[int] = ()) -> Plan:
    """Landed hours to remove: past ``days`` and covered by the batch layer with a view computed from
    every row landed in it (the master dataset of an hour the batch views do not hold yet, or hold
    without its late rows — ``stale`` —, is never dropped). ``days`` None: keep everything."""
    plan = Plan()
    covered, stale = set(covered), set(stale)
    for hour in sorted(set(hours)):
        if days is None or not _due(hour, now_ms, days * DAY_MS):
            plan.keep.append(hour)
        elif hour not in covered:
            plan.keep.append(hour)
            plan.held[hour] = "not covered by the batch layer"
        elif hour in stale:
            plan.keep.append(hour)
            plan.held[hour] = "late rows not yet in the batch view"
        else:
            plan.remove.append(hour)
    return plan


def plan_quarantine(hours: Iterable[int], now_ms: int, days: float | None,
                    written_ms: Mapping[int, int] | None = None) -> Plan:
    """Quarantine arrival hours past ``days`` (None: keep everything), counted from the later of the
    hour's end and when files were last written into it (``written_ms``): after a long outage the
    backlog's records arrive in old hours, and still get ``days`` to be looked at and replayed."""
    plan = Plan()
    for hour in sorted(set(hours)):
        written = (written_ms or {}).get(hour)
        due = days is not None and _due(hour, now_ms, days * DAY_MS) and (
            written is None or written + days * DAY_MS <= now_ms)
        (plan.remove if due else plan.keep).append(hour)
    return plan


def plan_speed(hours: Iterable[int], covered: Iterable[int], now_ms: int, grace_hours: float) -> Plan:
    """Speed-partial hours the batch layer covers and that ended more than ``grace_hours`` ago."""
    plan = Plan()
    covered = set(covered)
    for hour in sorted(set(hours)):
        if hour in covered and _due(hour, now_ms, grace_hours * HOUR_MS):
            plan.remove.append(hour)
        else:
            plan.keep.append(hour)
            if hour in covered:
                plan.held[hour] = "within the grace period"
    return plan


def plan_lag_history(names: Iterable[str], today: date, days: float | None) -> Plan:
    """Lag-history day files ``YYYY-MM-DD.jsonl`` older than ``days`` before ``today`` (today and the
    ``days`` days before it are kept; other names are kept). None: keep everything."""
    plan = Plan()
    oldest_kept = today - timedelta(days=days) if days is not None else None
    for name in sorted(names):
        match = day_files.DAY_FILE.fullmatch(name)
        if match and oldest_kept is not None and date.fromisoformat(match.group(1)) < oldest_kept:
            plan.remove.append(name)
        else:
            plan.keep.append(name)
    return plan


def plan_older_than(mtimes: Mapping[str, int], now_ms: int, age_ms: float) -> Plan:
    """Entries (name -> modification time ms) not touched for longer than ``age_ms``."""
    plan = Plan()
    for name, mtime in sorted(mtimes.items()):
        (plan.remove if now_ms - mtime > age_ms else plan.keep).append(name)
    return plan


def plan_fenced_staging(staging: Mapping[str, Iterable[str]], current_epoch: int,
                        committed_keys: Iterable[str]) -> Plan:
    """The landing zone's ``_staging/<key>/e<n>`` directories to remove: those of epochs older than
    ``current_epoch`` (a fenced writer can never commit them), unless ``<key>`` is a committed
    manifest still in the tail (its staged files are the recovery's to move). The current writer's
    ``e<current>`` and any other name are kept. ``staging``: key -> names of its sub-directories."""
    plan = Plan()
    committed = set(committed_keys)
    for key, children in sorted(staging.items()):
        for child in sorted(children):
            path = f"{key}/{child}"
            match = _EPOCH_DIR.fullmatch(child)
            if match is None or int(match.group(1)) >= current_epoch:
                plan.keep.append(path)
            elif key in committed:
                plan.keep.append(path)
                plan.held[path] = "committed: left to the ingest's recovery"
            else:
                plan.remove.append(path)
    return plan


def current_epoch(epoch_names: Iterable[str]) -> int:
    """The current writer epoch: the largest number among ``_writer/epochs/<n>`` (0 before the first)."""
    return max((int(n) for n in epoch_names if n.isdigit()), default=0)


# ======================================================================================= HDFS access
class Tree:
    """Listing with modification times and recursive deletes, over WebHDFS or Spark's JVM."""

    def __init__(self, fs_or_client) -> None:
        self.target = fs_or_client
        self.jvm = hasattr(fs_or_client, "_fs")

    def entries(self, path: str) -> dict[str, tuple[bool, int]]:
        """``{name: (is_dir, modification time ms)}``; {} when ``path`` does not exist."""
        if self.jvm:
            fs = self.target
            if not fs.exists(path):
                return {}
            return {s.getPath().getName(): (bool(s.isDirectory()), int(s.getModificationTime()))
                    for s in fs._fs.listStatus(fs._path(path))}
        if self.target.status(path, strict=False) is None:
            return {}
        return {name: (st["type"] == "DIRECTORY", int(st["modificationTime"]))
                for name, st in self.target.list(path, status=True)}

    def names(self, path: str) -> list[str]:
        return sorted(self.entries(path))

    def delete(self, path: str, recursive: bool = True) -> bool:
        if self.jvm:
            return self.target.delete(path, recursive)
        return bool(self.target.delete(path, recursive=recursive))

    def batch_store(self):
        """A reader of the batch layer's state (:func:`lambdaflow.batch.layout.state`)."""
        from lambdaflow.storage import commit_log

        return commit_log.store_for(self.target)


def live_holder(tree: Tree, lock_path: str) -> str | None:
    """Who holds the fenced lock :class:`lambdaflow.storage.lock.WriterLock` at ``lock_path`` (its
    ``_writer`` lives under it: the landing zone, or the quarantine's ``_replay``), None when nobody
    does (never taken, released, or its heartbeat older than the takeover timeout)."""
    from lambdaflow.storage.lock import WRITER, stale_after_s

    epochs = f"{lock_path}/{WRITER}/epochs"
    entries = tree.entries(epochs)
    n = current_epoch(entries)
    if not n:
        return None
    holder = tree.batch_store().read_json(f"{epochs}/{n}") or {}
    age_s = (datetime.now(timezone.utc).timestamp() * 1000 - entries[str(n)][1]) / 1000
    if holder.get("released_ms") or age_s >= stale_after_s():
        return None
    return f"host {holder.get('host')} pid {holder.get('pid')} (epoch {n}, heartbeat {age_s:.0f} s ago)"


def replay_lock_path(settings: Settings) -> str:
    """The quarantine replay's lock (:mod:`lambdaflow.storage.quarantine`): replays rewrite quarantine files."""
    from lambdaflow.storage.quarantine import REPLAY_LOCK

    return f"{settings.quarantine_path}/{REPLAY_LOCK}"


def _iso(hour: int) -> str:
    return datetime.fromtimestamp(hour / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def _hours_text(hours: list[int], limit: int = 6) -> str:
    if not hours:
        return "none"
    shown = ", ".join(_iso(h) for h in hours[:limit])
    return shown + (f" ... ({len(hours)} in all)" if len(hours) > limit else "")


def _batch_covered(tree: Tree, settings: Settings) -> list[int]:
    from lambdaflow.batch.layout import state

    return state(tree.batch_store(), settings)["hours"]


# ======================================================================================= applying
def _committed_moving(tree: Tree, settings: Settings) -> list[str]:
    """Committed batches still moving their files into place (``_staging/<key>`` beside its manifest:
    a crash between the commit point and the moves). Their files must stay where the manifest says
    until the ingest's recovery has moved them, so the file retention waits for the next run."""
    staging = set(tree.names(f"{settings.landing_path}/_staging"))
    manifests = {n.removesuffix(".json") for n in tree.names(f"{settings.landing_path}/_manifests")}
    return sorted(staging & manifests)


def _stale_views(tree: Tree, settings: Settings, hours: Iterable[int], landed: Mapping[int, int]) -> set[int]:
    """Hours whose batch record was computed from another number of rows than the commit log holds."""
    from lambdaflow.batch.layout import current_version, read_hour_record

    store = tree.batch_store()
    version = current_version(store, settings)
    stale = set()
    for hour in hours:
        record = read_hour_record(store, settings, version, hour) or {}
        if record.get("landed_rows") != landed.get(hour, 0):
            stale.add(hour)
    return stale


def apply_landing(tree: Tree, settings: Settings, retention: RetentionSettings, now_ms: int,
                  dry_run: bool = False, log: Log = print) -> dict:
    """Remove landed hours past the retention that the batch layer covers, archiving their row
    counts in the commit log first (totals stay exact)."""
    from lambdaflow.storage import commit_log

    landing = settings.landing_path
    hours = partition_hours(tree.names(landing), "timestamp_hour")
    moving = _committed_moving(tree, settings) if retention.landing_days else []
    if moving:
        log(f"landing zone {landing}: {len(moving)} committed batch(es) still moving into place ({moving[0]} ...); "
            "retention waits for the ingest's recovery (next run)")
        return {"removed": [], "kept": len(hours), "skipped": "committed batches still moving into place",
                "archived_rows": 0, "retention_days": retention.landing_days}
    covered = _batch_covered(tree, settings) if retention.landing_days else []
    rows = commit_log.landed_rows_by_hour(tree.target, landing) if retention.landing_days else {}
    due = plan_landing(hours, covered, now_ms, retention.landing_days).remove
    plan = plan_landing(hours, covered, now_ms, retention.landing_days, _stale_views(tree, settings, due, rows))
    report = {"removed": [], "kept": len(plan.keep), "held": {str(h): why for h, why in plan.held.items()},
              "archived_rows": 0, "retention_days": retention.landing_days}
    if plan.remove:
        counts = {h: rows.get(h, 0) for h in plan.remove}
        if not dry_run:
            archived = commit_log.archive_hours(tree.target, landing, counts)
            report["archived_rows"] = sum(archived.values())
            for hour in plan.remove:
                tree.delete(f"{landing}/timestamp_hour={hour}")
        else:
            report["archived_rows"] = sum(counts.values())
        report["removed"] = plan.remove
    verb = "would remove" if dry_run else "removed"
    log(f"landing zone {landing}: {verb} {len(plan.remove)} hour(s) ({_hours_text(plan.remove)}; "
        f"{report['archived_rows']} rows archived in the commit log), kept {len(plan.keep)}"
        + (f" (retention: {retention.landing_days:g} days)" if retention.landing_days else " (retention: forever)")
        + (f"; {len(plan.held)} past the retention kept: not covered by the batch layer" if plan.held else ""))
    return report


def apply_quarantine(tree: Tree, settings: Settings, retention: RetentionSettings, now_ms: int,
                     dry_run: bool = False, log: Log = print) -> dict:
    """Remove quarantine arrival hours past the retention."""
    root = settings.quarantine_path
    entries = tree.entries(root)
    hours = partition_hours(entries, "arrival_hour")
    legacy = sorted(n for n, (is_dir, _) in entries.items() if not is_dir and n.endswith(".parquet"))
    written = {h: entries[f"arrival_hour={h}"][1] for h in hours}  # a directory's mtime: its last file added
    plan = plan_quarantine(hours, now_ms, retention.quarantine_days, written)
    if plan.remove and _committed_moving(tree, settings):
        log(f"quarantine {root}: committed batches still moving into place; retention waits for the next run")
        return {"removed": [], "kept": len(hours), "skipped": "committed batches still moving into place",
                "retention_days": retention.quarantine_days}
    replaying = live_holder(tree, replay_lock_path(settings)) if plan.remove else None
    if replaying:  # a replay moves the files it read: removing them under it would lose its commit
        log(f"quarantine {root}: a quarantine replay is running ({replaying}); kept all {len(hours)} arrival "
            f"hour(s), {len(plan.remove)} past the retention are removed by the next run")
        return {"removed": [], "kept": len(hours), "skipped": f"a quarantine replay is running: {replaying}",
                "retention_days": retention.quarantine_days}
    if not dry_run:
        for hour in plan.remove:
            tree.delete(f"{root}/arrival_hour={hour}")
    verb = "would remove" if dry_run else "removed"
    log(f"quarantine {root}: {verb} {len(plan.remove)} arrival hour(s) ({_hours_text(plan.remove)}), "
        f"kept {len(plan.keep)}"
        + (f" (retention: {retention.quarantine_days:g} days)" if retention.quarantine_days else " (retention: forever)")
        + (f"; {len(legacy)} file(s) from before arrival-hour partitions kept" if legacy else ""))
    return {"removed": plan.remove, "kept": len(plan.keep), "legacy_files_kept": len(legacy),
            "retention_days": retention.quarantine_days}


def apply_speed(tree: Tree, settings: Settings, retention: RetentionSettings, now_ms: int,
                dry_run: bool = False, log: Log = print) -> dict:
    """Remove speed partials of hours the batch layer covers, after the grace period."""
    covered = _batch_covered(tree, settings)
    report: dict[str, Any] = {"grace_hours": retention.speed_grace_hours}
    if _committed_moving(tree, settings):
        log("speed views: committed batches still moving into place; retention waits for the next run")
        return {**report, "skipped": "committed batches still moving into place"}
    for view in SPEED_VIEWS:
        root = f"{settings.speed_root}/{view}"
        plan = plan_speed(partition_hours(tree.names(root), "timestamp_hour"), covered, now_ms,
                          retention.speed_grace_hours)
        if not dry_run:
            for hour in plan.remove:
                tree.delete(f"{root}/timestamp_hour={hour}")
        verb = "would remove" if dry_run else "removed"
        log(f"speed view {root}: {verb} {len(plan.remove)} hour(s) covered by the batch layer "
            f"({_hours_text(plan.remove)}), kept {len(plan.keep)} ({len(plan.held)} covered, within the "
            f"{retention.speed_grace_hours:g} h grace)")
        report[view] = {"removed": plan.remove, "kept": len(plan.keep), "in_grace": len(plan.held)}
    return report


def apply_lag_history(tree: Tree, settings: Settings, retention: RetentionSettings, now_ms: int,
                      dry_run: bool = False, log: Log = print) -> dict:
    """Remove lag-history day files past the retention, for every group and topic kept there."""
    base = settings.lag_history_path
    today = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc).date()
    removed, kept = [], 0
    for group, (is_dir, _) in sorted(tree.entries(base).items()):
        if not is_dir or group.startswith("_"):
            continue
        for topic, (topic_is_dir, _) in sorted(tree.entries(f"{base}/{group}").items()):
            if not topic_is_dir:
                continue
            directory = f"{base}/{group}/{topic}"
            plan = plan_lag_history(tree.names(directory), today, retention.lag_days)
            for name in plan.remove:
                if not dry_run:
                    tree.delete(f"{directory}/{name}", recursive=False)
                removed.append(f"{directory}/{name}")
            kept += len(plan.keep)
    verb = "would remove" if dry_run else "removed"
    log(f"lag history {base}: {verb} {len(removed)} day file(s)"
        + (f" ({', '.join(p.rsplit('/', 1)[1] for p in removed[:6])}{' ...' if len(removed) > 6 else ''})"
           if removed else "")
        + f", kept {kept}" + (f" (retention: {retention.lag_days:g} days)" if retention.lag_days else " (retention: forever)"))
    return {"removed": removed, "kept": kept, "retention_days": retention.lag_days}


def clean_leftovers(tree: Tree, settings: Settings, retention: RetentionSettings, now_ms: int,
                    dry_run: bool = False, log: Log = print) -> dict:
    """Stale batch locks, old batch ``_staging``/``_trash`` runs, fenced epochs' landing staging."""
    from lambdaflow.batch.layout import LOCK_STALE_SECONDS, VIEWS
    from lambdaflow.storage import commit_log

    verb = "would remove" if dry_run else "removed"
    report: dict[str, Any] = {}

    # batch per-hour locks: stale by the batch layer's rule (HourLocks would take them over)
    locks_dir = f"{settings.batch_root}/_locks"
    locks = {n: m for n, (d, m) in tree.entries(locks_dir).items() if not d and n.endswith(".lock")}
    stale = plan_older_than(locks, now_ms, LOCK_STALE_SECONDS * 1000)
    for name in stale.remove if not dry_run else ():
        tree.delete(f"{locks_dir}/{name}", recursive=False)
    log(f"batch locks {locks_dir}: {verb} {len(stale.remove)} stale (not touched for {LOCK_STALE_SECONDS:g} s)"
        + (f": {', '.join(stale.remove[:6])}" if stale.remove else "") + f", kept {len(stale.keep)} live")
    report["batch_locks"] = {"removed": stale.remove, "kept": stale.keep}

    # batch staging and trash runs: only while no recomputation holds a lock
    runs: dict[str, Any] = {"removed": [], "kept": []}
    if stale.keep:
        log(f"batch _staging/_trash: kept all, {len(stale.keep)} hour lock(s) live (a recomputation is running)")
        runs["skipped"] = "a batch recomputation is running"
    else:
        for view in VIEWS:
            for kind in ("_staging", "_trash"):
                directory = f"{settings.batch_root}/{view}/{kind}"
                plan = plan_older_than({n: m for n, (_, m) in tree.entries(directory).items()}, now_ms,
                                       retention.leftover_hours * HOUR_MS)
                for name in plan.remove:
                    if not dry_run:
                        tree.delete(f"{directory}/{name}")
                    runs["removed"].append(f"{directory}/{name}")
                runs["kept"] += [f"{directory}/{name}" for name in plan.keep]
        log(f"batch _staging/_trash: {verb} {len(runs['removed'])} run(s) older than {retention.leftover_hours:g} h"
            + (f" ({', '.join(runs['removed'][:4])})" if runs["removed"] else "") + f", kept {len(runs['kept'])}")
    report["batch_runs"] = runs

    # the landing zone's staging of fenced epochs
    landing = settings.landing_path
    staging_dir = f"{landing}/_staging"
    epoch = current_epoch(tree.names(f"{landing}/_writer/epochs"))
    staging = {key: tree.names(f"{staging_dir}/{key}") for key, (is_dir, _) in tree.entries(staging_dir).items()
               if is_dir}
    committed = {n.removesuffix(".json") for n in commit_log.read_state(tree.target, landing).tail} if staging else set()
    plan = plan_fenced_staging(staging, epoch, committed)
    removed_keys = set()
    for path in plan.remove:
        if not dry_run:
            tree.delete(f"{staging_dir}/{path}")
        removed_keys.add(path.split("/", 1)[0])
    if not dry_run:
        for key in sorted(removed_keys):  # an emptied key directory (non-recursive: a writer may just be filling it)
            if not tree.names(f"{staging_dir}/{key}"):
                try:
                    tree.delete(f"{staging_dir}/{key}", recursive=False)
                except Exception:  # noqa: BLE001 - a writer created something in it meanwhile: keep it
                    pass
    log(f"landing staging {staging_dir}: {verb} {len(plan.remove)} dir(s) of fenced epochs (< e{epoch})"
        + (f" ({', '.join(plan.remove[:4])})" if plan.remove else "")
        + f", kept {len(plan.keep)}" + (f" ({len(plan.held)} committed, left to recovery)" if plan.held else ""))
    report["landing_staging"] = {"removed": plan.remove, "kept": plan.keep, "current_epoch": epoch}
    return report
