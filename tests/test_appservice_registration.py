"""Registration files (application-service-api §Registration, registration.yaml): what is read,
and a clear one-line error naming the file for every unusable one (config loading refuses it)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import yaml
from twisted.trial import unittest

from mxserver.appservice.registration import AppServiceRegistry, RegistrationError, load_registrations
from mxserver.config import ConfigError, load_config_dict

GOOD: dict[str, Any] = {
    "id": "irc",
    "url": "http://127.0.0.1:9999/",
    "as_token": "as1",
    "hs_token": "hs1",
    "sender_localpart": "_irc_bot",
    "namespaces": {
        "users": [{"exclusive": True, "regex": "@_irc_.*"}],
        "aliases": [{"exclusive": False, "regex": "#_irc_.*"}],
        "rooms": [],
    },
}


class RegistrationFileTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="mxserver-as-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def write(self, data: Any, name: str = "reg.yaml", raw: str | None = None) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(raw if raw is not None else yaml.safe_dump(data))
        return path

    def problem(self, *datas: Any) -> str:
        paths = [self.write(d, f"reg{i}.yaml") for i, d in enumerate(datas)]
        e = self.assertRaises(RegistrationError, load_registrations, paths, "example.org")
        return str(e)

    def test_a_good_registration(self) -> None:
        extra = {
            "rate_limited": False,
            "protocols": ["irc"],
            "de.sorunome.msc2409.push_ephemeral": True,
            "io.element.msc4190": True,
            "org.matrix.msc3202": True,  # unknown keys are ignored
        }
        [service] = load_registrations([self.write({**GOOD, **extra})], "example.org")
        self.assertEqual((service.id, service.url, service.sender), ("irc", "http://127.0.0.1:9999", "@_irc_bot:example.org"))
        self.assertEqual((service.rate_limited, service.protocols), (False, ("irc",)))
        self.assertTrue(service.receive_ephemeral)
        self.assertTrue(service.device_management)
        # namespaces: local users only, matched from the start (Synapse's re.match)
        self.assertTrue(service.is_interested_in_user("@_irc_alice:example.org"))
        self.assertTrue(service.is_exclusive_user("@_irc_alice:example.org"))
        self.assertFalse(service.is_interested_in_user("@_irc_alice:elsewhere.org"))
        self.assertFalse(service.is_interested_in_user("@alice_irc_:example.org"))
        self.assertTrue(service.is_interested_in_user("@_irc_bot:example.org"))
        self.assertTrue(service.is_interested_in_alias("#_irc_chan:example.org"))
        self.assertFalse(service.is_exclusive_alias("#_irc_chan:example.org"))
        # url null: registered, but it receives nothing
        [quiet] = load_registrations([self.write({**GOOD, "url": None})], "example.org")
        self.assertIsNone(quiet.url)
        self.assertFalse(quiet.rate_limited is False)

    def test_each_bad_registration_names_its_file_and_problem(self) -> None:
        def without(key: str) -> dict[str, Any]:
            return {k: v for k, v in GOOD.items() if k != key}

        cases: list[tuple[Any, str]] = [
            (without("id"), "'id' is required"),
            (without("as_token"), "'as_token' is required"),
            (without("hs_token"), "'hs_token' is required"),
            (without("sender_localpart"), "'sender_localpart' is required"),
            (without("namespaces"), "'namespaces' is required"),
            (without("url"), "'url' is required"),
            ({**GOOD, "id": ""}, "'id' must be a non-empty string"),
            ({**GOOD, "as_token": 5}, "'as_token' must be a non-empty string"),
            ({**GOOD, "url": "ftp://x"}, "'url' must be an http"),
            ({**GOOD, "url": 7}, "'url' must be a string or null"),
            ({**GOOD, "sender_localpart": "Bad Bot"}, "'sender_localpart'"),
            ({**GOOD, "namespaces": []}, "'namespaces' must be a mapping"),
            ({**GOOD, "namespaces": {"users": {"regex": "x"}}}, "'namespaces.users' must be a list"),
            ({**GOOD, "namespaces": {"users": ["x"]}}, "'namespaces.users[0]' must be a mapping"),
            ({**GOOD, "namespaces": {"users": [{"exclusive": True}]}}, "'namespaces.users[0].regex' must be a string"),
            ({**GOOD, "namespaces": {"rooms": [{"regex": "!a"}]}}, "'namespaces.rooms[0].exclusive' must be true or false"),
            ({**GOOD, "namespaces": {"aliases": [{"exclusive": True, "regex": "#(["}]}}, "not a valid regular expression"),
            ({**GOOD, "rate_limited": "no"}, "'rate_limited' must be true or false"),
            ({**GOOD, "receive_ephemeral": 1}, "'receive_ephemeral' must be true or false"),
            ({**GOOD, "protocols": "irc"}, "'protocols' must be a list"),
            ({**GOOD, "protocols": [1]}, "'protocols' must be a list"),
            (["not", "a", "mapping"], "a registration must be a mapping"),
        ]
        for data, expected in cases:
            message = self.problem(data)
            self.assertIn(expected, message)
            self.assertIn("app_service_config_files[0]", message)
            self.assertIn("reg0.yaml", message)
            self.assertEqual(len(message.splitlines()), 1, message)

    def test_unreadable_and_invalid_yaml(self) -> None:
        missing = os.path.join(self.dir, "nope.yaml")
        e = self.assertRaises(RegistrationError, load_registrations, [missing], "example.org")
        self.assertIn("nope.yaml", str(e))
        self.assertIn("cannot read it", str(e))
        path = self.write(None, raw="id: [unclosed\n")
        e = self.assertRaises(RegistrationError, load_registrations, [path], "example.org")
        self.assertIn("not valid YAML at line", str(e))

    def test_duplicates_across_files_one_line_per_bad_file(self) -> None:
        other = {**GOOD, "id": "slack", "as_token": "as2", "hs_token": "hs2"}
        message = self.problem(GOOD, {**other, "id": "irc"}, {**other, "as_token": "as1"}, {**other, "as_token": "hs1"})
        lines = message.splitlines()
        self.assertEqual(len(lines), 3, message)
        self.assertIn("app_service_config_files[1]", lines[0])
        self.assertIn("id 'irc' is also the id of", lines[0])
        self.assertIn("app_service_config_files[2]", lines[1])
        self.assertIn("as_token is also the as_token of", lines[1])
        self.assertIn("app_service_config_files[3]", lines[2])
        self.assertIn("hs_token of another", lines[2])

    def test_config_loading_refuses_a_bad_file(self) -> None:
        good, bad = self.write(GOOD, "good.yaml"), self.write({**GOOD, "id": "x", "as_token": "y", "url": None, "namespaces": 3}, "bad.yaml")
        config = load_config_dict({"server_name": "example.org", "app_service_config_files": [good]})
        self.assertEqual(config.app_service_config_files, [good])
        e = self.assertRaises(
            ConfigError, load_config_dict, {"server_name": "example.org", "app_service_config_files": [good, bad]}
        )
        self.assertIn("bad.yaml", str(e))
        self.assertIn("'namespaces' must be a mapping", str(e))
        e = self.assertRaises(
            ConfigError, load_config_dict, {"server_name": "example.org", "app_service_ip_range_whitelist": ["nope"]}
        )
        self.assertIn("app_service_ip_range_whitelist", str(e))

    def test_reload_keeps_the_registrations_in_force_when_a_file_is_bad(self) -> None:
        path = self.write(GOOD, "reg.yaml")
        registry = AppServiceRegistry("example.org", [path])
        seen = []
        registry.on_reload(seen.append)
        self.write({**GOOD, "url": "nope"}, "reg.yaml")
        self.assertRaises(RegistrationError, registry.reload)
        self.assertEqual(registry.by_token("as1").url, "http://127.0.0.1:9999")  # type: ignore[union-attr]
        self.write({**GOOD, "as_token": "as9"}, "reg.yaml")
        result = registry.reload()
        self.assertEqual((result.added, result.removed, result.changed), ((), (), ("irc",)))
        self.assertIsNone(registry.by_token("as1"))
        self.assertEqual(registry.by_token("as9").id, "irc")  # type: ignore[union-attr]
        self.assertEqual(len(seen), 1)
        self.assertEqual(registry.reload().changed, ())  # nothing changed: nobody is told
        self.assertEqual(len(seen), 1)

    def test_exclusivity_and_rate_limit_exemption(self) -> None:
        other = {
            **GOOD,
            "id": "slack",
            "as_token": "as2",
            "hs_token": "hs2",
            "sender_localpart": "_slack_bot",
            "rate_limited": False,
            "namespaces": {"users": [{"exclusive": False, "regex": "@_slack_.*"}], "rooms": [{"exclusive": True, "regex": "!bridged"}]},
        }
        registry = AppServiceRegistry("example.org", [self.write(GOOD, "a.yaml"), self.write(other, "b.yaml")])
        irc, slack = registry.by_id("irc"), registry.by_id("slack")
        self.assertTrue(registry.user_reserved("@_irc_x:example.org"))
        self.assertFalse(registry.user_reserved("@_irc_x:example.org", irc))
        self.assertTrue(registry.user_reserved("@_irc_x:example.org", slack))
        self.assertFalse(registry.user_reserved("@_slack_x:example.org"))  # not exclusive
        self.assertTrue(registry.user_reserved("@_slack_bot:example.org"))  # a sender is always its own
        self.assertFalse(registry.alias_reserved("#_irc_x:example.org"))
        self.assertTrue(registry.room_reserved("!bridged:example.org"))
        self.assertFalse(registry.room_reserved("!bridged:example.org", slack))
        # rate_limited: the senders never; slack's users not (rate_limited false); irc's users are
        self.assertTrue(registry.rate_limit_exempt("@_irc_bot:example.org"))
        self.assertTrue(registry.rate_limit_exempt("@_slack_x:example.org"))
        self.assertFalse(registry.rate_limit_exempt("@_irc_x:example.org"))
        self.assertFalse(registry.rate_limit_exempt("@alice:example.org"))
