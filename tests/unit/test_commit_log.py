"""The commit log's roll-up arithmetic: folding, coverage and positions (pure functions)."""

from __future__ import annotations

import random

from lambdaflow import landing
from lambdaflow.storage import commit_log


def manifest(key: str, landed: int, quarantined: int = 0, hours: dict | None = None, at: int = 1000) -> dict:
    return landing.manifest_document("t", landing.parse_commit_key(key), [], landed, quarantined, hours or {}, at,
                                     {"malformed_json": quarantined} if quarantined else {}, epoch=1)


def test_fold_counts_each_commit_once_in_any_order_and_twice_folded() -> None:
    commits = {f"0-{i * 10}-{i * 10 + 10}_1-{i}-{i + 1}.json": manifest(f"0-{i * 10}-{i * 10 + 10}_1-{i}-{i + 1}",
                                                                          9, 1, {3_600_000 * (i % 3): 9}, at=i)
               for i in range(50)}
    names = list(commits)
    random.Random(7).shuffle(names)
    half = commit_log.fold({}, {n: commits[n] for n in names[:20]})
    full = commit_log.fold(half, {n: commits[n] for n in names})  # the first 20 again: covered, skipped
    assert full["batches"] == 50 and full["landed_rows"] == 450 and full["quarantined_rows"] == 50
    assert full["intervals"] == {"0": [[0, 500]], "1": [[0, 50]]}
    assert sum(full["hours"].values()) == 450 and full["quarantine_reasons"] == {"malformed_json": 50}
    assert full["landed_at_ms"] == {"0": 49, "1": 49} and full["max_epoch"] == 1
    assert commit_log.fold(full, commits) == full


def test_gaps_stay_visible_and_coverage_is_by_range() -> None:
    state = commit_log.fold({}, {"0-0-10.json": manifest("0-0-10", 10), "0-20-30.json": manifest("0-20-30", 10)})
    assert state["intervals"] == {"0": [[0, 10], [20, 30]]}
    assert commit_log.covers(state, "0-0-10.json") and commit_log.covers(state, "0-22-25.json")
    assert not commit_log.covers(state, "0-5-21.json") and not commit_log.covers(state, "0-10-20.json")
    assert not commit_log.covers(state, "0-0-10_1-0-1.json")


def test_replays_fold_once_and_move_rows_from_quarantine_to_landed() -> None:
    state = commit_log.fold({}, {"0-0-10.json": manifest("0-0-10", 7, 3, {0: 7})})
    replay = {"kind": "replay", "ranges": [], "landed_rows": 2, "quarantined_rows": -2,
              "quarantine_reasons": {"malformed_json": -2}, "hours": {"0": 2}}
    after = commit_log.fold(state, {"replay-abc.json": replay})
    assert after["landed_rows"] == 9 and after["quarantined_rows"] == 1 and after["hours"] == {"0": 9}
    assert after["quarantine_reasons"] == {"malformed_json": 1} and after["replays"] == ["abc"]
    assert commit_log.covers(after, "replay-abc.json") and not commit_log.covers(after, "replay-abd.json")
    assert commit_log.fold(after, {"replay-abc.json": replay}) == after
    assert not landing.is_manifest_name("replay-abc.json") and commit_log.is_entry_name("replay-abc.json")


def test_positions_combine_the_rollup_and_the_tail_and_skip_moving_batches() -> None:
    rollup = commit_log.fold({}, {"0-0-100_1-0-9.json": manifest("0-0-100_1-0-9", 1)})
    state = commit_log.LogState(rollup, {"0-100-150.json": 5, "1-9-20_2-0-3.json": 6}, "000000000001.json")
    assert state.positions == {0: 150, 1: 20, 2: 3}
    assert state.settled_positions({"1-9-20_2-0-3"}) == {0: 150, 1: 9}
    assert commit_log.LogState(commit_log.empty_rollup(), {}, None).positions == {}


def test_rollup_names_sort_by_sequence() -> None:
    assert commit_log.rollup_name(7) == "000000000007.json"
    assert sorted(commit_log.rollup_name(n) for n in (10, 9, 100)) == [commit_log.rollup_name(n) for n in (9, 10, 100)]
