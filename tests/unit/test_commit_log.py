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


class MemoryStore:
    """The commit log's store protocol over a dict (the same calls are tested on HDFS in
    tests/integration/test_commit_log.py); here: the roll-up rules, quickly and exhaustively."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.dirs: set[str] = set()

    def list_names(self, path: str) -> list[str]:
        names = {p[len(path) + 1:].split("/")[0] for p in self.files if p.startswith(path + "/")}
        return sorted(names | {d[len(path) + 1:].split("/")[0] for d in self.dirs if d.startswith(path + "/")})

    def list_mtimes(self, path: str) -> dict[str, int]:
        return {n: 0 for n in self.list_names(path)}

    def read_json(self, path: str):
        import json

        return json.loads(self.files[path]) if path in self.files else None

    def create_new(self, path: str, text: str) -> bool:
        if path in self.files:
            return False
        self.files[path] = text
        return True

    def delete(self, path: str) -> None:
        self.files.pop(path, None)


def _commit(store: MemoryStore, key: str, rows: int = 5) -> None:
    import json

    store.files[f"/l/_manifests/{key}.json"] = json.dumps(manifest(key, rows, hours={0: rows}))


def test_roll_up_keeps_moving_batches_and_the_newest_in_the_tail_and_prunes_the_rest() -> None:
    store = MemoryStore()
    for i in range(6):
        _commit(store, f"0-{i}-{i + 1}")
    store.dirs.add("/l/_staging/0-5-6")  # still moving into place
    assert commit_log.roll_up(store, "/l", keep_tail=1) == 4  # 0..3; 4 kept as the newest; 5 moving
    state = commit_log.read_state(store, "/l")
    assert sorted(state.tail) == ["0-4-5.json", "0-5-6.json"] and state.positions == {0: 6}
    assert commit_log.current(store, "/l")["landed_rows"] == 30
    store.dirs.clear()
    extra = {"0-6-7.json": manifest("0-6-7", 5, hours={0: 5})}  # committed in memory only (synthetic)
    assert commit_log.roll_up(store, "/l", pending=extra) == 3
    assert commit_log.read_state(store, "/l").tail == {} and commit_log.totals(store, "/l")["landed_rows"] == 35
    assert store.list_names("/l/_rollups") == [commit_log.rollup_name(1), commit_log.rollup_name(2)]


def test_a_stale_roll_up_never_prunes_what_the_newest_does_not_cover() -> None:
    """A writer that read roll-up 1, then stalled while three more were written (pruning roll-up 2),
    can re-create roll-up 2: it is not the newest, so readers ignore it and it prunes nothing."""
    import json

    store = MemoryStore()
    _commit(store, "0-0-1")
    commit_log.roll_up(store, "/l")
    stale = commit_log.read_state(store, "/l")
    for i in range(1, 4):
        _commit(store, f"0-{i}-{i + 1}")
        commit_log.roll_up(store, "/l")
    assert store.list_names("/l/_rollups") == [commit_log.rollup_name(3), commit_log.rollup_name(4)]
    _commit(store, "0-4-5")  # in the tail of roll-up 4
    late = {**commit_log.fold(stale.rollup, {"0-4-5.json": manifest("0-4-5", 5)}), "seq": 2}
    assert store.create_new(f"/l/_rollups/{commit_log.rollup_name(2)}", json.dumps(late))
    commit_log._prune(store, "/l", late, 2)
    assert "/l/_manifests/0-4-5.json" in store.files
    assert commit_log.totals(store, "/l")["landed_rows"] == 25


def test_archive_hours_moves_counts_once_and_keeps_the_total() -> None:
    store = MemoryStore()
    _commit(store, "0-0-1", 5)
    assert commit_log.archive_hours(store, "/l", {0: 5}) == {0: 5}
    assert commit_log.archive_hours(store, "/l", [0]) == {}
    state = commit_log.current(store, "/l")
    assert state["landed_rows"] == 5 and state["hours"] == {} and state["archived_hours"] == {"0": 5}
