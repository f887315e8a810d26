"""The event schema, defined once, and its Python validator.

This module is the single definition of what a valid clickstream event is (ARCHITECTURE.md, "event
value"). Two validators are generated from it and must agree record for record:

- ``check_value`` / ``validate_event`` below, in pure Python (the producer's bad-record kinds, the
  quarantine tools and the tests use it);
- ``lambdaflow.ingest_transforms.parse_records``, Spark column expressions built from ``EVENT_SCHEMA``
  (the streaming ingest uses it).

``tests/unit/test_schema_agreement.py`` feeds thousands of generated values through both and fails
on any value where the verdict or the reason differs.

**Rules**, checked in this order; the first that fails is the record's reason:

1. the value is not empty (``empty``) and is valid UTF-8 (``not_utf8``);
2. a value whose first character other than JSON whitespace (space, tab, CR, LF) is ``{`` is JSON:
   it must be exactly one well-formed JSON object (RFC 8259: no NaN/Infinity, no comments, no
   trailing content, no duplicate keys at any level, no lone surrogate escapes), nested at most
   ``MAX_DEPTH`` deep, with number literals of at most ``MAX_NUMBER_DIGITS`` digits
   (``malformed_json``);
3. any other value is the course's tab-separated line: after trailing CR/LF characters are removed,
   exactly 7 tab-separated fields (``unparseable`` when there is no tab at all, else
   ``malformed_tsv``). A TSV line is all text by nature: its fields are strings, except that a
   ``timestamp`` field of ASCII digits (optionally a leading ``-``) that fits a signed 64-bit
   integer is an integer, and an empty ``prev_page`` is null (an empty other field is an empty
   string);
4. then each field of ``EVENT_SCHEMA``, in order: present and not null unless optional
   (``missing_field: <f>``); of its JSON type, never coerced (``wrong_type: <f>``; a JSON number
   is an integer only when it is written without fraction or exponent and fits 64 bits); a
   non-empty string where required (``empty_field: <f>``); within its domain (``unknown_action``
   for ``action``, ``bad_timestamp`` for ``timestamp``, which must lie in [2000-01-01, the
   record's Kafka timestamp + 1 day]).

Fields not in the schema are allowed and ignored (they do not land).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Any

HOUR_MS = 3_600_000
MIN_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_FUTURE_MS = 86_400_000  # event time may lead the record's Kafka timestamp by at most one day
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
MAX_DEPTH = 64  # objects/arrays nested deeper than this are malformed (well inside every parser's limit)
MAX_NUMBER_DIGITS = 1000  # Spark's JSON parser (Jackson) rejects longer number literals
ACTIONS = ("page_view", "add_to_cart", "purchase")
JSON_WHITESPACE = " \t\n\r"
TSV_SEPARATOR = "\t"


@dataclasses.dataclass(frozen=True)
class Field:
    """One field of the event: its JSON type and the rules on its value."""

    name: str
    type: str  # "integer" or "string"
    optional: bool = False  # may be absent or null
    non_empty: bool = False  # strings only: "" is rejected
    allowed: tuple[str, ...] = ()  # strings only: the value must be one of these
    domain_reason: str = ""  # the reason class of a value outside the field's domain


EVENT_SCHEMA: tuple[Field, ...] = (
    Field("timestamp", "integer", domain_reason="bad_timestamp"),
    Field("referrer", "string", non_empty=True),
    Field("action", "string", allowed=ACTIONS, domain_reason="unknown_action"),
    Field("prev_page", "string", optional=True),
    Field("visitor", "string", non_empty=True),
    Field("page", "string", non_empty=True),
    Field("product", "string", non_empty=True),
)
FIELDS = tuple(f.name for f in EVENT_SCHEMA)
REQUIRED_FIELDS = tuple(f.name for f in EVENT_SCHEMA if not f.optional)
TSV_FIELDS = len(EVENT_SCHEMA)
_TSV_INTEGER = re.compile(r"-?[0-9]+")


# -- reasons: one text per rule, built the same way by both validators ------------------------
class Reason:
    """The quarantine reasons. The class is the text before the first ``:``."""

    EMPTY = "empty: the value is empty"
    NOT_UTF8 = "not_utf8: the value is not valid UTF-8"
    MALFORMED_JSON = "malformed_json: not exactly one well-formed JSON object"
    UNPARSEABLE = f"unparseable: neither a JSON object nor a tab-separated line of {TSV_FIELDS} fields"
    MALFORMED_TSV = f"malformed_tsv: expected {TSV_FIELDS} tab-separated fields, got "  # + the count
    MISSING = "missing_field: "  # + field
    EMPTY_FIELD = "empty_field: "  # + field
    TIMESTAMP_RANGE = " is outside [2000-01-01, Kafka time + 1 day]"
    VALUE_CHARS = 40  # how much of an offending value a reason quotes

    @staticmethod
    def wrong_type(field: Field, got: str) -> str:
        return f"wrong_type: {field.name} (expected {field.type}, got {got})"

    @staticmethod
    def not_allowed(field: Field, value: str) -> str:
        return (f"{field.domain_reason}: {field.name} '{value[:Reason.VALUE_CHARS]}' is not one of "
                f"{', '.join(field.allowed)}")

    @staticmethod
    def out_of_range(field: Field, value: int) -> str:
        return f"{field.domain_reason}: {field.name} {value}{Reason.TIMESTAMP_RANGE}"


def reason_class(reason: str | None) -> str | None:
    return None if reason is None else reason.split(":", 1)[0]


# -- Python validator ------------------------------------------------------------------------
class Malformed(ValueError):
    """A value that is not an event object at all; its text is the reason."""


def json_type(value: Any) -> str:
    """The JSON type name of a parsed value; ``integer`` only for numbers that fit 64 bits."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer" if INT64_MIN <= value <= INT64_MAX else "number"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise Malformed(Reason.MALFORMED_JSON)
    return obj


def _reject_constant(_name: str) -> Any:
    raise Malformed(Reason.MALFORMED_JSON)  # NaN, Infinity, -Infinity are not JSON


def _parse_int(text: str) -> int:
    if len(text) - text.startswith("-") > MAX_NUMBER_DIGITS:
        raise Malformed(Reason.MALFORMED_JSON)
    return int(text)


def _parse_float(text: str) -> float:
    if sum(c.isdigit() for c in text) > MAX_NUMBER_DIGITS:
        raise Malformed(Reason.MALFORMED_JSON)
    return float(text)


_decoder = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant,
                            parse_int=_parse_int, parse_float=_parse_float)


def nesting_depth(text: str) -> int:
    """How deep objects and arrays nest in JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "}]":
            depth -= 1
    return deepest


def _parse_json(text: str) -> dict[str, Any]:
    if text.count("{") + text.count("[") > MAX_DEPTH and nesting_depth(text) > MAX_DEPTH:
        raise Malformed(Reason.MALFORMED_JSON)
    try:
        obj = _decoder.decode(text)  # also rejects trailing content ("Extra data")
        if "\\u" in text:  # an escaped lone surrogate decodes to a string that is not Unicode text
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError, UnicodeEncodeError):
        raise Malformed(Reason.MALFORMED_JSON) from None
    if not isinstance(obj, dict):
        raise Malformed(Reason.MALFORMED_JSON)
    return obj


def _parse_tsv(text: str) -> dict[str, Any]:
    fields = text.rstrip("\r\n").split(TSV_SEPARATOR)
    if len(fields) == 1:
        raise Malformed(Reason.UNPARSEABLE)
    if len(fields) != TSV_FIELDS:
        raise Malformed(f"{Reason.MALFORMED_TSV}{len(fields)}")
    obj: dict[str, Any] = {}
    for field, value in zip(EVENT_SCHEMA, fields):
        if field.type == "integer" and _TSV_INTEGER.fullmatch(value) and len(value.lstrip("-0")) <= 19:
            number = int(value)  # (digits checked first: int() refuses texts of over 4,300 digits)
            obj[field.name] = number if INT64_MIN <= number <= INT64_MAX else value
        elif field.optional and value == "":
            obj[field.name] = None
        else:
            obj[field.name] = value
    return obj


def is_json_text(text: str) -> bool:
    return text.lstrip(JSON_WHITESPACE).startswith("{")


def parse_value(raw: bytes | None) -> dict[str, Any]:
    """The object of a JSON or TSV record value, not yet validated; ``Malformed`` (the reason) when
    the value is not an object at all."""
    if not raw:
        raise Malformed(Reason.EMPTY)
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed(Reason.NOT_UTF8) from None
    return _parse_json(text) if is_json_text(text) else _parse_tsv(text)


def validate_event(obj: Any, now_ms: int | None = None) -> str | None:
    """Why ``obj`` (a parsed value) is not a valid event, or None. ``now_ms`` is the record's Kafka
    timestamp (default: the current time): event time may lead it by at most ``MAX_FUTURE_MS``."""
    if not isinstance(obj, dict):
        return Reason.MALFORMED_JSON
    for field in EVENT_SCHEMA:
        value = obj.get(field.name)
        if value is None:
            if field.optional:
                continue
            return f"{Reason.MISSING}{field.name}"
        got = json_type(value)
        if got != field.type:
            return Reason.wrong_type(field, got)
        if field.non_empty and value == "":
            return f"{Reason.EMPTY_FIELD}{field.name}"
        if field.allowed and value not in field.allowed:
            return Reason.not_allowed(field, value)
        if field.type == "integer":
            latest = (int(time.time() * 1000) if now_ms is None else now_ms) + MAX_FUTURE_MS
            if not MIN_TIMESTAMP_MS <= value <= latest:
                return Reason.out_of_range(field, value)
    return None


def check_value(raw: bytes | None, now_ms: int | None = None) -> str | None:
    """Why a raw record value would be quarantined, or None when it holds a valid event."""
    try:
        return validate_event(parse_value(raw), now_ms)
    except Malformed as exc:
        return str(exc)
