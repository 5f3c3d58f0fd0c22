"""A throwaway Postgres cluster for the test run, started on first use.

The cluster lives in a temp dir, listens only on a unix socket there, and is
stopped at exit. Postgres refuses to run as root, so as root it runs as the
``postgres`` account (created by Debian's package) via ``runuser``. Each test
gets a fresh database cloned from a template that already has the schema.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile

_cluster: _Cluster | None = None
_unavailable: str | None = None
_counter = itertools.count()


def _bindir() -> str | None:
    if os.environ.get("MXSERVER_PG_BIN"):
        return os.environ["MXSERVER_PG_BIN"]
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        if os.path.exists(os.path.join(out, "initdb")):
            return out
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(candidates[-1]) if candidates else None


class _Cluster:
    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.dir = tempfile.mkdtemp(prefix="mxserver-pg-")
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", self.user], check=True)
            shutil.chown(self.dir, self.user)
        self.data = os.path.join(self.dir, "data")
        self._run("initdb", "-D", self.data, "-U", "mxtest", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        conf = (
            "listen_addresses = ''\n"
            f"unix_socket_directories = '{self.dir}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
        )
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(conf)
        if self.user:
            shutil.chown(os.path.join(self.data, "postgresql.conf"), self.user)
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "start")
        atexit.register(self.stop)
        self._template_ready = False

    def _run(self, tool: str, *args: str) -> None:
        cmd = [os.path.join(self.bindir, tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def dsn(self, db: str) -> str:
        return f"postgresql://mxtest@/{db}?host={self.dir}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        if not self._template_ready:
            import psycopg

            from mxserver.storage.dialect import POSTGRES
            from mxserver.storage.migrations import prepare_database

            self._admin("CREATE DATABASE mx_template")
            with psycopg.connect(self.dsn("mx_template")) as conn:
                prepare_database(conn, POSTGRES)
            self._template_ready = True
        name = f"mx_test_{os.getpid()}_{next(_counter)}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE mx_template")
        return self.dsn(name)

    def new_empty_database(self) -> str:
        """A database with no tables at all (not even mxserver's schema)."""
        name = f"mx_empty_{os.getpid()}_{next(_counter)}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        name = dsn.split("@/", 1)[1].split("?")[0]
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def cluster() -> _Cluster | None:
    """The shared cluster, or None (see :func:`unavailable_reason`) if Postgres cannot run here."""
    global _cluster, _unavailable
    if _cluster is None and _unavailable is None:
        bindir = _bindir()
        if bindir is None:
            _unavailable = "no Postgres binaries (initdb) found; install postgresql to run the Postgres tests"
            return None
        try:
            import psycopg  # noqa: F401
        except ImportError:
            _unavailable = "psycopg is not installed (pip install .[postgres])"
            return None
        try:
            _cluster = _Cluster(bindir)
        except (OSError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", b"") or b""
            _unavailable = f"could not start Postgres: {e} {detail.decode(errors='replace')[-300:]}"
    return _cluster


def unavailable_reason() -> str | None:
    cluster()
    return _unavailable
