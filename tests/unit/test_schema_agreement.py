"""Property test: the Python validator and the Spark ingest give every value the same verdict.

Thousands of generated values (valid events in both formats, every malformed kind the producer
injects, random mutations of valid events, JSON edge cases, random bytes) go through
``lambdaflow.schema.check_value`` and through ``parse_records`` on a local SparkSession. Any value
whose reason differs, or whose landed fields differ from the Python parse, fails the test with the
value. Seeded: a failure is reproducible.
"""

from __future__ import annotations

import datetime as dt
import json
import random

from lambdaflow import events, schema
from lambdaflow.ingest_transforms import parse_records

KAFKA_TIME = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)
NOW_MS = int(KAFKA_TIME.timestamp() * 1000)
START_MS = NOW_MS - 86_400_000
SEED = 20261130

# JSON values of every type, and edge cases of each, to swap into fields.
SWAPS = [None, True, False, 0, -0, 1, -1, 1.5, 1.0, 1e3, -2.5e-3, 2 ** 63 - 1, 2 ** 63, -(2 ** 63), -(2 ** 63) - 1,
         10 ** 30, 10 ** 200, NOW_MS, NOW_MS + 86_400_001, schema.MIN_TIMESTAMP_MS - 1, schema.MIN_TIMESTAMP_MS,
         "", " ", "x", "page_view", "purchase", "Purchase", "refund", str(NOW_MS), "1795600000000", "yesterday",
         "é ü ß 😀 中文 עברית", "\u0000", "a\tb", "line\nbreak", 'quote " and \\ backslash', "{not json}", "[1]",
         "x" * 100_000, {}, {"a": 1}, {"a": {"b": [1, 2, {"c": None}]}}, [], [1, "x"], [[[]]], ["Page-1"]]
# Raw JSON fragments Python's encoder would never write.
RAW_FRAGMENTS = ["NaN", "Infinity", "-Infinity", "01", "-", "1.", ".5", "+1", "1e", "1E5", "-0", "0.0",
                 "1" * 999, "1" * 1000, "1" * 1001, "-" + "9" * 1000, "'single'", "tru", "nul", '"\\ud800"',
                 '"\\ud83d\\ude00"', '"\\u0074ext"', '"\\x41"', '"raw\ttab"', '"raw\u0001ctl"', '"\u007f"',
                 '"a{b}[c]"', '"}"', '"\\""', '"\\\\"', '{"a":1,"a":2}', '[{"a":1,"a":1}]', "{}", "[]", "/* c */ 1"]
TRAILERS = ["", " ", "\n", "\r\n", "\t", "\x0b", "\x0c", "x", "}", "]", "]}", "{}", "[]", ",", ", {}", "// c",
            "\u00a0", "\x00", '"', " {\"a\":1}"]
PREFIXES = ["", " ", "\n\t\r ", "\ufeff", "\x0c", "\u00a0", "x"]


def good_event(rng: random.Random) -> dict:
    generator = events.EventGenerator(rng.randrange(10 ** 6), count=1, start_ms=START_MS, rate=0)
    return next(generator.events()).to_dict()


def dump(obj: dict, rng: random.Random) -> str:
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5)


def nested(depth: int) -> str:
    """A JSON value nested ``depth`` deep (as the field of an event: the event itself is depth 1)."""
    return "[" * (depth - 2) + '{"k": 1}' + "]" * (depth - 2) if depth > 2 else '"flat"'


def json_mutation(rng: random.Random) -> bytes:
    obj = good_event(rng)
    text = None
    choice = rng.randrange(12)
    if choice == 0:  # a field of another type
        obj[rng.choice(schema.FIELDS)] = rng.choice(SWAPS)
    elif choice == 1:  # a field dropped
        del obj[rng.choice(schema.FIELDS)]
    elif choice == 2:  # fields added
        for _ in range(rng.randint(1, 3)):
            obj[rng.choice(["extra", "Timestamp", "PRODUCT", "é", "", "x" * 50])] = rng.choice(SWAPS)
    elif choice == 3:  # a raw fragment as a field's value
        name = rng.choice([*schema.FIELDS, "extra"])
        obj[name] = "@@RAW@@"
        text = dump(obj, rng).replace('"@@RAW@@"', rng.choice(RAW_FRAGMENTS))
    elif choice == 4:  # trailing content, leading prefixes
        text = rng.choice(PREFIXES) + dump(obj, rng) + rng.choice(TRAILERS)
    elif choice == 5:  # nested values around the depth limit
        obj["extra"] = "@@RAW@@"
        depth = rng.choice([3, 10, schema.MAX_DEPTH - 1, schema.MAX_DEPTH, schema.MAX_DEPTH + 1, 200, 1200])
        text = dump(obj, rng).replace('"@@RAW@@"', nested(depth))
    elif choice == 6:  # duplicate keys
        name = rng.choice(schema.FIELDS)
        text = dump(obj, rng)[:-1] + f', "{name}": {json.dumps(obj[name])}}}'
    elif choice == 7:  # truncated at a random point
        text = dump(obj, rng)
        text = text[:rng.randrange(len(text))]
    elif choice == 8:  # one character deleted, replaced or inserted
        text = dump(obj, rng)
        i = rng.randrange(len(text))
        c = rng.choice('{}[]",:\\ 0a\t\n\x00é')
        text = rng.choice([text[:i] + text[i + 1:], text[:i] + c + text[i + 1:], text[:i] + c + text[i:]])
    elif choice == 9:  # a valid event with unusual but legal text
        obj = {k: (v + " é😀\"\\/" if isinstance(v, str) and k != "action" else v) for k, v in obj.items()}
        text = json.dumps(obj, indent=rng.choice([None, 2]), ensure_ascii=rng.random() < 0.5)
    elif choice == 10:  # escaped key names and surrogates
        text = dump(obj, rng).replace('"timestamp"', rng.choice(['"\\u0074imestamp"', '"time\\u0000stamp"',
                                                              '"timestamp\\ud800"', '"TIMESTAMP"']))
    else:  # timestamp at and around its bounds
        obj["timestamp"] = rng.choice([schema.MIN_TIMESTAMP_MS, schema.MIN_TIMESTAMP_MS - 1,
                                       NOW_MS + schema.MAX_FUTURE_MS, NOW_MS + schema.MAX_FUTURE_MS + 1, -1])
    return (text if text is not None else dump(obj, rng)).encode("utf-8", errors="surrogatepass")


def tsv_mutation(rng: random.Random) -> bytes:
    fields = [str(v) if v is not None else "" for v in good_event(rng).values()]
    choice = rng.randrange(6)
    if choice == 0:
        fields[0] = rng.choice(["", "-1", "+1795600000000", " 1795600000000", "1795600000000 ", "00001795600000000",
                                "0" * 30 + "1795600000000", "9" * 19, "9" * 25, "-" + "9" * 19, "١٢٣", "1e12",
                                "1795600000000\n", "yesterday", str(NOW_MS + schema.MAX_FUTURE_MS + 1)])
    elif choice == 1:
        fields[rng.randrange(len(fields))] = ""
    elif choice == 2:
        fields = fields[:rng.randrange(len(fields))] if rng.random() < 0.5 else fields + ["extra"] * rng.randint(1, 3)
    elif choice == 3:
        fields[2] = rng.choice(["refund", "PAGE_VIEW", "page_view ", ""])
    line = "\t".join(fields)
    if choice == 4:
        line += rng.choice(["\n", "\r\n", "\n\n\r", "\r", " ", "\t"])
    elif choice == 5:
        line = rng.choice(PREFIXES) + line
    return line.encode("utf-8")


def byte_noise(rng: random.Random) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
    if choice == 1:  # invalid UTF-8 inside otherwise valid JSON
        return dump(good_event(rng), rng).encode().replace(b"Page", rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80"]))
    if choice == 2:
        return rng.choice([b"", b" ", b"\n", b"{", b"}", b"[]", b"null", b"1795600000000", b"\t" * 6, b"\t" * 7,
                           b"\n" * 200_000 + b"x", b"\r\n" * 100_000, b" " * 200_000 + b"{", b"\t" * 100_000])
    return "".join(rng.choice("{}[]\":,0 a\t\n") for _ in range(rng.randint(1, 30))).encode()


def generated_values(count: int) -> list[bytes | None]:
    rng = random.Random(SEED)
    values: list[bytes | None] = [None]
    for fmt in ("json", "tsv"):  # valid events and every bad kind the producer injects
        values += [r.value for r in events.EventGenerator(SEED, count=400, fmt=fmt, start_ms=START_MS, rate=0,
                                                          bad_fraction=0.5)]
    event = events.Event(**good_event(rng))
    for kind in events.BAD_KINDS:
        values += [events.malformed(kind, event, random.Random(i)) for i in range(20)]
    makers = [json_mutation] * 6 + [tsv_mutation] * 2 + [byte_noise]
    while len(values) < count:
        values.append(rng.choice(makers)(rng))
    return values


def test_python_and_spark_validators_agree_on_every_value(spark) -> None:
    values = generated_values(6000)
    rows = [(b"k", v, "weblogs", 0, i, KAFKA_TIME, 0) for i, v in enumerate(values)]
    records = spark.createDataFrame(rows, "key binary, value binary, topic string, partition int, offset long, "
                                          "timestamp timestamp, timestampType int")
    parsed = {r.kafka_offset: r for r in parse_records(records).collect()}
    assert len(parsed) == len(values)

    disagreements = []
    verdicts = {"valid": 0}
    for i, value in enumerate(values):
        row = parsed[i]
        expected = schema.check_value(value, now_ms=NOW_MS)
        if row.reason != expected:
            disagreements.append(f"value {value[:300]!r}: python {expected!r}, spark {row.reason!r}")
        elif expected is None:
            verdicts["valid"] += 1
            obj = schema.parse_value(value)
            landed = {f: getattr(row, f) for f in schema.FIELDS}
            if landed != {f: obj.get(f) for f in schema.FIELDS}:
                disagreements.append(f"value {value[:300]!r}: python parsed {obj}, spark landed {landed}")
        else:
            cls = schema.reason_class(expected)
            verdicts[cls] = verdicts.get(cls, 0) + 1
    assert not disagreements, f"{len(disagreements)} disagreements, e.g.:\n" + "\n".join(disagreements[:20])
    # The generator reaches every verdict, or the agreement above would prove less than it claims.
    assert set(verdicts) == {"valid", "empty", "not_utf8", "malformed_json", "unparseable", "malformed_tsv",
                             "missing_field", "wrong_type", "empty_field", "unknown_action", "bad_timestamp"}, verdicts
    assert min(verdicts.values()) >= 10, verdicts
