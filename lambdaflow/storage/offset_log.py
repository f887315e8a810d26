"""A micro-batch's Kafka offset range, read from the streaming query's own offset log.

``foreachBatch`` hands over the batch's rows and id, not its offsets. Spark writes the end offsets
of batch N to ``<checkpoint>/offsets/N`` *before* it runs the batch (the offset log is its
write-ahead log, and a restarted query replays batch N from that file), so inside the batch the
file is there and final. The batch starts where batch N-1 ended (``offsets/N-1``, kept: Spark
retains the last ``minBatchesToRetain`` = 100 batches), or, for the first batch of a checkpoint,
at the Kafka source's initial offsets (``sources/0/0``, written once by the source).

These are the source's offsets, not the records': with ``kafka.isolation.level=read_committed``
the end is the partition's last stable offset, so transaction markers, aborted records and
compaction gaps inside [start, end) belong to the range although no row carries their offset.

File formats (Spark 4.2, ``OffsetSeqLog`` and ``KafkaSourceInitialOffsetWriter``)::

    offsets/N:   v1 \\n <metadata json> \\n {"<topic>":{"0":123,"1":45}}      (v2: "0:{...}")
    sources/0/0: \\0 v1 \\n {"<topic>":{"0":0,"1":0}}
"""

from __future__ import annotations

import json


def parse_offset_log(text: str, topic: str) -> dict[int, int]:
    """End offsets of ``topic`` per partition from an ``offsets/<batch>`` file (one Kafka source)."""
    lines = text.splitlines()
    if len(lines) < 3 or not lines[0].startswith("v"):
        raise ValueError(f"not a Spark offset log file: {text[:200]!r}")
    for line in lines[2:]:
        line = line.strip()
        if not line.startswith("{") and ":" in line:  # v2: "<source id>:<offset json>"
            line = line.split(":", 1)[1]
        if line.startswith("{"):
            offsets = json.loads(line)
            if topic in offsets:
                return {int(p): int(o) for p, o in offsets[topic].items()}
    raise ValueError(f"no offsets of topic {topic} in the offset log file")


def parse_initial_offsets(text: str, topic: str) -> dict[int, int]:
    """Offsets of ``topic`` from the Kafka source's ``sources/0/0`` file."""
    text = text.lstrip("\x00")
    body = text.split("\n", 1)[1] if text.startswith("v") else text
    return {int(p): int(o) for p, o in json.loads(body)[topic].items()}


def batch_offsets(fs, checkpoint: str, batch_id: int, topic: str) -> tuple[dict[int, int] | None, dict[int, int]]:
    """(start, end) offsets per partition of micro-batch ``batch_id``; start is None when unknown."""
    end = parse_offset_log(fs.read_text(f"{checkpoint}/offsets/{batch_id}"), topic)
    previous = f"{checkpoint}/offsets/{batch_id - 1}"
    if batch_id > 0 and fs.exists(previous):
        return parse_offset_log(fs.read_text(previous), topic), end
    initial = f"{checkpoint}/sources/0/0"
    if batch_id == 0 and fs.exists(initial):
        return parse_initial_offsets(fs.read_text(initial), topic), end
    return None, end
