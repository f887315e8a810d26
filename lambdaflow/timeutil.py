"""Time in lambdaflow: epoch milliseconds (UTC) everywhere, ISO 8601 at the edges. One place for it.

Every ``timestamp`` is epoch milliseconds; hours are epoch ms floored to the hour (``timestamp_hour``);
intervals are half-open, [from, to). Times given on command lines and in DAG params are ISO 8601
(``2026-11-24T10:00:00Z``); a time without an offset is UTC.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


class TimeFormatError(argparse.ArgumentTypeError, ValueError):
    """Not an ISO 8601 time (argparse shows the message as it is)."""


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_iso8601(text: str) -> dt.datetime:
    """An ISO 8601 date-time such as ``2026-11-24T10:00:00Z`` (no offset means UTC), as UTC."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise TimeFormatError(f"not an ISO 8601 date-time: {text!r} (example: 2026-11-24T10:00:00Z)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def to_epoch_ms(value: dt.datetime) -> int:
    return int(value.timestamp() * 1000)


def iso(value: int | dt.datetime, millis: bool = False) -> str:
    """``2026-11-24T10:00:00Z`` for epoch ms or a datetime (``.000`` milliseconds when asked)."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromtimestamp(value / 1000, dt.timezone.utc)
    moment = moment.astimezone(dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds" if millis else "seconds").replace("+00:00", "Z")


def floor_hour(ms: int) -> int:
    return ms - ms % HOUR_MS


def hours_between(start_ms: int, end_ms: int) -> list[int]:
    """The hours that overlap the half-open interval [start, end)."""
    return list(range(floor_hour(start_ms), end_ms, HOUR_MS))
