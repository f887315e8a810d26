"""The clickstream event model and a deterministic event generator (pure Python, no I/O but the catalogue).

An event is what one visitor did on one page at one moment (ARCHITECTURE.md, "event value")::

    {"timestamp": 1795514400000, "referrer": "Internal", "action": "page_view",
     "prev_page": "Page-3", "visitor": "Visitor-421337", "page": "Page-7", "product": "Summit Yoga Mat"}

Its Kafka key is the visitor id (UTF-8). The value is the JSON object above or the seed course's
tab-separated line ``timestamp\\treferrer\\taction\\tprevPage\\tvisitor\\tpage\\tproduct``
(``prevPage`` empty when null).

``EventGenerator`` replays the course's LogProducer, with two differences: every catalogue entry
can be drawn (the course never drew the last one), and it is a pure function of its parameters.
Simulated time is derived from the event index, never from the wall clock: event ``i`` happens
``i / rate * time_multiplier`` seconds after ``start``, so the same seed, count and rate give the
same events byte for byte. ``bad_fraction`` replaces that share of records by malformed ones of
the kinds in ``BAD_KINDS``, which the ingest must quarantine. The rules an event must follow are
defined once, in ``lambdaflow.schema`` (``check_value`` and ``validate_event`` are re-exported here).
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import itertools
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple

from lambdaflow.timeutil import parse_iso8601, to_epoch_ms  # noqa: F401  (re-exported)
from lambdaflow.schema import (ACTIONS, FIELDS, MAX_FUTURE_MS, MIN_TIMESTAMP_MS, REQUIRED_FIELDS,  # noqa: F401
                               TSV_FIELDS, check_value, parse_value, validate_event)

# Mostly page views, a few percent of add-to-cart and fewer purchases (a shopping funnel).
ACTION_WEIGHTS = (0.94, 0.04, 0.02)

BAD_KINDS = ("garbage", "empty", "missing_field", "wrong_type", "unknown_action", "bad_timestamp",
             "truncated_tsv")
GARBAGE = b"\x00\xff<<garbled>>"
_TIMESTAMP_AS_TEXT = object()
# The wrong_type kind: a field holding a JSON value of another type (never coerced by the ingest).
WRONG_TYPES = (("timestamp", "yesterday"), ("timestamp", _TIMESTAMP_AS_TEXT), ("timestamp", 1.5e12),
               ("product", {"a": 1}), ("visitor", 42), ("page", ["Page-1"]), ("referrer", True))

INTERNAL_REFERRER = "Internal"
VISITOR_PREFIX = "Visitor-"  # visitors are Visitor-0 .. Visitor-<visitors - 1>
PAGE_PREFIX = "Page-"  # pages are Page-0 .. Page-<pages - 1>
DEFAULT_VISITORS = 1_000_000
DEFAULT_PAGES = 15
DEFAULT_TIME_MULTIPLIER = 480.0
# Simulated time needs an event rate even when sending unthrottled (--rate 0): at this nominal
# rate 100,000 events span 100 s of wall-clock time, i.e. 13.3 simulated hours at x480.
NOMINAL_RATE = 1000.0

_DAY_MS = 86_400_000


class Event(NamedTuple):
    """One clickstream event, fields in the contract's (and the TSV line's) order."""

    timestamp: int
    referrer: str
    action: str
    prev_page: str | None
    visitor: str
    page: str
    product: str

    def to_dict(self) -> dict[str, Any]:
        return dict(zip(FIELDS, self))


class Record(NamedTuple):
    """A Kafka record ready to send: key, value, and the bad kind when the value is malformed."""

    key: bytes
    value: bytes
    bad_kind: str | None


# -- serialisation -----------------------------------------------------------------------------

def key_of(event: Event) -> bytes:
    return event.visitor.encode("utf-8")


_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def to_json(event: Event) -> bytes:
    return _encode_json(event.to_dict()).encode("utf-8")


def to_tsv(event: Event) -> bytes:
    fields = [str(event.timestamp), *(value or "" for value in event[1:])]
    return "\t".join(fields).encode("utf-8")


SERIALISERS = {"json": to_json, "tsv": to_tsv}


# -- catalogue ---------------------------------------------------------------------------------

def _read_csv(name: str) -> list[dict[str, str]]:
    with resources.files("lambdaflow").joinpath("data", name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@dataclass(frozen=True)
class Catalogue:
    """What events are drawn from: referrers (weighted), products, visitor and page counts."""

    referrers: tuple[str, ...]
    referrer_weights: tuple[float, ...]
    products: tuple[str, ...]
    visitors: int = DEFAULT_VISITORS
    pages: int = DEFAULT_PAGES

    @classmethod
    def load(cls, visitors: int = DEFAULT_VISITORS, pages: int = DEFAULT_PAGES) -> "Catalogue":
        """The catalogue shipped in ``lambdaflow/data`` with the given visitor and page counts."""
        referrers = _read_csv("referrers.csv")
        return cls(referrers=tuple(row["referrer"] for row in referrers),
                   referrer_weights=tuple(float(row["weight"]) for row in referrers),
                   products=tuple(row["product"] for row in _read_csv("products.csv")),
                   visitors=visitors, pages=pages)

    def __post_init__(self) -> None:
        if self.visitors < 1 or self.pages < 1:
            raise ValueError("a catalogue needs at least one visitor and one page")
        if not self.referrers or not self.products:
            raise ValueError("a catalogue needs referrers and products")


# -- simulated time ----------------------------------------------------------------------------

def simulated_offset_ms(index: int, rate: float, time_multiplier: float) -> int:
    """How far after the start event ``index`` happens, in simulated milliseconds.

    ``rate`` 0 (unthrottled) counts as NOMINAL_RATE, so simulated time never depends on how fast
    the machine happens to be.
    """
    return int(index * 1000.0 * time_multiplier / (rate or NOMINAL_RATE))


def default_start_ms(span_ms: int, now_ms: int | None = None) -> int:
    """Start of simulated time when none is given: midnight (UTC) before ``now - span``.

    The span then ends before now, and runs on the same day with the same seed, count and rate
    produce identical events.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return (now_ms - span_ms) // _DAY_MS * _DAY_MS


def _cumulative(weights: tuple[float, ...]) -> list[float]:
    """Cumulative shares ending at exactly 1.0, so bisect_right of random() (< 1.0) stays in range."""
    total = sum(weights)
    shares = list(itertools.accumulate(w / total for w in weights))
    shares[-1] = 1.0
    return shares


# -- the generator -----------------------------------------------------------------------------

class EventGenerator:
    """Deterministic stream of records: same parameters, same records, byte for byte.

    ``start_ms`` is when simulated time begins (``default_start_ms`` of the span when omitted,
    which needs ``count`` or ``window_ms``). With ``window_ms`` set, simulated time wraps around
    within [start, start + window): that is how a run of unknown length (a duration, unthrottled)
    stays in the past. Good events do not depend on ``bad_fraction``: bad records are drawn from a
    separate random stream and replace the good event at their index.
    """

    def __init__(self, seed: int = 0, *, catalogue: Catalogue | None = None, fmt: str = "json",
                 rate: float = 0.0, time_multiplier: float = DEFAULT_TIME_MULTIPLIER,
                 start_ms: int | None = None, count: int | None = None, window_ms: int | None = None,
                 bad_fraction: float = 0.0) -> None:
        if fmt not in SERIALISERS:
            raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(SERIALISERS)}")
        if not 0.0 <= bad_fraction <= 1.0:
            raise ValueError("bad_fraction must be between 0 and 1")
        if rate < 0 or time_multiplier <= 0:
            raise ValueError("rate must be >= 0 and time_multiplier > 0")
        if start_ms is None:
            if window_ms is None and count is None:
                raise ValueError("start_ms, count or window_ms is needed to place simulated time")
            span = window_ms if window_ms is not None else simulated_offset_ms(max(count - 1, 0), rate,
                                                                               time_multiplier)
            start_ms = default_start_ms(span)
        self.seed = seed
        self.catalogue = catalogue or Catalogue.load()
        self.fmt = fmt
        self.rate = rate
        self.time_multiplier = time_multiplier
        self.start_ms = start_ms
        self.count = count
        self.window_ms = window_ms
        self.bad_fraction = bad_fraction
        self._serialise = SERIALISERS[fmt]
        self._action_cum = _cumulative(ACTION_WEIGHTS)
        self._referrer_cum = _cumulative(self.catalogue.referrer_weights)

    def timestamp_of(self, index: int) -> int:
        offset = simulated_offset_ms(index, self.rate, self.time_multiplier)
        if self.window_ms:
            offset %= self.window_ms
        return self.start_ms + offset

    def events(self) -> Iterator[Event]:
        """The good events, ``count`` of them (endless when count is None)."""
        draw = random.Random(self.seed).random
        cat = self.catalogue
        referrers, products, n_products = cat.referrers, cat.products, len(cat.products)
        n_pages, n_visitors = cat.pages, cat.visitors
        referrer_cum, action_cum, bisect_right = self._referrer_cum, self._action_cum, bisect.bisect_right
        indices = range(self.count) if self.count is not None else itertools.count()
        for index in indices:  # the hot loop of every run
            referrer = referrers[bisect_right(referrer_cum, draw())]
            action = ACTIONS[bisect_right(action_cum, draw())]
            page = f"{PAGE_PREFIX}{int(draw() * n_pages)}"
            prev_page = f"{PAGE_PREFIX}{int(draw() * n_pages)}" if referrer == INTERNAL_REFERRER else None
            yield Event(self.timestamp_of(index), referrer, action, prev_page,
                        f"{VISITOR_PREFIX}{int(draw() * n_visitors)}", page, products[int(draw() * n_products)])

    def __iter__(self) -> Iterator[Record]:
        """Records to send: serialised good events, and bad ones at ``bad_fraction``."""
        bad_rng = random.Random(f"lambdaflow-bad-{self.seed}")
        fraction = self.bad_fraction
        serialise = self._serialise
        for event in self.events():
            key = key_of(event)
            if fraction and bad_rng.random() < fraction:
                kind = BAD_KINDS[int(bad_rng.random() * len(BAD_KINDS))]
                yield Record(key, malformed(kind, event, bad_rng), kind)
            else:
                yield Record(key, serialise(event), None)


def malformed(kind: str, event: Event, rng: random.Random) -> bytes:
    """A value of the given bad kind, derived from a good event."""
    obj = event.to_dict()
    if kind == "garbage":
        return GARBAGE
    if kind == "empty":
        return b""
    if kind == "missing_field":
        del obj["visitor"]
    elif kind == "wrong_type":
        name, value = WRONG_TYPES[int(rng.random() * len(WRONG_TYPES))]
        obj[name] = str(event.timestamp) if value is _TIMESTAMP_AS_TEXT else value
    elif kind == "unknown_action":
        obj["action"] = "refund"
    elif kind == "bad_timestamp":
        obj["timestamp"] = 0 if rng.random() < 0.5 else -event.timestamp
    elif kind == "truncated_tsv":
        return b"\t".join(to_tsv(event).split(b"\t")[:4])
    else:
        raise ValueError(f"unknown bad kind {kind!r}; expected one of {', '.join(BAD_KINDS)}")
    return _encode_json(obj).encode("utf-8")
