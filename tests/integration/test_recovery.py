"""Recovery of the landing zone's commit protocol against real HDFS, Kafka and Spark.

- ``LandingCommitter.recover`` with both half-states a crash can leave: a batch staged without its
  manifest (rolled back) and a batch whose manifest was written but whose files were not all moved
  (rolled forward);
- the real ingest killed with SIGKILL at each step of a batch commit (held there by the test hook
  ``LAMBDAFLOW_TEST_PAUSE_AT``), then restarted: every (partition, offset) lands exactly once;
- the ingest lock: a dead holder on this host and a holder with a stale heartbeat are taken over, a
  live one is refused;
- a checkpoint Spark cannot read is moved aside and the ingest resumes from the landing zone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from lambdaflow import hdfs, ingest, landing
from lambdaflow.config import Settings
from lambdaflow.errors import UserError
from lambdaflow.ingest import LandingCommitter
from lambdaflow.jvm_fs import JvmFs
from lambdaflow.producer import produce

from .test_ingest import assert_exactly_once, ingest as run_ingest

pytestmark = pytest.mark.integration

HOUR0 = 1_795_600_000_000 - 1_795_600_000_000 % 3_600_000


# -- recover() on hand-made half-states ------------------------------------------------------------

def stage_batch(spark, settings: Settings, committer: LandingCommitter, ranges: list[landing.OffsetRange],
                fs: JvmFs) -> tuple[str, list[dict], list[tuple[int, int]]]:
    """Write a batch's landed rows under ``_staging/<key>`` as the ingest does; returns the key, the
    planned moves (the committer's own plan) and the (partition, offset) of its rows."""
    from lambdaflow import batch

    rows = [{"timestamp": HOUR0 + (o % 2) * 3_600_000 + r.partition * 60_000 + o, "referrer": "r",
             "action": "page_view", "prev_page": None, "visitor": f"v{o}", "page": "p", "product": "x",
             "topic": settings.topic, "kafka_partition": r.partition, "kafka_offset": o, "kafka_timestamp": None}
            for r in ranges for o in range(r.from_offset, r.until_offset)]
    for row in rows:
        row["timestamp_hour"] = landing.hour_of(row["timestamp"])
    key = landing.commit_key(ranges)
    stage = f"{committer.staging}/{key}"
    (spark.createDataFrame(rows, batch.landing_schema()).repartition(2)
     .write.partitionBy("timestamp_hour").parquet(settings.uri(f"{stage}/landing")))
    files = committer._plan_moves(stage, key)
    assert len(files) >= 2, files  # two hours: several files to move
    return key, files, [(r["kafka_partition"], r["kafka_offset"]) for r in rows]


def write_manifest(settings: Settings, fs: JvmFs, committer: LandingCommitter, key: str, files: list[dict],
                   n_rows: int) -> None:
    manifest = landing.manifest_document(settings.topic, landing.parse_commit_key(key), files, n_rows, 0,
                                         {HOUR0: n_rows}, int(time.time() * 1000))
    fs.write_atomic(f"{committer.manifests}/{key}.json", landing.dumps(manifest))


def landed_coordinates(spark, settings: Settings) -> list[tuple[int, int]]:
    rows = spark.read.parquet(settings.uri(settings.landing_path)).select("kafka_partition", "kafka_offset").collect()
    return sorted((r[0], r[1]) for r in rows)


def test_recover_rolls_uncommitted_batches_back_and_committed_ones_forward(spark, isolated: Settings) -> None:
    fs = JvmFs(spark, isolated.hdfs_url)
    committer = LandingCommitter(spark, isolated, fs)

    # A: committed and moved; B: committed, one file moved then the crash; C: committed, nothing moved;
    # D: staged, no manifest (the crash came before the commit point); plus a torn manifest write.
    expected = []
    for ranges, moved in (([landing.OffsetRange(0, 0, 20), landing.OffsetRange(1, 0, 15)], "all"),
                          ([landing.OffsetRange(0, 20, 40)], "one"),
                          ([landing.OffsetRange(1, 15, 30), landing.OffsetRange(2, 0, 25)], "none")):
        key, files, coordinates = stage_batch(spark, isolated, committer, ranges, fs)
        write_manifest(isolated, fs, committer, key, files, len(coordinates))
        for f in files[:{"all": len(files), "one": 1, "none": 0}[moved]]:
            fs.rename(f["staged"], f["final"])
        if moved == "all":
            fs.delete(f"{committer.staging}/{key}")
        expected += coordinates
    uncommitted, _, lost = stage_batch(spark, isolated, committer, [landing.OffsetRange(2, 25, 50)], fs)
    fs.write_text(f"{committer.manifests}/_tmp.{uncommitted}.json", "{\"torn")

    committer.recover()

    assert fs.list(committer.staging) == []
    assert [p.rsplit("/", 1)[1] for p in fs.list(committer.manifests)] == sorted(
        f"{k}.json" for k in ("0-0-20_1-0-15", "0-20-40", "1-15-30_2-0-25"))
    assert committer.positions == {0: 40, 1: 30, 2: 25}  # D's range [25, 50) is not landed
    assert landed_coordinates(spark, isolated) == sorted(expected)
    assert not set(lost) & set(landed_coordinates(spark, isolated))

    # Recovery is idempotent: a second run (a crash during recovery) changes nothing.
    LandingCommitter(spark, isolated, fs).recover()
    assert landed_coordinates(spark, isolated) == sorted(expected)


def test_recover_fails_loudly_when_a_committed_file_is_lost(spark, isolated: Settings) -> None:
    fs = JvmFs(spark, isolated.hdfs_url)
    committer = LandingCommitter(spark, isolated, fs)
    key, files, coordinates = stage_batch(spark, isolated, committer, [landing.OffsetRange(0, 0, 10)], fs)
    write_manifest(isolated, fs, committer, key, files, len(coordinates))
    fs.delete(files[-1]["staged"])
    with pytest.raises(RuntimeError, match="committed file lost"):
        committer.recover()


# -- kill -9 at each step of a commit, then restart ------------------------------------------------

def start_paused_ingest(settings: Settings, step: str, timeout: float = 240) -> subprocess.Popen:
    """The real ingest, held by the test hook at ``step`` of its first batch commit."""
    os.environ["LAMBDAFLOW_TEST_PAUSE_AT"] = step
    try:
        job = run_ingest(settings, "--max-offsets-per-trigger", "90", "--trigger-interval", "0 seconds", wait=False)
    finally:
        del os.environ["LAMBDAFLOW_TEST_PAUSE_AT"]
    lines: list[str] = []
    paused = threading.Event()

    def read() -> None:
        for line in job.stdout:
            lines.append(line)
            if f"paused at {step}" in line:
                paused.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not paused.wait(0.5):
        if job.poll() is not None or time.monotonic() > deadline:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
            causes = [line for line in lines if "Caused by" in line or "Error" in line or "error:" in line]
            pytest.fail(f"the ingest never paused at {step}:\n{''.join(causes[:20])[:4000]}\n...\n"
                        f"{''.join(lines)[-3000:]}")
    return job


def commit_state(settings: Settings) -> dict:
    """Staged batches, and per manifest how many of its files are at their final place."""
    client = hdfs.client(settings)
    staged = set(hdfs.list_names(client, f"{settings.landing_path}/{landing.STAGING}"))
    manifests = {}
    for key in landing.manifest_keys(client, settings.landing_path):
        files = hdfs.read_json(client, f"{settings.landing_path}/{landing.MANIFESTS}/{key}.json")["files"]
        moved = sum(client.status(f["final"], strict=False) is not None for f in files)
        manifests[key] = (moved, len(files), key in staged)
    return {"staged": staged, "manifests": manifests}


def test_kill_9_at_each_commit_step_then_restart_lands_everything_exactly_once(spark, isolated: Settings) -> None:
    summary = produce(isolated, count=600, rate=0, seed=51, bad_fraction=0.05, progress=False)
    produced = summary["acked"]
    before = commit_state(isolated)
    for step in ingest.TEST_PAUSE_STEPS:
        job = start_paused_ingest(isolated, step)
        os.killpg(job.pid, signal.SIGKILL)  # the driver and its JVM, mid-commit
        job.wait(timeout=60)
        after = commit_state(isolated)
        new = {k: v for k, v in after["manifests"].items() if k not in before["manifests"]}
        # the half-state the kill left, as the step names it
        if step == "staged":
            assert not new and after["staged"] - set(before["manifests"]), (step, after)
        else:
            assert len(new) == 1, (step, after)
            moved, total, still_staged = next(iter(new.values()))
            assert still_staged, (step, after)
            assert moved == {"manifest_written": 0, "moved_partially": 1, "moved": total}[step], (step, moved, total)
        before = after

    result = run_ingest(isolated, "--available-now")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    landed, quarantined = assert_exactly_once(spark, isolated)
    assert landed + quarantined == produced == 600
    assert quarantined == sum(summary["bad_injected"].values())
    assert commit_state(isolated)["staged"] == set()
    # each restart took the lock over from the killed run (else it would have been refused)
    assert not hdfs.client(isolated).status(f"{isolated.root}/checkpoints/ingest.lock", strict=False)


# -- the ingest lock ---------------------------------------------------------------------------------
# (A live holder refused and a paused one fenced: tests/integration/test_storage.py and test_takeover.py;
# a holder killed with SIGKILL: the restarts above, each of which takes over the killed run's lock.)

def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_lock_of_a_dead_holder_on_this_host_is_taken_over_at_once(spark, isolated: Settings, monkeypatch) -> None:
    monkeypatch.setenv("LAMBDAFLOW_LOCK_STALE_S", "3600")  # no waiting for staleness: the pid decides
    fs = JvmFs(spark, isolated.hdfs_url)

    def lock(**holder) -> ingest.IngestLock:
        made = ingest.IngestLock(fs, isolated.landing_path)
        made.holder.update(holder)
        return made

    dead = lock(pid=dead_pid())
    first = dead.acquire()
    dead._stop.set()  # it never beats again, as after kill -9: its epoch says this host, a dead pid

    mine = lock()
    assert mine.acquire() == first + 1  # taken over at once, without waiting for the heartbeat to age
    try:
        with pytest.raises(UserError, match=rf"another ingest holds .*pid {os.getpid()}"):
            lock(host="ingest-elsewhere.example").acquire()  # a live holder is refused, named
    finally:
        mine.release()
    after_release = lock(host="ingest-elsewhere.example")
    assert after_release.acquire() == first + 2  # a released lock is free at once
    after_release.release()


# -- an unusable checkpoint --------------------------------------------------------------------------

def test_an_unreadable_checkpoint_is_moved_aside_and_nothing_is_lost_or_duplicated(spark, isolated: Settings) -> None:
    produce(isolated, count=300, rate=0, seed=61, bad_fraction=0.05, progress=False)
    first = run_ingest(isolated, "--available-now")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    produce(isolated, count=200, rate=0, seed=62, progress=False)

    client = hdfs.client(isolated)
    offsets = [path for path, dirs, _ in client.walk(isolated.checkpoint_path) if path.endswith("/offsets")]
    assert len(offsets) == 1, offsets  # the query's one offset log (wherever the lock keeps the checkpoint)
    offsets = offsets[0]
    last = max((n for n in hdfs.list_names(client, offsets) if n.isdigit()), key=int)
    client.write(f"{offsets}/{last}", data="garbage, not an offset log\n", overwrite=True, encoding="utf-8")
    for crc in (n for n in hdfs.list_names(client, offsets) if n == f".{last}.crc"):
        client.delete(f"{offsets}/{crc}")

    result = run_ingest(isolated, "--available-now")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "the checkpoint cannot be used" in output and "MALFORMED_LOG_FILE" in output
    aside = [n for n in hdfs.list_names(client, f"{isolated.root}/checkpoints") if n.startswith("ingest.unusable-")]
    assert len(aside) == 1
    landed, quarantined = assert_exactly_once(spark, isolated)
    assert landed + quarantined == 500
