"""The growth benchmark's ops section (``bench/ops_bench.py``) at a tiny scale, so it cannot rot:
synthetic histories of 100 and 1,000 commits through the real storage layer, the four timed
operations, the figures it reports and the bounded bookkeeping it leaves; plus the synthetic
history writer's offset ranges (:mod:`lambdaflow.storage.synthetic`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not an installed package

import bench  # noqa: E402
from bench import ops_bench  # noqa: E402
from lambdaflow import landing  # noqa: E402
from lambdaflow.storage import commit_log, synthetic  # noqa: E402

HOUR = 3_600_000


def test_synthetic_commits_tile_the_topic_offsets_in_commit_order() -> None:
    end = {0: 250, 1: 100, 2: 7}
    docs = list(synthetic.commit_documents("t", 100, 0, 10 * HOUR, end, first_offsets={0: 50}))
    assert len(docs) == 100
    covered: dict[int, int] = {0: 50, 1: 0, 2: 0}
    for name, doc in docs:
        assert landing.is_manifest_name(name) and name == f"{landing.commit_key(landing.parse_commit_key(name))}.json"
        for r in landing.parse_commit_key(name):
            assert r.from_offset == covered[r.partition] < r.until_offset  # contiguous, no overlap, no gap
            covered[r.partition] = r.until_offset
        assert doc["landed_rows"] + doc["quarantined_rows"] == sum(r.count for r in landing.parse_commit_key(name))
        assert sum(doc["hours"].values()) == doc["landed_rows"]
    assert covered == end
    times = [doc["committed_at_ms"] for _, doc in docs]
    assert times == sorted(times) and times[-1] == 10 * HOUR
    state = commit_log.fold(commit_log.empty_rollup(), dict(docs))
    assert state["batches"] == 100 and state["intervals"] == {"0": [[50, 250]], "1": [[0, 100]], "2": [[0, 7]]}


def test_ops_bench_at_a_tiny_scale_reports_every_figure_and_bounded_bookkeeping(stack, spark) -> None:
    from lambdaflow import hdfs, kafka_admin

    scale = ops_bench.Scale(small=100, large=1_000, hours=3, partials_per_hour=3, repeats=1, cli_repeats=1)
    details: dict = {}
    started = time.monotonic()
    figures = ops_bench.run(stack, spark, scale, progress=print, details=details)
    print(f"ops bench at 100 / 1,000 commits: {time.monotonic() - started:.0f}s")

    assert set(figures) == set(ops_bench.KEYS) == set(bench.EXPECTED_KEYS["ops"])
    assert set(bench.GOALS) & set(figures) == {"ops.growth_ratio_max", "ops.bookkeeping_files_at_100k"}
    for op in ops_bench.OPERATIONS:
        small, large = figures[f"ops.{op}_s_at_1k"], figures[f"ops.{op}_s_at_100k"]
        assert small > 0 and large > 0
        assert figures[f"ops.{op}_growth_ratio"] == round(large / small, 3)
    assert figures["ops.growth_ratio_max"] == max(figures[f"ops.{op}_growth_ratio"] for op in ops_bench.OPERATIONS)

    # Every reader saw the whole history: lag 0, the hour complete, recovery's positions, all batches.
    for label, commits in [("1k", 100), ("100k", 1_000)]:
        sanity, history = details[f"sanity_{label}"], details[f"history_{label}"]
        assert sanity["total_lag"] == 0 and sanity["dashboard_batches"] == commits
        assert "complete" in sanity["completeness"]
        assert sum(sanity["recovered_positions"].values()) == history["records"] == 3 * commits
    large = details["history_100k"]
    assert large["partial_files_written"] == 3 * 3 * (large["hours"] - 1)  # 3 per closed hour, 2 views + quarantine
    assert large["hours_merged"] == 3 * scale.hours  # every closed hour of every root
    # the open hour: the commits since the ingest's last merge (300 s of 1,000 commits over 3 hours:
    # 28, fewer when the hour has just turned and holds fewer commits)
    since_merge = large["open_hour_commits_since_merge"]
    assert 0 < since_merge <= 28 and large["open_hour_files_written"] == 3 * since_merge

    # Bookkeeping after 1,000 commits: the tail, at most two roll-ups, one merged file per closed
    # view- or quarantine-hour and the open hour's partials; nothing per commit.
    counts = details["bookkeeping_files_100k"]
    assert counts["landing/_manifests"] == scale.tail and counts["landing/_rollups"] <= commit_log.KEEP_ROLLUPS
    assert counts["speed"] == 2 * (scale.hours + since_merge)
    assert counts["quarantine"] == scale.hours + since_merge
    assert figures["ops.bookkeeping_files_at_100k"] == sum(counts.values()) < 150

    # Nothing left behind: the roots and the topics are gone.
    client = hdfs.client(stack)
    assert all(client.status(root, strict=False) is None for root in details["roots"].values())
    admin = kafka_admin.admin(stack)
    try:
        deadline = time.monotonic() + 15  # topic deletion completes asynchronously
        while set(details["topics"].values()) & set(admin.list_topics()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not set(details["topics"].values()) & set(admin.list_topics())
    finally:
        admin.close()
