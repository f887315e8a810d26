"""Unit tests of the lag monitor's pure parts: commit keys, figures, Burrow rules, alerts, history, CLI."""

from __future__ import annotations

import argparse
from datetime import date

import pytest

from lambdaflow import lag, landing
from lambdaflow.config import Settings

T0 = 1_800_000_000_000  # epoch ms of the first sample of every synthetic window
MINUTE = 60_000


def obs(minute: int, committed: int | None, lag_records: int, landed_minute: float | None = None) -> dict:
    """One partition observation, ``minute`` minutes after T0 (the ingest last landed at landed_minute)."""
    landed_at = None if committed is None else T0 + int((minute if landed_minute is None else landed_minute) * MINUTE)
    return {"sampled_at": T0 + minute * MINUTE, "committed_offset": committed, "lag": lag_records,
            "last_landed_at": landed_at}


def window(*rows: tuple) -> list[dict]:
    return [obs(i, *row) for i, row in enumerate(rows)]


# -- commit keys and positions ------------------------------------------------------------------------

def _progress(names, rollup=None):
    from lambdaflow.storage import commit_log

    return commit_log.LogState(rollup or commit_log.empty_rollup(), dict(names), None).progress()


def test_landing_progress_compares_offsets_as_integers_and_keeps_newest_mtime() -> None:
    names = [("0-0-9_1-0-5.json", 1000), ("0-9-10.json", 3000), ("0-10-100_2-0-7.json", 2000)]
    assert _progress(names) == {0: (100, 3000), 1: (5, 1000), 2: (7, 2000)}
    # "9" > "10" > "100" as strings; as integers the position is 100
    assert landing.positions_from_keys(n for n, _ in names if landing.is_manifest_name(n)) == {0: 100, 1: 5, 2: 7}
    assert not landing.is_manifest_name("_tmp.0-100-99999.json.123")
    assert not landing.is_manifest_name("replay-ab12.json") and not landing.is_manifest_name("part-0001.json")


def test_landing_progress_from_a_rollup_and_its_tail() -> None:
    from lambdaflow.storage import commit_log

    rollup = commit_log.fold({}, {"0-0-50_1-0-5.json": {"committed_at_ms": 500}})
    assert _progress([], rollup) == {0: (50, 500), 1: (5, 500)}
    assert _progress([("0-50-60.json", 900)], rollup) == {0: (60, 900), 1: (5, 500)}


def test_landing_progress_absent_partitions() -> None:
    assert _progress([]) == {}
    assert _progress([("2-40-41.json", None)]) == {2: (41, None)}


# -- figures --------------------------------------------------------------------------------------------

def test_records_behind() -> None:
    assert lag.records_behind(0, 1200, 1200) == 0
    assert lag.records_behind(0, 1200, 1000) == 200
    assert lag.records_behind(300, 1200, None) == 900  # never landed: from the earliest record held
    assert lag.records_behind(0, 10, 12) == 0  # never negative


def test_group_disagreement() -> None:
    assert lag.group_disagreement(None, None, 0) is None
    assert lag.group_disagreement(100, 100, 0) is None
    assert lag.group_disagreement(None, 0, 0) is None
    assert lag.group_disagreement(100, None, 0) == lag.GROUP_MISSING
    assert lag.group_disagreement(100, 90, 0) == lag.GROUP_BEHIND
    assert lag.group_disagreement(100, 110, 0) == lag.GROUP_AHEAD
    assert lag.group_disagreement(None, 5, 0) == lag.GROUP_AHEAD


# -- Burrow rules -----------------------------------------------------------------------------------------

def test_caught_up_is_ok_whatever_came_before() -> None:
    assert lag.partition_status(window((100, 50), (100, 80), (100, 0)))[0] == lag.OK


def test_lag_touching_zero_in_the_window_is_ok() -> None:
    status, reason = lag.partition_status(window((100, 0), (150, 20), (150, 40)))
    assert status == lag.OK and "touched 0" in reason


def test_warn_when_offsets_move_but_lag_never_decreases() -> None:
    status, reason = lag.partition_status(window((100, 50), (150, 50), (200, 90), (260, 120)))
    assert status == lag.WARN
    assert "from 50 to 120 records over 4 samples (180 s)" in reason


def test_progress_with_lag_going_down_is_ok() -> None:
    assert lag.partition_status(window((100, 50), (150, 70), (300, 20)))[0] == lag.OK


def test_stall_when_committed_offset_does_not_move() -> None:
    status, reason = lag.partition_status(window((100, 50, 0), (100, 60, 0), (100, 75, 0)))
    assert status == lag.STALL
    assert reason == "committed offset 100 unchanged over 3 samples (120 s), lag 75 records"


def test_stop_when_nothing_landed_for_longer_than_the_threshold() -> None:
    rows = window((100, 50, 0), (100, 60, 0), (100, 70, 0))
    assert lag.partition_status(rows, stop_after_s=300)[0] == lag.STALL
    status, reason = lag.partition_status(rows, stop_after_s=90)
    assert status == lag.STOP
    assert "no batch landed for 120 s (> 90 s) at committed offset 100, lag 70 records" in reason
    # one sample is enough when the last landed batch is old
    assert lag.partition_status([obs(10, 100, 70, landed_minute=0)], stop_after_s=300)[0] == lag.STOP


def test_rewind_when_committed_offset_goes_back() -> None:
    status, reason = lag.partition_status(window((100, 50), (150, 50), (120, 80)))
    assert status == lag.REWIND and "went back from 150 to 120" in reason
    assert lag.partition_status(window((100, 50), (None, 150)))[0] == lag.REWIND  # manifests vanished


def test_not_started_when_nothing_ever_landed() -> None:
    status, reason = lag.partition_status(window((None, 5000), (None, 5000)))
    assert (status, reason) == (lag.NOT_STARTED, "nothing landed yet, lag 5000 records")
    assert lag.partition_status(window((None, 0)))[0] == lag.OK  # empty partition: nothing to do


def test_single_sample_with_recent_progress_is_ok() -> None:
    assert lag.partition_status(window((100, 50)))[0] == lag.OK


def sample_doc(minute: int, partitions: list[dict]) -> dict:
    return {"group": "g", "topic": "t", "sampled_at": T0 + minute * MINUTE, "partitions": partitions,
            "total_lag": sum(p["lag"] for p in partitions)}


def part(n: int, minute: int, committed: int | None, lag_records: int) -> dict:
    entry = {"partition": n, **obs(minute, committed, lag_records, landed_minute=0 if committed is not None else None),
             "log_start_offset": 0, "log_end_offset": (committed or 0) + lag_records,
             "lag_seconds": 0.0 if lag_records == 0 else 12.5, "group_offset": committed, "disagreement": None}
    del entry["sampled_at"]
    return entry


def test_group_status_is_the_worst_partition_and_new_partitions_get_their_own_window() -> None:
    samples = [sample_doc(0, [part(0, 0, 10, 0), part(1, 0, 100, 5)]),
               sample_doc(1, [part(0, 1, 20, 0), part(1, 1, 100, 9), part(2, 1, None, 4)])]
    report = lag.evaluate(samples, stop_after_s=3600)
    assert [(p["partition"], p["status"]) for p in report["partitions"]] == [
        (0, lag.OK), (1, lag.STALL), (2, lag.NOT_STARTED)]
    assert report["status"] == lag.STALL
    assert report["total_lag"] == 13
    assert report["window"] == {"samples": 2}
    assert lag.worst_status([lag.OK, lag.REWIND, lag.STOP, lag.WARN]) == lag.REWIND
    assert lag.worst_status([lag.OK, lag.WARN, lag.NOT_STARTED]) == lag.NOT_STARTED
    assert lag.worst_status([]) == lag.OK


# -- alerts -----------------------------------------------------------------------------------------------

def test_alerts_name_partitions_and_figures() -> None:
    report = lag.evaluate([sample_doc(0, [part(0, 0, 10, 0), part(1, 0, None, 5000), part(2, 0, 30, 20)])])
    report["partitions"][2].update(lag_seconds=400.25, group_offset=45, disagreement=lag.GROUP_AHEAD)
    messages = lag.alerts(report, max_lag_records=1000, max_lag_seconds=300)
    assert messages == [
        "partition 1: NOT_STARTED (nothing landed yet, lag 5000 records)",
        "partition 1: lag 5000 records > max 1000",
        "partition 2: lag 400.2 s > max 300 s",
        "partition 2: consumer group g at 45 is ahead of the landing zone at 30",
    ]
    text = lag.alert_message(report, messages)
    assert text.startswith("ingest lag alert: group g on topic t is NOT_STARTED, total lag 5020 records: partition 1:")


def test_no_alert_when_ok_and_within_thresholds() -> None:
    report = lag.evaluate([sample_doc(0, [part(0, 0, 10, 0), part(1, 0, 10, 3)])])
    assert report["status"] == lag.OK
    assert lag.alerts(report, max_lag_records=3, max_lag_seconds=60) == []
    assert lag.alerts(report, max_lag_records=2, max_lag_seconds=None) == ["partition 1: lag 3 records > max 2"]


# -- history retention and output -------------------------------------------------------------------------

def test_expired_history_files() -> None:
    names = ["2026-11-10.jsonl", "2026-11-18.jsonl", "2026-11-19.jsonl", "2026-11-26.jsonl", "notes.txt",
             "_tmp.2026-01-01.jsonl"]
    assert lag.expired_history_files(names, date(2026, 11, 26), 7) == ["2026-11-10.jsonl", "2026-11-18.jsonl"]


def test_history_dir_is_per_group_and_topic() -> None:
    settings = Settings().replace(root="/r", topic="weblogs", ingest_group="lambdaflow-ingest")
    assert lag.history_dir(settings) == "/r/monitoring/lag/lambdaflow-ingest/weblogs"


def test_format_table_reads_like_consumer_groups_describe() -> None:
    report = lag.evaluate([sample_doc(0, [part(0, 0, 1200, 0), part(1, 0, None, 7)])])
    report["window"]["size"] = 10
    lines = lag.format_table(report, ["partition 1: NOT_STARTED (nothing landed yet, lag 7 records)"]).splitlines()
    assert lines[0].split() == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
                                "LAG-SECONDS", "STATUS", "GROUP-OFFSET", "NOTE"]
    assert lines[1].split() == ["g", "t", "0", "1200", "1200", "0", "0.0", "OK", "1200", "-"]
    assert lines[2].split() == ["g", "t", "1", "-", "7", "7", "12.5", "NOT_STARTED", "-", "-"]
    assert "total lag 7 records, status NOT_STARTED (window 1/10 samples)" in lines
    assert lines[-1] == "ALERT partition 1: NOT_STARTED (nothing landed yet, lag 7 records)"


def test_cli_arguments() -> None:
    parser = argparse.ArgumentParser()
    lag.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.json, args.window, args.record, args.fail_on_alert) == (False, lag.DEFAULT_WINDOW, True, False)
    args = parser.parse_args(["--json", "--window", "3", "--no-record", "--max-lag-records", "5"])
    assert (args.json, args.window, args.record, args.max_lag_records) == (True, 3, False, 5)
    with pytest.raises(SystemExit):
        parser.parse_args(["--window", "0"])


# -- services down: a clear error, no hang -----------------------------------------------------------------

def test_kafka_down_is_a_clear_error() -> None:
    settings = Settings().replace(kafka_bootstrap="127.0.0.1:9", webhdfs_url="http://127.0.0.1:9")
    with pytest.raises(lag.KafkaUnavailable, match="127.0.0.1:9"):
        lag.sample(settings)


def test_hdfs_down_is_a_clear_error() -> None:
    settings = Settings().replace(webhdfs_url="http://127.0.0.1:9")
    with pytest.raises(lag.HdfsUnavailable, match=r"cannot reach WebHDFS at http://127\.0\.0\.1:9"):
        lag.history(settings)
