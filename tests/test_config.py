"""Config loading: defaults, the contract's keys, errors naming the key path, the sample."""

from __future__ import annotations

import os
import tempfile

import yaml
from twisted.trial import unittest

from mxserver.config import ConfigError, load_config, load_config_dict, render_sample
from mxserver.tap import build_config, parse_listen

CONTRACT = """
server_name: localhost
public_baseurl: http://localhost:8008/
data_dir: ./data
signing_key_path: ./data/signing.key
listeners:
  - {host: 127.0.0.1, port: 8008, resources: [client, federation, media]}
  - {host: 127.0.0.1, port: 8448, resources: [client, federation, media], tls: true}
tls: {certificate_path: tls.crt, private_key_path: tls.key}
database: {backend: sqlite, path: ./data/homeserver.db}
media: {store_path: ./data/media, max_upload_size: 50M}
log: {path: null, level: INFO, format: text}
registration:
  enabled: false
  registration_token: null
  shared_secret: null
  allow_guests: false
rate_limits: {enabled: true}
federation:
  enabled: true
  verify_tls: true
  ca_certificates: []
  ip_range_blacklist: [10.0.0.0/8]
  ip_range_whitelist: []
room_directory: {publication_allowed: true, public_rooms_without_auth: false, public_rooms_over_federation: false}
app_service_config_files: []
default_room_version: "12"
modules: []
"""


class ConfigTests(unittest.SynchronousTestCase):
    def _write(self, text: str) -> str:
        d = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(d, True))
        path = os.path.join(d, "homeserver.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_defaults(self) -> None:
        c = load_config(None)
        self.assertEqual(c.server_name, "localhost")
        self.assertEqual(c.data_dir, "./data")
        self.assertEqual(c.database.backend, "sqlite")
        self.assertEqual([(x.host, x.port) for x in c.listeners], [("127.0.0.1", 8008)])
        self.assertEqual(c.listeners[0].resources, ["client", "federation", "media"])
        self.assertFalse(c.registration.enabled)

    def test_every_contract_key_loads_and_paths_are_relative_to_the_file(self) -> None:
        path = self._write(CONTRACT)
        c = load_config(path)
        base = os.path.dirname(path)
        self.assertEqual(c.signing_key_file, os.path.join(base, "data/signing.key"))
        self.assertEqual(c.sqlite_path, os.path.join(base, "data/homeserver.db"))
        self.assertEqual(c.tls.certificate_path, os.path.join(base, "tls.crt"))
        self.assertEqual(c.media.max_upload_size, 50 * 1024 * 1024)
        self.assertTrue(c.listeners[1].tls)
        self.assertEqual(c.federation.ip_range_blacklist, ["10.0.0.0/8"])

    def test_server_name_required_with_a_file(self) -> None:
        with self.assertRaisesRegex(ConfigError, "^server_name: required"):
            load_config(self._write("data_dir: x\n"))

    def test_errors_name_the_key_path(self) -> None:
        cases = {
            "listeners[0].port: expected an integer": {"listeners": [{"port": "x"}]},
            "listeners[1].resources[0]: expected one of": {"listeners": [{"port": 1}, {"port": 2, "resources": ["bogus"]}]},
            "frobnicate: unknown key": {"frobnicate": True},
            "registration.enable: unknown key": {"registration": {"enable": True}},
            "rate_limits.enabled: expected true or false": {"rate_limits": {"enabled": "yes"}},
            "media.max_upload_size: expected a size": {"media": {"max_upload_size": "lots"}},
            "database.dsn: required for the postgres backend": {"database": {"backend": "postgres"}},
            "default_room_version: unknown room version": {"default_room_version": "99"},
            "server_name: invalid value": {"server_name": "bad name!"},
            "listeners[0].port: invalid value": {"listeners": [{"port": 70000}]},
            "listeners[0].tls: needs tls.certificate_path": {"listeners": [{"port": 1, "tls": True}]},
            "federation.ip_range_whitelist": {"federation": {"ip_range_whitelist": ["not-a-net"]}},
            "modules[0].group: required": {"modules": [{"name": "x"}]},
            "log.level: expected one of": {"log": {"level": "LOUD"}},
            "well_known.support_contacts[0].role: required": {"well_known": {"support_contacts": [{"matrix_id": "@a:b"}]}},
            "well_known.support_contacts[0]: needs matrix_id or email_address": {
                "well_known": {"support_contacts": [{"role": "m.role.admin"}]}
            },
            "well_known.support_contacts[0].matrix_id: not a user ID": {
                "well_known": {"support_contacts": [{"role": "m.role.admin", "matrix_id": "admin"}]}
            },
        }
        for message, data in cases.items():
            with self.assertRaises(ConfigError) as cm:
                load_config_dict(data)
            self.assertTrue(str(cm.exception).startswith(message), (message, str(cm.exception)))
            self.assertNotIn("\n", str(cm.exception))

    def test_not_yaml(self) -> None:
        with self.assertRaisesRegex(ConfigError, "not valid YAML"):
            load_config(self._write("server_name: [unclosed\n"))

    def test_sample_round_trips_to_the_defaults(self) -> None:
        sample = yaml.safe_load(render_sample())
        self.assertEqual(load_config_dict(sample), load_config_dict({}))

    def test_contrib_sample_is_current(self) -> None:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(here, "contrib", "homeserver.sample.yaml")) as f:
            self.assertEqual(f.read(), render_sample(), "run: python -m mxserver generate-config contrib/homeserver.sample.yaml")

    def test_command_line_overrides(self) -> None:
        c = build_config({"server-name": "example.org", "data-dir": "/tmp/x", "listen": ["0.0.0.0:9000=client"]})
        self.assertEqual(c.server_name, "example.org")
        self.assertEqual(c.data_dir, "/tmp/x")
        self.assertEqual([(x.host, x.port, x.resources) for x in c.listeners], [("0.0.0.0", 9000, ["client"])])
        with self.assertRaises(ConfigError):
            build_config({"server-name": "bad name"})
        with self.assertRaises(ConfigError):
            parse_listen("nonsense")
        with self.assertRaises(ConfigError):
            parse_listen("127.0.0.1:1=bogus")
