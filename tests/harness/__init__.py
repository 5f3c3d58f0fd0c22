"""The test harness: one way to start servers, act as a client, and play a remote server.

* :mod:`~tests.harness.server` -- :class:`HomeserverTestCase`: a real Homeserver on a loopback
  port for each test, on SQLite and (as a ``<Name>Postgres`` twin) on Postgres.
* :mod:`~tests.harness.client` -- :class:`ClientHttp`: HTTP verbs and the room actions tests
  repeat (``register``, ``create_room``, ``join``, ``send_message``, ...) over the client API.
* :mod:`~tests.harness.two_servers` -- :class:`TwoServerTestCase`: two real servers federating.
* :mod:`~tests.harness.remote` -- :class:`FakeRemote`, a remote server the test scripts (its key,
  rooms, signed requests), and :class:`InboundTestCase` for a server federating with such remotes.
* :mod:`~tests.harness.network` -- certificates, free ports, fake DNS, a scriptable HTTPS server,
  keyring fakes.
* :mod:`~tests.harness.waiting` -- :func:`wait_until`: wait for what the servers do (re-checked at
  each publication on their streams), never for time to pass; ``TwoServerTestCase.wait_until``
  and ``ClientHttp.sync_until`` (a /sync long poll) build on it.
* :mod:`~tests.harness.auth_room` -- rooms as pure data, for the auth-rule tests (no server).
* :mod:`~tests.harness.postgres` -- a throwaway Postgres cluster for the Postgres twins.

Tests import what they use from here: ``from tests.harness import HomeserverTestCase, TestUser``.
"""

from tests.harness.client import C, ClientHttp, RequestFailed, TestUser, q
from tests.harness.network import (
    FakeDNS,
    FakeKeyClient,
    FakeNameResolver,
    MemoryKeyStore,
    Recorded,
    ScriptedServer,
    free_port,
    key_response,
    listen_tls,
    make_cert,
    temp_dir,
)
from tests.harness.remote import FED, LOOPBACK, FakeRemote, FakeRoom, InboundTestCase
from tests.harness.server import HomeserverTestCase, deep_merge, no_real_dns, serve_servlets
from tests.harness.two_servers import LOOPBACK_FEDERATION, ControlledTransport, TestServer, TwoServerTestCase
from tests.harness.waiting import Changes, server_streams, until_waiting, wait_on_servers, wait_until

__all__ = [
    "C",
    "Changes",
    "FED",
    "LOOPBACK",
    "LOOPBACK_FEDERATION",
    "ClientHttp",
    "ControlledTransport",
    "FakeDNS",
    "FakeKeyClient",
    "FakeNameResolver",
    "FakeRemote",
    "FakeRoom",
    "HomeserverTestCase",
    "InboundTestCase",
    "MemoryKeyStore",
    "Recorded",
    "RequestFailed",
    "ScriptedServer",
    "TestServer",
    "TestUser",
    "TwoServerTestCase",
    "deep_merge",
    "free_port",
    "key_response",
    "listen_tls",
    "make_cert",
    "no_real_dns",
    "q",
    "serve_servlets",
    "server_streams",
    "temp_dir",
    "until_waiting",
    "wait_on_servers",
    "wait_until",
]
