"""The batch layer and the serving query against real HDFS and Spark.

Landed events are written the way the ingest commits a micro-batch (``lambdaflow.landing``): files
staged, the offset-range manifest written, the files moved to ``timestamp_hour=<h>/part-<key>-<n>``,
together with the speed-view partials. Expectations are computed from the same events in plain Python.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pytest
from pyspark.testing import assertDataFrameEqual

from lambdaflow import batch, hdfs, landing, serving, views
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


class LandingWriter:
    """Commits micro-batches of events to an isolated landing zone as the ingest does."""

    def __init__(self, spark, settings, seed: int = 11):
        self.spark, self.settings = spark, settings
        self.fs = JvmFs(spark, settings.hdfs_url)
        self.rng = random.Random(seed)
        self.next_offset = defaultdict(int)
        self.rows: list[dict] = []  # every landed row: the ground truth

    def events(self, hour: int, n: int, visitors: int = 60) -> list[tuple[int, str, str, str]]:
        return [(hour + self.rng.randrange(HOUR), self.rng.choice(PRODUCTS), self.rng.choice(ACTIONS),
                 f"visitor-{self.rng.randrange(visitors)}") for _ in range(n)]

    def commit(self, events: list[tuple[int, str, str, str]], move: bool = True) -> str:
        """Land one micro-batch; one offset per partition is left out of the rows (a quarantined record).

        ``move=False`` stops after the commit point, before the files move into place (see :meth:`move`)."""
        rows = []
        for i, (ts, product, action, visitor) in enumerate(events):
            partition = i % 3
            offset = self.next_offset[partition]
            self.next_offset[partition] += 1
            rows.append({"timestamp": ts, "referrer": "https://example.org", "action": action, "prev_page": None,
                         "visitor": visitor, "page": f"/p/{product}", "product": product,
                         "timestamp_hour": batch.floor_hour(ts), "topic": self.settings.topic,
                         "kafka_partition": partition, "kafka_offset": offset, "kafka_timestamp": None})
        starts = {p: min(r["kafka_offset"] for r in rows if r["kafka_partition"] == p) for p in range(3)}
        ranges = [landing.OffsetRange(p, starts[p], self.next_offset[p] + 1) for p in range(3)]
        for p in range(3):
            self.next_offset[p] += 1  # the quarantined record's offset
        key = landing.commit_key(ranges)
        stage = f"{self.settings.landing_path}/{landing.STAGING}/{key}"
        uri = self.settings.uri
        df = self.spark.createDataFrame(rows, batch.landing_schema())
        df.write.partitionBy("timestamp_hour").parquet(uri(f"{stage}/landing"))
        views.speed_activity_partial(df).coalesce(1).write.partitionBy("timestamp_hour").parquet(
            uri(f"{stage}/activity_by_product"))
        views.speed_visitors_partial(df).coalesce(1).write.partitionBy("timestamp_hour").parquet(
            uri(f"{stage}/visitors_by_product"))
        targets = {"landing": self.settings.landing_path,
                   "activity_by_product": f"{self.settings.speed_root}/activity_by_product",
                   "visitors_by_product": f"{self.settings.speed_root}/visitors_by_product"}
        moves = []
        for kind, target in targets.items():
            staged = [p for p in self.fs.list_files_recursive(f"{stage}/{kind}") if p.endswith(".parquet")]
            for n, path in enumerate(staged):
                hour_dir = path[len(f"{stage}/{kind}"):].rsplit("/", 1)[0]
                moves.append({"kind": kind, "staged": path,
                              "final": f"{target}{hour_dir}/part-{key}-{n}.snappy.parquet"})
        hours = Counter(r["timestamp_hour"] for r in rows)
        manifest = landing.manifest_document(self.settings.topic, ranges, moves, len(rows), 3, dict(hours),
                                             int(time.time() * 1000))
        self.fs.write_atomic(f"{self.settings.landing_path}/{landing.MANIFESTS}/{key}.json", landing.dumps(manifest))
        self.rows += rows
        if move:
            self.move(key)
        return key

    def move(self, key: str) -> None:
        """The end of a commit: the staged files to their final places, then the staging directory goes."""
        manifest = json.loads(self.fs.read_text(f"{self.settings.landing_path}/{landing.MANIFESTS}/{key}.json"))
        for f in manifest["files"]:
            self.fs.rename(f["staged"], f["final"])
        self.fs.delete(f"{self.settings.landing_path}/{landing.STAGING}/{key}")

    def land_hours(self, hours: list[int], per_hour: int = 300, batches: int = 3) -> None:
        """Events of several hours over several micro-batches, each batch spanning all the hours."""
        events = [e for h in hours for e in self.events(h, per_hour)]
        self.rng.shuffle(events)
        size = -(-len(events) // batches)
        for i in range(0, len(events), size):
            self.commit(events[i:i + size])

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
    base = {"hour": None, "start": None, "end": None, "all": False, "late_lookback_hours": 0, "compact": False}
    return argparse.Namespace(**{**base, **kw})


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def interval(start: int, end: int) -> argparse.Namespace:
    return args(start=at(start), end=at(end))


def batch_view(spark, settings, view: str, version: int = 1):
    return spark.read.parquet(settings.uri(f"{settings.batch_root}/{view}/v{version}"))


@pytest.fixture
def writer(spark, isolated) -> LandingWriter:
    return LandingWriter(spark, isolated)


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
    fs = batch.BatchFs(spark, isolated)
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

    records = batch.execute(spark, isolated, args(hour=at(H0 + 3 * HOUR), late_lookback_hours=6))
    assert [r["timestamp_hour"] for r in records] == [H0, H0 + 3 * HOUR]  # H0+1h, H0+2h untouched
    assert records[0]["landed_rows"] == first[H0]["landed_rows"] + 40 == writer.landed(H0)
    activity = batch_view(spark, isolated, "activity_by_product").select(*ACTIVITY_COLUMNS)
    assertDataFrameEqual(activity, spark.createDataFrame(writer.activity(), ACTIVITY))
    assertDataFrameEqual(batch_view(spark, isolated, "visitors_by_product").select(
        "product", "timestamp_hour", "unique_visitors"), spark.createDataFrame(writer.visitors(), VISITORS))
    # Nothing changed since: the next run finds no late hour.
    fs = batch.BatchFs(spark, isolated)
    assert batch.late_hours(spark, fs, isolated, 1, H0 + 4 * HOUR, 6) == []


def test_a_batch_still_moving_its_files_during_a_recompute_is_caught_as_late(spark, isolated, writer) -> None:
    writer.land_hours([H0], per_hour=120, batches=2)
    key = writer.commit(writer.events(H0, 30), move=False)  # committed, files not in place yet
    records = batch.execute(spark, isolated, interval(H0, H0 + HOUR))
    assert records[0]["landed_rows"] == writer.landed(H0) - 30
    writer.move(key)

    records = batch.execute(spark, isolated, args(hour=at(H0 + HOUR), late_lookback_hours=2))
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


def test_compaction_keeps_exactly_the_same_kafka_records(spark, isolated, writer) -> None:
    for _ in range(6):
        writer.commit(writer.events(H0, 50))
    fs = batch.BatchFs(spark, isolated)
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
        writer.commit(writer.events(H0, 50))
    coordinates = _coordinates(spark, isolated, H0)
    finish = batch.finish_committed_compaction

    def crash_midway(fs, settings, hour, log=print) -> bool:
        record = fs.read_json(batch.compaction_record_path(settings, hour))
        if record is None:
            return finish(fs, settings, hour, log)
        for name in record["old"]:  # the old files are gone, the new ones not moved yet: then the crash
            fs.delete(f"{batch.landing_hour_path(settings, hour)}/{name}", recursive=False)
        raise RuntimeError("crash")

    monkeypatch.setattr(batch, "finish_committed_compaction", crash_midway)
    with pytest.raises(RuntimeError, match="crash"):
        batch.compact_hour(spark, isolated, H0)
    monkeypatch.undo()
    fs = batch.BatchFs(spark, isolated)
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
    records = batch.execute(spark, isolated, args(all=True))

    assert [r["timestamp_hour"] for r in records] == [H0 + i * HOUR for i in range(4)]
    assert [r["landed_rows"] for r in records] == [writer.landed(H0), writer.landed(H0 + HOUR), 0,
                                                   writer.landed(H0 + 3 * HOUR)]
    store = batch.web_store(isolated)
    assert batch.current_version(store, isolated) == 2
    versions = store.list_names(f"{isolated.batch_root}/activity_by_product")
    assert [n for n in versions if batch.is_data_file(n)] == ["v2"]
    assert batch.state(store, isolated)["watermark"] == H0 + 3 * HOUR
    assertDataFrameEqual(batch_view(spark, isolated, "visitors_by_product", 2).select(
        "product", "timestamp_hour", "unique_visitors"), spark.createDataFrame(writer.visitors(), VISITORS))
    rows = serving.query(spark, isolated, "activity", PRODUCTS[0], H0, H0 + 4 * HOUR)
    assert {r["layer"] for r in rows} == {"batch"} and len(rows) == 3


def test_completeness_sensor_waits_until_the_landing_zone_reaches_the_log_end(spark, isolated, writer) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=isolated.kafka_bootstrap)
    for i in range(30):
        producer.send(isolated.topic, value=b"{}", partition=i % 3)
    producer.flush()
    producer.close()
    client = hdfs.client(isolated)

    done, reason = batch.landing_complete(isolated, NOW_HOUR, NOW_HOUR + HOUR, 0, client)
    assert not done and "still open" in reason  # the current hour has not closed
    assert hdfs.read_json(client, batch.observation_path(isolated, NOW_HOUR)) is None

    done, reason = batch.landing_complete(isolated, H0, H0 + HOUR, 0, client)
    assert not done and "behind" in reason
    observed = hdfs.read_json(client, batch.observation_path(isolated, H0))
    assert observed["log_end_offsets"] == {"0": 10, "1": 10, "2": 10}

    writer.commit(writer.events(H0, 24))  # lands offsets [0, 9) of each partition: still one short
    done, reason = batch.landing_complete(isolated, H0, H0 + HOUR, 0, client)
    assert not done and "{0: 1, 1: 1, 2: 1}" in reason
    writer.commit(writer.events(H0, 3))  # positions reach 10 everywhere
    assert batch.landing_complete(isolated, H0, H0 + HOUR, 0, client)[0]
    done, reason = batch.landing_complete(isolated, H0, H0 + HOUR, 3600, client)
    assert not done and "allowed lateness" in reason
