"""The quarantine's layout, replay bookkeeping and listing helpers (pure functions, no services)."""

from __future__ import annotations

import argparse

import pytest

from lambdaflow.storage import commit_log
from lambdaflow.storage import quarantine as q

ROOT = "/lambda/quarantine/weblogs"
H = 1_764_000_000_000 - 1_764_000_000_000 % 3_600_000


def test_data_files_are_found_flat_and_partitioned_and_pruned_by_arrival_hour() -> None:
    paths = [
        f"{ROOT}/part-0-0-5-0.snappy.parquet",  # the flat layout of older quarantines
        f"{ROOT}/arrival_hour={H}/part-0-5-9-0.snappy.parquet",
        f"{ROOT}/arrival_hour={H + 3_600_000}/part-replay-ab-1.snappy.parquet",
        f"{ROOT}/arrival_hour={H}/_SUCCESS",
        f"{ROOT}/arrival_hour={H}/.part-0-5-9-0.snappy.parquet.crc",
        f"{ROOT}/_replayed/replay-ab/arrival_hour={H}/part-0-0-5-0.snappy.parquet",
        f"{ROOT}/_replay/_writer/epochs/1",
        "/lambda/quarantine/weblogs-other/part-x.parquet",
    ]
    assert q.select_files(ROOT, paths) == sorted(paths[:3])
    # [from, to) keeps an hour that overlaps it; flat files cannot be pruned
    assert q.select_files(ROOT, paths, from_ms=H + 3_600_000) == sorted([paths[0], paths[2]])
    assert q.select_files(ROOT, paths, from_ms=H + 10, to_ms=H + 20) == sorted(paths[:2])
    assert q.select_files(ROOT, paths, to_ms=H) == [paths[0]]
    assert q.hour_of_dir(f"arrival_hour={H}/part-1.parquet") == H
    assert q.hour_of_dir("part-1.parquet") is None
    assert q.arrival_hour_dir(ROOT, q.arrival_hour(H + 59_000)) == f"{ROOT}/arrival_hour={H}"


def test_replay_id_is_deterministic_and_names_the_records_and_files() -> None:
    a = q.replay_id("weblogs", [(0, 5), (1, 2)], ["/q/f1", "/q/f2"])
    assert a == q.replay_id("weblogs", [(1, 2), (0, 5), (0, 5)], ["/q/f2", "/q/f1"])  # order does not matter
    assert a != q.replay_id("weblogs", [(0, 5)], ["/q/f1", "/q/f2"])
    assert a != q.replay_id("weblogs", [(0, 5), (1, 2)], ["/q/f1"])
    assert a != q.replay_id("other", [(0, 5), (1, 2)], ["/q/f1", "/q/f2"])
    assert commit_log.is_replay_name(f"{q.replay_name(a)}.json")


def test_reason_deltas_count_records_leaving_and_changing_kind() -> None:
    changes = [
        ("malformed_json: old parser bug", None, 7),  # passed: left the quarantine
        ("malformed_json: old parser bug", "unknown_action: action 'refund' is not ...", 1),
        ("malformed_tsv: expected 7 tab-separated fields, got 3", "malformed_tsv: expected 7 ..., got 3", 2),
        ("empty_field: visitor", "empty_field: visitor", 1),
    ]
    assert q.reason_deltas(changes) == {"malformed_json": -8, "unknown_action": 1}
    assert q.reason_deltas([]) == {}


def test_replay_manifest_keeps_landed_plus_quarantined_in_the_commit_log() -> None:
    batch = {"landed_rows": 10, "quarantined_rows": 8, "hours": {str(H): 10},
             "quarantine_reasons": {"malformed_json": 8}, "committed_at_ms": 1}
    moves = [{"kind": "landing", "staged": "/s/a", "final": "/l/a"}]
    replay = q.replay_manifest("abc", "weblogs", moves, {H: 5, H + 3_600_000: 1}, 7,
                               {"malformed_json": -7}, [(2, 9), (0, 4)], 2)
    assert replay["kind"] == "replay" and replay["id"] == "abc" and replay["epoch"] is None
    assert replay["ranges"] == [] and replay["files"] == moves
    assert replay["records"] == [[0, 4], [2, 9]]
    assert (replay["landed_rows"], replay["quarantined_rows"]) == (6, -7)  # one was already landed
    state = commit_log.fold(commit_log.empty_rollup(), {"0-0-18.json": batch, "replay-abc.json": replay})
    assert (state["landed_rows"], state["quarantined_rows"]) == (16, 1)
    assert state["hours"] == {str(H): 15, str(H + 3_600_000): 1}
    assert state["quarantine_reasons"] == {"malformed_json": 1}
    assert commit_log.covers(state, "replay-abc.json")
    # folding the replay again counts it once
    assert commit_log.fold(state, {"replay-abc.json": replay}) == state


def test_by_reason_groups_by_kind_and_bounds_the_texts() -> None:
    counts = [("bad_timestamp: timestamp 1 is outside", 1), ("bad_timestamp: timestamp 2 is outside", 3),
              ("empty: the value is empty", 5), ("bad_timestamp: timestamp 3 is outside", 2)]
    grouped = q.by_reason(counts, max_texts=2)
    assert list(grouped) == ["bad_timestamp", "empty"]
    assert grouped["bad_timestamp"] == {
        "count": 6, "reasons": {"bad_timestamp: timestamp 2 is outside": 3, "bad_timestamp: timestamp 3 is outside": 2},
        "other_reasons": {"texts": 1, "count": 1}}
    assert grouped["empty"] == {"count": 5, "reasons": {"empty: the value is empty": 5}}


def test_values_are_shown_as_text_where_utf8() -> None:
    assert q.show_bytes("Kettle é".encode()) == ("Kettle é", "utf-8")
    assert q.show_bytes(b"\x00\xff\xfe") == ("AP/+", "base64")
    assert q.show_bytes(None) == (None, "null")


def test_cli_parses_list_and_replay_and_refuses_a_bad_time() -> None:
    parser = argparse.ArgumentParser()
    q.add_arguments(parser)
    args = parser.parse_args(["list", "--reason", "malformed", "--from", "2026-11-24T10:00:00Z",
                              "--to", "2026-11-24T11:00:00Z", "--json"])
    assert (args.action, args.reason, args.json, args.limit) == ("list", "malformed", True, q.DEFAULT_LIMIT)
    assert args.from_.hour == 10 and args.to.hour == 11
    assert parser.parse_args(["replay", "--reason", "wrong_type"]).reason == "wrong_type"
    with pytest.raises(SystemExit):
        parser.parse_args(["list", "--from", "yesterday"])
    with pytest.raises(SystemExit):
        parser.parse_args([])
