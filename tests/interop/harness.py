"""A real Synapse and a real mxserver federating on loopback, as subprocesses.

The pair is started lazily, once per test process (:func:`get_pair`), because
Synapse takes seconds to start; it is stopped at interpreter exit. Both servers
are separate processes, so the tests talk to them with plain blocking HTTP
(``urllib``) from :class:`twisted.trial.unittest.SynchronousTestCase`; every
wait is bounded.

Synapse comes from ``../shared/servers/synapse/install`` (a cached venv under
``~/.cache/mx-bench``) and is started through ``shared/servers/synapse/start``
with ``--extra-config`` adding what federating on loopback needs (see
``shared/servers/README.md``, "Running Synapse as a federation peer on
loopback"). mxserver runs as ``twistd -n mxserver --config FILE`` with the
twistd of the interpreter running the tests.

mxserver uses SQLite, or Postgres with ``MX_INTEROP_DB=postgres`` (tests/postgres.py's cluster).
Server names are ``127.0.0.1:FEDPORT`` (an IP literal with a port: no
.well-known, no SRV); each server has a plain-HTTP client listener and a TLS
federation listener with a self-signed certificate, and neither verifies the
other's certificate.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.harness import free_port, make_cert
from tests.interop.client import ARRIVAL_TIMEOUT, PASSWORD, Sync, User, bodies, http, quote

__all__ = ["ARRIVAL_TIMEOUT", "PASSWORD", "Sync", "User", "bodies", "get_pair", "http", "quote"]

REPO = Path(__file__).resolve().parents[2]
#: the shared/ folder beside the checkout (CI lays a copy there); MX_SHARED_DIR overrides
SHARED = Path(os.environ.get("MX_SHARED_DIR") or REPO.parent / "shared")
SYNAPSE_ADAPTER = SHARED / "servers" / "synapse"

#: how long a server may take to answer /versions after it was started
START_TIMEOUT = 120.0


def shared_missing_reason() -> str | None:
    """Why the interop tests cannot run here, or None. Only a missing shared/ skips them."""
    if not (SYNAPSE_ADAPTER / "start").exists():
        return f"no Synapse adapter at {SYNAPSE_ADAPTER} (shared/ is not beside the checkout)"
    return None


class InteropError(Exception):
    """The pair could not be set up (install or start failed)."""


# -- processes --------------------------------------------------------------------------


class ServerProcess:
    """One homeserver subprocess; can be stopped and started again on the same data dir and ports."""

    kind = "server"

    def __init__(self, root: Path, name: str) -> None:
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.client_port = free_port()
        self.fed_port = free_port()
        self.server_name = f"127.0.0.1:{self.fed_port}"
        self.base_url = f"http://127.0.0.1:{self.client_port}"
        self.fed_url = f"https://127.0.0.1:{self.fed_port}"
        self.output_path = self.dir / "process-output.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.cert_path, self.key_path = make_cert(str(self.dir / "tls"))

    # subclasses
    def command(self) -> list[str]:
        raise NotImplementedError

    def log_paths(self) -> list[Path]:
        return [self.output_path]

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        out = open(self.output_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        self.wait_ready()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise InteropError(f"{self.kind} exited with {self.proc.returncode} while starting\n{self.tails()}")
            try:
                code, body = http("GET", self.base_url + "/_matrix/client/versions", timeout=5)
                if code == 200:
                    fcode, fbody = http("GET", self.fed_url + "/_matrix/federation/v1/version", timeout=5)
                    if fcode == 200:
                        return
                    last = (fcode, fbody)
                else:
                    last = (code, body)
            except OSError as e:
                last = e
            time.sleep(0.25)
        raise InteropError(f"{self.kind} not ready after {timeout:.0f}s (last: {last!r})\n{self.tails()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL (to its own process group) when it does not exit in time."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def marks(self) -> dict[Path, int]:
        """Current sizes of the log files, to show only what was logged after this point."""
        return {p: p.stat().st_size for p in self.log_paths() if p.exists()}

    def tails(self, since: dict[Path, int] | None = None, lines: int = 60) -> str:
        parts = []
        for path in self.log_paths():
            if not path.exists():
                continue
            with open(path, "rb") as f:
                f.seek((since or {}).get(path, 0))
                text = f.read().decode(errors="replace").splitlines()
            text = [ln[:500] for ln in text]
            markers = (
                "ERROR",
                "Traceback",
                "CRITICAL",
                "[critical]",
                "[error]",
                "#error",
                "#critical",
                "#warn",
                "WARNING",
            )
            problems = [ln for ln in text if any(w in ln for w in markers)]
            where = "since the test began" if since else "in all"
            parts.append(f"--- {self.kind} {path.name}: last {min(lines, len(text))} of {len(text)} lines {where} ---")
            parts.extend(text[-lines:])
            if problems:
                parts.append(f"--- {self.kind} {path.name}: warnings and errors ({len(problems)}, last 20) ---")
                parts.extend(problems[-20:])
        return "\n".join(parts)

    # -- client API --------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None, timeout: float = 30.0
    ) -> tuple[int, Any]:
        return http(method, self.base_url + path, body, token, timeout)

    def register(self, prefix: str) -> User:
        """A new user (unique localpart) through UIA with m.login.dummy."""
        localpart = f"{prefix}{uuid.uuid4().hex[:8]}"
        body: dict[str, Any] = {
            "username": localpart,
            "password": PASSWORD,
            "initial_device_display_name": "interop",
        }
        code, resp = self.request("POST", "/_matrix/client/v3/register", body)
        if code == 401:
            body["auth"] = {"type": "m.login.dummy", "session": resp.get("session")}
            code, resp = self.request("POST", "/_matrix/client/v3/register", body)
        if code != 200:
            raise AssertionError(f"{self.kind}: register {localpart} -> {code} {resp}")
        return User(self, resp["user_id"], resp["access_token"], resp["device_id"])


class SynapseServer(ServerProcess):
    kind = "synapse"

    def __init__(self, root: Path, python: str) -> None:
        super().__init__(root, "synapse")
        self.python = python
        self.extra_config_path = self.dir / "interop-extra.json"
        self.extra_config_path.write_text(json.dumps(self.extra_config(), indent=1))

    def extra_config(self) -> dict[str, Any]:
        # The README's trap: IP-literal names are checked against the blocklist alone, so the
        # blocklist must lose loopback; take Synapse's own default list and drop those ranges.
        out = subprocess.run(
            [
                self.python,
                "-c",
                "import json; from synapse.config.server import DEFAULT_IP_RANGE_BLOCKLIST as b; print(json.dumps(b))",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise InteropError(f"cannot read Synapse's default IP blocklist: {out.stderr[-2000:]}")
        blocklist = [r for r in json.loads(out.stdout) if r not in ("127.0.0.0/8", "::1/128")]
        unlimited = 1_000_000
        log_config = self.dir / "interop-log.config"
        log_config.write_text(
            json.dumps(
                {
                    "version": 1,
                    "formatters": {
                        "precise": {
                            "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"
                        }
                    },
                    "handlers": {
                        "file": {
                            "class": "logging.FileHandler",
                            "formatter": "precise",
                            "filename": str(self.dir / "homeserver.log"),
                            "encoding": "utf8",
                        }
                    },
                    # INFO: every federation request and its answer is in the log, for diagnosis.
                    "root": {"level": "INFO", "handlers": ["file"]},
                    "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
                    "disable_existing_loggers": False,
                }
            )
        )
        return {
            "log_config": str(log_config),
            "listeners": [
                {
                    "port": self.client_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                },
                {
                    "port": self.fed_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": True,
                    "x_forwarded": False,
                    "resources": [{"names": ["federation"], "compress": False}],
                },
            ],
            "tls_certificate_path": self.cert_path,
            "tls_private_key_path": self.key_path,
            "federation_verify_certificates": False,
            "ip_range_blacklist": blocklist,
            "ip_range_whitelist": ["127.0.0.1", "::1"],
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "rc_federation": {
                "window_size": 1000,
                "sleep_limit": unlimited,
                "sleep_delay": 1,
                "reject_limit": unlimited,
                "concurrent": unlimited,
            },
            "federation_rr_transactions_per_room_per_second": unlimited,
            # Synapse's default first back-off is 10 minutes; the down-peer test needs seconds.
            "federation": {
                "max_long_retries": 3,
                "max_long_retry_delay": "5s",
                "max_short_retry_delay": "2s",
                "destination_min_retry_interval": "5s",
                "destination_max_retry_interval": "30s",
            },
            "room_list_publication_rules": [{"action": "allow"}],
            "allow_public_rooms_over_federation": True,
            "allow_public_rooms_without_auth": True,
        }

    def command(self) -> list[str]:
        return [
            "bash",
            str(SYNAPSE_ADAPTER / "start"),
            "--data-dir",
            str(self.dir),
            "--port",
            str(self.client_port),
            "--server-name",
            self.server_name,
            "--extra-config",
            str(self.extra_config_path),
        ]

    def log_paths(self) -> list[Path]:
        return [self.output_path, self.dir / "homeserver.log"]


class MxServer(ServerProcess):
    kind = "mxserver"

    def __init__(self, root: Path, pg_dsn: str | None = None) -> None:
        super().__init__(root, "mxserver")
        self.pg_dsn = pg_dsn
        self.config_path = self.dir / "homeserver.yaml"
        self.log_path = self.dir / "mxserver.log"
        self.config_path.write_text(json.dumps(self.config(), indent=1))  # JSON is YAML

    def config(self) -> dict[str, Any]:
        database = {"backend": "postgres", "dsn": self.pg_dsn} if self.pg_dsn else {"backend": "sqlite"}
        return {
            "database": database,
            "server_name": self.server_name,
            "public_baseurl": self.base_url + "/",
            "data_dir": str(self.dir / "data"),
            "listeners": [
                {"host": "127.0.0.1", "port": self.client_port, "resources": ["client", "media"]},
                {"host": "127.0.0.1", "port": self.fed_port, "resources": ["federation"], "tls": True},
            ],
            "tls": {"certificate_path": self.cert_path, "private_key_path": self.key_path},
            "log": {"path": str(self.log_path), "level": "INFO", "format": "text"},
            "registration": {"enabled": True},
            "password": {"scheme": "bcrypt", "bcrypt_rounds": 4},
            "rate_limits": {"enabled": False},
            "federation": {"enabled": True, "verify_tls": False, "ip_range_whitelist": ["127.0.0.0/8"]},
            "room_directory": {
                "publication_allowed": True,
                "public_rooms_without_auth": True,
                "public_rooms_over_federation": True,
            },
        }

    def command(self) -> list[str]:
        twistd = Path(sys.executable).parent / "twistd"
        return [str(twistd), "-n", "--pidfile=", "mxserver", "--config", str(self.config_path)]

    def log_paths(self) -> list[Path]:
        return [self.output_path, self.log_path]


# -- the pair ---------------------------------------------------------------------------


class Pair:
    """Synapse and mxserver, started once; ``failed`` (or MX_INTEROP_KEEP=1) keeps their logs after exit."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mxserver-interop-"))
        self.failed = bool(os.environ.get("MX_INTEROP_KEEP"))
        self.synapse: SynapseServer | None = None
        self.mxserver: MxServer | None = None

    def start(self) -> None:
        python = install_synapse()
        self.synapse = SynapseServer(self.root, python)
        self.mxserver = MxServer(self.root, _postgres_dsn())
        self.mxserver.start()
        self.synapse.start()

    def stop(self) -> None:
        for server in (self.mxserver, self.synapse):
            if server is not None:
                server.stop()
        if self.failed:
            sys.stderr.write(f"\ninterop: logs kept in {self.root}\n")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def ensure_running(self) -> None:
        """Restart a server a previous (failed) test left stopped."""
        for server in (self.mxserver, self.synapse):
            if server is not None and not server.running:
                server.stop()
                server.start()

    def marks(self) -> dict[Path, int]:
        out: dict[Path, int] = {}
        for server in (self.mxserver, self.synapse):
            if server is not None:
                out.update(server.marks())
        return out

    def tails(self, since: dict[Path, int] | None = None) -> str:
        return "\n".join(s.tails(since) for s in (self.mxserver, self.synapse) if s is not None)


def install_synapse() -> str:
    """The python of the Synapse venv (installs it on first use; cached in ~/.cache/mx-bench)."""
    out = subprocess.run(["bash", str(SYNAPSE_ADAPTER / "install")], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0 or not out.stdout.strip():
        raise InteropError(f"shared/servers/synapse/install failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return out.stdout.strip().splitlines()[-1]


def _postgres_dsn() -> str | None:
    """A new database when MX_INTEROP_DB=postgres (mxserver on Postgres); None for SQLite, the default."""
    if os.environ.get("MX_INTEROP_DB", "sqlite") != "postgres":
        return None
    from tests.harness import postgres

    cluster = postgres.cluster()
    if cluster is None:
        raise InteropError(f"MX_INTEROP_DB=postgres, but {postgres.unavailable_reason()}")
    return cluster.new_database()


_pair: Pair | None = None
_pair_error: BaseException | None = None


def get_pair() -> Pair:
    """The running pair, started on first use; a failed start is reported to every later caller too."""
    global _pair, _pair_error
    if _pair_error is not None:
        raise InteropError(f"the Synapse/mxserver pair failed to start earlier: {_pair_error}")
    if _pair is None:
        if os.environ.get("MX_INTEROP_DB") == "postgres":
            from tests.harness import postgres

            postgres.cluster()  # its exit handler is registered first, so it stops after the servers
        pair = Pair()
        atexit.register(pair.stop)
        try:
            pair.start()
        except BaseException as e:
            pair.failed = True
            _pair_error = e
            raise
        _pair = pair
    _pair.ensure_running()
    return _pair
