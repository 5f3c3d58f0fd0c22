"""The cluster's config (issue 19): ``worker``/``workers``, ``--worker``, and the routing table."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from mxserver.cluster.routes import ROUTES, Route, pick_instance, role_for
from mxserver.config import ConfigError, load_config_dict
from mxserver.tap import build_config

PG = {"database": {"backend": "postgres", "dsn": "postgresql://mx@127.0.0.1/mx"}}
SYNC1 = {"role": "sync", "listeners": [{"port": 8101, "resources": ["client"]}]}


def _load(**extra: Any) -> Any:
    return load_config_dict({**PG, **extra})


class WorkerConfigTests(unittest.TestCase):
    def test_one_process_by_default(self) -> None:
        config = load_config_dict({})
        self.assertEqual((config.worker.name, config.worker_role, config.is_main), ("main", "main", True))
        self.assertEqual(config.workers, {})
        self.assertIs(config.own_listeners, config.listeners)

    def test_a_worker_listens_on_its_own_listeners(self) -> None:
        config = _load(workers={"sync1": SYNC1}, worker={"name": "sync1"})
        self.assertEqual(config.worker_role, "sync")
        self.assertFalse(config.is_main)
        self.assertEqual([(listener.port, listener.resources) for listener in config.own_listeners], [(8101, ["client"])])
        main = _load(workers={"sync1": SYNC1})
        self.assertEqual(main.worker_role, "main")
        self.assertEqual([listener.port for listener in main.own_listeners], [8008])

    def test_bad_clusters_are_refused_with_the_key_named(self) -> None:
        cases = [
            ({"workers": {"sync1": SYNC1}}, "workers need database.backend: postgres"),
            ({**PG, "workers": {"p": {"role": "pusher", "listeners": [{"port": 1}]}}}, "workers.p.role: role 'pusher' is not built yet"),
            ({**PG, "workers": {"s": {"role": "sync"}}}, "workers.s.listeners: a worker needs at least one listener"),
            ({**PG, "workers": {"main": SYNC1}}, "workers.main:"),
            ({**PG, "workers": {"a b": SYNC1}}, "workers.a b: a worker name"),
            ({**PG, "worker": {"name": "sync9"}, "workers": {"sync1": SYNC1}}, "no worker 'sync9' in workers (known: main, sync1)"),
            ({**PG, "workers": {"s": {**SYNC1, "colour": "red"}}}, "workers.s.colour: unknown key"),
            ({**PG, "workers": {"s": {"role": "sync", "listeners": [{"port": "x"}]}}}, "workers.s.listeners[0].port: expected an integer"),
            ({**PG, "workers": ["sync1"]}, "workers: expected a mapping"),
        ]
        for data, message in cases:
            with self.assertRaises(ConfigError, msg=repr(data)) as caught:
                load_config_dict(data)
            self.assertIn(message, str(caught.exception))

    def test_the_worker_option_picks_the_process_and_is_checked(self) -> None:
        import os
        import tempfile

        import yaml

        fd, path = tempfile.mkstemp(suffix=".yaml")
        self.addCleanup(os.unlink, path)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump({"server_name": "example.org", **PG, "workers": {"sync1": SYNC1}}, f)
        self.assertEqual(build_config({"config": path, "worker": "sync1"}).worker_role, "sync")
        with self.assertRaises(ConfigError) as caught:
            build_config({"config": path, "worker": "nope"})
        self.assertIn("no worker 'nope'", str(caught.exception))


class RouteTests(unittest.TestCase):
    def test_long_polls_go_to_sync_and_everything_else_to_main(self) -> None:
        self.assertEqual(role_for("GET", "/_matrix/client/v3/sync"), "sync")
        self.assertEqual(role_for("GET", "/_matrix/client/r0/sync"), "sync")
        self.assertEqual(role_for("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"), "sync")
        self.assertEqual(role_for("GET", "/_matrix/client/v3/events"), "sync")
        self.assertEqual(role_for("GET", "/_matrix/client/v3/initialSync"), "sync")
        for method, path in [
            ("POST", "/_matrix/client/v3/sync"),
            ("GET", "/_matrix/client/v3/sync/extra"),
            ("PUT", "/_matrix/client/v3/rooms/!r:x/send/m.room.message/1"),
            ("GET", "/_matrix/client/v3/rooms/!r:x/messages"),
            ("GET", "/_matrix/federation/v1/version"),
            ("GET", "/_matrix/client/v3/events/$e"),
        ]:
            self.assertEqual(role_for(method, path), "main", (method, path))

    def test_first_rule_wins(self) -> None:
        routes = [Route(frozenset({"GET"}), r"/a/.*", "sync"), Route(frozenset({"GET"}), r"/a/b", "other")]
        self.assertEqual(role_for("GET", "/a/b", routes), "sync")
        self.assertTrue(all(route.role in ("sync",) for route in ROUTES))

    def test_one_user_sticks_to_one_instance(self) -> None:
        instances = ["sync1", "sync2", "sync3"]
        picks = {pick_instance(instances, f"token-{i}") for i in range(50)}
        self.assertEqual(picks, set(instances))
        self.assertEqual(pick_instance(instances, "abc"), pick_instance(instances, b"abc"))
        self.assertEqual(pick_instance(instances, None), "sync1")
        with self.assertRaises(ValueError):
            pick_instance([], "x")
