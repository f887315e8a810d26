"""``python -m bench`` (``make bench``): every benchmark side by side in one run.

Writes one flat JSON object (every section's ``<section>.<figure>`` keys, plus ``machine``,
``scale``, ``sections`` with each section's date and duration, and ``errors`` per failed section)
to ``bench/results/latest.json`` and prints a table with the goals and whether each is met.
Goals are reported, never asserted. A failed section is recorded (its figures null, its error
in ``errors``) and the others still run; the exit code is 1 when any section failed.

Options: ``--only producer|ingest|batch|ops`` (repeatable; the other sections' previous figures are
kept in the output file), ``--scale small`` (a quick check, written to ``latest-small.json`` unless
``--output`` says otherwise). A full run takes about 15-20 minutes on 2 cores (ops: ~6).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
import traceback
import uuid
from pathlib import Path

from bench import EXPECTED_KEYS, GOALS, SECTIONS, goal_met, goal_text, results_table

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _other_spark_jvms() -> int:
    """Spark JVMs running on this machine that are not ours (others' jobs skew the figures)."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"org.apache.spark.deploy.SparkSubmit" in cmdline:
            count += 1
    return count


def machine_info() -> dict:
    try:
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        mem_kb = None
    return {
        "cores": os.cpu_count(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "memory_mb": mem_kb // 1024 if mem_kb else None,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "other_spark_jvms_at_start": _other_spark_jvms(),
    }


# ------------------------------------------------------------------------------------- sections
def _producer(settings, spark, scale: str, details: dict) -> dict:
    from bench import producer_bench

    if scale == "small":
        saved = producer_bench.OURS_EVENTS, producer_bench.NAIVE_EVENTS
        producer_bench.OURS_EVENTS, producer_bench.NAIVE_EVENTS = 20_000, 1_000
        try:
            return producer_bench.run(settings)
        finally:
            producer_bench.OURS_EVENTS, producer_bench.NAIVE_EVENTS = saved
    return producer_bench.run(settings)


def _ingest(settings, spark, scale: str, details: dict) -> dict:
    from bench import ingest_bench

    return ingest_bench.run(settings, spark(), scale=scale, progress=lambda m: _say(f"ingest: {m}"),
                            details=details)


def _batch(settings, spark, scale: str, details: dict) -> dict:
    """bench.batch_bench (and bench.backfill_bench) in a child process: they are Spark Connect
    clients of the deployment's server, which cannot share a process with the local SparkSession."""
    import subprocess
    import tempfile

    from lambdaflow import hdfs

    root = f"/bench/batch-{uuid.uuid4().hex[:8]}"
    topic = f"bench-batch-{root.rsplit('-', 1)[1]}"
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        try:
            subprocess.run([sys.executable, "-m", "bench.batch_bench", "--root", root, "--topic", topic,
                            "--scale", scale, "--out", out.name, "--backfill"], check=True,
                           cwd=Path(__file__).resolve().parent.parent)
            result = json.loads(Path(out.name).read_text())
        finally:
            if not os.environ.get("LAMBDAFLOW_BENCH_KEEP"):
                try:
                    hdfs.client(settings).delete(root, recursive=True)
                except Exception as exc:
                    _say(f"batch: could not remove {root}: {exc}")
    details.update(result["details"])
    return result["figures"]


def _ops(settings, spark, scale: str, details: dict) -> dict:
    from bench import ops_bench

    return ops_bench.run(settings, spark(), scale=scale, progress=lambda m: _say(f"ops: {m}"), details=details)


RUNNERS = {"producer": _producer, "ingest": _ingest, "batch": _batch, "ops": _ops}


# ------------------------------------------------------------------------------------- the run
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=SECTIONS,
                        help="run only this section (repeatable); default: all of them")
    parser.add_argument("--scale", choices=["full", "small"], default="full",
                        help="full (the reported figures) or small (a quick check of the machinery)")
    parser.add_argument("--output", type=Path,
                        help="results file (default: bench/results/latest.json, latest-small.json for --scale small)")
    args = parser.parse_args(argv)
    sections = [s for s in SECTIONS if not args.only or s in args.only]
    output = args.output or RESULTS_DIR / ("latest.json" if args.scale == "full" else "latest-small.json")

    from lambdaflow import stack
    from lambdaflow.config import Settings

    _say(f"sections: {', '.join(sections)}; scale {args.scale}; results -> {output}")
    stack.up(services=["kafka", "namenode", "datanode"], quiet=True)  # idempotent: quick when up
    settings = Settings.from_env()
    machine = machine_info()
    if machine["other_spark_jvms_at_start"] or machine["loadavg_at_start"][0] > 1.0:
        _say(f"note: load average {machine['loadavg_at_start']}, {machine['other_spark_jvms_at_start']} "
             "other Spark JVM(s) running: figures will be noisy")

    session = None

    def spark():
        nonlocal session
        if session is None:
            from lambdaflow.spark import session as make_session

            _say("starting the benchmark's SparkSession (local[2], not timed)")
            session = make_session("lambdaflow-bench", settings, master="local[2]", driver_memory="2g")
        return session

    results: dict = {}
    errors: dict[str, str] = {}
    meta: dict[str, dict] = {}
    details: dict[str, dict] = {}
    started_all = time.monotonic()
    try:
        for section in sections:
            _say(f"{section}: starting")
            started = time.monotonic()
            details[section] = {}
            try:
                figures = RUNNERS[section](settings, spark, args.scale, details[section])
                results.update(figures)
                _say(f"{section}: done in {time.monotonic() - started:.0f}s")
            except Exception as exc:
                errors[section] = f"{type(exc).__name__}: {exc}"
                results.update({k: None for k in EXPECTED_KEYS[section]})
                _say(f"{section}: FAILED after {time.monotonic() - started:.0f}s: {errors[section].splitlines()[0][:300]}")
                traceback.print_exc(file=sys.stderr)
            meta[section] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                             "seconds": round(time.monotonic() - started, 1), "scale": args.scale}
    finally:
        if session is not None:
            session.stop()

    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    document = _merge_previous(output, sections) if args.only else {}
    document.update(results)
    document["machine"] = machine
    document["scale"] = args.scale
    document["sections"] = {**document.get("sections", {}), **meta}
    previous_errors = {k: v for k, v in document.get("errors", {}).items() if k not in sections}
    document["errors"] = {**previous_errors, **errors}
    document["goals"] = {k: {"goal": goal_text(k), "met": goal_met(k, document.get(k))}
                         for k in GOALS if k in document}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")

    details_path = output.with_name(output.stem + "-details.json")
    details_path.write_text(json.dumps(details, indent=2, sort_keys=True, default=str) + "\n")
    print()
    print(results_table(document, document["errors"]))
    print(f"\nwritten {output} and {details_path.name} ({time.monotonic() - started_all:.0f}s)")
    return 1 if errors else 0


def _merge_previous(output: Path, rerun: list[str]) -> dict:
    """The previous results file without the sections being re-run (so --only keeps the others)."""
    try:
        previous = json.loads(output.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in previous.items() if k.split(".", 1)[0] not in rerun}


if __name__ == "__main__":
    sys.exit(main())
