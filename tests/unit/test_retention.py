"""Retention planning and hour-merge naming: pure functions, no services."""

from __future__ import annotations

from datetime import date

import pytest

from lambdaflow.storage import hour_merge, retention

H = 3_600_000
DAY = 24 * H
T0 = 1_795_982_400_000  # an hour boundary
NOW = T0 + 100 * DAY


def test_settings_defaults_and_environment() -> None:
    defaults = retention.RetentionSettings.from_env({})
    assert (defaults.landing_days, defaults.quarantine_days, defaults.speed_grace_hours, defaults.lag_days,
            defaults.leftover_hours) == (None, 30.0, 24.0, 7.0, 24.0)
    custom = retention.RetentionSettings.from_env({
        "LAMBDAFLOW_RETENTION_LANDING_DAYS": "90", "LAMBDAFLOW_RETENTION_QUARANTINE_DAYS": "0",
        "LAMBDAFLOW_RETENTION_SPEED_GRACE_HOURS": "2", "LAMBDAFLOW_RETENTION_LAG_DAYS": "14"})
    assert (custom.landing_days, custom.quarantine_days, custom.speed_grace_hours, custom.lag_days) == (90, None, 2, 14)
    assert retention.RetentionSettings.from_env({"LAMBDAFLOW_RETENTION_LANDING_DAYS": "0"}).landing_days is None
    with pytest.raises(ValueError):
        retention.RetentionSettings.from_env({"LAMBDAFLOW_RETENTION_QUARANTINE_DAYS": "-1"})


def test_an_hour_is_due_once_it_ended_longer_ago_than_the_retention() -> None:
    hours = [NOW - 30 * DAY - 2 * H, NOW - 30 * DAY - H, NOW - 30 * DAY, NOW - H]
    plan = retention.plan_quarantine(hours, NOW, 30)
    # the hour starting 30 days + 1 h ago ended exactly 30 days ago: due; the one after it is not
    assert plan.remove == hours[:2]
    assert plan.keep == hours[2:]
    assert retention.plan_quarantine(hours, NOW, None).remove == []


def test_landing_keeps_forever_by_default_and_never_drops_an_hour_the_batch_layer_lacks() -> None:
    old, older, recent = NOW - 40 * DAY, NOW - 50 * DAY, NOW - DAY
    assert retention.plan_landing([old, older, recent], [old, older], NOW, None).remove == []
    plan = retention.plan_landing([old, older, recent], [old], NOW, 30)
    assert plan.remove == [old]
    assert plan.keep == [older, recent]
    assert plan.held == {older: "not covered by the batch layer"}


def test_speed_partials_go_once_covered_and_past_the_grace() -> None:
    covered_old, covered_fresh, uncovered_old = NOW - 30 * H, NOW - 10 * H, NOW - 40 * H
    plan = retention.plan_speed([covered_old, covered_fresh, uncovered_old], [covered_old, covered_fresh], NOW, 24)
    assert plan.remove == [covered_old]
    assert sorted(plan.keep) == sorted([covered_fresh, uncovered_old])
    assert plan.held == {covered_fresh: "within the grace period"}


def test_lag_history_day_files() -> None:
    names = ["2026-11-01.jsonl", "2026-11-22.jsonl", "2026-11-23.jsonl", "2026-11-30.jsonl", "notes.txt"]
    plan = retention.plan_lag_history(names, date(2026, 11, 30), 7)
    assert plan.remove == ["2026-11-01.jsonl", "2026-11-22.jsonl"]
    assert plan.keep == ["2026-11-23.jsonl", "2026-11-30.jsonl", "notes.txt"]
    assert retention.plan_lag_history(names, date(2026, 11, 30), None).remove == []


def test_older_than() -> None:
    plan = retention.plan_older_than({"a.lock": NOW - 601_000, "b.lock": NOW - 5_000}, NOW, 600_000)
    assert (plan.remove, plan.keep) == (["a.lock"], ["b.lock"])


def test_fenced_staging_spares_the_current_epoch_and_committed_batches() -> None:
    staging = {"0-0-10": ["e3", "e5"], "0-10-20": ["e4"], "1-0-5": ["e2", "odd"]}
    plan = retention.plan_fenced_staging(staging, current_epoch=5, committed_keys={"1-0-5"})
    assert plan.remove == ["0-0-10/e3", "0-10-20/e4"]
    assert plan.keep == ["0-0-10/e5", "1-0-5/e2", "1-0-5/odd"]
    assert plan.held == {"1-0-5/e2": "committed: left to the ingest's recovery"}
    assert retention.current_epoch(["1", "7", "12", "_tmp.x"]) == 12
    assert retention.current_epoch([]) == 0


def test_partition_hours() -> None:
    names = ["arrival_hour=3600000", "arrival_hour=0", "_merging", "timestamp_hour=7200000", "x.parquet"]
    assert retention.partition_hours(names, "arrival_hour") == [0, 3_600_000]


def test_merge_names() -> None:
    assert hour_merge.commit_key_of("part-0-0-10000_1-0-9852_2-0-10148-0.snappy.parquet") == "0-0-10000_1-0-9852_2-0-10148"
    assert hour_merge.commit_key_of(hour_merge.merged_name(T0, 3)) is None
    names = [hour_merge.merged_name(T0, 0), hour_merge.merged_name(T0, 4), hour_merge.merged_name(T0 + H, 9), "x"]
    assert hour_merge.next_merged_number(names, T0) == 5
    assert hour_merge.next_merged_number([], T0) == 0
    assert hour_merge.closed_hours([T0, T0 + H, T0 + 2 * H], T0 + 2 * H) == [T0, T0 + H]
    assert not hour_merge.is_data_file("_SUCCESS") and not hour_merge.is_data_file(".part-0.parquet.crc")
    assert hour_merge.partition_hour(f"timestamp_hour={T0}", "timestamp_hour") == T0
    assert hour_merge.partition_hour(f"timestamp_hour={T0}", "arrival_hour") is None


def test_a_quarantine_hour_written_recently_keeps_its_days_and_stale_views_hold_landed_hours() -> None:
    old = NOW - 40 * DAY
    # the backlog of a long outage arrived yesterday into a 40-day-old arrival hour: kept 30 days from now
    assert retention.plan_quarantine([old], NOW, 30, {old: NOW - DAY}).keep == [old]
    assert retention.plan_quarantine([old], NOW, 30, {old: old + H}).remove == [old]
    plan = retention.plan_landing([old], [old], NOW, 30, stale=[old])
    assert plan.remove == [] and plan.held == {old: "late rows not yet in the batch view"}
