"""The micro-batch profile's pure parts: counting file-system calls, the log line, the summary."""

from __future__ import annotations

from lambdaflow.monitoring import batch_profile
from lambdaflow.monitoring.batch_profile import BatchProfile, CountingFs


class FakeFs:
    def __init__(self) -> None:
        self.renamed: list[tuple[str, str]] = []
        self._private = "kept"
        self._fs = "the wrapped object's own _fs"  # JvmLogStore reaches JvmFs._fs (the Hadoop FileSystem)

    def try_rename(self, src: str, dst: str) -> bool:
        self.renamed.append((src, dst))
        return True

    def mkdirs(self, path: str) -> None:
        pass


def test_counting_fs_counts_calls_per_method_and_still_calls_through() -> None:
    inner = FakeFs()
    fs = CountingFs(inner)
    before = fs.snapshot()
    assert fs.try_rename("/a", "/b") is True
    fs.try_rename("/c", "/d")
    fs.mkdirs("/x")
    assert inner.renamed == [("/a", "/b"), ("/c", "/d")]
    assert batch_profile.calls_since(before, fs.snapshot()) == {"mkdirs": 1, "try_rename": 2}
    assert fs._private == "kept" and fs._fs == "the wrapped object's own _fs"


def test_profile_document_counts_steps_files_and_hdfs_calls_and_round_trips_through_its_log_line() -> None:
    fs = CountingFs(FakeFs())
    fs.mkdirs("/before")  # before the profile started: not counted
    profile = BatchProfile(None, 7, fs)
    with profile.step("moves"):
        fs.mkdirs("/p")
        fs.try_rename("/s", "/f")
    files = [{"kind": "landing"}, {"kind": "landing"}, {"kind": "activity_by_product"}]
    doc = profile.document(key="k", landed=10, quarantined=1, files=files)
    assert doc["batch"] == 7 and doc["rows"] == {"landed": 10, "quarantined": 1}
    assert doc["files"] == {"activity_by_product": 1, "landing": 2} and doc["files_total"] == 3
    assert doc["hdfs_calls"] == {"mkdirs": 1, "try_rename": 1} and doc["hdfs_calls_total"] == 2
    assert [s["step"] for s in doc["steps"]] == ["moves"] and doc["spark_jobs"] == 0
    assert doc["codegen_compilations"] is None  # no Spark: unknown, not zero
    line = "2026-12-05 INFO lambdaflow.ingest: " + batch_profile.profile_line(doc)
    assert batch_profile.parse_profile_line(line) == doc
    assert batch_profile.parse_profile_line("batch 3 committed x") is None


def test_summary_means_over_batches_and_per_step() -> None:
    def doc(seconds: float, write_s: float, jobs: int, calls: int) -> dict:
        return {"seconds": seconds, "spark_jobs": jobs, "files_total": 4, "hdfs_calls": {"try_rename": calls},
                "hdfs_calls_total": calls, "rows": {"landed": 100, "quarantined": 0},
                "codegen_compilations": jobs - 2,
                "steps": [{"step": "write_landing", "seconds": write_s, "jobs": jobs}]}

    summary = batch_profile.summarize_profiles([doc(1.0, 0.5, 4, 6), doc(2.0, 1.5, 2, 4)])
    assert summary["batches"] == 2 and summary["mean_seconds"] == 1.5 and summary["mean_spark_jobs"] == 3
    assert summary["mean_codegen_compilations"] == 1
    assert summary["mean_hdfs_calls"] == 5 and summary["mean_hdfs_calls_by_method"] == {"try_rename": 5}
    assert summary["steps"]["write_landing"] == {"batches": 2, "mean_seconds": 1.0, "max_seconds": 1.5,
                                                 "mean_jobs": 3}
    assert batch_profile.summarize_profiles([]) == {"batches": 0}


class SlowWritesFs:
    """Each write takes a while (as an HDFS create waits for its pipeline); one path always fails."""

    def __init__(self, failing: str | None = None) -> None:
        self.written: dict[str, bytes] = {}
        self.failing = failing

    def write_bytes(self, path: str, data: bytes) -> None:
        import time

        time.sleep(0.02)
        if path == self.failing:
            raise OSError(f"{path}: DataNode pipeline failed")
        self.written[path] = data


def test_parallel_file_writes_write_every_file_count_every_call_and_raise_after_all_ended() -> None:
    from concurrent.futures import ThreadPoolExecutor

    import pytest

    from lambdaflow.storage.fs import write_files

    files = {f"/stage/v/timestamp_hour={h}/part-00000.parquet": bytes([h]) for h in range(40)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        inner = SlowWritesFs()
        counted = CountingFs(inner)
        write_files(counted, files, pool)
        assert inner.written == files
        assert counted.snapshot()["write_bytes"] == 40  # no count lost to the threads

        failing = SlowWritesFs(failing="/stage/v/timestamp_hour=3/part-00000.parquet")
        with pytest.raises(OSError, match="pipeline failed"):
            write_files(failing, files, pool)
        assert len(failing.written) == 39  # the others still ended before the error was raised
    serial = SlowWritesFs()
    write_files(serial, files)
    assert serial.written == files
