"""Canonical JSON takes orjson's fast path only where it writes the library's exact bytes
(appendices §Canonical JSON): hashes and signatures depend on every byte."""

from __future__ import annotations

import random
from typing import Any

import canonicaljson
from twisted.trial import unittest

from mxserver.crypto.canonical import encode_canonical_json

_CHARS = [chr(i) for i in range(0x80)] + ["\u2028", "\u2029", "é", "😀", "\u0080", "\ufeff", "\ue000", "中", "\U0010ffff"]


def _value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 3 or r < 0.25:
        return "".join(rng.choice(_CHARS) for _ in range(rng.randint(0, 10)))
    if r < 0.35:
        return rng.choice([0, -1, 2**53 - 1, -(2**53) + 1, 2**63 - 1, 2**64, -(2**70), rng.randint(-(10**6), 10**6)])
    if r < 0.42:
        return rng.choice([1e16, 1e-5, 0.1, -2.5, 1e300, 5e-324, 1.0, -0.0, 1e22, 123456789.125])
    if r < 0.5:
        return rng.choice([True, False, None])
    if r < 0.75:
        return {"".join(rng.choice(_CHARS) for _ in range(rng.randint(0, 4))): _value(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    return [_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]


class CanonicalEncodingTests(unittest.TestCase):
    def test_same_bytes_as_the_library_for_any_json(self) -> None:
        rng = random.Random(19)
        for _ in range(5000):
            value = _value(rng)
            self.assertEqual(encode_canonical_json(value), canonicaljson.encode_canonical_json(value), repr(value))

    def test_floats_and_their_look_alikes(self) -> None:
        for value in [1e16, [1e16], {"a": 1e-05}, {"a": [0, 2.5]}, {"a": "x:1.5"}, {"a": "[1e5"}, {"b": 1, "a": 2}, {"é": 1, "z": 2, "😀": 3, "\ue000": 4}]:
            self.assertEqual(encode_canonical_json(value), canonicaljson.encode_canonical_json(value), repr(value))
        self.assertEqual(encode_canonical_json({"a": 1e16}), b'{"a":1e+16}')

    def test_what_the_library_refuses_is_refused(self) -> None:
        for value in [float("nan"), {"a": float("inf")}, [float("-inf")]]:
            with self.assertRaises(ValueError):
                encode_canonical_json(value)
        with self.assertRaises(UnicodeEncodeError):
            encode_canonical_json("\ud800")

    def test_control_characters_use_the_shortest_escape(self) -> None:
        self.assertEqual(encode_canonical_json("\n\t\x00\x1f\"\\"), b'"\\n\\t\\u0000\\u001f\\"\\\\"')
