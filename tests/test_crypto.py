"""Tests for mxserver.crypto: canonical JSON, base64, signing keys, JSON signing.

Vectors are from the spec: appendices §Canonical JSON (Examples),
§Unpadded Base64 and §Cryptographic Test Vectors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile

import orjson
from twisted.trial import unittest

from mxserver.crypto.canonical import (
    CanonicalJSONError,
    check_strict_canonical_json,
    decode_json,
    encode_canonical_json,
    encode_json,
    is_strict_canonical_json,
)
from mxserver.crypto.keys import (
    decode_verify_key,
    format_signing_keys,
    generate_signing_key,
    get_verify_key,
    key_id,
    load_or_generate_signing_key,
    read_signing_key_file,
    read_signing_keys,
    signing_key_from_seed,
    verify_key_base64,
    write_signing_key_file,
)
from mxserver.crypto.signing import (
    SignatureError,
    decode_base64,
    encode_base64,
    sign_json,
    signature_ids,
    verify_signed_json,
)

# appendices §Cryptographic Test Vectors
SIGNING_KEY_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SERVER_NAME = "domain"
KEY_ID = "ed25519:1"


def spec_signing_key():
    return signing_key_from_seed(decode_base64(SIGNING_KEY_SEED), "1")


# (input JSON text, expected canonical JSON text): appendices §Canonical JSON, Examples.
CANONICAL_EXAMPLES = [
    ("{}", "{}"),
    ('{\n    "one": 1,\n    "two": "Two"\n}', '{"one":1,"two":"Two"}'),
    ('{\n    "b": "2",\n    "a": "1"\n}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        """{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}""",
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":'
        '[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},'
        '"success":true}}',
    ),
    ('{\n    "a": "日本語"\n}', '{"a":"日本語"}'),
    ('{\n    "本": 2,\n    "日": 1\n}', '{"日":1,"本":2}'),
    ('{\n    "a": "\\u65E5"\n}', '{"a":"日"}'),
    ('{\n    "a": null\n}', '{"a":null}'),
    ('{\n    "a": -0,\n    "b": 1e10\n}', '{"a":0,"b":10000000000}'),
]


class CanonicalJSONTests(unittest.SynchronousTestCase):
    def test_spec_examples(self) -> None:
        for given, expected in CANONICAL_EXAMPLES:
            self.assertEqual(encode_canonical_json(decode_json(given)), expected.encode("utf-8"), given)

    def test_spec_examples_from_bytes(self) -> None:
        for given, expected in CANONICAL_EXAMPLES:
            self.assertEqual(encode_canonical_json(decode_json(given.encode("utf-8"))), expected.encode("utf-8"))

    def test_control_characters_escaped_per_grammar(self) -> None:
        # appendices §Canonical JSON grammar: \b \t \n \f \r have short escapes,
        # other controls are \u00XX with lowercase hex; DEL and non-ASCII are raw.
        value = {"s": '\b\t\n\f\r\x01\x1f\x7f"\\é'}
        self.assertEqual(encode_canonical_json(value), '{"s":"\\b\\t\\n\\f\\r\\u0001\\u001f\x7f\\"\\\\é"}'.encode())

    def test_decode_rejects_non_json_constants(self) -> None:
        for text in ('{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}'):
            self.assertRaises(ValueError, decode_json, text)

    def test_decode_keeps_decimal_floats(self) -> None:
        self.assertIsInstance(decode_json('{"a": 1.5}')["a"], float)
        self.assertIsInstance(decode_json('{"a": 2.0}')["a"], float)
        self.assertIsInstance(decode_json('{"a": 1e-3}')["a"], float)
        self.assertEqual(decode_json('{"a": 3E+2}')["a"], 300)

    def test_strict_accepts_valid(self) -> None:
        check_strict_canonical_json({"a": [1, -1, 2**53 - 1, -(2**53) + 1, True, False, None, "x", {"b": []}], "c": ()})
        self.assertTrue(is_strict_canonical_json({"a": 0}))

    def test_strict_rejects_floats_recursively(self) -> None:
        for bad in (1.0, {"a": 1.5}, {"a": [{"b": 0.0}]}, [[[[2.5]]]]):
            self.assertRaises(CanonicalJSONError, check_strict_canonical_json, bad)

    def test_strict_rejects_out_of_range_ints(self) -> None:
        for bad in (2**53, -(2**53), {"a": [2**63]}, {"x": {"y": -(2**60)}}):
            self.assertRaises(CanonicalJSONError, check_strict_canonical_json, bad)
        self.assertFalse(is_strict_canonical_json({"a": 2**53}))

    def test_strict_rejects_non_json_types(self) -> None:
        for bad in ({"a": b"x"}, {"a": {1, 2}}, {1: "a"}, {"a": object()}):
            self.assertRaises(CanonicalJSONError, check_strict_canonical_json, bad)

    def test_strict_error_names_path(self) -> None:
        e = self.assertRaises(CanonicalJSONError, check_strict_canonical_json, {"content": {"x": [0, 1.5]}})
        self.assertEqual(e.path, ".content.x[1]")
        self.assertIn("float", str(e))

    def test_strict_handles_deep_nesting(self) -> None:
        deep: object = 1
        for _ in range(5000):
            deep = [deep]
        check_strict_canonical_json(deep)  # no RecursionError

    def test_lenient_encoding_keeps_floats(self) -> None:
        # Room v1-5 events may carry floats (v1-canonical-json); encoding must not fail.
        self.assertEqual(encode_canonical_json({"a": 50.57}), b'{"a":50.57}')

    def test_response_encoding_embeds_encoded_fragments(self) -> None:
        # /messages assembles its events from JSON encoded already: embedded as they are, also
        # when something else in the answer (an integer beyond 64 bits, which rooms v1-5
        # allow) needs the standard library's encoder.
        event = orjson.Fragment(b'{"content":{"n":1180591620717411303424},"type":"m.room.message"}')
        self.assertEqual(json.loads(encode_json({"chunk": [event]})), {"chunk": [{"content": {"n": 2**70}, "type": "m.room.message"}]})
        self.assertEqual(
            json.loads(encode_json({"chunk": [event], "state": [{"n": -(2**70)}]})),
            {"chunk": [{"content": {"n": 2**70}, "type": "m.room.message"}], "state": [{"n": -(2**70)}]},
        )


class Base64Tests(unittest.SynchronousTestCase):
    def test_spec_examples(self) -> None:
        # appendices §Unpadded Base64
        examples = {
            "": "",
            "f": "Zg",
            "fo": "Zm8",
            "foo": "Zm9v",
            "foob": "Zm9vYg",
            "fooba": "Zm9vYmE",
            "foobar": "Zm9vYmFy",
        }
        for raw, enc in examples.items():
            self.assertEqual(encode_base64(raw.encode()), enc)
            self.assertEqual(decode_base64(enc), raw.encode())

    def test_accepts_padding(self) -> None:
        self.assertEqual(decode_base64("Zm8="), b"fo")
        self.assertEqual(decode_base64("Zg=="), b"f")

    def test_urlsafe(self) -> None:
        data = bytes([0xFB, 0xFF, 0xBF])
        self.assertEqual(encode_base64(data), "+/+/")
        self.assertEqual(encode_base64(data, urlsafe=True), "-_-_")
        self.assertEqual(decode_base64("-_-_", urlsafe=True), data)

    def test_rejects_garbage(self) -> None:
        for bad in ("Z", "Zm9v!", "Zm 9v", "-_-_", "é"):
            self.assertRaises(ValueError, decode_base64, bad)


class KeyTests(unittest.SynchronousTestCase):
    def test_generated_key_id(self) -> None:
        k = generate_signing_key()
        self.assertRegex(key_id(k), r"^ed25519:[A-Za-z0-9]+$")
        self.assertNotEqual(key_id(k), key_id(generate_signing_key()))
        self.assertEqual(key_id(generate_signing_key("abc")), "ed25519:abc")

    def test_verify_key(self) -> None:
        k = spec_signing_key()
        vk = get_verify_key(k)
        self.assertEqual(key_id(vk), KEY_ID)
        b64 = verify_key_base64(k)
        self.assertEqual(b64, verify_key_base64(vk))
        self.assertEqual(len(decode_base64(b64)), 32)
        self.assertEqual(bytes(decode_verify_key(KEY_ID, b64)), bytes(vk))

    def test_decode_verify_key_errors(self) -> None:
        b64 = verify_key_base64(spec_signing_key())
        self.assertRaises(ValueError, decode_verify_key, "curve25519:1", b64)
        self.assertRaises(ValueError, decode_verify_key, "ed25519:1", "Zm9v")
        self.assertRaises(ValueError, decode_verify_key, "ed25519:1", "!!!")

    def test_file_round_trip_and_mode(self) -> None:
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        path = os.path.join(d, "signing.key")
        k1, k2 = generate_signing_key("a1"), spec_signing_key()
        old = os.umask(0)
        try:
            write_signing_key_file(path, [k1, k2])
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            text = f.read()
        # The spec's seed string has non-zero padding bits ("...XA1"); its
        # canonical unpadded encoding ends "...XA0". Same 32 bytes.
        self.assertEqual(text.splitlines()[1], "ed25519 1 " + encode_base64(decode_base64(SIGNING_KEY_SEED)))
        self.assertEqual(decode_base64(text.splitlines()[1].split()[2]), decode_base64(SIGNING_KEY_SEED))
        for line in text.splitlines():
            self.assertRegex(line, r"^ed25519 [A-Za-z0-9]+ [A-Za-z0-9+/]{43}$")
        keys = read_signing_key_file(path)
        self.assertEqual([key_id(k) for k in keys], ["ed25519:a1", KEY_ID])
        self.assertEqual([bytes(k) for k in keys], [bytes(k1), bytes(k2)])
        self.assertEqual(os.listdir(d), ["signing.key"])  # no temp file left behind

    def test_rewrite_tightens_mode(self) -> None:
        fd, path = tempfile.mkstemp()
        os.close(fd)
        self.addCleanup(os.unlink, path)
        os.chmod(path, 0o644)
        write_signing_key_file(path, [spec_signing_key()])
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_load_or_generate(self) -> None:
        d = tempfile.mkdtemp()
        path = os.path.join(d, "k")
        self.addCleanup(shutil.rmtree, d)
        k = load_or_generate_signing_key(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        again = load_or_generate_signing_key(path)
        self.assertEqual((key_id(again), bytes(again)), (key_id(k), bytes(k)))

    def test_read_skips_blanks_and_comments(self) -> None:
        text = "# my key\n\n" + format_signing_keys([spec_signing_key()]) + "\n"
        [k] = read_signing_keys(text.splitlines())
        self.assertEqual(key_id(k), KEY_ID)

    def test_read_rejects_bad_lines(self) -> None:
        for bad in ("ed25519 1", "rsa 1 " + SIGNING_KEY_SEED, "ed25519 1 Zm9v", "ed25519 1 !!!!"):
            self.assertRaises(ValueError, read_signing_keys, [bad])


class JSONSigningTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.key = spec_signing_key()
        self.vk = get_verify_key(self.key)

    def test_vector_empty_object(self) -> None:
        # appendices §JSON Signing
        self.assertEqual(
            sign_json({}, SERVER_NAME, self.key),
            {
                "signatures": {
                    "domain": {
                        "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
                    }
                }
            },
        )

    def test_vector_with_data(self) -> None:
        self.assertEqual(
            sign_json({"one": 1, "two": "Two"}, SERVER_NAME, self.key),
            {
                "one": 1,
                "signatures": {
                    "domain": {
                        "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
                    }
                },
                "two": "Two",
            },
        )

    def test_unsigned_and_other_signatures_not_covered(self) -> None:
        obj = sign_json(
            {"a": 1, "unsigned": {"age": 5}, "signatures": {"other": {"ed25519:x": "abc"}}}, "domain", self.key
        )
        self.assertEqual(obj["signatures"]["other"], {"ed25519:x": "abc"})
        self.assertEqual(obj["unsigned"], {"age": 5})
        vector = sign_json({"a": 1}, "domain", self.key)
        self.assertEqual(obj["signatures"]["domain"], vector["signatures"]["domain"])
        obj["unsigned"]["age"] = 99
        verify_signed_json(obj, "domain", self.vk)

    def test_verify_ok(self) -> None:
        obj = sign_json({"one": 1, "two": "Two"}, SERVER_NAME, self.key)
        verify_signed_json(obj, SERVER_NAME, self.vk)
        verify_signed_json(obj, SERVER_NAME, {KEY_ID: self.vk, "ed25519:unknown": self.vk})
        self.assertEqual(signature_ids(obj, SERVER_NAME), [KEY_ID])

    def test_verify_round_trips_through_json(self) -> None:
        obj = json.loads(json.dumps(sign_json({"x": ["y", {"z": None}]}, SERVER_NAME, self.key), indent=3))
        verify_signed_json(obj, SERVER_NAME, self.vk)

    def test_verify_tampered(self) -> None:
        obj = sign_json({"one": 1, "two": "Two"}, SERVER_NAME, self.key)
        obj["two"] = "Three"
        self.assertRaises(SignatureError, verify_signed_json, obj, SERVER_NAME, self.vk)

    def test_verify_missing_or_unknown(self) -> None:
        obj = sign_json({"one": 1}, SERVER_NAME, self.key)
        self.assertRaises(SignatureError, verify_signed_json, obj, "other.server", self.vk)
        self.assertRaises(SignatureError, verify_signed_json, {"one": 1}, SERVER_NAME, self.vk)
        self.assertRaises(SignatureError, verify_signed_json, obj, SERVER_NAME, {"ed25519:2": self.vk})
        other = get_verify_key(generate_signing_key("1"))
        self.assertRaises(SignatureError, verify_signed_json, obj, SERVER_NAME, other)

    def test_verify_malformed_signature(self) -> None:
        for bad in ("!!notbase64", "Zm9v", 12):
            obj = {"one": 1, "signatures": {SERVER_NAME: {KEY_ID: bad}}}
            self.assertRaises(SignatureError, verify_signed_json, obj, SERVER_NAME, self.vk)

    def test_signature_ids_skip_unknown_algorithms(self) -> None:
        obj = {"signatures": {"s": {"ed25519:a": "x", "curve25519:b": "y"}}}
        self.assertEqual(signature_ids(obj, "s"), ["ed25519:a"])
        self.assertEqual(signature_ids(obj, "t"), [])
        self.assertTrue(re.match("^ed25519:", signature_ids(obj, "s")[0]))
