"""The batch layer and the serving query against real HDFS and Spark.

Events reach the landing zone through the real ingest: produced to Kafka, then landed by
``lambdaflow.ingest.run_stream`` (bounded, in this process, on the test's SparkSession), with one
malformed record per partition per commit that the ingest quarantines. Expectations are computed
from the same events in plain Python.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pytest
from kafka import KafkaProducer
from pyspark.testing import assertDataFrameEqual

from lambdaflow import batch, hdfs, ingest, landing, serving, views
from lambdaflow.jvm_fs import JvmFs

pytestmark = pytest.mark.integration

HOUR = batch.HOUR_MS
NOW_HOUR = batch.floor_hour(int(time.time() * 1000))
H0 = NOW_HOUR - 30 * HOUR  # four simulated hours, well in the past
PRODUCTS = [f"Product {i}" for i in range(4)]
ACTIONS = ["page_view"] * 6 + ["add_to_cart"] * 3 + ["purchase"]
ACTIVITY = "product string, timestamp_hour long, purchase_count long, add_to_cart_count long, page_view_count long"
VISITORS = "product string, timestamp_hour long, unique_visitors long"
ACTIVITY_COLUMNS = [c.split()[0] for c in ACTIVITY.split(", ")]


class CrashAfterCommitPoint(Exception):
    """Raised by the ingest's test hook right after a batch's manifest is written, before any file moves."""


class LandingWriter:
    """Lands events through the real ingest (Kafka -> ``run_stream`` -> landing zone) and keeps the truth."""

    def __init__(self, spark, settings, seed: int = 11):
        self.spark, self.settings = spark, settings
        self.rng = random.Random(seed)
        self.producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
        self.rows: list[dict] = []  # every event that must land: the ground truth

    def close(self) -> None:
        self.producer.close()

    def events(self, hour: int, n: int, visitors: int = 60) -> list[tuple[int, str, str, str]]:
        return [(hour + self.rng.randrange(HOUR), self.rng.choice(PRODUCTS), self.rng.choice(ACTIONS),
                 f"visitor-{self.rng.randrange(visitors)}") for _ in range(n)]

    def send(self, events: list[tuple[int, str, str, str]], malformed: bool = True) -> None:
        """Produce the events round-robin over the 3 partitions, then (``malformed``) one record per
        partition the ingest must quarantine."""
        for i, (ts, product, action, visitor) in enumerate(events):
            event = {"timestamp": ts, "referrer": "https://example.org", "action": action, "prev_page": None,
                     "visitor": visitor, "page": f"/p/{product}", "product": product}
            self.producer.send(self.settings.topic, key=visitor.encode(), value=json.dumps(event).encode(),
                               partition=i % 3)
            self.rows.append({"timestamp": ts, "action": action, "visitor": visitor, "product": product,
                              "timestamp_hour": batch.floor_hour(ts)})
        if malformed:
            for partition in range(3):
                self.producer.send(self.settings.topic, value=b"not json", partition=partition)
        self.producer.flush()

    def ingest(self, max_per_batch: int | None = None) -> dict:
        """The real ingest, bounded: lands everything Kafka holds, ``max_per_batch`` records per micro-batch."""
        return ingest.run_stream(self.settings, available_now=True, trigger_interval="0 seconds",
                                 max_offsets_per_trigger=max_per_batch)

    def commit(self, events: list[tuple[int, str, str, str]]) -> None:
        """Land one micro-batch of events."""
        self.send(events)
        totals = self.ingest()
        assert totals["batches"] == 1, totals

    def commit_without_moving(self, events: list[tuple[int, str, str, str]], monkeypatch) -> None:
        """Land one micro-batch but crash right after its commit point: the manifest is written, its
        files are still staged (see :meth:`move`)."""
        def crash(committer, step: str) -> None:
            if step == "manifest_written":
                raise CrashAfterCommitPoint(step)

        self.send(events)
        with monkeypatch.context() as patch:
            patch.setattr(ingest.LandingCommitter, "_test_pause", crash)
            with pytest.raises(Exception, match="CrashAfterCommitPoint"):
                self.ingest()

    def move(self) -> None:
        """The ingest's recovery after that crash: committed batches rolled forward."""
        ingest.LandingCommitter(self.spark, self.settings, JvmFs(self.spark, self.settings.hdfs_url)).recover()
        client = hdfs.client(self.settings)
        assert hdfs.list_names(client, f"{self.settings.landing_path}/{landing.STAGING}") == []

    def land_hours(self, hours: list[int], per_hour: int = 300, batches: int = 3) -> None:
        """Events of several hours over several micro-batches, each batch spanning all the hours."""
        events = [e for h in hours for e in self.events(h, per_hour)]
        self.rng.shuffle(events)
        self.send(events)
        totals = self.ingest(max_per_batch=-(-(len(events) + 3) // batches))
        assert totals["batches"] >= batches, totals

    # -- ground truth ------------------------------------------------------------------------
    def activity(self, hours=None) -> list[tuple]:
        counts: dict[tuple, Counter] = defaultdict(Counter)
        for r in self.rows:
            if hours is None or r["timestamp_hour"] in hours:
                counts[(r["product"], r["timestamp_hour"])][r["action"]] += 1
        return [(p, h, c["purchase"], c["add_to_cart"], c["page_view"]) for (p, h), c in counts.items()]

    def visitors(self, hours=None) -> list[tuple]:
        seen: dict[tuple, set] = defaultdict(set)
        for r in self.rows:
            if hours is None or r["timestamp_hour"] in hours:
                seen[(r["product"], r["timestamp_hour"])].add(r["visitor"])
        return [(p, h, len(v)) for (p, h), v in seen.items()]

    def landed(self, hour: int) -> int:
        return sum(1 for r in self.rows if r["timestamp_hour"] == hour)


def args(**kw) -> argparse.Namespace:
    base = {"hour": None, "start": None, "end": None, "all": False, "late": True, "compact": False}
    return argparse.Namespace(**{**base, **kw})


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def interval(start: int, end: int) -> argparse.Namespace:
    return args(start=at(start), end=at(end))


def batch_view(spark, settings, view: str, version: int = 1):
    return spark.read.parquet(settings.uri(f"{settings.batch_root}/{view}/v{version}"))


@pytest.fixture
def writer(spark, isolated) -> LandingWriter:
    writer = LandingWriter(spark, isolated)
    yield writer
    writer.close()


def test_recompute_equals_independent_computation_and_rerun_changes_nothing(spark, isolated, writer) -> None:
    hours = [H0 + i * HOUR for i in range(4)]
    writer.land_hours(hours)
    records = batch.execute(spark, isolated, interval(H0, H0 + 4 * HOUR))

    assert [r["timestamp_hour"] for r in records] == hours
    assert [r["landed_rows"] for r in records] == [writer.landed(h) for h in hours]
    activity = batch_view(spark, isolated, "activity_by_product").select(*ACTIVITY_COLUMNS)
    assertDataFrameEqual(activity, spark.createDataFrame(writer.activity(), ACTIVITY))
    visitors = batch_view(spark, isolated, "visitors_by_product").select("product", "timestamp_hour", "unique_visitors")
    assertDataFrameEqual(visitors, spark.createDataFrame(writer.visitors(), VISITORS))
    # The contract path itself reads as the current views (old versions never linger beside them).
    assert spark.read.parquet(isolated.uri(f"{isolated.batch_root}/activity_by_product")).count() == activity.count()

    before = (activity.collect(), visitors.collect())
    again = batch.execute(spark, isolated, interval(H0, H0 + 4 * HOUR))
    assertDataFrameEqual(batch_view(spark, isolated, "activity_by_product").select(activity.columns), before[0])
    assertDataFrameEqual(batch_view(spark, isolated, "visitors_by_product").select(visitors.columns), before[1])
    assert [r["landed_rows"] for r in again] == [r["landed_rows"] for r in records]

    status = batch.state(batch.web_store(isolated), isolated)
    assert status["version"] == 1 and status["hours"] == hours and status["watermark"] == hours[-1]
    for hour in hours:
        checked = batch.validate_hour(isolated, hour)
        assert checked["landed_rows"] == checked["landed_rows_at_rest"] == writer.landed(hour)
        assert checked["late_rows_since_recompute"] == 0


def test_only_the_requested_hours_are_replaced(spark, isolated, writer) -> None:
    writer.land_hours([H0, H0 + HOUR])
    batch.execute(spark, isolated, args(hour=at(H0 + 25 * 60_000)))  # any time inside the hour
    hours_written = {r["timestamp_hour"] for r in batch_view(spark, isolated, "activity_by_product").collect()}
    assert hours_written == {H0}
    assert batch.state(batch.web_store(isolated), isolated)["hours"] == [H0]


def test_a_replayed_range_landed_twice_is_counted_once(spark, isolated, writer) -> None:
    writer.land_hours([H0], per_hour=200, batches=2)
    fs = batch.BatchFs(isolated)
    live = batch.landing_hour_path(isolated, H0)
    original = next(f.name for f in fs.entries(live) if batch.is_data_file(f.name))
    copy = f"{isolated.landing_path}/_copy"
    spark.read.parquet(isolated.uri(f"{live}/{original}")).coalesce(1).write.parquet(isolated.uri(copy))
    fs.rename(next(p for p in fs.list(copy) if p.endswith(".parquet")), f"{live}/part-duplicate.snappy.parquet")
    assert spark.read.parquet(isolated.uri(live)).count() > writer.landed(H0)

    records = batch.execute(spark, isolated, interval(H0, H0 + HOUR))
    assert records[0]["landed_rows"] == writer.landed(H0)
    assertDataFrameEqual(batch_view(spark, isolated, "activity_by_product").select(*ACTIVITY_COLUMNS),
                         spark.createDataFrame(writer.activity(), ACTIVITY))
    assertDataFrameEqual(batch_view(spark, isolated, "visitors_by_product").select(
        "product", "timestamp_hour", "unique_visitors"), spark.createDataFrame(writer.visitors(), VISITORS))


def test_late_events_are_recomputed_by_the_next_run(spark, isolated, writer) -> None:
    hours = [H0, H0 + HOUR, H0 + 2 * HOUR]
    writer.land_hours(hours)
    batch.execute(spark, isolated, interval(H0, H0 + 3 * HOUR))
    first = {h: batch.read_hour_record(batch.web_store(isolated), isolated, 1, h) for h in hours}

    writer.commit(writer.events(H0, 40) + writer.events(H0 + 3 * HOUR, 200))  # late for H0, on time for H0+3h
    checked = batch.validate_hour(isolated, H0)
    assert checked["late_rows_since_recompute"] == 40  # seen at rest, not yet in the views

    records = batch.execute(spark, isolated, args(hour=at(H0 + 3 * HOUR)))
    assert [r["timestamp_hour"] for r in records] == [H0, H0 + 3 * HOUR]  # H0+1h, H0+2h untouched
    assert records[0]["landed_rows"] == first[H0]["landed_rows"] + 40 == writer.landed(H0)
    activity = batch_view(spark, isolated, "activity_by_product").select(*ACTIVITY_COLUMNS)
    assertDataFrameEqual(activity, spark.createDataFrame(writer.activity(), ACTIVITY))
    assertDataFrameEqual(batch_view(spark, isolated, "visitors_by_product").select(
        "product", "timestamp_hour", "unique_visitors"), spark.createDataFrame(writer.visitors(), VISITORS))
    # Nothing changed since: the next run finds no late hour.
    fs = batch.BatchFs(isolated)
    assert batch.late_hours(spark, fs, isolated, 1) == []


def test_late_events_for_an_hour_two_days_old_are_exact_after_one_ordinary_run(spark, isolated, writer) -> None:
    old, new = NOW_HOUR - 49 * HOUR, NOW_HOUR - 2 * HOUR  # far beyond any look-back window
    writer.land_hours([old], per_hour=150, batches=1)
    batch.execute(spark, isolated, args(hour=at(old)))
    product = PRODUCTS[0]

    writer.commit(writer.events(old, 60) + writer.events(new, 40))  # old timestamps, produced now
    batch.execute(spark, isolated, args(hour=at(new)))  # the ordinary hourly run of a recent hour
    truth = {h: (p_, a, v) for (p, h, p_, a, v) in writer.activity() if p == product}
    rows = serving.query(spark, isolated, "activity", product, old, old + HOUR)
    assert [(r["layer"], (r["purchase_count"], r["add_to_cart_count"], r["page_view_count"])) for r in rows] == [
        ("batch", truth[old])]
    landed_now = spark.read.parquet(isolated.uri(batch.landing_hour_path(isolated, old))).count()
    assert batch.read_hour_record(batch.web_store(isolated), isolated, 1, old)["landed_rows"] == landed_now == 210
    # --no-late leaves late hours alone
    writer.commit(writer.events(old, 5))
    assert [r["timestamp_hour"] for r in batch.execute(spark, isolated, args(hour=at(new), late=False))] == [new]


def test_a_batch_still_moving_its_files_during_a_recompute_is_caught_as_late(spark, isolated, writer,
                                                                            monkeypatch) -> None:
    writer.land_hours([H0], per_hour=120, batches=2)
    writer.commit_without_moving(writer.events(H0, 30), monkeypatch)  # committed, files not in place yet
    records = batch.execute(spark, isolated, interval(H0, H0 + HOUR))
    assert records[0]["landed_rows"] == writer.landed(H0) - 30
    writer.move()

    records = batch.execute(spark, isolated, args(hour=at(H0 + HOUR)))
    assert [r["timestamp_hour"] for r in records] == [H0, H0 + HOUR]
    assert records[0]["landed_rows"] == writer.landed(H0)


def test_serving_query_cuts_over_from_batch_to_speed_without_gap_or_overlap(spark, isolated, writer,
                                                                             monkeypatch, capsys) -> None:
    hours = [H0 + i * HOUR for i in range(4)]
    writer.land_hours(hours, per_hour=400)
    batch.execute(spark, isolated, interval(H0, H0 + 2 * HOUR))  # the batch layer covers the first two hours
    product = PRODUCTS[1]
    truth_activity = {h: (p_, a, v) for (p, h, p_, a, v) in writer.activity() if p == product}
    truth_visitors = {h: n for (p, h, n) in writer.visitors() if p == product}

    rows = serving.query(spark, isolated, "activity", product, H0 - HOUR, H0 + 5 * HOUR)
    assert [(r["timestamp_hour"], r["layer"]) for r in rows] == [
        (H0, "batch"), (H0 + HOUR, "batch"), (H0 + 2 * HOUR, "speed"), (H0 + 3 * HOUR, "speed")]
    for r in rows:  # activity counts are exact in both layers
        counts = (r["purchase_count"], r["add_to_cart_count"], r["page_view_count"])
        assert counts == truth_activity[r["timestamp_hour"]]

    rows = serving.query(spark, isolated, "visitors", product, H0, H0 + 4 * HOUR)
    assert [r["layer"] for r in rows] == ["batch", "batch", "speed", "speed"]
    sigma = views.hll_relative_error(views.DEFAULT_LG_CONFIG_K)
    for r in rows:
        truth = truth_visitors[r["timestamp_hour"]]
        if r["layer"] == "batch":
            assert r["unique_visitors"] == truth
        else:
            assert abs(r["unique_visitors"] - truth) <= max(1.0, 3 * sigma * truth)

    monkeypatch.setenv("LAMBDAFLOW_ROOT", isolated.root)
    monkeypatch.setenv("LAMBDAFLOW_TOPIC", isolated.topic)
    parser = argparse.ArgumentParser()
    serving.add_arguments(parser)
    cli = parser.parse_args(["activity", "--product", product, "--from", batch.iso(H0), "--to",
                             batch.iso(H0 + 4 * HOUR), "--json"])
    capsys.readouterr()  # the recomputation's progress output
    assert serving.run(cli) == 0
    document = json.loads(capsys.readouterr().out)
    assert [(r["timestamp_hour"], r["page_view_count"], r["layer"]) for r in document["rows"]] == [
        (h, truth_activity[h][2], "batch" if h < H0 + 2 * HOUR else "speed") for h in hours]


def _coordinates(spark, settings, hour: int) -> list[tuple]:
    path = settings.uri(batch.landing_hour_path(settings, hour))
    return sorted(tuple(r) for r in spark.read.parquet(path).select(*batch.LANDING_KEY).collect())


def test_a_failed_hour_is_served_by_the_speed_layer_and_does_not_stop_the_watermark(
        spark, isolated, writer, monkeypatch) -> None:
    hours = [H0, H0 + HOUR, H0 + 2 * HOUR]
    writer.land_hours(hours, per_hour=100, batches=1)
    batch.execute(spark, isolated, interval(H0, H0 + HOUR))
    recompute = batch.recompute_hours

    def failing(spark_, settings, version, todo, log=print):
        if H0 + HOUR in todo:
            raise RuntimeError("executor lost")
        return recompute(spark_, settings, version, todo, log)

    monkeypatch.setattr(batch.cli, "recompute_hours", failing)  # the module that calls it
    with pytest.raises(RuntimeError, match="executor lost"):
        batch.execute(spark, isolated, args(hour=at(H0 + HOUR)))
    batch.execute(spark, isolated, args(hour=at(H0 + 2 * HOUR)))  # the next hour's run succeeds
    status = batch.state(batch.web_store(isolated), isolated)
    assert status["failed"] == [H0 + HOUR] and status["watermark"] == H0 + 2 * HOUR

    product = PRODUCTS[2]
    truth = {h: (p_, a, v) for (p, h, p_, a, v) in writer.activity() if p == product}
    rows = serving.query(spark, isolated, "activity", product, H0, H0 + 3 * HOUR)
    assert [(r["timestamp_hour"], r["layer"], r.get("batch_failed", False)) for r in rows] == [
        (H0, "batch", False), (H0 + HOUR, "speed", True), (H0 + 2 * HOUR, "batch", False)]
    assert all((r["purchase_count"], r["add_to_cart_count"], r["page_view_count"]) == truth[r["timestamp_hour"]]
               for r in rows)

    monkeypatch.undo()
    batch.execute(spark, isolated, args(hour=at(H0 + HOUR)))  # a run succeeds: back to the batch layer
    assert batch.state(batch.web_store(isolated), isolated)["failed"] == []
    rows = serving.query(spark, isolated, "activity", product, H0, H0 + 3 * HOUR)
    assert [(r["layer"], "batch_failed" in r) for r in rows] == [("batch", False)] * 3


def test_compaction_keeps_exactly_the_same_kafka_records(spark, isolated, writer) -> None:
    for _ in range(6):
        writer.send(writer.events(H0, 50))
    assert writer.ingest(max_per_batch=53)["batches"] == 6
    fs = batch.BatchFs(isolated)
    live = batch.landing_hour_path(isolated, H0)
    files_before = [f for f in fs.entries(live) if batch.is_data_file(f.name)]
    coordinates = _coordinates(spark, isolated, H0)
    assert len(files_before) >= 6 and len(coordinates) == 300

    done = batch.compact_hour(spark, isolated, H0)
    assert done == {"timestamp_hour": H0, "old_files": len(files_before), "new_files": 1}
    assert [f.name for f in fs.entries(live) if batch.is_data_file(f.name)][0].startswith("part-compacted-")
    assert _coordinates(spark, isolated, H0) == coordinates
    assert not fs.exists(batch.compaction_record_path(isolated, H0))
    assert batch.compact_hour(spark, isolated, H0) is None  # nothing left to compact

    records = batch.execute(spark, isolated, interval(H0, H0 + HOUR))
    assert records[0]["landed_rows"] == 300
    assertDataFrameEqual(batch_view(spark, isolated, "activity_by_product").select(*ACTIVITY_COLUMNS),
                         spark.createDataFrame(writer.activity(), ACTIVITY))


def test_a_compaction_interrupted_after_its_commit_is_rolled_forward(spark, isolated, writer, monkeypatch) -> None:
    for _ in range(4):
        writer.send(writer.events(H0, 50))
    assert writer.ingest(max_per_batch=53)["batches"] == 4
    coordinates = _coordinates(spark, isolated, H0)
    finish = batch.finish_committed_compaction

    def crash_midway(fs, settings, hour, log=print) -> bool:
        record = fs.read_json(batch.compaction_record_path(settings, hour))
        if record is None:
            return finish(fs, settings, hour, log)
        for name in record["old"]:  # the old files are gone, the new ones not moved yet: then the crash
            fs.delete(f"{batch.landing_hour_path(settings, hour)}/{name}", recursive=False)
        raise RuntimeError("crash")

    monkeypatch.setattr(batch.compaction, "finish_committed_compaction", crash_midway)
    with pytest.raises(RuntimeError, match="crash"):
        batch.compact_hour(spark, isolated, H0)
    monkeypatch.undo()
    fs = batch.BatchFs(isolated)
    assert fs.exists(batch.compaction_record_path(isolated, H0))
    assert not [f for f in fs.entries(batch.landing_hour_path(isolated, H0)) if batch.is_data_file(f.name)]

    records = batch.execute(spark, isolated, interval(H0, H0 + HOUR))  # a reader rolls it forward first
    assert records[0]["landed_rows"] == 200
    assert _coordinates(spark, isolated, H0) == coordinates
    assert not fs.exists(batch.compaction_record_path(isolated, H0))
    assert not fs.exists(f"{batch.compaction_staging_path(isolated, H0)}.lock")


def test_full_recomputation_builds_a_new_version_and_switches_readers(spark, isolated, writer) -> None:
    hours = [H0, H0 + HOUR, H0 + 3 * HOUR]  # H0+2h has no events: still covered, as an empty hour
    writer.land_hours(hours)
    batch.execute(spark, isolated, interval(H0, H0 + HOUR))
    # With the wall clock inside the newest landed hour, that hour is still open: never recorded.
    early = batch.recompute_all(spark, isolated, now_ms=H0 + 3 * HOUR + 600_000)
    assert [r["timestamp_hour"] for r in early] == [H0, H0 + HOUR, H0 + 2 * HOUR]
    assert batch.state(batch.web_store(isolated), isolated)["hours"] == [H0, H0 + HOUR, H0 + 2 * HOUR]
    records = batch.execute(spark, isolated, args(all=True))

    assert [r["timestamp_hour"] for r in records] == [H0 + i * HOUR for i in range(4)]
    assert [r["landed_rows"] for r in records] == [writer.landed(H0), writer.landed(H0 + HOUR), 0,
                                                   writer.landed(H0 + 3 * HOUR)]
    store = batch.web_store(isolated)
    assert batch.current_version(store, isolated) == 3
    versions = store.list_names(f"{isolated.batch_root}/activity_by_product")
    assert [n for n in versions if batch.is_data_file(n)] == ["v3"]
    assert batch.state(store, isolated)["watermark"] == H0 + 3 * HOUR
    assertDataFrameEqual(batch_view(spark, isolated, "visitors_by_product", 3).select(
        "product", "timestamp_hour", "unique_visitors"), spark.createDataFrame(writer.visitors(), VISITORS))
    rows = serving.query(spark, isolated, "activity", PRODUCTS[0], H0, H0 + 4 * HOUR)
    assert {r["layer"] for r in rows} == {"batch"} and len(rows) == 3


def test_completeness_sensor_waits_until_the_landing_zone_reaches_the_log_end(spark, isolated, writer) -> None:
    client = hdfs.client(isolated)
    writer.commit(writer.events(H0, 24))  # 8 events and 1 malformed record per partition: offsets [0, 9)
    writer.send(writer.events(H0, 3), malformed=False)  # one more per partition, not landed yet

    open_hour = batch.floor_hour(int(time.time() * 1000))  # now, not at import: the suite may cross an hour
    done, reason = batch.landing_complete(isolated, open_hour, open_hour + HOUR, 0, client)
    assert not done and "still open" in reason  # the current hour has not closed
    assert hdfs.read_json(client, batch.observation_path(isolated, open_hour)) is None

    done, reason = batch.landing_complete(isolated, H0, H0 + HOUR, 0, client)
    assert not done and "behind" in reason and "{0: 1, 1: 1, 2: 1}" in reason
    observed = hdfs.read_json(client, batch.observation_path(isolated, H0))
    assert observed["log_end_offsets"] == {"0": 10, "1": 10, "2": 10}

    assert writer.ingest()["batches"] == 1  # positions reach 10 everywhere
    assert batch.landing_complete(isolated, H0, H0 + HOUR, 0, client)[0]
    # the lateness counts from the hour's end: 29 h ago is past 1 h of lateness, not past 40 h
    assert batch.landing_complete(isolated, H0, H0 + HOUR, 3600, client)[0]
    done, reason = batch.landing_complete(isolated, H0, H0 + HOUR, 40 * 3600, client)
    assert not done and "allowed lateness" in reason


def _nested_hour_dirs(fs, settings) -> list[str]:
    """Directories of the batch views below a ``timestamp_hour=`` directory (partition discovery breaks)."""
    nested = []
    for view in batch.VIEWS:
        for version in fs.list(f"{settings.batch_root}/{view}"):
            for hour_dir in fs.list(version):
                nested += [p for p in fs.list(hour_dir) if "timestamp_hour=" in p.rsplit("/", 1)[1]]
    return nested


def test_hour_locks_exclude_wait_and_take_over_a_dead_holder(spark, isolated) -> None:
    import threading

    fs = batch.BatchFs(isolated)
    order: list[str] = []
    first = batch.HourLocks(fs, isolated, [H0, H0 + HOUR], log=order.append)
    first.__enter__()
    assert fs.exists(batch.hour_lock_path(isolated, H0))
    with pytest.raises(batch.LockTimeout):
        with batch.HourLocks(fs, isolated, [H0 + HOUR], log=order.append, wait_s=0.5, poll_s=0.1):
            pass

    def second() -> None:
        with batch.HourLocks(fs, isolated, [H0], log=order.append, poll_s=0.1):
            order.append("second holds")

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(1.0)
    order.append("first releases")
    first.__exit__(None, None, None)
    thread.join(timeout=30)
    assert order.index("first releases") < order.index("second holds")
    assert fs.list(f"{isolated.batch_root}/_locks") == []

    fs.create_new(batch.hour_lock_path(isolated, H0), json.dumps({"token": "dead"}))
    fs.touch(batch.hour_lock_path(isolated, H0), int(time.time() * 1000) - 120_000)  # no heartbeat for 2 min
    with batch.HourLocks(fs, isolated, [H0], log=order.append, stale_s=60, wait_s=1):
        assert json.loads(fs.read_text(batch.hour_lock_path(isolated, H0)))["token"] != "dead"


def test_replacing_an_hour_never_nests_its_directory(spark, isolated) -> None:
    fs = batch.BatchFs(isolated)
    root = f"{isolated.batch_root}/swap"
    live, staged = f"{root}/v1/timestamp_hour={H0}", f"{root}/_staging/r1/timestamp_hour={H0}"
    fs.write_text(f"{live}/old.parquet", "old")
    fs.write_text(f"{staged}/new.parquet", "new")
    batch._replace_dir(fs, staged, live, f"{root}/_trash/r1/timestamp_hour={H0}")
    assert fs.list(live) == [f"{live}/new.parquet"] and not fs.exists(staged)
    # A directory that is in the way is never entered: the swap fails instead of nesting.
    fs.write_text(f"{staged}/newer.parquet", "newer")
    with pytest.raises(Exception):
        fs.replace(staged, live)
    assert fs.list(live) == [f"{live}/new.parquet"]


def test_concurrent_recomputes_of_the_same_hours_end_with_the_right_views(spark, isolated, writer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    hours = [H0, H0 + HOUR]
    writer.land_hours(hours, per_hour=120, batches=1)
    logs: list[str] = []
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = [pool.submit(batch.execute, spark, isolated, interval(H0, H0 + 2 * HOUR), logs.append),
                pool.submit(batch.execute, spark, isolated, args(hour=at(H0 + HOUR)), logs.append),
                pool.submit(batch.compact_hour, spark, isolated, H0, log=logs.append)]
        results = [r.result(timeout=900) for r in runs]
    assert [r["landed_rows"] for r in results[0]] == [writer.landed(h) for h in hours]
    fs = batch.BatchFs(isolated)
    assert _nested_hour_dirs(fs, isolated) == []
    assert fs.list(f"{isolated.batch_root}/_locks") == []
    assertDataFrameEqual(batch_view(spark, isolated, "activity_by_product").select(*ACTIVITY_COLUMNS),
                         spark.createDataFrame(writer.activity(), ACTIVITY))
    assertDataFrameEqual(batch_view(spark, isolated, "visitors_by_product").select(
        "product", "timestamp_hour", "unique_visitors"), spark.createDataFrame(writer.visitors(), VISITORS))
    assert batch.state(batch.web_store(isolated), isolated)["hours"] == hours
