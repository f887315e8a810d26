"""Completeness: when an hour's landed rows are final (the sensor) and the boundary of ``--all``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterable

from lambdaflow import hdfs
from lambdaflow.config import Settings
from lambdaflow.storage import commit_log

if TYPE_CHECKING:
    from hdfs import InsecureClient

from lambdaflow.batch.layout import *  # noqa: F401,F403 - the shared layout and helpers
from lambdaflow.batch.layout import Log, _print  # noqa: F401


# -------------------------------------------------------------------- completeness (the sensor)
def landing_complete(settings: Settings, start_ms: int, end_ms: int, allowed_lateness_s: float,
                     client: "InsecureClient | None" = None, now_ms: int | None = None) -> tuple[bool, str]:
    """Whether the ingest has landed everything Kafka held for the hour [start, end); and why (not).

    The hour has *closed* once the landing zone holds an event of a later hour (event time has moved
    past it) or, for a quiet stream, once the wall clock is past ``end + allowed_lateness``. At the
    first check after that, the topic's log-end offsets are recorded (``_observations/<h>.json``,
    kept across pokes and re-runs). The hour is *complete* once the landing positions (highest
    ``until_offset`` per partition in the commit log, compared as integers) have reached
    those offsets, and the wall clock is past ``end + allowed_lateness_s``: the lateness counts from
    the hour's end, so an hour that ended long ago (a backfill's) is complete at the first poke once
    landed, while a run right after the hour still gives late events their time. (Events later still
    are late data: the next run recomputes their hour, :func:`late_hours`.)
    """
    from lambdaflow import kafka_admin

    c = client or hdfs.client(settings)
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    lateness_ms = int(allowed_lateness_s * 1000)
    path = observation_path(settings, start_ms)
    observation = hdfs.read_json(c, path)
    if observation is None:
        landed = [h for h in map(partition_hour, hdfs.list_names(c, settings.landing_path)) if h is not None]
        if not any(h >= end_ms for h in landed) and now_ms < end_ms + lateness_ms:
            return False, f"hour {iso(start_ms)} still open: no later event landed, wall clock before end + lateness"
        log_end = kafka_admin.end_offsets(settings)
        observation = {"observed_at_ms": now_ms, "log_end_offsets": {str(p): o for p, o in log_end.items()}}
        hdfs.write_json(c, path, observation)
    positions = commit_log.positions(c, settings.landing_path)
    behind = {int(p): end - positions.get(int(p), 0)
              for p, end in sorted(observation["log_end_offsets"].items(), key=lambda item: int(item[0]))
              if positions.get(int(p), 0) < end}
    if behind:
        return False, f"landing zone behind the offsets observed after the hour closed: {behind} records"
    wait_ms = end_ms + lateness_ms - now_ms
    if wait_ms > 0:
        return False, f"landed up to the observed offsets; allowed lateness ends in {wait_ms / 1000:.0f} s"
    return True, f"hour {iso(start_ms)} complete: landed up to {observation['log_end_offsets']}"


def completeness_boundary(landed: Iterable[int], positions: dict[int, int], log_end: dict[int, int],
                          now_ms: int, allowed_lateness_ms: int) -> int:
    """The first hour not known to be complete: a full recomputation records only the hours before it.

    The wall clock's hour is still open. Every landed hour before the newest one has closed (event
    time has moved past it); the newest landed hour is complete only once the wall clock is past its
    end plus the allowed lateness *and* the landing positions have reached the topic's log-end
    offsets (the same two conditions as :func:`landing_complete`). Hours at or after the boundary stay
    with the speed layer; events of older hours that land later are late data (:func:`late_hours`).
    """
    boundary = floor_hour(now_ms)
    hours = set(landed)
    if hours:
        newest = max(hours)
        caught_up = all(positions.get(int(p), 0) >= end for p, end in log_end.items())
        closed = now_ms >= newest + HOUR_MS + allowed_lateness_ms
        boundary = min(boundary, newest + HOUR_MS if caught_up and closed else newest)
    return boundary
