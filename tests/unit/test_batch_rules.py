"""The batch layer's rules that need no services: watermark, completeness boundary."""

from __future__ import annotations

from lambdaflow import batch

HOUR = batch.HOUR_MS
H0 = 1_764_000_000_000 - 1_764_000_000_000 % HOUR


def test_a_failed_hour_does_not_stop_the_watermark() -> None:
    covered = [H0, H0 + 2 * HOUR, H0 + 3 * HOUR]
    assert batch.batch_watermark(covered) == H0
    assert batch.batch_watermark(covered, failed=[H0 + HOUR]) == H0 + 3 * HOUR
    assert batch.batch_watermark([], failed=[H0]) == H0
    assert batch.batch_watermark([]) is None


def test_the_completeness_boundary_keeps_the_open_hour_out() -> None:
    landed = [H0, H0 + HOUR, H0 + 2 * HOUR]
    caught_up, behind = {0: 10, 1: 7}, {0: 9, 1: 7}
    end = {0: 10, 1: 7}
    # the wall clock is inside the newest landed hour: that hour is still open
    assert batch.completeness_boundary(landed, caught_up, end, H0 + 2 * HOUR + 60_000, 0) == H0 + 2 * HOUR
    # past its end, but inside the allowed lateness
    assert batch.completeness_boundary(landed, caught_up, end, H0 + 3 * HOUR + 30_000, 60_000) == H0 + 2 * HOUR
    # past its end plus the lateness, landed up to the log end: complete
    assert batch.completeness_boundary(landed, caught_up, end, H0 + 3 * HOUR + 61_000, 60_000) == H0 + 3 * HOUR
    # the landing zone is behind the log end: the newest hour may still be missing events
    assert batch.completeness_boundary(landed, behind, end, H0 + 9 * HOUR, 0) == H0 + 2 * HOUR
    # never beyond the wall clock's hour, even with events time-stamped in the future
    assert batch.completeness_boundary(landed, caught_up, end, H0 + HOUR + 5, 0) == H0 + HOUR
    assert batch.completeness_boundary([], {}, {}, H0 + 5, 0) == H0
