"""The event model and generator: schema, shape of the distributions, determinism, bad records."""

from __future__ import annotations

import collections
import json
import random
import time

import pytest

from lambdaflow import events
from lambdaflow.events import (ACTIONS, BAD_KINDS, FIELDS, REQUIRED_FIELDS, Catalogue, Event, EventGenerator,
                               check_value, parse_value, validate_event)

START_MS = 1_795_514_400_000  # 2026-11-24T10:00:00Z
NOW_MS = START_MS + 30 * 86_400_000


def generate(count: int, seed: int = 1, **options) -> list[events.Record]:
    options.setdefault("start_ms", START_MS)
    return list(EventGenerator(seed, count=count, **options))


def good_events(count: int, seed: int = 1, **options) -> list[Event]:
    options.setdefault("start_ms", START_MS)
    return list(EventGenerator(seed, count=count, **options).events())


def test_every_value_is_a_contract_event_keyed_by_its_visitor() -> None:
    records = generate(5_000)
    assert len(records) == 5_000
    for record in records:
        obj = json.loads(record.value)
        assert list(obj) == list(FIELDS)
        assert validate_event(obj, now_ms=NOW_MS) is None
        assert record.key == obj["visitor"].encode("utf-8")
        assert record.bad_kind is None
        assert (obj["prev_page"] is not None) == (obj["referrer"] == "Internal")
        assert obj["visitor"].startswith("Visitor-") and obj["page"].startswith("Page-")
        assert isinstance(obj["timestamp"], int)


def test_action_and_referrer_mix_within_tolerances() -> None:
    sample = good_events(100_000, seed=3)
    actions = collections.Counter(e.action for e in sample)
    for action, weight in zip(ACTIONS, events.ACTION_WEIGHTS):
        assert actions[action] / len(sample) == pytest.approx(weight, abs=0.005), action
    assert 0.90 < actions["page_view"] / len(sample) < 0.97
    assert actions["purchase"] < actions["add_to_cart"]

    catalogue = Catalogue.load()
    weights = dict(zip(catalogue.referrers, catalogue.referrer_weights))
    referrers = collections.Counter(e.referrer for e in sample)
    for referrer, weight in weights.items():
        assert referrers[referrer] / len(sample) == pytest.approx(weight / sum(weights.values()), abs=0.01)


def test_products_pages_and_visitors_are_uniform() -> None:
    sample = good_events(60_000, seed=4, catalogue=Catalogue.load(visitors=100, pages=15))
    for attribute, expected_distinct in (("page", 15), ("visitor", 100)):
        counts = collections.Counter(getattr(e, attribute) for e in sample)
        assert len(counts) == expected_distinct
        mean = len(sample) / expected_distinct
        assert max(counts.values()) < 1.25 * mean and min(counts.values()) > 0.75 * mean, attribute
    products = collections.Counter(e.product for e in sample)
    mean = len(sample) / len(Catalogue.load().products)
    assert max(products.values()) < 2 * mean and min(products.values()) > mean / 2


def test_every_catalogue_entry_is_reachable_including_the_last() -> None:
    catalogue = Catalogue.load(visitors=50, pages=7)
    sample = good_events(40_000, seed=5, catalogue=catalogue)
    assert {e.visitor for e in sample} == {f"Visitor-{n}" for n in range(50)}
    assert {e.page for e in sample} == {f"Page-{n}" for n in range(7)}
    assert {e.prev_page for e in sample} - {None} == {f"Page-{n}" for n in range(7)}
    assert {e.product for e in sample} == set(catalogue.products)
    assert {e.referrer for e in sample} == set(catalogue.referrers)
    assert {e.action for e in sample} == set(ACTIONS)


def test_catalogue_ships_in_the_package() -> None:
    catalogue = Catalogue.load()
    assert len(catalogue.products) >= 300 and len(set(catalogue.products)) == len(catalogue.products)
    assert {"Internal", "Google", "Bing", "Yahoo", "Facebook", "Twitter", "Other"} <= set(catalogue.referrers)
    assert all(w > 0 for w in catalogue.referrer_weights)
    assert (catalogue.visitors, catalogue.pages) == (1_000_000, 15)


def test_same_seed_same_records_other_seed_other_records() -> None:
    assert generate(2_000, seed=7, bad_fraction=0.1) == generate(2_000, seed=7, bad_fraction=0.1)
    assert generate(2_000, seed=7) != generate(2_000, seed=8)


def test_bad_records_replace_good_ones_without_shifting_the_rest() -> None:
    clean = generate(5_000, seed=9)
    dirty = generate(5_000, seed=9, bad_fraction=0.2)
    for good, maybe_bad in zip(clean, dirty):
        assert good.key == maybe_bad.key
        if maybe_bad.bad_kind is None:
            assert good.value == maybe_bad.value


def test_simulated_time_follows_index_rate_and_multiplier() -> None:
    sample = good_events(1_001, rate=10, time_multiplier=480)
    # 10 events/s at x480: each event 48 simulated seconds after the previous one
    assert sample[0].timestamp == START_MS
    assert [b.timestamp - a.timestamp for a, b in zip(sample, sample[1:])] == [48_000] * 1_000
    unthrottled = good_events(1_001, rate=0, time_multiplier=480)
    assert unthrottled[-1].timestamp - unthrottled[0].timestamp == int(1_000 * 480 / events.NOMINAL_RATE * 1000)


def test_default_start_keeps_the_whole_span_in_the_past_and_is_stable_within_a_day() -> None:
    now_ms = START_MS + 3_600_000
    span_ms = events.simulated_offset_ms(99_999, 0, 480)
    start = events.default_start_ms(span_ms, now_ms=now_ms)
    assert start + span_ms <= now_ms
    assert start % 86_400_000 == 0
    assert events.default_start_ms(span_ms, now_ms=now_ms + 60_000) == start
    generator = EventGenerator(1, count=100_000, rate=0)  # start from the real clock
    assert generator.timestamp_of(99_999) <= time.time() * 1000


def test_window_wraps_simulated_time_so_a_run_of_unknown_length_stays_in_it() -> None:
    window_ms = 3_600_000
    generator = EventGenerator(1, rate=0, time_multiplier=480, start_ms=START_MS, window_ms=window_ms)
    stamps = [generator.timestamp_of(i) for i in range(0, 200_000, 997)]
    assert min(stamps) >= START_MS and max(stamps) < START_MS + window_ms
    assert stamps != sorted(stamps)  # it did wrap


def test_bad_fraction_produces_every_kind_about_as_often() -> None:
    records = generate(40_000, seed=11, bad_fraction=0.05)
    kinds = collections.Counter(r.bad_kind for r in records if r.bad_kind)
    assert set(kinds) == set(BAD_KINDS)
    assert sum(kinds.values()) / len(records) == pytest.approx(0.05, abs=0.005)
    share = sum(kinds.values()) / len(BAD_KINDS)
    assert all(0.7 * share < n < 1.3 * share for n in kinds.values()), kinds


@pytest.mark.parametrize("fmt", ["json", "tsv"])
def test_each_bad_kind_is_rejected_and_each_good_record_accepted(fmt: str) -> None:
    records = generate(20_000, seed=12, bad_fraction=0.1, fmt=fmt)
    reasons: dict[str, set[str]] = collections.defaultdict(set)
    for record in records:
        reason = check_value(record.value, now_ms=NOW_MS)
        if record.bad_kind is None:
            assert reason is None, (record, reason)
        else:
            assert reason is not None, record
            reasons[record.bad_kind].add(reason.split(":")[0])
    assert reasons == {
        "garbage": {"not_utf8"},
        "empty": {"empty"},
        "missing_field": {"missing_field"},
        "wrong_type": {"wrong_type"},
        "unknown_action": {"unknown_action"},
        "bad_timestamp": {"bad_timestamp"},
        "truncated_tsv": {"malformed_tsv"},
    }


@pytest.mark.parametrize("change, reason", [
    ({"timestamp": 1.7e12}, "wrong_type: timestamp (expected integer, got number)"),
    ({"timestamp": True}, "wrong_type: timestamp (expected integer, got boolean)"),
    ({"timestamp": "1795600000000"}, "wrong_type: timestamp (expected integer, got string)"),
    ({"timestamp": 2 ** 63}, "wrong_type: timestamp (expected integer, got number)"),
    ({"timestamp": events.MIN_TIMESTAMP_MS - 1}, "bad_timestamp: timestamp 946684799999 is outside"),
    ({"timestamp": NOW_MS + 86_400_001}, "bad_timestamp: timestamp"),
    ({"action": "refund"}, "unknown_action: action 'refund' is not one of page_view, add_to_cart, purchase"),
    ({"action": ["purchase"]}, "wrong_type: action (expected string, got array)"),
    ({"referrer": ""}, "empty_field: referrer"),
    ({"product": 42}, "wrong_type: product (expected string, got integer)"),
    ({"product": {"a": 1}}, "wrong_type: product (expected string, got object)"),
    ({"prev_page": 3}, "wrong_type: prev_page (expected string, got integer)"),
    ({"visitor": None}, "missing_field: visitor"),
])
def test_validate_event_rules(change: dict, reason: str) -> None:
    obj = {**good_events(1)[0].to_dict(), **change}
    assert validate_event(obj, now_ms=NOW_MS).startswith(reason)


@pytest.mark.parametrize("value, reason", [
    (b'{"timestamp": 1} trailing', "malformed_json"),
    (b'{"timestamp": NaN}', "malformed_json"),
    (b'{"visitor": "a", "visitor": "b"}', "malformed_json"),
    (b'{"visitor": "\\ud800"}', "malformed_json"),
    (b'{"a":' + b"[" * 70 + b"]" * 70 + b"}", "malformed_json"),
    (b"\xef\xbb\xbf{}", "unparseable"),  # a BOM is not JSON whitespace
    (b"\x00\xff", "not_utf8"),
    (b"1\t2", "malformed_tsv: expected 7 tab-separated fields, got 2"),
    (b"x" * 10, "unparseable"),
    (b"", "empty"),
])
def test_check_value_rejects_what_is_not_one_json_object_or_tsv_line(value: bytes, reason: str) -> None:
    assert check_value(value, now_ms=NOW_MS).startswith(reason)


def test_tsv_fields_are_text_except_an_integer_timestamp() -> None:
    line = b"001795600000000\tGoogle\tpage_view\t\tVisitor-1\tPage-1\tBlue Kettle\r\n"
    assert parse_value(line) == {"timestamp": 1795600000000, "referrer": "Google", "action": "page_view",
                                 "prev_page": None, "visitor": "Visitor-1", "page": "Page-1", "product": "Blue Kettle"}
    assert check_value(line, now_ms=NOW_MS) is None
    assert check_value(line.replace(b"001795600000000", b"1795600000000 "), now_ms=NOW_MS).startswith(
        "wrong_type: timestamp (expected integer, got string)")
    assert check_value(line.replace(b"Visitor-1", b""), now_ms=NOW_MS) == "empty_field: visitor"


def test_validate_event_accepts_the_edges() -> None:
    obj = good_events(1)[0].to_dict()
    assert validate_event({**obj, "timestamp": events.MIN_TIMESTAMP_MS}, now_ms=NOW_MS) is None
    assert validate_event({**obj, "timestamp": NOW_MS + 86_400_000}, now_ms=NOW_MS) is None
    assert validate_event({**obj, "prev_page": None}, now_ms=NOW_MS) is None
    without_prev = {k: v for k, v in obj.items() if k != "prev_page"}
    assert validate_event(without_prev, now_ms=NOW_MS) is None
    assert "prev_page" not in REQUIRED_FIELDS and set(REQUIRED_FIELDS) < set(FIELDS)
    assert validate_event([obj]).startswith("malformed_json")


def test_parse_iso8601_accepts_z_offsets_and_naive_utc() -> None:
    assert events.to_epoch_ms(events.parse_iso8601("2026-11-24T10:00:00Z")) == START_MS
    assert events.to_epoch_ms(events.parse_iso8601("2026-11-24T11:00:00+01:00")) == START_MS
    assert events.to_epoch_ms(events.parse_iso8601("2026-11-24T10:00:00")) == START_MS
    with pytest.raises(ValueError, match="ISO 8601"):
        events.parse_iso8601("yesterday")


def test_generator_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError):
        EventGenerator(1, fmt="xml", start_ms=START_MS)
    with pytest.raises(ValueError):
        EventGenerator(1, bad_fraction=1.5, start_ms=START_MS)
    with pytest.raises(ValueError):
        EventGenerator(1)  # nowhere to place simulated time
    with pytest.raises(ValueError):
        Catalogue.load(visitors=0)
