"""The server as its users run it: twistd, embedding, TLS and metrics listeners, schema checks."""

from __future__ import annotations

import datetime
import json
import os
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

import treq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.application import service
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.plugin import IPlugin, getPlugins
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data
from zope.interface import implementer

from mxserver.config import load_config_dict
from mxserver.homeserver import Homeserver, preflight
from mxserver.storage.dialect import SQLITE
from mxserver.storage.migrations import SchemaError, latest_version, prepare_database
from tests.harness import HomeserverTestCase

VENV_BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    """What the child process printed, read as it comes, up to the first output holding ``marker``.

    Fails the test if the process exits, or ``timeout`` seconds pass, first.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while marker not in out:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                raise AssertionError(f"no {marker!r} from the process within {timeout:g} s: {out.decode(errors='replace')}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"the process exited before {marker!r}: {out.decode(errors='replace')}")
            out += chunk
    return out

class PluginTests(unittest.SynchronousTestCase):
    def test_twistd_finds_the_plugin(self) -> None:
        names = [getattr(p, "tapname", None) for p in getPlugins(IPlugin)]
        self.assertIn("mxserver", names)


class TwistdTests(unittest.SynchronousTestCase):
    """``twistd -n mxserver`` as a subprocess, the way users start it."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="mxserver-twistd-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def _twistd(self, *args: str) -> list[str]:
        return [os.path.join(VENV_BIN, "twistd"), "-n", "--pidfile=", "mxserver", *args]

    def test_starts_with_no_config_and_serves_versions(self) -> None:
        port = free_port()
        proc = subprocess.Popen(
            self._twistd("--listen", f"127.0.0.1:{port}"), cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            # No polling: the server says when it is ready (it listens by then).
            _read_until(proc, b" ready", 30)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_matrix/client/versions", timeout=10) as r:
                body = json.load(r)
            self.assertIn("versions", body)
            # zero config: data in ./data with a signing key
            key_path = os.path.join(self.dir, "data", "signing.key")
            self.assertTrue(os.path.exists(key_path))
            self.assertEqual(os.stat(key_path).st_mode & 0o777, 0o600)
            self.assertTrue(os.path.exists(os.path.join(self.dir, "data", "homeserver.db")))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)

    def test_bad_config_fails_with_one_line(self) -> None:
        path = os.path.join(self.dir, "hs.yaml")
        with open(path, "w") as f:
            f.write("server_name: example.org\nlisteners:\n  - {port: 8008, resources: [client, nonsense]}\n")
        proc = subprocess.run(self._twistd("--config", path), cwd=self.dir, capture_output=True, text=True, timeout=60)
        self.assertNotEqual(proc.returncode, 0)
        out = (proc.stdout + proc.stderr).strip()
        self.assertNotIn("Traceback", out)
        self.assertIn("listeners[0].resources[1]", out)
        self.assertEqual(len(out.splitlines()), 1, out)

    def test_database_newer_than_code_is_refused(self) -> None:
        data = os.path.join(self.dir, "data")
        os.makedirs(data)
        conn = sqlite3.connect(os.path.join(data, "homeserver.db"))
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (99999)")
        conn.commit()
        conn.close()
        proc = subprocess.run(self._twistd(), cwd=self.dir, capture_output=True, text=True, timeout=60)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("newer than this mxserver supports", proc.stdout + proc.stderr)
        self.assertNotIn("Traceback", proc.stdout + proc.stderr)


class MigrationTests(unittest.SynchronousTestCase):
    def test_idempotent_and_refuses_newer(self) -> None:
        conn = sqlite3.connect(":memory:")
        self.assertEqual(prepare_database(conn, SQLITE), latest_version())
        self.assertEqual(prepare_database(conn, SQLITE), latest_version())
        conn.execute("UPDATE schema_version SET version = ?", (latest_version() + 1,))
        conn.commit()
        with self.assertRaises(SchemaError):
            prepare_database(conn, SQLITE)

    def test_preflight_creates_key_and_schema(self) -> None:
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d, True)
        config = load_config_dict({"server_name": "x", "data_dir": d})
        preflight(config)
        conn = sqlite3.connect(config.sqlite_path)
        self.assertEqual(conn.execute("SELECT version FROM schema_version").fetchone()[0], latest_version())


class _RecordingService(service.Service):
    started = False

    def startService(self) -> None:
        super().startService()
        self.started = True


class EmbeddingTests(unittest.TestCase):
    """An existing Twisted app mounts the Homeserver's resource next to its own."""

    def setUp(self) -> Any:
        return ensureDeferred(self._set_up())

    async def _set_up(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir, True)
        config = load_config_dict({"server_name": "embedded.test", "data_dir": self.dir, "listeners": []})
        app = service.MultiService()
        self.hs = Homeserver(config, reactor)
        self.hs.setServiceParent(app)
        self.other = _RecordingService()
        self.other.setServiceParent(app)
        app.startService()
        self.addCleanup(app.stopService)
        await self.hs.when_ready()
        root = Resource()
        root.putChild(b"hello", Data(b"hi there", "text/plain"))
        matrix = self.hs.resource()
        root.putChild(b"_matrix", matrix)
        root.putChild(b".well-known", matrix)
        self.port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"

    async def _get(self, path: str) -> tuple[int, bytes]:
        resp = await treq.get(self.base + path, pool=self.pool)
        return resp.code, await resp.content()

    async def test_both_apps_served_in_one_site(self) -> None:
        self.assertTrue(self.other.started)
        self.assertEqual(await self._get("/hello"), (200, b"hi there"))
        code, body = await self._get("/_matrix/client/versions")
        self.assertEqual(code, 200)
        self.assertIn("versions", json.loads(body))
        code, body = await self._get("/_matrix/federation/v1/version")
        self.assertEqual(json.loads(body)["server"]["name"], "mxserver")
        code, body = await self._get("/_matrix/client/v3/nope")
        self.assertEqual((code, json.loads(body)["errcode"]), (404, "M_UNRECOGNIZED"))
        self.assertEqual((await self._get("/nothing-here"))[0], 404)


def make_self_signed(directory: str) -> tuple[str, str, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
    with open(cert_path, "wb") as f:
        f.write(cert_pem)
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path, cert_pem


@implementer(IPolicyForHTTPS)
class _TrustCert:
    def __init__(self, pem: bytes) -> None:
        self._cert = Certificate.loadPEM(pem)

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return optionsForClientTLS("localhost", trustRoot=self._cert)


class TLSAndMetricsListenerTests(HomeserverTestCase):
    def make_config(self):  # type: ignore[no-untyped-def]
        self.cert_path, self.key_path, self.cert_pem = make_self_signed(self.data_dir)
        self.config_overrides = {
            "tls": {"certificate_path": self.cert_path, "private_key_path": self.key_path},
            "listeners": [
                {"host": "127.0.0.1", "port": 0, "resources": ["client"]},
                {"host": "127.0.0.1", "port": 0, "resources": ["federation"], "tls": True},
                {"host": "127.0.0.1", "port": 0, "resources": ["metrics"]},
            ],
        }
        return super().make_config()

    async def test_federation_over_tls(self) -> None:
        port = self.hs.listening_ports[1].getHost().port
        agent = Agent(reactor, contextFactory=_TrustCert(self.cert_pem), pool=self.pool)
        resp = await treq.get(f"https://localhost:{port}/_matrix/federation/v1/version", agent=agent)
        self.assertEqual(resp.code, 200)
        self.assertEqual(json.loads(await resp.content())["server"]["name"], "mxserver")
        # resources are per listener: the TLS federation listener does not serve the client API
        resp = await treq.get(f"https://localhost:{port}/_matrix/client/versions", agent=agent)
        self.assertEqual(resp.code, 404)
        await resp.content()

    async def test_metrics(self) -> None:
        await self.get("/_matrix/client/versions")
        port = self.hs.listening_ports[2].getHost().port
        resp = await treq.get(f"http://127.0.0.1:{port}/metrics", pool=self.pool)
        text = (await resp.content()).decode()
        self.assertEqual(resp.code, 200)
        self.assertIn('mxserver_http_requests_total{endpoint="/_matrix/client/versions"', text)
        self.assertIn("mxserver_db_transaction_seconds", text)
        self.assertIn("mxserver_reactor_lag_seconds", text)
        # the client listener does not expose metrics
        self.assertEqual((await self.get("/metrics"))[0], 404)


class AdminCommandTests(unittest.SynchronousTestCase):
    """``python -m mxserver`` commands, run as an admin would."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="mxserver-cli-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.config = os.path.join(self.dir, "hs.yaml")
        with open(self.config, "w") as f:
            f.write("server_name: example.org\ndata_dir: data\n")

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mxserver", *args], capture_output=True, text=True, timeout=120)

    def test_register_user(self) -> None:
        proc = self._cli("register-user", "--config", self.config, "alice", "--password", "pw123456", "--admin")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("@alice:example.org", proc.stdout)
        conn = sqlite3.connect(os.path.join(self.dir, "data", "homeserver.db"))
        row = conn.execute("SELECT is_admin, password_hash FROM users WHERE user_id = ?", ("@alice:example.org",)).fetchone()
        conn.close()
        self.assertEqual(row[0], 1)
        self.assertTrue(row[1].startswith("$argon2id$"))
        again = self._cli("register-user", "--config", self.config, "alice", "--password", "x")
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("M_USER_IN_USE", again.stderr)
        bad = self._cli("register-user", "--config", self.config, "Not Valid", "--password", "x")
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("M_INVALID_USERNAME", bad.stderr)

    def test_generate_and_check_config(self) -> None:
        out = os.path.join(self.dir, "sample.yaml")
        self.assertEqual(self._cli("generate-config", out).returncode, 0)
        with open(out) as f:
            self.assertIn("server_name: localhost", f.read())
        proc = self._cli("check-config", "--config", out)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(self.config, "a") as f:
            f.write("bogus_key: 1\n")
        proc = self._cli("check-config", "--config", self.config)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("bogus_key: unknown key", proc.stderr)
