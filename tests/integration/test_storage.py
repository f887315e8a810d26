"""The storage layer's atomic HDFS primitives against the real NameNode, including racing callers."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from lambdaflow import hdfs
from lambdaflow.config import Settings
from lambdaflow.storage import fs as storage

pytestmark = pytest.mark.integration


def race(n: int, attempt) -> list:
    """Run ``attempt(i)`` in ``n`` threads released at the same moment; their results in order."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = attempt(i)
        except Exception as exc:  # surfaced below: a racing caller must lose cleanly, not crash
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


@pytest.fixture
def base(stack: Settings):
    path = f"/lambda-test/storage-{uuid.uuid4().hex[:10]}"
    yield path
    hdfs.client(stack).delete(path, recursive=True)


def test_jvm_create_if_absent_has_exactly_one_winner(stack: Settings, spark, base: str) -> None:
    fs = storage.JvmFs(spark, stack.hdfs_url)
    fs.mkdirs(base)
    for round_ in range(3):
        path = f"{base}/claim-{round_}"
        results = race(8, lambda i: fs.create_new(path, f"writer {i}"))
        assert results.count(True) == 1, results
        assert fs.read_text(path) == f"writer {results.index(True)}"
    # non-recursive: a missing parent is a refusal, not a new directory
    assert fs.create_new(f"{base}/gone/x", "y", make_parents=False) is False
    assert not fs.exists(f"{base}/gone")
    assert fs.create_new(f"{base}/made/x", "y") is True


def test_jvm_atomic_replace_is_never_missing_and_rename_refuses_to_overwrite(stack: Settings, spark,
                                                                             base: str) -> None:
    fs = storage.JvmFs(spark, stack.hdfs_url)
    target = f"{base}/doc.json"
    fs.write_json(target, {"n": -1})
    seen, stop = [], threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(fs.read_json(target))

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        race(4, lambda i: [fs.write_json(target, {"n": i * 100 + k}) for k in range(10)])
    finally:
        stop.set()
        watcher.join()
    assert seen and all(isinstance(d, dict) and "n" in d for d in seen), "a reader saw no document"
    assert [n for n in fs.list(base) if "/_tmp." in n] == []
    fs.write_text(f"{base}/a", "a")
    fs.write_text(f"{base}/b", "b")
    assert fs.try_rename(f"{base}/a", f"{base}/b") is False
    assert fs.try_rename(f"{base}/missing", f"{base}/c") is False
    results = race(4, lambda i: fs.try_rename(f"{base}/a", f"{base}/moved-{i}"))
    assert results.count(True) == 1, results


def test_webhdfs_create_if_absent_and_atomic_replace(stack: Settings, base: str) -> None:
    clients = [hdfs.client(stack) for _ in range(6)]
    path = f"{base}/claim"
    results = race(6, lambda i: storage.web_create_new(clients[i], path, f"writer {i}"))
    assert results.count(True) == 1, results
    target = f"{base}/doc.json"
    race(3, lambda i: [storage.web_write_json(clients[i], target, {"n": i}) for _ in range(5)])
    assert hdfs.read_json(clients[0], target)["n"] in (0, 1, 2)
    assert [n for n in clients[0].list(base) if n.startswith("_tmp.")] == []


def test_fenced_lock_refuses_a_live_holder_and_fences_a_paused_one(stack: Settings, spark, base: str) -> None:
    from lambdaflow.storage.lock import LockHeld, LockLost, WriterLock

    fs = storage.JvmFs(spark, stack.hdfs_url)
    landing_path = f"{base}/landing"
    manifests = f"{landing_path}/_manifests"
    fs.mkdirs(manifests)
    first = WriterLock(fs, landing_path, stale_s=2)
    assert first.acquire() == 1
    first.commit("0-0-10.json", "{}", manifests)
    second = WriterLock(fs, landing_path, stale_s=2)
    with pytest.raises(LockHeld, match="another ingest holds the landing zone lock"):
        second.acquire()

    first._stop.set()  # the first holder freezes: no heartbeat any more
    first._thread.join()
    time.sleep(2.5)
    second.holder["pid"] = 424242  # as if another process
    assert second.acquire() == 2  # the first's heartbeat is older than the takeover timeout
    assert not fs.exists(f"{landing_path}/_writer/outbox-1")  # the fence
    # the paused holder resumes: its commit fails, naming the new holder, and nothing becomes visible
    with pytest.raises(LockLost, match="lost the landing zone lock to host .* pid 424242 \\(epoch 2\\)"):
        first.commit("0-10-20.json", "{}", manifests)
    second.commit("0-10-25.json", "{}", manifests)
    assert sorted(n.rsplit("/", 1)[1] for n in fs.list(manifests)) == ["0-0-10.json", "0-10-25.json"]
    second.release()
    third = WriterLock(fs, landing_path, stale_s=60)
    assert third.acquire() == 3  # released: taken at once
    third.release()
