"""Monitoring history on HDFS: JSON lines, one file per UTC day, bounded by a retention in days.

The lag monitor's samples (:mod:`lambdaflow.lag`) and the streaming query's per-batch progress
(:mod:`lambdaflow.monitoring.stream_progress`) are both kept this way: appending is one WebHDFS
call, a day file is read whole, old days are dropped whole, and a reader of the last hours opens
one or two files, however long the history.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from lambdaflow import hdfs

log = logging.getLogger("lambdaflow.monitoring.day_files")

DAY_FILE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})\.jsonl")
APPEND_ATTEMPTS = 6


def utc_day(epoch_ms: int) -> date:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).date()


def expired(names: Iterable[str], today: date, retention_days: int) -> list[str]:
    """Day files older than the retention (today and the ``retention_days`` days before are kept)."""
    oldest_kept = today - timedelta(days=retention_days)
    return sorted(n for n in names if (m := DAY_FILE.fullmatch(n)) and date.fromisoformat(m.group(1)) < oldest_kept)


def append_line(c, path: str, line: str) -> None:
    """Append one line; HDFS allows one writer per file, so a concurrent append is retried."""
    for attempt in range(APPEND_ATTEMPTS):
        try:
            if c.status(path, strict=False) is None:
                c.write(path, data=line, encoding="utf-8", overwrite=False)
            else:
                c.write(path, data=line, encoding="utf-8", append=True)
            return
        except hdfs.HdfsError:
            if attempt == APPEND_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def append(c, directory: str, records: list[dict[str, Any]], at_ms: int, retention_days: int) -> str:
    """Append ``records`` to the day file of ``at_ms`` and drop day files past the retention
    (``retention_days`` <= 0: keep all); returns the day file's path."""
    day = utc_day(at_ms)
    path = f"{directory}/{day.isoformat()}.jsonl"
    if records:
        append_line(c, path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    if retention_days > 0:
        for name in expired(hdfs.list_names(c, directory), day, retention_days):
            c.delete(f"{directory}/{name}")
    return path


def read(c, directory: str, time_key: str, accept: Callable[[dict], bool], since_ms: int | None = None,
         limit: int | None = None, what: str = "record") -> list[dict[str, Any]]:
    """Records (oldest first) with ``record[time_key] >= since_ms``, the newest ``limit`` of them;
    newest day files first, stopping once enough are read. Torn or foreign lines are skipped."""
    if limit == 0:
        return []
    records: list[dict[str, Any]] = []
    days = sorted((n for n in hdfs.list_names(c, directory) if DAY_FILE.fullmatch(n)), reverse=True)
    for name in days:
        with c.read(f"{directory}/{name}", encoding="utf-8") as reader:
            day = [r for r in _parse(reader.read(), name, accept, what) if since_ms is None or r[time_key] >= since_ms]
        records = day + records
        day_start = datetime.fromisoformat(name.removesuffix(".jsonl")).replace(tzinfo=timezone.utc)
        if (limit is not None and len(records) >= limit) or (since_ms is not None and day_start.timestamp() * 1000 <= since_ms):
            break
    records.sort(key=lambda r: r[time_key])
    return records if limit is None else records[-limit:]


def _parse(text: str, name: str, accept: Callable[[dict], bool], what: str) -> list[dict[str, Any]]:
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            document = json.loads(line)
        except ValueError:  # a torn append; the lines around it are intact
            document = None
        if isinstance(document, dict) and accept(document):
            out.append(document)
        else:
            log.warning("skipping line %d of history file %s: not a %s", number, name, what)
    return out
