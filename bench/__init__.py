"""lambdaflow's benchmarks: ``python -m bench`` (``make bench``) -> ``bench/results/latest.json``.

Each section (``producer_bench``, ``ingest_bench``, ``batch_bench``, ``ops_bench``) measures our component side by
side with yardsticks in the same run and returns flat ``<section>.<figure>`` keys. The goals below
are reported with the figures, never asserted (see bench/README.md).
"""

from __future__ import annotations

import operator

SECTIONS = ("producer", "ingest", "batch", "ops")

# key -> (comparison, target): a figure meets its goal when ``comparison(value, target)`` holds.
GOALS: dict[str, tuple[str, float]] = {
    "producer.ratio_vs_perf_test": (">=", 0.2),
    "producer.ratio_vs_naive": (">=", 10.0),
    "ingest.ratio_vs_naive_spark": (">=", 1.0),
    "ingest.ratio_vs_consumer_perf_test": (">=", 0.3),
    "ingest.latency_p99_s": ("<=", 3.0),
    "ingest.latency_p99_s_at_1k": ("<=", 2.0),
    "memory.stack_peak_rss_gib": ("<=", 6.0),
    "batch.ratio_vs_duckdb": ("<=", 3.0),
    "batch.history_growth_ratio": ("<=", 1.2),
    "batch.backfill_hours_per_min": (">=", 12.0),
    "ops.growth_ratio_max": ("<=", 1.5),
    "ops.bookkeeping_files_at_100k": ("<=", 2000.0),
}

# The figures each section is expected to return (shown as "error" when the section failed).
EXPECTED_KEYS: dict[str, tuple[str, ...]] = {
    "producer": ("producer.events_per_s", "producer.perf_test_events_per_s", "producer.naive_events_per_s",
                 "producer.ratio_vs_perf_test", "producer.ratio_vs_naive"),
    "ingest": ("ingest.rows_per_s", "ingest.naive_spark_rows_per_s", "ingest.consumer_perf_test_rows_per_s",
               "ingest.ratio_vs_naive_spark", "ingest.ratio_vs_consumer_perf_test", "ingest.latency_p50_s",
               "ingest.latency_p99_s", "ingest.latency_p99_s_at_1k", "ingest.sustained_events_per_s",
               "memory.stack_peak_rss_gib"),
    "batch": ("batch.seconds", "batch.duckdb_seconds", "batch.ratio_vs_duckdb", "batch.history_growth_ratio",
              "batch.backfill_hours_per_min"),
    "ops": tuple(f"ops.{op}_s_at_{n}" for op in ("lag", "completeness", "recovery", "dashboard") for n in ("1k", "100k"))
    + ("ops.lag_growth_ratio", "ops.completeness_growth_ratio", "ops.recovery_growth_ratio",
       "ops.dashboard_growth_ratio", "ops.growth_ratio_max", "ops.bookkeeping_files_at_100k"),
}

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def goal_met(key: str, value) -> bool | None:
    """True/False when ``key`` has a goal and a numeric value, None otherwise."""
    if key not in GOALS or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    comparison, target = GOALS[key]
    return bool(_OPS[comparison](value, target))


def goal_text(key: str) -> str:
    """A goal as written in the issues, e.g. ``>= 0.3``."""
    comparison, target = GOALS[key]
    return f"{comparison} {target:g}"


def _format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def results_table(results: dict, errors: dict[str, str] | None = None) -> str:
    """A plain-text table of every section's figures with their goals and whether each is met."""
    errors = errors or {}
    keys: list[str] = []
    for section in SECTIONS:
        present = [k for k in results if k.startswith(f"{section}.")]
        keys += [k for k in EXPECTED_KEYS[section] if k in present or section in errors]
        keys += sorted(k for k in present if k not in EXPECTED_KEYS[section])
    rows = [("figure", "value", "goal", "met")]
    for key in keys:
        section = key.split(".", 1)[0]
        value = results.get(key)
        shown = "error" if value is None and section in errors else _format_value(value)
        goal = goal_text(key) if key in GOALS else ""
        met = goal_met(key, value)
        rows.append((key, shown, goal, "" if met is None and key not in GOALS else
                     {True: "yes", False: "NO", None: "?"}[met]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) if i != 1 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             .rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for section, message in errors.items():
        lines.append(f"{section}: error: {message.splitlines()[0][:300] if message else ''}")
    return "\n".join(lines)
