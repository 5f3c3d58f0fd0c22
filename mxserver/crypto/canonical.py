"""Canonical JSON: the byte encoding that every hash and signature covers.

The encoding itself comes from the ``canonicaljson`` library (shortest UTF-8
form, keys sorted by code point; appendices §Canonical JSON). This module adds
the strict value check that room versions 6 and later demand
(``v6-canonical-json``), a JSON parser suited to Matrix input, and
:func:`encode_json`, the compact (not canonical) encoding of what goes on the
wire unsigned: responses and request bodies.
"""

from __future__ import annotations

import json
import re
from typing import Any

import canonicaljson
import orjson

#: appendices §Canonical JSON: numbers must lie in [-(2**53)+1, (2**53)-1] so
#: that every implementation can hold them exactly in an IEEE double.
CANONICALJSON_MAX_INT = 2**53 - 1
CANONICALJSON_MIN_INT = -(2**53) + 1


class CanonicalJSONError(ValueError):
    """A value cannot be represented in strict canonical JSON (room v6+)."""

    def __init__(self, reason: str, path: str = "") -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{reason} at {path}" if path else reason)


def encode_canonical_json(obj: Any) -> bytes:
    """Encode ``obj`` as canonical JSON bytes (appendices §Canonical JSON).

    Lenient on purpose: floats and large integers are encoded the way the
    library always has, because events in room versions 1-5 may contain them
    and their hashes were computed over that encoding (v1-canonical-json).
    Use :func:`check_strict_canonical_json` first where the room version is
    strict.

    orjson with sorted keys writes the same bytes as the library for everything but floats
    (its exponent notation differs) and NaN/Infinity (it writes ``null``), several times
    faster: this is on every send and every received event. A float token in the output
    starts right after ``:``, ``,`` or ``[`` with digits and then ``.`` or ``e``; any output
    with such a run or with ``null`` (where NaN and Infinity would be, which the library
    refuses; inside a string too: a false alarm only costs the slow path), and any value
    orjson refuses (integers beyond 64 bits, non-string keys, lone surrogates), goes to the
    library.
    """
    try:
        out = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except (TypeError, OverflowError):
        return canonicaljson.encode_canonical_json(obj)
    if b"null" not in out and _FLOAT_TOKEN.search(out) is None:
        return out
    return canonicaljson.encode_canonical_json(obj)


#: where a float may be in compact JSON (see :func:`encode_canonical_json`)
_FLOAT_TOKEN = re.compile(rb"(?:^|[:,\[])-?[0-9]+[.eE]")


def encode_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON of ``obj`` (keys in their order, non-ASCII as is), for responses and
    request bodies that nobody hashes or signs.

    orjson encodes a large /sync or /messages answer several times faster than the standard
    library; what it refuses (integers beyond 64 bits, which room versions 1-5 allow in events)
    the standard library encodes, to the same JSON. ``orjson.Fragment`` values (JSON encoded
    already) are embedded as they are.
    """
    try:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, OverflowError):
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=_fragment_value).encode("utf-8")


def _fragment_value(value: Any) -> Any:
    """What JSON already encoded (an ``orjson.Fragment``, as /messages assembles its events from)
    stands for, for the standard library's encoder."""
    if isinstance(value, orjson.Fragment):
        return json.loads(orjson.dumps(value))
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def check_strict_canonical_json(obj: Any) -> None:
    """Raise :class:`CanonicalJSONError` if ``obj`` is not strict canonical JSON.

    Rooms v6+ (``v6-canonical-json``) MUST reject any float and any integer
    outside [-(2**53)+1, (2**53)-1], at any depth. Other non-JSON values
    (tuples are accepted as arrays, but sets, bytes, NaN...) are rejected too.
    """
    # An explicit stack instead of recursion: hostile input can nest deeply
    # and must not blow the interpreter's recursion limit. A value's path is a
    # (parent path, key) link, spelt out only for the error: formatting a path
    # string per value was most of the cost of checking a large event.
    stack: list[tuple[Any, Any]] = [(obj, None)]
    while stack:
        value, node = stack.pop()
        # bool is a subclass of int in Python; it is a JSON literal, not a number.
        if value is None or value is True or value is False or isinstance(value, str):
            continue
        if isinstance(value, int):
            if not CANONICALJSON_MIN_INT <= value <= CANONICALJSON_MAX_INT:
                raise CanonicalJSONError("integer out of range", _path(node))
            continue
        if isinstance(value, float):
            raise CanonicalJSONError("float values are not allowed", _path(node))
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise CanonicalJSONError("object keys must be strings", _path(node))
                if type(v) is not str:  # strings need no check: skip the stack
                    stack.append((v, (node, k)))
            continue
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                if type(v) is not str:
                    stack.append((v, (node, i)))
            continue
        raise CanonicalJSONError(f"{type(value).__name__} is not a JSON value", _path(node))


def _path(node: Any) -> str:
    """``.a.b[2]`` for the (parent, key) links of :func:`check_strict_canonical_json`; ``$`` at the top."""
    parts: list[str] = []
    while node is not None:
        node, key = node
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "".join(reversed(parts)) or "$"


def is_strict_canonical_json(obj: Any) -> bool:
    """True if :func:`check_strict_canonical_json` would accept ``obj``."""
    try:
        check_strict_canonical_json(obj)
    except CanonicalJSONError:
        return False
    return True


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are Python extensions, not JSON (RFC 8259 §6).
    raise ValueError(f"invalid JSON number {name}")


def _parse_number_with_fraction_or_exponent(literal: str) -> int | float:
    # appendices §Canonical JSON examples: `1e10` canonicalises to
    # `10000000000` -- an exponent-only literal denotes an integer. Literals
    # with a decimal point stay floats: they are what v6+ rooms reject, and
    # what legacy (v1-5) events were hashed with.
    if "." not in literal:
        mantissa, _, exponent = literal.lower().partition("e")
        exp = int(exponent)
        if 0 <= exp <= 400:
            return int(mantissa) * 10**exp
    return float(literal)


#: How deeply arrays and objects may nest in JSON we accept. The spec sets no limit, but
#: every reader of a value (validation, canonical encoding, redaction) walks it
#: recursively: a body nested thousands deep would exhaust the stack there, after parsing.
#: Events are at most 64 KiB and real content nests a handful of levels.
MAX_JSON_DEPTH = 100


class JSONDecodeError(ValueError):
    """Text that is not JSON Matrix accepts (see :func:`decode_json`)."""


def decode_json(data: bytes | str) -> Any:
    """Parse JSON text the way Matrix expects, raising :class:`JSONDecodeError` (a ValueError).

    Besides JSON syntax and UTF-8 it rejects: ``NaN``/``Infinity``; nesting deeper than
    :data:`MAX_JSON_DEPTH`; lone UTF-16 surrogate escapes (``"\\ud800"``), which name no
    Unicode character and cannot be encoded as UTF-8 (appendices §Canonical JSON encodes
    strings as UTF-8). Exponent-form integers (``1e10``) become ints (see above).
    """
    try:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        value = json.loads(
            data,
            parse_constant=_reject_constant,
            parse_float=_parse_number_with_fraction_or_exponent,
        )
    except RecursionError:
        raise JSONDecodeError("JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise JSONDecodeError(str(e)) from None
    # Surrogates can only come from \u escapes (UTF-8 input cannot hold them): skip the
    # walk's string checks for text without any.
    _check_value(value, check_strings="\\u" in data)
    return value


def _check_value(value: Any, check_strings: bool) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_JSON_DEPTH:
                raise JSONDecodeError("JSON nested too deeply")
            for key, child in item.items():
                if check_strings:
                    _check_string(key)
                if isinstance(child, (dict, list)) or (check_strings and isinstance(child, str)):
                    stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > MAX_JSON_DEPTH:
                raise JSONDecodeError("JSON nested too deeply")
            for child in item:
                if isinstance(child, (dict, list)) or (check_strings and isinstance(child, str)):
                    stack.append((child, depth + 1))
        elif isinstance(item, str):
            _check_string(item)


def _check_string(s: str) -> None:
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise JSONDecodeError("JSON string holds a lone surrogate escape") from None
