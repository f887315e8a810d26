"""Producer options, partitioning, progress and summary; no broker involved."""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import io
import json
import logging
import os
import signal
import threading
import time

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.partitioner.default import DefaultPartitioner

from lambdaflow import events, producer
from lambdaflow.config import Settings
from lambdaflow.producer import OptionError, check_options

NOW_MS = 1_795_600_000_000  # 2026-11-25T09:46:40Z
VALID = dict(count=1000, duration=None, rate=100.0, fmt="json", bad_fraction=0.0, time_multiplier=480.0,
             start=None, visitors=10, pages=15)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lambdaflow produce")
    producer.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    args = parse("--count", "5")
    assert (args.count, args.duration, args.rate, args.seed, args.topic, args.fmt) == (5, None, 1000.0, None, None, "json")
    assert (args.bad_fraction, args.time_multiplier, args.start) == (0.0, 480.0, None)
    assert (args.visitors, args.pages, args.create_topic, args.bootstrap_servers, args.json) == (1_000_000, 15, False, None, False)


def test_all_contract_flags_parse() -> None:
    args = parse("--duration", "2.5", "--rate", "0", "--seed", "7", "--topic", "t", "--format", "tsv",
                 "--bad-fraction", "0.05", "--time-multiplier", "60", "--start", "2026-11-24T10:00:00Z",
                 "--visitors", "100", "--pages", "5", "--create-topic", "--bootstrap-servers", "h:1", "--json")
    assert (args.duration, args.rate, args.seed, args.topic, args.fmt) == (2.5, 0.0, 7, "t", "tsv")
    assert (args.bad_fraction, args.time_multiplier, args.start) == (0.05, 60.0, "2026-11-24T10:00:00Z")
    assert (args.visitors, args.pages, args.create_topic, args.bootstrap_servers, args.json) == (100, 5, True, "h:1", True)


@pytest.mark.parametrize("argv", [
    [],                                        # neither --count nor --duration
    ["--count", "5", "--duration", "3"],       # both
    ["--count", "five"],
    ["--count", "5", "--format", "xml"],
    ["--count", "5", "--rate", "fast"],
])
def test_argparse_rejects(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"count": 0}, "--count must be a positive integer"),
    ({"count": None}, "exactly one of --count N or --duration"),
    ({"duration": 5.0}, "exactly one of --count N or --duration"),
    ({"count": None, "duration": 0.0}, "--duration must be a positive number"),
    ({"count": None, "duration": float("inf")}, "--duration must be a positive number"),
    ({"rate": -1.0}, "--rate must be >= 0"),
    ({"rate": float("nan")}, "--rate must be >= 0"),
    ({"fmt": "xml"}, "--format must be one of json, tsv"),
    ({"bad_fraction": 1.5}, "--bad-fraction must be between 0 and 1"),
    ({"bad_fraction": -0.1}, "--bad-fraction must be between 0 and 1"),
    ({"time_multiplier": 0.0}, "--time-multiplier must be a positive number"),
    ({"visitors": 0}, "--visitors and --pages must be at least 1"),
    ({"pages": 0}, "--visitors and --pages must be at least 1"),
    ({"start": "yesterday"}, "--start: not an ISO 8601 date-time"),
    ({"start": "1999-12-31T23:59:59Z"}, "--start must be 2000-01-01 or later"),
    ({"start": "2026-11-25T09:00:00Z"}, "past now"),  # 1000 events at 100/s x480 = 80 min: ends after now
])
def test_check_options_rejects(change: dict, message: str) -> None:
    with pytest.raises(OptionError, match=message.replace("(", r"\(")):
        check_options(**{**VALID, **change}, now_ms=NOW_MS)


def test_check_options_returns_start_in_epoch_ms() -> None:
    assert check_options(**VALID, now_ms=NOW_MS) is None
    assert check_options(**{**VALID, "start": "2026-11-24T10:00:00Z"}, now_ms=NOW_MS) == 1_795_514_400_000
    start = dt.datetime(2026, 11, 24, 10, tzinfo=dt.timezone.utc)
    assert check_options(**{**VALID, "start": start}, now_ms=NOW_MS) == 1_795_514_400_000
    # a duration run without a rate wraps inside duration x multiplier: 60 s x480 = 8 h fits
    assert check_options(**{**VALID, "count": None, "duration": 60.0, "rate": 0.0,
                            "start": "2026-11-25T01:00:00Z"}, now_ms=NOW_MS) == 1_795_568_400_000


def test_run_reports_bad_options_without_a_traceback(capsys) -> None:
    code = producer.run(parse("--count", "10", "--bad-fraction", "2", "--bootstrap-servers", "localhost:1"))
    err = capsys.readouterr().err
    assert code == 2
    assert "lambdaflow produce: error: --bad-fraction must be between 0 and 1" in err
    assert "Traceback" not in err


class _Cluster:
    """The part of kafka-python's ClusterMetadata that its DefaultPartitioner reads."""

    def __init__(self, partitions: int) -> None:
        self.partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


def test_key_partition_matches_kafkas_default_partitioner() -> None:
    default, cluster = DefaultPartitioner(), _Cluster(3)
    keys = [f"Visitor-{n}".encode() for n in range(3000)]
    assert [producer.key_partition(k, [0, 1, 2]) for k in keys] == \
           [default.partition("t", k, k, None, None, cluster) for k in keys]
    assert {producer.key_partition(k, [0, 1, 2]) for k in keys[:100]} == {0, 1, 2}


@pytest.mark.parametrize("key, partition", [
    (b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)])
def test_key_partition_matches_the_java_client(key: bytes, partition: int) -> None:
    # reference partitions of Java's org.apache.kafka.clients.producer.internals.DefaultPartitioner
    # over 1000 partitions (the vectors of kafka-python's own compatibility test)
    assert producer.key_partition(key, list(range(1000))) == partition


def test_progress_draws_a_bar_on_a_terminal() -> None:
    stream = io.StringIO()
    progress = producer.Progress(total=1000, duration=None, stream=stream, interactive=True)
    delivery = producer._Delivery()
    delivery.acked = 400
    progress.update(500, delivery, force=True)
    progress.close()
    line = stream.getvalue()
    assert line.startswith("\r[###############...............]  50% 500/1,000 sent, 400 acked, 0 failed")
    assert "events/s" in line and line.endswith("\n")


def test_progress_logs_plain_lines_when_not_a_terminal(caplog) -> None:
    stream = io.StringIO()
    progress = producer.Progress(total=None, duration=10.0, stream=stream, interactive=False)
    with caplog.at_level(logging.INFO, logger="lambdaflow.producer"):
        progress.update(20, producer._Delivery(), force=True)
        progress.update(30, producer._Delivery())  # within LOG_EVERY_S: nothing
    progress.close()
    assert stream.getvalue() == ""
    assert len(caplog.records) == 1 and "20 sent, 0 acked, 0 failed" in caplog.records[0].getMessage()


def test_delivery_counts_acks_per_partition_and_keeps_a_few_errors() -> None:
    delivery = producer._Delivery()
    for partition in (0, 1, 1, 2, 2, 2):
        delivery.on_ack(type("Meta", (), {"partition": partition})())
    for n in range(10):
        delivery.on_error(TimeoutError(f"expired {n % 7}"))
    assert (delivery.acked, delivery.failed, delivery.per_partition) == (6, 10, {0: 1, 1: 2, 2: 3})
    assert len(delivery.errors) == producer.MAX_ERRORS_KEPT


def test_signals_set_the_stop_event_and_are_restored() -> None:
    stop = threading.Event()
    before = signal.getsignal(signal.SIGTERM)
    with producer._stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(2)
        with pytest.raises(KeyboardInterrupt):  # a second signal aborts
            os.kill(os.getpid(), signal.SIGINT)
            stop.wait(2)
    assert signal.getsignal(signal.SIGTERM) is before


def test_paced_releases_records_at_the_rate_and_stops_on_request() -> None:
    t0 = time.monotonic()
    released = list(producer._paced(range(21), 100.0, None, threading.Event(), t0))
    assert released == list(range(21)) and time.monotonic() - t0 >= 0.19
    stop = threading.Event()
    stop.set()
    assert list(producer._paced(range(10), 0.0, None, stop, time.monotonic())) == []
    assert list(producer._paced(iter(int, 1), 0.0, 0.05, threading.Event(), time.monotonic()))  # ends by duration


def test_format_summary_names_the_figures() -> None:
    summary = {"sent": 1000, "acked": 990, "failed": 10, "topic": "weblogs", "elapsed_s": 1.25,
               "events_per_s": 800.0, "interrupted": False, "per_partition": {"0": 500, "1": 490},
               "simulated_from": "2026-11-24T10:00:00.000Z", "simulated_to": "2026-11-24T12:00:00.000Z",
               "seed": 7, "bad_injected": {"garbage": 3, "empty": 0}, "errors": ["KafkaTimeoutError: x"]}
    text = producer.format_summary(summary)
    assert text.splitlines()[0] == "1,000 events sent to weblogs in 1.2 s (800 events/s): 990 acked, 10 failed"
    assert "0=500  1=490" in text and "garbage=3" in text and "empty" not in text
    assert "error: KafkaTimeoutError: x" in text and "seed 7" in text


class _FakeFuture:
    def __init__(self, partition: int, error: Exception | None) -> None:
        self.partition, self.error = partition, error

    def add_callback(self, fn) -> "_FakeFuture":
        if self.error is None:
            fn(type("RecordMetadata", (), {"partition": self.partition})())
        return self

    def add_errback(self, fn) -> "_FakeFuture":
        if self.error is not None:
            fn(self.error)
        return self


class _FakeProducer:
    """Stands in for KafkaProducer: acks at once, fails every ``fail_every``-th record."""

    def __init__(self, fail_every: int = 0, raise_at: int = 0) -> None:
        self.fail_every, self.raise_at = fail_every, raise_at
        self.sent: list[tuple[bytes, bytes, int]] = []
        self.flushed = self.closed = False

    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def send(self, topic: str, value: bytes, key: bytes, partition: int) -> _FakeFuture:
        if self.raise_at and len(self.sent) + 1 == self.raise_at:
            raise KafkaTimeoutError("Failed to allocate memory within the configured max blocking time")
        self.sent.append((key, value, partition))
        failing = self.fail_every and len(self.sent) % self.fail_every == 0
        return _FakeFuture(partition, KafkaTimeoutError("Batch expired") if failing else None)

    def flush(self, timeout: float) -> None:
        self.flushed = True

    def close(self, timeout: float) -> None:
        self.closed = True


@pytest.fixture
def fake_kafka(monkeypatch):
    """produce() against a fake producer; returns a function installing one."""
    monkeypatch.setattr(producer, "_topic_exists", lambda bootstrap, topic, timeout_s: True)

    def install(fake: _FakeProducer) -> _FakeProducer:
        monkeypatch.setattr(producer, "_connect", lambda bootstrap, timeout_s: fake)
        return fake
    return install


def test_produce_counts_acks_per_partition_and_bad_kinds(fake_kafka) -> None:
    fake = fake_kafka(_FakeProducer())
    summary = producer.produce(Settings(), count=3000, rate=0, seed=5, bad_fraction=0.1, progress=False)
    assert (summary["sent"], summary["acked"], summary["failed"]) == (3000, 3000, 0)
    assert fake.flushed and fake.closed and len(fake.sent) == 3000
    expected = collections.Counter(str(producer.key_partition(key, [0, 1, 2])) for key, _, _ in fake.sent)
    assert summary["per_partition"] == dict(sorted(expected.items()))
    assert all(partition == producer.key_partition(key, [0, 1, 2]) for key, _, partition in fake.sent)
    bad = [v for _, v, _ in fake.sent if events.check_value(v) is not None]
    assert sum(summary["bad_injected"].values()) == len(bad) and 200 < len(bad) < 400
    assert summary["seed"] == 5 and summary["interrupted"] is False and summary["errors"] == []


def test_failed_deliveries_are_counted_and_make_the_command_fail(fake_kafka, capsys) -> None:
    fake_kafka(_FakeProducer(fail_every=10))
    code = producer.run(parse("--count", "100", "--rate", "0", "--json"))
    summary = json.loads(capsys.readouterr().out)
    assert code == 1
    assert (summary["sent"], summary["acked"], summary["failed"]) == (100, 90, 10)
    assert summary["errors"] == ["KafkaTimeoutError: Batch expired"]


def test_a_send_that_raises_ends_the_run_as_failed(fake_kafka) -> None:
    fake_kafka(_FakeProducer(raise_at=50))
    summary = producer.produce(Settings(), count=100, rate=0, seed=1, progress=False)
    assert (summary["sent"], summary["acked"], summary["failed"]) == (50, 49, 1)
    assert "Failed to allocate memory" in summary["errors"][0]


def test_missing_topic_names_the_fix(monkeypatch, capsys) -> None:
    monkeypatch.setattr(producer, "_topic_exists", lambda bootstrap, topic, timeout_s: False)
    code = producer.run(parse("--count", "10", "--topic", "nowhere", "--bootstrap-servers", "broker:9092"))
    err = capsys.readouterr().err
    assert code == 1
    assert "topic 'nowhere' does not exist on broker:9092; pass --create-topic" in err
    assert "Traceback" not in err


def test_a_stopped_run_flushes_and_says_so(fake_kafka) -> None:
    fake = fake_kafka(_FakeProducer())
    stop = threading.Event()
    stop.set()
    summary = producer.produce(Settings(), duration=10, rate=0, seed=1, progress=False, stop=stop)
    assert summary["interrupted"] is True and summary["sent"] == 0 and fake.flushed
