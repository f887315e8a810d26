"""The profile of one ingest micro-batch: its steps, the Spark jobs each ran, rows, files, HDFS calls.

The ingest logs one ``batch profile {json}`` line per committed micro-batch (``parse_profile_line``
reads it back), so the benchmark and anyone reading the driver's log see where a batch's time goes:

- ``steps``: per step of the commit (``stats``, ``write_landing``, ``write_speed``, ``write_quarantine``,
  ``plan_moves``, ``manifest``, ``moves``, ``group_commit``...), its wall ``seconds``, the Spark
  ``jobs`` it ran and their ``tasks``;
- ``rows`` landed / quarantined, ``files`` written per kind;
- ``codegen_compilations``: the classes Spark's code generator compiled during the batch (the
  driver's JVM; in local mode the executors' too): a steady batch compiles none;
- ``hdfs_calls``: the NameNode round trips of the driver's file-system calls per method, counted
  from the first call on the staging directory to the end of the commit (``CountingFs``).

Spark jobs are counted through the status tracker by job group: the streaming query runs each
micro-batch under its own group (the query's run id), so the jobs a step added to that group
are the step's.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from contextlib import contextmanager
from typing import Any

PROFILE_PREFIX = "batch profile "


class CountingFs:
    """A file-system wrapper (JvmFs or the like) that counts calls per method name.

    Every public method of the wrapped object is one or more NameNode round trips; the count is of
    calls, the lower bound of RPCs (``list_files_recursive`` lists each directory it walks)."""

    def __init__(self, fs) -> None:
        self._counted_fs = fs
        self.calls: Counter[str] = Counter()
        self._counting = threading.Lock()  # calls come from several threads (parallel file writes)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._counted_fs, name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        def counted(*args, **kwargs):
            with self._counting:
                self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted

    def snapshot(self) -> Counter[str]:
        with self._counting:
            return Counter(self.calls)


def calls_since(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    """Calls per method between two snapshots (methods not called left out)."""
    return {name: after[name] - before.get(name, 0) for name in sorted(after) if after[name] > before.get(name, 0)}


class BatchProfile:
    """Times the steps of one micro-batch and counts the Spark jobs each ran."""

    def __init__(self, spark, batch_id: int, fs: CountingFs | None = None) -> None:
        self.sc = spark.sparkContext if spark is not None else None
        self.batch_id = batch_id
        self.fs = fs
        self.started = time.monotonic()
        self.steps: list[dict] = []
        self.hdfs_before = fs.snapshot() if fs is not None else Counter()
        self.group = None
        if self.sc is not None:
            self.group = self.sc.getLocalProperty("spark.jobGroup.id")
        self.compilations_before = self._compilations()

    def _compilations(self) -> int | None:
        """Java classes Spark's code generator has compiled in this JVM so far (a steady batch
        compiles none: its plans' generated code is the previous batch's, from the cache)."""
        if self.sc is None:
            return None
        try:
            return int(self.sc._jvm.org.apache.spark.metrics.source.CodegenMetrics
                       .METRIC_COMPILATION_TIME().getCount())
        except Exception:  # a profile never fails a batch
            return None

    def _job_ids(self) -> set[int]:
        if self.sc is None or self.group is None:
            return set()
        try:
            # One py4j call, not one per element: pyspark's getJobIdsForGroup lists the Java array
            # element by element, and the tracker retains up to spark.ui.retainedJobs (200) jobs of
            # the query's group: 20 such lists a batch were some 4,000 py4j calls.
            tracker = self.sc._jsc.sc().statusTracker()
            ids = self.sc._jvm.java.util.Arrays.toString(tracker.getJobIdsForGroup(self.group))
            return {int(i) for i in ids.strip("[]").split(",") if i.strip()}
        except Exception:  # a profile never fails a batch
            return set()

    def _tasks(self, job_ids: set[int]) -> int:
        tracker, tasks = self.sc.statusTracker(), 0
        for job_id in job_ids:
            info = tracker.getJobInfo(job_id)
            for stage_id in (info.stageIds if info is not None else ()):
                stage = tracker.getStageInfo(stage_id)
                tasks += stage.numTasks if stage is not None else 0
        return tasks

    @contextmanager
    def step(self, name: str):
        jobs_before = self._job_ids()
        started = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - started
            new_jobs = self._job_ids() - jobs_before
            entry = {"step": name, "seconds": round(seconds, 4), "jobs": len(new_jobs)}
            if new_jobs:
                try:
                    entry["tasks"] = self._tasks(new_jobs)
                except Exception:
                    pass
            self.steps.append(entry)

    def document(self, *, key: str, landed: int, quarantined: int, files: list[dict]) -> dict:
        """The profile as data (one JSON object)."""
        kinds = Counter(f["kind"] for f in files)
        after = self.fs.snapshot() if self.fs is not None else Counter()
        hdfs = calls_since(self.hdfs_before, after)
        compilations = self._compilations()
        return {
            "batch": self.batch_id, "key": key, "seconds": round(time.monotonic() - self.started, 4),
            "rows": {"landed": landed, "quarantined": quarantined},
            "files": dict(sorted(kinds.items())), "files_total": len(files),
            "spark_jobs": sum(s["jobs"] for s in self.steps),
            "codegen_compilations": (None if compilations is None or self.compilations_before is None
                                     else compilations - self.compilations_before),
            "hdfs_calls": hdfs, "hdfs_calls_total": sum(hdfs.values()),
            "steps": self.steps,
        }


def profile_line(document: dict) -> str:
    return PROFILE_PREFIX + json.dumps(document, sort_keys=True, separators=(",", ":"))


def parse_profile_line(line: str) -> dict | None:
    """A ``batch profile {json}`` log line (anywhere in the line) -> the profile, else None."""
    at = line.find(PROFILE_PREFIX)
    if at < 0:
        return None
    try:
        return json.loads(line[at + len(PROFILE_PREFIX):].strip())
    except ValueError:
        return None


def summarize_profiles(profiles: list[dict]) -> dict:
    """Per step over many batches: batches it ran in, mean and max seconds, mean Spark jobs; plus
    the means of a batch's seconds, jobs, files and HDFS calls (the profile of a typical batch)."""
    if not profiles:
        return {"batches": 0}
    n = len(profiles)
    steps: dict[str, dict] = {}
    for p in profiles:
        for s in p["steps"]:
            agg = steps.setdefault(s["step"], {"batches": 0, "seconds_total": 0.0, "seconds_max": 0.0, "jobs_total": 0})
            agg["batches"] += 1
            agg["seconds_total"] += s["seconds"]
            agg["seconds_max"] = max(agg["seconds_max"], s["seconds"])
            agg["jobs_total"] += s["jobs"]
    hdfs: Counter[str] = Counter()
    for p in profiles:
        hdfs.update(p.get("hdfs_calls", {}))
    return {
        "batches": n,
        "mean_seconds": round(sum(p["seconds"] for p in profiles) / n, 4),
        "mean_spark_jobs": round(sum(p["spark_jobs"] for p in profiles) / n, 2),
        "mean_files": round(sum(p["files_total"] for p in profiles) / n, 2),
        "mean_hdfs_calls": round(sum(p["hdfs_calls_total"] for p in profiles) / n, 2),
        "mean_hdfs_calls_by_method": {k: round(v / n, 2) for k, v in sorted(hdfs.items())},
        "mean_codegen_compilations": round(sum(p.get("codegen_compilations") or 0 for p in profiles) / n, 2),
        "mean_rows_landed": round(sum(p["rows"]["landed"] for p in profiles) / n, 1),
        "steps": {name: {"batches": a["batches"], "mean_seconds": round(a["seconds_total"] / a["batches"], 4),
                         "max_seconds": round(a["seconds_max"], 4),
                         "mean_jobs": round(a["jobs_total"] / a["batches"], 2)}
                  for name, a in steps.items()},
    }
