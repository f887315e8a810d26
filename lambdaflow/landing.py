"""The landing zone: the master dataset on HDFS, and its commit log of offset ranges.

Layout under ``settings.landing_path`` (``/lambda/landing/weblogs``)::

    timestamp_hour=<epoch ms>/part-<commit key>-<n>.snappy.parquet   landed events
    _manifests/<commit key>.json                                     one per micro-batch since the last roll-up
    _rollups/<seq>.json                                              the commit log rolled up (cumulative)
    _staging/<commit key>/e<epoch>/...                               a batch being written
    _writer/                                                         the fenced writer's lock
                                                                     (lambdaflow.storage.lock)

A **commit key** names a micro-batch by its offset ranges, never by Spark's batch id (a new
checkpoint restarts batch ids at 0): ``<partition>-<from>-<until>`` per topic-partition, sorted by
partition, joined by ``_``; ``from`` inclusive, ``until`` exclusive, e.g. ``0-0-1200_2-17-90``.

**Commit protocol** (one writer, fenced by epochs: ``lambdaflow.storage.lock``):

1. write the batch's files (landed rows, quarantined rows, speed-view partials) under
   ``_staging/<key>/e<epoch>/``;
2. create the manifest listing the ranges, counts, writer epoch and every staged -> final file in
   the epoch's outbox, then rename it to ``_manifests/<key>.json``: the commit point, which fails
   once a newer epoch has fenced this one (``WriterLock.commit``);
3. rename each staged file to its final place, then delete ``_staging/<key>``.

**Recovery** (``recover``, run before the stream starts): a staging directory with a manifest is
rolled forward (its remaining files moved), one without is rolled back (deleted). After recovery
``spark.read.parquet(landing)`` returns every landed record exactly once.

A batch's ranges are the Kafka source's offset range for the micro-batch (``batch_ranges``), read
with ``isolation.level=read_committed``: offsets are not contiguous (transaction markers, aborted
records, compaction), so a range may hold fewer rows than ``until - from``, or none: a batch whose
records were all aborted still commits its range, with zero rows, so the position advances.

The commit log stays bounded: manifests are rolled up into cumulative roll-ups, and readers take
the newest roll-up plus the manifests it does not cover (:mod:`lambdaflow.storage.commit_log`).

The **landing position** of a partition is the largest ``until`` over all commits, compared as
integers. It is the ingest's truth about progress: recovery without a checkpoint resumes there,
the lag monitor measures from it, the batch layer's completeness check waits for it. Positions are
compared with the log's end read under ``read_committed`` (the last stable offset): landing
position >= that end means caught up; never "last landed offset + 1 = end".
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Iterable

MANIFESTS = "_manifests"
STAGING = "_staging"
_RANGE = re.compile(r"^(\d+)-(\d+)-(\d+)$")


@dataclasses.dataclass(frozen=True, order=True)
class OffsetRange:
    """Offsets [from_offset, until_offset) of one topic-partition."""

    partition: int
    from_offset: int
    until_offset: int

    def __post_init__(self) -> None:
        if not 0 <= self.from_offset <= self.until_offset:
            raise ValueError(f"bad offset range {self}")

    @property
    def count(self) -> int:
        return self.until_offset - self.from_offset


def batch_ranges(start: dict[int, int] | None, end: dict[int, int], positions: dict[int, int]) -> list[OffsetRange]:
    """The offset ranges a micro-batch commits: the Kafka source's range [start, end) per partition,
    minus what the landing zone already holds (``positions``: a replayed batch commits only the rest).

    These are the source's offsets (see :mod:`lambdaflow.storage.offset_log`), not the min/max of
    the records seen: under ``read_committed`` a range may end with transaction markers or aborted
    records that no row carries, and it must still be committed so that the position reaches the
    log's end. A partition without a known start begins at its landing position (0 if none).
    """
    ranges = []
    for partition, until in sorted(end.items()):
        begin = (start or {}).get(partition, positions.get(partition, 0))
        begin = max(begin, positions.get(partition, begin))
        if until > begin:
            ranges.append(OffsetRange(partition, begin, until))
    return ranges


def check_records_within(ranges: Iterable[OffsetRange], bounds: dict[int, tuple[int, int]]) -> None:
    """Fail when a record (partition -> (lowest, highest) offset seen) lies outside the batch's ranges."""
    by_partition = {r.partition: r for r in ranges}
    for partition, (lo, hi) in bounds.items():
        r = by_partition.get(partition)
        if r is None or lo < r.from_offset or hi >= r.until_offset:
            raise RuntimeError(f"records of partition {partition} at offsets {lo}..{hi} lie outside the batch's "
                               f"offset range {r}: refusing to commit")


def commit_key(ranges: Iterable[OffsetRange]) -> str:
    ordered = sorted(ranges)
    if not ordered:
        raise ValueError("a commit needs at least one offset range")
    if len({r.partition for r in ordered}) != len(ordered):
        raise ValueError(f"one range per partition expected: {ordered}")
    return "_".join(f"{r.partition}-{r.from_offset}-{r.until_offset}" for r in ordered)


def parse_commit_key(key: str) -> list[OffsetRange]:
    """Offset ranges from a commit key or a manifest file name (``<key>.json``)."""
    key = key.removesuffix(".json")
    ranges = []
    for part in key.split("_"):
        match = _RANGE.match(part)
        if not match:
            raise ValueError(f"not a commit key: {key!r}")
        ranges.append(OffsetRange(*(int(g) for g in match.groups())))
    return ranges


def is_manifest_name(name: str) -> bool:
    """A range commit's manifest ``<commit key>.json`` (not a temp file, not a replay's manifest)."""
    return name.endswith(".json") and all(_RANGE.match(part) for part in name[:-5].split("_"))


def positions_from_keys(keys: Iterable[str]) -> dict[int, int]:
    """Landing position per partition: the largest ``until`` (as an integer) over all commits."""
    positions: dict[int, int] = {}
    for key in keys:
        for r in parse_commit_key(key):
            if r.until_offset > positions.get(r.partition, -1):
                positions[r.partition] = r.until_offset
    return positions


def staging_name(key: str, epoch: int | None) -> str:
    """A batch's staging directory under ``_staging``: ``<key>/e<epoch>``, one per writer epoch, so
    a fenced writer resuming mid-batch never adds files to the directory its successor lists
    (recovery handles ``_staging/<key>`` as a whole)."""
    return key if epoch is None else f"{key}/e{epoch}"


def manifest_document(topic: str, ranges: list[OffsetRange], files: list[dict], landed: int,
                      quarantined: int, hours: dict[int, int], committed_at_ms: int,
                      quarantine_reasons: dict[str, int] | None = None, epoch: int | None = None) -> dict:
    return {
        "epoch": epoch,
        "topic": topic,
        "ranges": [dataclasses.asdict(r) for r in sorted(ranges)],
        "files": files,
        "landed_rows": landed,
        "quarantined_rows": quarantined,
        "quarantine_reasons": dict(sorted((quarantine_reasons or {}).items())),
        "hours": {str(h): n for h, n in sorted(hours.items())},
        "committed_at_ms": committed_at_ms,
    }


def move_into_place(fs, files: list[dict], recovering: bool = True, after_first=None, log=None) -> None:
    """Step 3 of the commit protocol, for the ingest's batches and the quarantine replay's: rename
    each committed file ``{"kind", "staged", "final"}`` into place (``fs``: a JvmFs).

    A file already at its final place was moved before a crash, or meanwhile by another recovery;
    a quarantine file a replay takes out (``quarantine_replaced``) may be gone already (retention).
    Any other file found neither staged nor final is lost: recovery stops and names it.
    ``after_first`` runs after the first rename (the test hooks' ``moved_partially``)."""
    made: set[str] = set()
    for i, f in enumerate(files):
        if recovering and fs.exists(f["final"]):
            continue
        if recovering and not fs.exists(f["staged"]):
            if fs.exists(f["final"]):
                continue
            if f["kind"] == "quarantine_replaced":
                if log is not None:
                    log(f"replaced quarantine file {f['staged']} is gone already")
                continue
            raise RuntimeError(f"committed file lost: neither {f['staged']} nor {f['final']} exists")
        parent = f["final"].rsplit("/", 1)[0]
        if parent not in made:
            fs.mkdirs(parent)
            made.add(parent)
        if not fs.try_rename(f["staged"], f["final"]) and not fs.exists(f["final"]):
            raise OSError(f"HDFS rename {f['staged']} -> {f['final']} failed")
        if i == 0 and after_first is not None:
            after_first()


def hour_of(timestamp_ms: int) -> int:
    return timestamp_ms - timestamp_ms % 3_600_000


# ------------------------------------------------------------------ readers
# Readers go through the bounded commit log (roll-ups plus the tail): lambdaflow.storage.commit_log.
def positions(fs_or_client, landing_path: str) -> dict[int, int]:
    """Landing position per partition (a JvmFs or a WebHDFS client)."""
    from lambdaflow.storage import commit_log

    return commit_log.positions(fs_or_client, landing_path)


def manifest_keys(client, landing_path: str) -> list[str]:
    """Commit keys of the tail: the micro-batches committed since the newest roll-up (WebHDFS)."""
    from lambdaflow.storage import commit_log

    state = commit_log.read_state(commit_log.WebLogStore(client), landing_path)
    return [n.removesuffix(".json") for n in state.range_names]


def read_manifests(client, landing_path: str) -> list[dict]:
    """The tail's manifest documents (recent commits; totals come from ``commit_log.totals``)."""
    from lambdaflow.storage import commit_log

    store = commit_log.WebLogStore(client)
    return list(commit_log.read_tail(store, landing_path, commit_log.read_state(store, landing_path)).values())


def landed_rows_by_hour(client, landing_path: str) -> dict[int, int]:
    """Rows landed per event hour (roll-ups plus tail: ``commit_log.landed_rows_by_hour``)."""
    from lambdaflow.storage import commit_log

    return commit_log.landed_rows_by_hour(client, landing_path)


def dumps(document: dict) -> str:
    return json.dumps(document, sort_keys=True)
