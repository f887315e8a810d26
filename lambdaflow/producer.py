"""Deliver generated clickstream events to Kafka: the load generator behind ``lambdaflow produce``.

Durable and fast at once: acks=all with idempotence (retries cannot duplicate), batches lingering a
few milliseconds and compressed, delivery confirmed by callbacks that count acked and failed
records per partition. Every run ends with a flush, also on SIGINT/SIGTERM, and a summary::

    {"sent": 100000, "acked": 100000, "failed": 0, "bad_injected": {"garbage": 0, ...},
     "events_per_s": 27000.0, "elapsed_s": 3.7, "per_partition": {"0": 33421, ...},
     "topic": "weblogs", "seed": 7, ...}

``produce()`` is the library entry (the ``weblogs_producer`` DAG, tests, the benchmark);
``add_arguments()`` and ``run()`` make the command line. Errors a user can act on (broker
unreachable, topic missing, bad option values) raise ``KafkaUnavailable``, ``UserError`` or its
``OptionError`` with a message saying what to do; ``run()`` prints them without a stack trace.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import logging
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from kafka import KafkaAdminClient, KafkaProducer
from kafka.codec import has_lz4, has_zstd
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from lambdaflow import events, kafka_admin, timeutil
from lambdaflow.config import Settings
from lambdaflow.errors import UserError
from lambdaflow.kafka_admin import KafkaUnavailable

log = logging.getLogger(__name__)

# kafka-python compresses in-process: lz4 and zstd are cheap, gzip (always available) is not.
COMPRESSION = "lz4" if has_lz4() else "zstd" if has_zstd() else "gzip"
CONNECT_TIMEOUT_S = 10.0
DEFAULT_RATE = events.NOMINAL_RATE
LINGER_MS = 20
BATCH_SIZE = 256 * 1024
REQUEST_TIMEOUT_MS = 15_000
DELIVERY_TIMEOUT_MS = 30_000  # a record neither acked nor failed after this fails (bounded retries)
LOG_EVERY_S = 5.0
BAR_EVERY_S = 0.2
MAX_ERRORS_KEPT = 5
GENERATE_BLOCK = 4096


class OptionError(UserError):
    """An option value out of its range; the message names the option."""


# -- options -----------------------------------------------------------------------------------

def check_options(*, count: int | None, duration: float | None, rate: float, fmt: str,
                  bad_fraction: float, time_multiplier: float, start: str | dt.datetime | None,
                  visitors: int, pages: int, now_ms: int | None = None) -> int | None:
    """Validate option values; returns ``start`` as epoch ms (None when not given)."""
    if (count is None) == (duration is None):
        raise OptionError("give exactly one of --count N or --duration SECONDS")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise OptionError(f"--count must be a positive integer, not {count!r}")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise OptionError(f"--duration must be a positive number of seconds, not {duration!r}")
    if not (math.isfinite(rate) and rate >= 0):
        raise OptionError(f"--rate must be >= 0 events/s (0 = unthrottled), not {rate!r}")
    if fmt not in events.SERIALISERS:
        raise OptionError(f"--format must be one of {', '.join(events.SERIALISERS)}, not {fmt!r}")
    if not (math.isfinite(bad_fraction) and 0 <= bad_fraction <= 1):
        raise OptionError(f"--bad-fraction must be between 0 and 1, not {bad_fraction!r}")
    if not (math.isfinite(time_multiplier) and time_multiplier > 0):
        raise OptionError(f"--time-multiplier must be a positive number, not {time_multiplier!r}")
    if visitors < 1 or pages < 1:
        raise OptionError("--visitors and --pages must be at least 1")
    if start is None:
        return None
    try:
        start_dt = timeutil.parse_iso8601(start) if isinstance(start, str) else start
    except ValueError as exc:
        raise OptionError(f"--start: {exc}") from None
    if start_dt.tzinfo is None:
        start_dt = start_dt.replace(tzinfo=dt.timezone.utc)
    start_ms = timeutil.to_epoch_ms(start_dt)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    end_ms = start_ms + _span_ms(count, duration, rate, time_multiplier)
    if start_ms < events.MIN_TIMESTAMP_MS:
        raise OptionError("--start must be 2000-01-01 or later")
    if end_ms > now_ms:
        raise OptionError(
            f"--start {timeutil.iso(start_ms, millis=True)}: simulated time would run to "
            f"{timeutil.iso(end_ms, millis=True)}, past now; "
            "choose an earlier --start, fewer events or a smaller --time-multiplier")
    return start_ms


def _planned_count(count: int | None, duration: float | None, rate: float) -> int | None:
    """How many events the run sends at most; None for a duration run without a rate."""
    if count is not None:
        return count
    return max(int(duration * rate), 1) if rate else None


def _span_ms(count: int | None, duration: float | None, rate: float, time_multiplier: float) -> int:
    """Simulated time from the first to the last event (or the wrap-around window)."""
    planned = _planned_count(count, duration, rate)
    if planned is None:
        return int(duration * time_multiplier * 1000)
    return events.simulated_offset_ms(planned - 1, rate, time_multiplier)


# -- Kafka -------------------------------------------------------------------------------------

def _servers(bootstrap: str) -> list[str]:
    return [server.strip() for server in bootstrap.split(",") if server.strip()]


def _unreachable(bootstrap: str, timeout_s: float) -> KafkaUnavailable:
    return KafkaUnavailable(
        f"cannot reach Kafka: no broker answered within {timeout_s:g} s at bootstrap servers "
        f"{', '.join(_servers(bootstrap))}. Is the broker up? (`lambdaflow status`, `lambdaflow up`; "
        "or pass --bootstrap-servers HOST:PORT)")


def _topic_exists(bootstrap: str, topic: str, timeout_s: float) -> bool:
    """Whether the topic exists; asking the admin API never auto-creates it."""
    try:
        client = KafkaAdminClient(bootstrap_servers=_servers(bootstrap), client_id="lambdaflow-producer",
                                  bootstrap_timeout_ms=int(timeout_s * 1000),
                                  request_timeout_ms=int(timeout_s * 1000))
        try:
            return topic in client.list_topics()
        finally:
            client.close()
    except KafkaError:
        raise _unreachable(bootstrap, timeout_s) from None


def _require_topic(settings: Settings, create: bool, timeout_s: float) -> None:
    """The topic exists, or is created with the configured partitions when ``create``."""
    if _topic_exists(settings.kafka_bootstrap, settings.topic, timeout_s):
        return
    if not create:
        raise UserError(
            f"topic {settings.topic!r} does not exist on {settings.kafka_bootstrap}; pass --create-topic "
            f"to create it with {settings.partitions} partitions, or choose another --topic")
    kafka_admin.ensure_topic(settings)
    log.info("created topic %s with %d partitions", settings.topic, settings.partitions)


def _connect(bootstrap: str, timeout_s: float) -> KafkaProducer:
    try:
        return KafkaProducer(
            bootstrap_servers=_servers(bootstrap), client_id="lambdaflow-producer",
            acks="all", enable_idempotence=True,
            retries=2**31 - 1,  # retry until delivery_timeout_ms; idempotence keeps retries exactly-once
            delivery_timeout_ms=DELIVERY_TIMEOUT_MS, request_timeout_ms=REQUEST_TIMEOUT_MS,
            linger_ms=LINGER_MS, batch_size=BATCH_SIZE, compression_type=COMPRESSION,
            allow_auto_create_topics=False,  # a missing topic is an error, not a 1-partition topic
            bootstrap_timeout_ms=int(timeout_s * 1000), max_block_ms=int(timeout_s * 1000))
    except KafkaError:
        raise _unreachable(bootstrap, timeout_s) from None


def key_partition(key: bytes, partitions: list[int]) -> int:
    """The partition Kafka's default partitioner (Java's and kafka-python's) picks for a key.

    Computed here because kafka-python's partitioner re-reads and sorts cluster metadata for every
    record (measured: passing the partition makes the send loop ~1.5x faster); same placement.
    """
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


def _describe(exc: BaseException) -> str:
    """``Class: message`` (kafka-python's errors already start with their class name)."""
    text, name = str(exc), exc.__class__.__name__
    return text if text.startswith(name) else f"{name}: {text}"


class _Delivery:
    """Delivery callbacks; they run on the producer's I/O thread, the counts are final after flush."""

    def __init__(self) -> None:
        self.acked = 0
        self.failed = 0
        self.per_partition: dict[int, int] = {}
        self.errors: list[str] = []

    def on_ack(self, metadata: Any) -> None:
        self.acked += 1
        self.per_partition[metadata.partition] = self.per_partition.get(metadata.partition, 0) + 1

    def on_error(self, exc: BaseException) -> None:
        self.failed += 1
        self.note(_describe(exc))

    def note(self, error: str) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT and error not in self.errors:
            self.errors.append(error)


# -- progress ----------------------------------------------------------------------------------

class Progress:
    """A live one-line bar on a terminal, a log line every few seconds otherwise."""

    def __init__(self, total: int | None, duration: float | None, stream: TextIO | None = None,
                 interactive: bool | None = None) -> None:
        self.total, self.duration, self.stream = total, duration, stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.every = BAR_EVERY_S if self.interactive else LOG_EVERY_S
        self.t0 = self.last_t = time.monotonic()
        self.last_sent = 0

    def update(self, sent: int, delivery: _Delivery, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_t < self.every:
            return
        rate = (sent - self.last_sent) / max(now - self.last_t, 1e-9)
        self.last_t, self.last_sent = now, sent
        done = self._fraction(sent, now)
        of_total = f"/{self.total:,}" if self.total else ""
        counts = f"{sent:,}{of_total} sent, {delivery.acked:,} acked, {delivery.failed:,} failed, {rate:,.0f} events/s"
        if self.interactive:
            filled = int(done * 30)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done:4.0%} {counts}\x1b[K")
            self.stream.flush()
        else:
            log.info("%3.0f%% %s", done * 100, counts)

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()

    def _fraction(self, sent: int, now: float) -> float:
        shares = []
        if self.total:
            shares.append(sent / self.total)
        if self.duration:
            shares.append((now - self.t0) / self.duration)
        return min(max(shares, default=0.0), 1.0)


# -- the run -----------------------------------------------------------------------------------

def produce(settings: Settings, *, count: int | None = None, duration: float | None = None,
            rate: float = DEFAULT_RATE, seed: int | None = None, topic: str | None = None,
            fmt: str = "json", bad_fraction: float = 0.0,
            time_multiplier: float = events.DEFAULT_TIME_MULTIPLIER,
            start: str | dt.datetime | None = None, visitors: int = events.DEFAULT_VISITORS,
            pages: int = events.DEFAULT_PAGES, create_topic: bool = False, progress: bool = True,
            stop: threading.Event | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> dict[str, Any]:
    """Send ``count`` events (or for ``duration`` seconds) at ``rate`` events/s; return the summary.

    ``seed`` None picks one at random (reported in the summary, to replay the run). Setting
    ``stop`` ends the run early, still flushing what was sent (``interrupted`` in the summary).
    """
    start_ms = check_options(count=count, duration=duration, rate=rate, fmt=fmt,
                             bad_fraction=bad_fraction, time_multiplier=time_multiplier, start=start,
                             visitors=visitors, pages=pages)
    topic = topic or settings.topic
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    planned = _planned_count(count, duration, rate)
    generator = events.EventGenerator(
        seed, catalogue=events.Catalogue.load(visitors, pages), fmt=fmt, rate=rate,
        time_multiplier=time_multiplier, start_ms=start_ms, count=planned,
        window_ms=None if planned else _span_ms(count, duration, rate, time_multiplier),
        bad_fraction=bad_fraction)

    bootstrap = settings.kafka_bootstrap
    _require_topic(settings.replace(topic=topic), create_topic, connect_timeout_s)
    stop = stop or threading.Event()
    delivery = _Delivery()
    bad_injected = dict.fromkeys(events.BAD_KINDS, 0)
    reporter = Progress(planned, duration) if progress else None
    sent = 0  # records handed to the producer (a send() that raised counts too: it failed)
    producer = _connect(bootstrap, connect_timeout_s)
    t0 = time.monotonic()
    try:
        partitions = sorted(producer.partitions_for(topic))
        for record in _paced(generator, rate, duration, stop, t0):
            sent += 1
            if record.bad_kind:
                bad_injected[record.bad_kind] += 1
            try:
                future = producer.send(topic, value=record.value, key=record.key,
                                       partition=key_partition(record.key, partitions))
            except KafkaError as exc:  # metadata or buffer space not available within max_block_ms
                delivery.note(_describe(exc))
                break
            future.add_callback(delivery.on_ack).add_errback(delivery.on_error)
            if reporter:
                reporter.update(sent, delivery)
    finally:
        _flush(producer, delivery)
        if reporter:
            reporter.update(sent, delivery, force=True)
            reporter.close()
    elapsed = time.monotonic() - t0
    failed = sent - delivery.acked  # failed callbacks plus records never confirmed by the flush
    return {
        "topic": topic,
        "bootstrap_servers": bootstrap,
        "format": fmt,
        "seed": seed,
        "rate": rate,
        "time_multiplier": time_multiplier,
        "sent": sent,
        "acked": delivery.acked,
        "failed": failed,
        "bad_injected": bad_injected,
        "events_per_s": round(sent / elapsed, 1) if elapsed > 0 else 0.0,
        "elapsed_s": round(elapsed, 3),
        "per_partition": {str(p): n for p, n in sorted(delivery.per_partition.items())},
        "simulated_from": timeutil.iso(generator.timestamp_of(0), millis=True) if sent else None,
        "simulated_to": timeutil.iso(generator.timestamp_of(sent - 1), millis=True) if sent else None,
        "compression": COMPRESSION,
        "interrupted": stop.is_set(),
        "errors": delivery.errors,
    }


def _paced(records: Iterable[events.Record], rate: float, duration: float | None,
           stop: threading.Event, t0: float) -> Iterator[events.Record]:
    """The records, each released at its due time (``rate``), until ``duration`` or ``stop``.

    Records are generated a block at a time: generating a block, then sending it, measured ~25%
    faster than alternating one by one (fewer GIL hand-offs with the producer's I/O thread).
    """
    deadline = t0 + duration if duration else math.inf
    pending = iter(records)
    index = 0
    while block := list(itertools.islice(pending, GENERATE_BLOCK)):
        for record in block:
            now = time.monotonic()
            if rate:
                ahead = t0 + index / rate - now
                if ahead > 0.001:  # sub-millisecond sleeps cost more than they pace
                    stop.wait(ahead)
                    now = time.monotonic()
            if stop.is_set() or now >= deadline:
                return
            index += 1
            yield record


def _flush(producer: KafkaProducer, delivery: _Delivery) -> None:
    """Wait for every sent record to be acked or failed, then close the producer."""
    try:
        producer.flush(timeout=DELIVERY_TIMEOUT_MS / 1000 + 5)
    except KafkaError as exc:
        delivery.note(f"flush: {_describe(exc)}")
    finally:
        with contextlib.suppress(KafkaError):
            producer.close(timeout=5)


# -- command line ------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``lambdaflow produce`` (and ``producers/weblogs_producer.py``)."""
    how_many = parser.add_mutually_exclusive_group(required=True)
    how_many.add_argument("--count", type=int, metavar="N", help="send N events")
    how_many.add_argument("--duration", type=float, metavar="SECONDS", help="send for SECONDS seconds")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="EVENTS_PER_S",
                        help=f"events per second, 0 = unthrottled (default {DEFAULT_RATE:g})")
    parser.add_argument("--seed", type=int, metavar="S",
                        help="random seed: the same seed, count and rate send the same events (with "
                             "the default --start, on the same UTC day) (default: random, shown in the summary)")
    parser.add_argument("--topic", metavar="T", help="Kafka topic (default: $LAMBDAFLOW_TOPIC or weblogs)")
    parser.add_argument("--format", dest="fmt", choices=sorted(events.SERIALISERS), default="json",
                        help="record value: JSON object or the course's tab-separated line (default json)")
    parser.add_argument("--bad-fraction", type=float, default=0.0, metavar="F",
                        help="share of malformed records to inject, 0..1, for testing the quarantine "
                             f"(kinds: {', '.join(events.BAD_KINDS)})")
    parser.add_argument("--time-multiplier", type=float, default=events.DEFAULT_TIME_MULTIPLIER, metavar="M",
                        help="simulated time runs M times faster than the event rate implies "
                             f"(default {events.DEFAULT_TIME_MULTIPLIER:g})")
    parser.add_argument("--start", metavar="ISO8601",
                        help="simulated time of the first event, e.g. 2026-11-24T10:00:00Z (default: "
                             "midnight UTC before now minus the simulated span, so no event is in the future)")
    parser.add_argument("--visitors", type=int, default=events.DEFAULT_VISITORS, metavar="N",
                        help=f"number of distinct visitors (default {events.DEFAULT_VISITORS:,})")
    parser.add_argument("--pages", type=int, default=events.DEFAULT_PAGES, metavar="N",
                        help=f"number of distinct pages (default {events.DEFAULT_PAGES})")
    parser.add_argument("--create-topic", action="store_true",
                        help="create the topic when missing, with the configured partitions ($LAMBDAFLOW_PARTITIONS)")
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]",
                        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP or localhost:9092)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON document on stdout")


def run(args: argparse.Namespace) -> int:
    """``lambdaflow produce``: 0 when every record was acked, 1 on failures, 2 on bad options."""
    settings = Settings.from_env()
    if args.bootstrap_servers:
        settings = settings.replace(kafka_bootstrap=args.bootstrap_servers)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # our messages say what went wrong
    stop = threading.Event()
    try:
        with _stop_on_signals(stop):
            summary = produce(settings, count=args.count, duration=args.duration, rate=args.rate,
                              seed=args.seed, topic=args.topic, fmt=args.fmt,
                              bad_fraction=args.bad_fraction, time_multiplier=args.time_multiplier,
                              start=args.start, visitors=args.visitors, pages=args.pages,
                              create_topic=args.create_topic, stop=stop)
    except OptionError as exc:
        print(f"lambdaflow produce: error: {exc}", file=sys.stderr)
        return 2
    except (KafkaUnavailable, UserError) as exc:
        print(f"lambdaflow produce: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary))
    if summary["failed"]:
        return 1
    return 130 if summary["interrupted"] else 0


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` so the run flushes and reports; a second signal aborts."""
    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning("%s received: stopping after a flush (again to abort)", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def format_summary(summary: dict[str, Any]) -> str:
    """The summary for people: one headline, then partitions, bad records and simulated time."""
    lines = [f"{summary['sent']:,} events sent to {summary['topic']} in {summary['elapsed_s']:.1f} s "
             f"({summary['events_per_s']:,.0f} events/s): {summary['acked']:,} acked, "
             f"{summary['failed']:,} failed{' (interrupted)' if summary['interrupted'] else ''}",
             "  partitions: " + ("  ".join(f"{p}={n:,}" for p, n in summary["per_partition"].items()) or "-"),
             f"  simulated time: {summary['simulated_from']} .. {summary['simulated_to']}  (seed {summary['seed']})"]
    bad = {kind: n for kind, n in summary["bad_injected"].items() if n}
    if bad:
        lines.append(f"  bad records injected: {sum(bad.values()):,} (" +
                     ", ".join(f"{kind}={n:,}" for kind, n in bad.items()) + ")")
    lines += [f"  error: {error}" for error in summary["errors"]]
    return "\n".join(lines)
