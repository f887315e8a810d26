"""Hour merges, retention and clean-up against real HDFS, Kafka and a local Spark.

Speed partials, quarantine files and the commit log are written by the real ingest
(``tests.integration.test_batch.LandingWriter``: produce to Kafka, then a bounded ``run_stream``), so
the files merged and removed are named and shaped exactly as in a deployment.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest

from lambdaflow import batch, hdfs, kafka_admin, maintenance, serving
from lambdaflow.storage import commit_log, hour_merge, retention
from lambdaflow.storage.fs import JvmFs
from tests.integration.test_batch import PRODUCTS, LandingWriter

pytestmark = pytest.mark.integration

H = batch.HOUR_MS
NOW_HOUR = batch.floor_hour(int(time.time() * 1000))
H0 = NOW_HOUR - 30 * H  # two event hours, long closed
H1 = H0 + H
VIEWS = ("activity_by_product", "visitors_by_product")


@pytest.fixture(scope="module")
def landed(stack, spark):
    """A landing zone of its own, with several partial files per view and hour and quarantine files."""
    suffix = uuid.uuid4().hex[:8]
    settings = stack.replace(topic=f"weblogs-maint{suffix}", root=f"/lambda-test/maint{suffix}",
                             ingest_group=f"lambdaflow-ingest-maint{suffix}")
    kafka_admin.ensure_topic(settings)
    writer = LandingWriter(spark, settings, seed=5)
    for _ in range(2):  # each send ends with one malformed record per partition: two quarantine files
        events = writer.events(H0, 100) + writer.events(H1, 100)
        writer.rng.shuffle(events)
        writer.send(events)
    totals = writer.ingest(max_per_batch=-(-406 // 3))  # every micro-batch spans both hours
    assert totals["batches"] >= 3, totals
    yield settings, writer
    writer.close()
    hdfs.client(settings).delete(settings.root, recursive=True)


def data_files(fs: JvmFs, directory: str) -> list[str]:
    return [p for p in fs.list(directory, files_only=True) if hour_merge.is_data_file(p.rsplit("/", 1)[1])]


def schema_of(settings, path: str):
    with hdfs.client(settings).read(path) as reader:
        return pq.read_schema(io.BytesIO(reader.read()))


def answers(spark, settings) -> dict:
    """The serving query's rows: activity for every product, visitors (a Spark job each) for two."""
    asked = [("activity", p) for p in PRODUCTS] + [("visitors", p) for p in PRODUCTS[:2]]
    return {(view, product): serving.query(spark, settings, view, product, H0, H1 + H) for view, product in asked}


def quarantined(spark, settings) -> list[tuple]:
    rows = spark.read.parquet(settings.uri(settings.quarantine_path)).collect()
    return sorted((r["kafka_partition"], r["kafka_offset"], r["reason"], bytes(r["value"]), r["arrival_hour"])
                  for r in rows)


def test_merging_closed_hours_gives_one_file_and_the_same_answers(landed, spark) -> None:
    settings, writer = landed
    fs = JvmFs(spark, settings.hdfs_url)
    speed = {view: f"{settings.speed_root}/{view}" for view in VIEWS}
    before_files = {view: {h: data_files(fs, f"{root}/timestamp_hour={h}") for h in (H0, H1)}
                    for view, root in speed.items()}
    assert all(len(files) >= 3 for hours in before_files.values() for files in hours.values()), before_files
    arrival = retention.partition_hours([p.rsplit("/", 1)[1] for p in fs.list(settings.quarantine_path)],
                                        "arrival_hour")
    assert arrival, "the ingest writes quarantine by arrival hour"
    quarantine_files = sum(len(data_files(fs, f"{settings.quarantine_path}/arrival_hour={h}")) for h in arrival)
    assert quarantine_files >= 2
    schemas = {view: schema_of(settings, before_files[view][H0][0]) for view in VIEWS}
    q_schema = schema_of(settings, data_files(fs, f"{settings.quarantine_path}/arrival_hour={arrival[0]}")[0])
    served, quarantine_rows = answers(spark, settings), quarantined(spark, settings)
    activity_truth = sorted(r for r in writer.activity())
    assert sorted((r["product"], r["timestamp_hour"], r["purchase_count"], r["add_to_cart_count"],
                   r["page_view_count"]) for rows in (served[("activity", p)] for p in PRODUCTS) for r in rows) \
        == activity_truth

    logs: list[str] = []
    for view, root in speed.items():
        # the open hour (NOW_HOUR) is not merged: before_ms is its start
        merged = hour_merge.merge_closed_hours(spark, fs, root, "timestamp_hour", NOW_HOUR, logs.append)
        assert merged == {h: len(before_files[view][h]) for h in (H0, H1)}
    # quarantine arrives now: its hour closes in an hour, so merge as of then
    assert set(hour_merge.merge_closed_hours(spark, fs, settings.quarantine_path, "arrival_hour",
                                             NOW_HOUR + 2 * H, logs.append)) <= set(arrival)

    for view, root in speed.items():
        for hour in (H0, H1):
            files = data_files(fs, f"{root}/timestamp_hour={hour}")
            assert [f.rsplit("/", 1)[1] for f in files] == [hour_merge.merged_name(hour, 0)]
            assert schema_of(settings, files[0]).equals(schemas[view]), "same columns, types and nullability"
    for hour in arrival:
        files = data_files(fs, f"{settings.quarantine_path}/arrival_hour={hour}")
        assert len(files) == 1 and schema_of(settings, files[0]).equals(q_schema)
    assert not fs.exists(f"{speed['activity_by_product']}/{hour_merge.MERGING}/timestamp_hour={H0}")
    assert answers(spark, settings) == served, "the serving query answers exactly as before the merge"
    assert quarantined(spark, settings) == quarantine_rows
    assert any("merged" in line for line in logs)

    # a second merge has nothing to do
    for root in speed.values():
        assert hour_merge.merge_closed_hours(spark, fs, root, "timestamp_hour", NOW_HOUR) == {}

    # a late partial arrives for H0: the next merge takes the merged file and it, under a fresh name
    writer.commit(writer.events(H0, 30))
    served = answers(spark, settings)
    assert len(data_files(fs, f"{speed['activity_by_product']}/timestamp_hour={H0}")) == 2
    assert hour_merge.merge_closed_hours(spark, fs, speed["activity_by_product"], "timestamp_hour", NOW_HOUR) == {H0: 2}
    assert [f.rsplit("/", 1)[1] for f in data_files(fs, f"{speed['activity_by_product']}/timestamp_hour={H0}")] \
        == [hour_merge.merged_name(H0, 1)]
    assert answers(spark, settings)[("activity", PRODUCTS[0])] == served[("activity", PRODUCTS[0])]


def test_an_interrupted_merge_is_rolled_forward(landed, spark) -> None:
    """A merge that died after its commit record (merged file staged, inputs still present) is
    finished by the next one: the hour ends with the merged file only, its counts not doubled."""
    settings, _ = landed
    fs = JvmFs(spark, settings.hdfs_url)
    root = f"{settings.speed_root}/activity_by_product"
    hour_dir = f"{root}/timestamp_hour={H1}"
    inputs = data_files(fs, hour_dir)
    before = serving.query(spark, settings, "activity", PRODUCTS[1], H1, H1 + H)
    run_dir = f"{root}/{hour_merge.MERGING}/timestamp_hour={H1}/dead"
    spark.read.parquet(*(settings.uri(p) for p in inputs)).coalesce(1).write.parquet(settings.uri(f"{run_dir}/data"))
    staged = data_files(fs, f"{run_dir}/data")[0]
    fs.create_new(f"{run_dir}/commit.json", json.dumps(
        {"hour": H1, "inputs": inputs, "staged": staged, "final": f"{hour_dir}/{hour_merge.merged_name(H1, 7)}"}))
    # the merged file was moved in, the inputs not yet deleted: the state a crash leaves
    fs.rename(staged, f"{hour_dir}/{hour_merge.merged_name(H1, 7)}")
    assert serving.query(spark, settings, "activity", PRODUCTS[1], H1, H1 + H) != before
    assert hour_merge.recover_merges(fs, root, "timestamp_hour")["runs"] == 1
    assert [f.rsplit("/", 1)[1] for f in data_files(fs, hour_dir)] == [hour_merge.merged_name(H1, 7)]
    assert serving.query(spark, settings, "activity", PRODUCTS[1], H1, H1 + H) == before
    assert fs.list(f"{root}/{hour_merge.MERGING}") == []


def test_files_of_a_batch_still_moving_into_place_are_not_merged(landed, spark) -> None:
    """A committed batch whose ``_staging/<key>`` still exists may be rolled forward by the ingest's
    recovery, which needs its files where the manifest says: they are left for a later merge."""
    settings, _ = landed
    fs = JvmFs(spark, settings.hdfs_url)
    root = f"{settings.speed_root}/activity_by_product"
    hour_dir = f"{root}/timestamp_hour={H0}"
    [merged] = data_files(fs, hour_dir)
    key = "0-999000-999001"
    spark.read.parquet(settings.uri(merged)).write.parquet(settings.uri(f"{settings.root}/tmp-copy"))
    fs.rename(data_files(fs, f"{settings.root}/tmp-copy")[0], f"{hour_dir}/part-{key}-0.snappy.parquet")
    staging = f"{settings.landing_path}/_staging"
    fs.mkdirs(f"{staging}/{key}/e1")
    try:
        assert hour_merge.merge_closed_hours(spark, fs, root, "timestamp_hour", NOW_HOUR, staging_dir=staging) == {}
        assert len(data_files(fs, hour_dir)) == 2
    finally:
        fs.delete(f"{staging}/{key}")
        fs.delete(f"{settings.root}/tmp-copy")
    assert hour_merge.merge_closed_hours(spark, fs, root, "timestamp_hour", NOW_HOUR, staging_dir=staging) == {H0: 2}


def test_quarantine_is_not_merged_under_a_running_replay(landed, spark) -> None:
    """A quarantine replay rewrites the files it read: while one holds the replay lock, the
    quarantine's hours are not merged; once it is released, they are."""
    from lambdaflow.storage.lock import WriterLock

    settings, _ = landed
    fs = JvmFs(spark, settings.hdfs_url)
    hour = retention.partition_hours([p.rsplit("/", 1)[1] for p in fs.list(settings.quarantine_path)],
                                     "arrival_hour")[-1]
    hour_dir = f"{settings.quarantine_path}/arrival_hour={hour}"
    files = len(data_files(fs, hour_dir))
    copy = f"{settings.root}/tmp-quarantine-copy"
    spark.read.parquet(settings.uri(data_files(fs, hour_dir)[0])).write.parquet(settings.uri(copy))
    fs.rename(data_files(fs, copy)[0], f"{hour_dir}/part-0-888000-888001-0.snappy.parquet")
    fs.delete(copy)
    assert len(data_files(fs, hour_dir)) == files + 1 >= 2
    replay = WriterLock(fs, retention.replay_lock_path(settings))
    replay.acquire()
    try:
        report = maintenance.merge_hours(settings, hour + 2 * H, spark=spark, log=lambda _m: None)
        assert report["skipped"] == {settings.quarantine_path: "a quarantine replay is running"}
        assert len(data_files(fs, hour_dir)) == files + 1
    finally:
        replay.release()
    report = maintenance.merge_hours(settings, hour + 2 * H, spark=spark, log=lambda _m: None)
    assert report["merged"][settings.quarantine_path][str(hour)] == files + 1
    assert len(data_files(fs, hour_dir)) == 1


def _touch_dir(fs: JvmFs, path: str, mtime_ms: int) -> None:
    fs.mkdirs(path)
    fs.touch(path, mtime_ms)


def test_maintenance_removes_only_what_is_due_and_keeps_the_accounting(landed, spark, monkeypatch) -> None:
    settings, writer = landed
    fs = JvmFs(spark, settings.hdfs_url)
    client = hdfs.client(settings)
    now = int(time.time() * 1000)
    # the batch layer covers H0 only (its view computed from every row landed in it)
    fs.write_json(batch.records_path(settings, 1, H0), {"timestamp_hour": H0, "version": 1,
                                                       "landed_rows": writer.landed(H0)})
    # quarantine: an arrival hour 40 days old (written then) and the fresh ones of the ingest
    old_q = NOW_HOUR - 40 * 24 * H
    fs.write_text(f"{settings.quarantine_path}/arrival_hour={old_q}/part-x-0.snappy.parquet", "old")
    fs.touch(f"{settings.quarantine_path}/arrival_hour={old_q}", old_q + H)
    # lag history: a day file of 2020 and today's
    lag_dir = f"{settings.lag_history_path}/{settings.ingest_group}/{settings.topic}"
    today = datetime.fromtimestamp(now / 1000, tz=timezone.utc).date().isoformat()
    fs.write_text(f"{lag_dir}/2020-01-01.jsonl", "{}\n")
    fs.write_text(f"{lag_dir}/{today}.jsonl", "{}\n")
    # leftovers: a stale and a live batch hour lock would keep batch staging; first only a stale one
    fs.write_text(batch.hour_lock_path(settings, H0), "{}")
    fs.touch(batch.hour_lock_path(settings, H0), now - 3600_000)
    old_run = f"{settings.batch_root}/activity_by_product/_staging/oldrun"
    fresh_run = f"{settings.batch_root}/visitors_by_product/_trash/freshrun"
    _touch_dir(fs, old_run, now - 48 * H)
    _touch_dir(fs, fresh_run, now)
    epoch = retention.current_epoch(p.rsplit("/", 1)[1] for p in fs.list(f"{settings.landing_path}/_writer/epochs"))
    assert epoch >= 2
    fenced = f"{settings.landing_path}/_staging/9-0-1/e{epoch - 1}"
    current = f"{settings.landing_path}/_staging/9-1-2/e{epoch}"
    fs.write_text(f"{fenced}/landing/part-0.parquet", "x")
    fs.write_text(f"{current}/landing/part-0.parquet", "x")

    totals_before = commit_log.totals(client, settings.landing_path)
    rows_h0 = commit_log.landed_rows_by_hour(client, settings.landing_path)[H0]
    assert rows_h0 == writer.landed(H0)
    monkeypatch.setenv("LAMBDAFLOW_RETENTION_LANDING_DAYS", "1")  # H0 and H1 ended more than a day ago
    for name in ("QUARANTINE_DAYS", "SPEED_GRACE_HOURS", "LAG_DAYS", "LEFTOVER_HOURS"):
        monkeypatch.delenv(f"LAMBDAFLOW_RETENTION_{name}", raising=False)

    dry: list[str] = []
    maintenance.maintain(settings, now_ms=now, dry_run=True, log=dry.append, spark=spark,
                         steps=("retention", "clean_up"))
    assert fs.exists(f"{settings.landing_path}/timestamp_hour={H0}") and fs.exists(old_run), "a dry run changes nothing"
    assert any("would remove 1 hour(s)" in line for line in dry), dry

    logs: list[str] = []
    report = maintenance.maintain(settings, now_ms=now, log=logs.append, spark=spark)
    text = "\n".join(logs)

    # roll-up: the tail folded, totals unchanged
    assert report["roll_up"]["rolled_up"] >= 1
    # landing: H0 (covered) removed with its rows archived; H1 (not covered) kept
    assert not fs.exists(f"{settings.landing_path}/timestamp_hour={H0}")
    assert fs.exists(f"{settings.landing_path}/timestamp_hour={H1}")
    assert report["retention"]["landing"]["removed"] == [H0]
    assert report["retention"]["landing"]["held"] == {str(H1): "not covered by the batch layer"}
    totals = commit_log.totals(client, settings.landing_path)
    assert totals["landed_rows"] == totals_before["landed_rows"], "landed rows ever: unchanged"
    assert totals["archived_rows"] == totals_before["archived_rows"] + rows_h0
    assert totals["positions"] == totals_before["positions"]
    assert H0 not in commit_log.landed_rows_by_hour(client, settings.landing_path)
    assert sum(commit_log.landed_rows_by_hour(client, settings.landing_path).values()) + totals["archived_rows"] \
        == totals["landed_rows"]
    # speed: H0 is covered and ended over 24 h ago: removed; H1 is not covered: kept
    for view in VIEWS:
        assert not fs.exists(f"{settings.speed_root}/{view}/timestamp_hour={H0}")
        assert fs.exists(f"{settings.speed_root}/{view}/timestamp_hour={H1}")
    # quarantine: the 40-day-old arrival hour removed, the fresh ones kept
    assert not fs.exists(f"{settings.quarantine_path}/arrival_hour={old_q}")
    assert quarantined(spark, settings), "the fresh quarantine is kept"
    # lag history
    assert not fs.exists(f"{lag_dir}/2020-01-01.jsonl") and fs.exists(f"{lag_dir}/{today}.jsonl")
    # leftovers
    assert not fs.exists(batch.hour_lock_path(settings, H0))
    assert not fs.exists(old_run) and fs.exists(fresh_run)
    assert not fs.exists(fenced) and fs.exists(current), "a fenced epoch's staging goes, the current writer's stays"
    for expected in ("removed 1 hour(s)", "rows archived in the commit log", "removed 1 arrival hour(s)",
                     "removed 1 day file(s)", "removed 1 stale", "removed 1 run(s)", "dir(s) of fenced epochs"):
        assert expected in text, f"{expected!r} not logged:\n{text}"
    json.dumps(report)  # JSON-able

    # a live batch lock keeps every batch staging/trash run, however old
    fs.write_text(batch.hour_lock_path(settings, H1), "{}")
    _touch_dir(fs, old_run, now - 48 * H)
    maintenance.maintain(settings, now_ms=now, log=logs.append, steps=("clean_up",))
    assert fs.exists(old_run) and fs.exists(batch.hour_lock_path(settings, H1))
