"""Unit tests of the benchmark's pure helpers: percentiles, Kafka perf-test output, batch log lines,
per-record latencies from manifests, goals and the results table (no services, no Spark)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# bench/ is not an installed package: `make test` (python -m pytest at the repo root) finds it on
# sys.path, a bare `pytest` run from elsewhere needs the repo root added.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bench  # noqa: E402
from bench.ingest_bench import (  # noqa: E402
    parse_batch_lines, parse_consumer_perf_output, percentile, record_latencies_s, summarize,
)

# Real output of Kafka 4.3's ConsumerPerformance on this project's broker (SLF4J notices on stderr
# usually, but a merged stream must parse too).
PERF_OUTPUT = """\
SLF4J: Failed to load class "org.slf4j.impl.StaticLoggerBinder".
SLF4J: Defaulting to no-operation (NOP) logger implementation
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
2026-11-26 03:50:56:900, 2026-11-26 03:50:58:055, 8.6713, 7.5076, 50000, 43290.0433, 550, 605, 14.3327, 82644.6281
"""


# -- percentile ------------------------------------------------------------------------------------
def test_percentile_interpolates_between_closest_ranks_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 99) == pytest.approx(3.97)  # numpy.percentile([1,2,3,4], 99)
    assert percentile(values, 25) == pytest.approx(1.75)


def test_percentile_ignores_input_order_and_handles_one_value() -> None:
    assert percentile([9.0, 1.0, 5.0], 50) == 5.0
    assert percentile([7.5], 99) == 7.5
    assert percentile(range(101), 99) == pytest.approx(99.0)


@pytest.mark.parametrize("values, q", [([], 50), ([1.0], -1), ([1.0], 101), ([1.0], float("nan"))])
def test_percentile_rejects_no_values_and_bad_ranks(values, q) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)


def test_summarize_reports_count_mean_percentiles_and_max() -> None:
    summary = summarize([float(x) for x in range(1, 101)])
    assert summary["count"] == 100
    assert summary["mean"] == pytest.approx(50.5)
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["max"] == 100.0
    assert summarize([]) == {"count": 0}


# -- ConsumerPerformance output --------------------------------------------------------------------
def test_consumer_perf_output_gives_numbers_by_header_name() -> None:
    summary = parse_consumer_perf_output(PERF_OUTPUT)
    assert summary["nMsg.sec"] == pytest.approx(43290.0433)
    assert summary["data.consumed.in.nMsg"] == 50000.0
    assert summary["fetch.nMsg.sec"] == pytest.approx(82644.6281)
    assert summary["rebalance.time.ms"] == 550.0
    assert summary["start.time"] == "2026-11-26 03:50:56:900"  # not a number: kept as text


def test_consumer_perf_output_with_detailed_stats_takes_the_last_line() -> None:
    header = ("time, threadId, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, "
              "fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec")
    text = "\n".join([header,
                      "2026-11-26 03:50:57:900, 0, 4.0, 4.0, 20000, 20000.0, 550, 450, 8.9, 44444.4",
                      "WARN some broker notice",
                      "2026-11-26 03:50:58:900, 0, 8.0, 4.0, 40000, 20000.0, 0, 1000, 4.0, 20000.0",
                      header,
                      "2026-11-26 03:50:56:900, 2026-11-26 03:50:58:900, 8.0, 4.0, 40000, 31000.5, 550, 1450, 5.5, 27586.2"])
    assert parse_consumer_perf_output(text)["nMsg.sec"] == pytest.approx(31000.5)


@pytest.mark.parametrize("text", ["", "SLF4J: nothing else\n", "start.time, nMsg.sec\n"])
def test_consumer_perf_output_without_a_summary_is_an_error(text) -> None:
    with pytest.raises(ValueError, match="no ConsumerPerformance summary"):
        parse_consumer_perf_output(text)


# -- per-batch log lines of lambdaflow.ingest --------------------------------------------------------
def test_batch_lines_are_parsed_and_other_lines_skipped() -> None:
    lines = [
        "2026-11-26 04:20:32,376 INFO lambdaflow.ingest: ingest started: topic t, landing positions none",
        "2026-11-26 04:21:01,511 INFO lambdaflow.ingest: batch 0 committed 0-0-3893_1-0-3812_2-0-3895: landed 11600, "
        "quarantined 0, offsets p0:[0,3893), p1:[0,3812), p2:[0,3895), 24.28s",
        "batch 12 committed 2-17-90: landed 70, quarantined 3, offsets p2:[17,90), 0.91s",
    ]
    assert parse_batch_lines(lines) == [
        {"batch": 0, "key": "0-0-3893_1-0-3812_2-0-3895", "landed": 11600, "quarantined": 0, "seconds": 24.28},
        {"batch": 12, "key": "2-17-90", "landed": 70, "quarantined": 3, "seconds": 0.91},
    ]


# -- latencies: record -> the manifest whose range holds it -------------------------------------------
MANIFESTS = [
    {"ranges": [{"partition": 0, "from_offset": 0, "until_offset": 10},
                {"partition": 1, "from_offset": 0, "until_offset": 5}], "committed_at_ms": 10_000},
    {"ranges": [{"partition": 0, "from_offset": 10, "until_offset": 20}], "committed_at_ms": 12_500},
]


def test_each_record_is_timed_to_the_commit_of_its_own_range() -> None:
    records = [(0, 0, 9_000), (0, 9, 9_500), (0, 10, 10_500), (0, 19, 12_000), (1, 4, 9_900)]
    assert record_latencies_s(records, MANIFESTS) == pytest.approx([1.0, 0.5, 2.0, 0.5, 0.1])


@pytest.mark.parametrize("record", [(0, 20, 1), (1, 5, 1), (2, 0, 1)])
def test_a_record_outside_every_committed_range_is_an_error(record) -> None:
    with pytest.raises(ValueError, match="in no committed range"):
        record_latencies_s([record], MANIFESTS)


def test_ranges_are_matched_whatever_order_the_manifests_come_in() -> None:
    records = [(0, 15, 12_000), (0, 3, 9_000)]
    assert record_latencies_s(records, list(reversed(MANIFESTS))) == pytest.approx([0.5, 1.0])


# -- goals and the table -------------------------------------------------------------------------------
def test_goals_are_met_in_the_stated_direction() -> None:
    assert bench.goal_met("ingest.ratio_vs_naive_spark", 1.0) is True
    assert bench.goal_met("ingest.ratio_vs_naive_spark", 0.99) is False
    assert bench.goal_met("ingest.latency_p99_s", 2.5) is True
    assert bench.goal_met("ingest.latency_p99_s", 3.01) is False
    assert bench.goal_met("batch.history_growth_ratio", 1.2) is True
    assert bench.goal_met("ingest.rows_per_s", 5.0) is None  # no goal
    assert bench.goal_met("ingest.latency_p99_s", None) is None  # no figure (section failed)


def test_goals_read_as_in_the_issues() -> None:
    assert bench.goal_text("ingest.ratio_vs_consumer_perf_test") == ">= 0.3"
    assert bench.goal_text("ingest.ratio_vs_naive_spark") == ">= 1"
    assert bench.goal_text("batch.history_growth_ratio") == "<= 1.2"


def test_every_goal_belongs_to_a_figure_a_section_returns() -> None:
    expected = {k for keys in bench.EXPECTED_KEYS.values() for k in keys}
    assert set(bench.GOALS) <= expected


def test_results_table_shows_goals_verdicts_and_errors() -> None:
    results = {"producer.ratio_vs_naive": 25.0, "producer.events_per_s": 21000.0,
               "ingest.latency_p99_s": 4.2, "ingest.rows_per_s": None}
    table = bench.results_table(results, {"batch": "RuntimeError: boom\nmore"})
    lines = table.splitlines()
    assert lines[0].split() == ["figure", "value", "goal", "met"]
    row = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.startswith(("producer.", "ingest.", "batch."))}
    assert row["producer.ratio_vs_naive"] == ["25.0", ">=", "10", "yes"]
    assert row["producer.events_per_s"] == ["21,000"]
    assert row["ingest.latency_p99_s"] == ["4.2", "<=", "3", "NO"]
    assert row["batch.ratio_vs_duckdb"] == ["error", "<=", "3", "?"]
    assert lines[-1] == "batch: error: RuntimeError: boom"


def test_lag_bounded_passes_a_swinging_lag_and_fails_a_growing_one() -> None:
    from bench.ingest_bench import lag_bounded, next_probe

    swinging = [(t, 5000 if t % 4 else 1000) for t in range(0, 120, 2)]
    assert lag_bounded(swinging, rate=5000)["bounded"] is True
    growing = [(t, 2000 * t) for t in range(0, 120, 2)]  # 2,000 records/s more than it lands
    verdict = lag_bounded(growing, rate=5000)
    assert verdict["bounded"] is False and verdict["lag_slope_per_s"] == 2000.0
    assert next_probe(5000, 20000) == 12500 and next_probe(0, 5000) == 2500
