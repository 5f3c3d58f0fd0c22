"""Versioned schema migrations, applied at start-up.

Schema files live in ``mxserver/storage/schema/NNNN_name.sql``; the database
records the highest version applied. Each file is applied in its own
transaction, so a crash mid-migration leaves the previous version intact.
A version may add a data step in Python (``_DATA_STEPS``), for what portable
SQL cannot do (reading event JSON); it runs in the same transaction. What only
one backend has (SQLite's FTS5, Postgres's ``tsvector``) goes in a section of
the file headed ``-- dialect: sqlite`` or ``-- dialect: postgres``; a
``-- dialect: all`` line returns to statements for every backend.
A database newer than this code is refused: running old code on it could
corrupt data the newer code relies on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from typing import Any

from mxserver.storage.dialect import Dialect
from mxserver.storage.relations import index_existing_relations

#: data steps that portable SQL cannot express, run after the schema file of their version in
#: the same transaction: ``version -> fn(connection, dialect)``
_DATA_STEPS: dict[int, Callable[[Any, Dialect], None]] = {
    23: index_existing_relations,
}


class SchemaError(Exception):
    """The database cannot be used with this version of mxserver."""


def available_migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` for every schema file, in order."""
    out = []
    for entry in resources.files("mxserver.storage").joinpath("schema").iterdir():
        m = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort()
    return out


def latest_version() -> int:
    migrations = available_migrations()
    return migrations[-1][0] if migrations else 0


def _statements(sql: str) -> list[str]:
    # Schema files keep one statement per ";"-terminated block and no ";" inside statements.
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


_DIALECT_LINE = re.compile(r"--\s*dialect:\s*(\w+)\s*")


def for_dialect(sql: str, dialect: str) -> str:
    """The lines of a schema file that apply to ``dialect`` (see the module docstring)."""
    keep, section = [], "all"
    for line in sql.splitlines():
        m = _DIALECT_LINE.fullmatch(line.strip())
        if m:
            section = m.group(1)
        elif section in ("all", dialect):
            keep.append(line)
    return "\n".join(keep)


def current_version(cursor: Any) -> int:
    cursor.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    cursor.execute("SELECT version FROM schema_version")
    row = cursor.fetchone()
    return row[0] if row else 0


def require_current_schema(conn: Any, dialect: Dialect) -> int:
    """A cluster's worker (issue 19) migrates nothing: the writer (``main``) does. It starts only
    on a schema that is up to date (SchemaError otherwise); returns the version."""
    cursor = conn.cursor()
    version = current_version(cursor)
    conn.commit()
    cursor.close()
    if version != latest_version():
        raise SchemaError(
            f"database schema version {version}, this mxserver needs {latest_version()}: "
            "start the main process first (it migrates the database), then the workers"
        )
    return version


def prepare_database(conn: Any, dialect: Dialect, up_to: int | None = None) -> int:
    """Bring a DB-API connection's schema up to date (or up to version ``up_to``, for tests of
    one migration); returns the version now in place."""
    cursor = conn.cursor()
    version = current_version(cursor)
    conn.commit()
    latest = latest_version()
    if version > latest:
        raise SchemaError(
            f"database schema version {version} is newer than this mxserver supports ({latest}); "
            "upgrade mxserver or restore a matching backup"
        )
    for number, name, sql in available_migrations():
        if number <= version or (up_to is not None and number > up_to):
            continue
        try:
            if dialect.name == "sqlite":
                # sqlite3 would autocommit each DDL statement: make the file one transaction.
                cursor.execute("BEGIN")
            for statement in _statements(dialect.schema(for_dialect(sql, dialect.name))):
                cursor.execute(statement)
            step = _DATA_STEPS.get(number)
            if step is not None:
                step(conn, dialect)
            cursor.execute("DELETE FROM schema_version")
            cursor.execute(dialect.translate("INSERT INTO schema_version (version) VALUES (?)"), (number,))
            conn.commit()
        except Exception as e:
            conn.rollback()
            raise SchemaError(f"migration {number:04d}_{name} failed: {e}") from e
        version = number
    cursor.close()
    return version
