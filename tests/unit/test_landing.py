"""Offset ranges of a micro-batch: the source's range, not the records' (gaps, replays, empty batches)."""

from __future__ import annotations

import pytest

from lambdaflow import landing
from lambdaflow.storage import offset_log


def test_batch_ranges_are_the_source_range_minus_what_landed() -> None:
    start, end = {0: 10, 1: 5, 2: 7}, {0: 20, 1: 5, 2: 9}
    assert landing.batch_ranges(start, end, {0: 10, 1: 5, 2: 7}) == [
        landing.OffsetRange(0, 10, 20), landing.OffsetRange(2, 7, 9)]
    # a replayed batch: only what is not landed yet; all of it landed: nothing to commit
    assert landing.batch_ranges(start, end, {0: 15, 2: 9}) == [landing.OffsetRange(0, 15, 20)]
    assert landing.batch_ranges(start, end, {0: 20, 2: 9}) == []
    # unknown start (new partition): from the landing position, or 0
    assert landing.batch_ranges(None, {0: 4, 1: 3}, {0: 2}) == [landing.OffsetRange(0, 2, 4), landing.OffsetRange(1, 0, 3)]


def test_records_outside_the_range_are_refused() -> None:
    ranges = [landing.OffsetRange(0, 10, 20)]
    landing.check_records_within(ranges, {0: (11, 17)})  # gaps (markers, aborted records) are fine
    landing.check_records_within(ranges, {})  # an empty batch: all records aborted
    with pytest.raises(RuntimeError):
        landing.check_records_within(ranges, {0: (10, 20)})
    with pytest.raises(RuntimeError):
        landing.check_records_within(ranges, {1: (0, 0)})


def test_spark_offset_log_files_parse() -> None:
    v1 = 'v1\n{"batchWatermarkMs":0,"batchTimestampMs":1,"conf":{}}\n{"weblogs":{"2":30,"1":20,"0":10}}'
    assert offset_log.parse_offset_log(v1, "weblogs") == {0: 10, 1: 20, 2: 30}
    v2 = 'v2\n{"batchWatermarkMs":0}\n0:{"weblogs":{"0":7}}'
    assert offset_log.parse_offset_log(v2, "weblogs") == {0: 7}
    assert offset_log.parse_initial_offsets('\x00v1\n{"weblogs":{"0":0,"1":3}}', "weblogs") == {0: 0, 1: 3}
    with pytest.raises(ValueError):
        offset_log.parse_offset_log(v1, "other")


def test_staging_names_are_per_epoch_and_give_back_the_key() -> None:
    key = landing.commit_key([landing.OffsetRange(0, 0, 5), landing.OffsetRange(1, 2, 9)])
    assert landing.staging_name(key, 7) == f"{key}/e7"  # recovery handles _staging/<key> as a whole
    assert landing.staging_name(key, None) == key
