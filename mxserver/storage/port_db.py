"""The SQL of ``python -m mxserver port-db``: reading a SQLite database, writing it into Postgres.

Nothing here knows a table by heart: the tables, their columns and their types are read
from Postgres's ``information_schema`` after the project's migrations made the schema, and
every value is converted by a rule for its Postgres column type (:func:`converter`). The one
table whose shape differs between the backends, the full-text index ``event_search``, is
mapped by :data:`_RENAMED` and the ``tsvector`` rule.

The source is opened with SQLite's exclusive lock (:meth:`Source.open`): in WAL mode (the
SQLite backend always puts the server's database in WAL mode) every open connection of a
running server holds a shared lock on the file, even when idle, so the lock is refused
while a server (or anything else) has the database open, and once taken it keeps every other
connection out until the port ends: nothing changes the source while it is copied.

How the server allocates IDs, and why copying rows is enough for a server started on the
ported database to continue after them: event, room, state-snapshot and state-key NIDs and
the room stream's positions are counters loaded at start-up from ``MAX()`` over their tables
(``EventStore.load_counters``, ``StateStore.load_counters_txn``); so are filter IDs, the
appservice and federation outbox sequences and key-backup versions; the per-user streams
(account data, to-device, receipts, device lists, ...) keep their positions in the
``stream_positions`` table, copied like every other. The schema uses no Postgres sequence
today; :meth:`Target.fix_sequences` still moves any serial or identity column's sequence
past the copied values, so a later migration that adds one is ported right too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

import attrs

from mxserver.storage.dialect import POSTGRES, SQLITE
from mxserver.storage.migrations import latest_version, prepare_database
from mxserver.storage.search import tsvector_document

#: the bookkeeping tables of an unfinished port, on the target (dropped when it completes)
PROGRESS_TABLE = "port_db_progress"
SOURCE_TABLE = "port_db_source"
_BOOKKEEPING = (PROGRESS_TABLE, SOURCE_TABLE)

#: tables whose columns have other names in SQLite: ``{table: {postgres column: sqlite column}}``
#: (SQLite's FTS5 index keys its rows by rowid and holds the words, and the room as a word, as text)
_RENAMED: dict[str, dict[str, str]] = {
    "event_search": {"stream_ordering": "rowid", "room_nid": "tags", "vector": "words"}
}


class PortError(Exception):
    """The port cannot go on; the message says why and what to do."""


Converter = Callable[[Any], Any]


@attrs.frozen
class TableShape:
    """One table to copy: its Postgres columns (in order), their SQLite names and converters."""

    name: str
    columns: tuple[str, ...]
    source_columns: tuple[str, ...]
    types: tuple[str, ...]
    converters: tuple[Converter, ...]
    #: the SQLite key walked in batches: ("rowid",) or the primary key of a WITHOUT ROWID table
    source_key: tuple[str, ...]

    #: ``(column index, normaliser)`` of the columns whose type has one (see :data:`_NORMALISERS`)
    normalisers: tuple[tuple[int, Callable[[Any], Any]], ...] = attrs.field(
        default=attrs.Factory(
            lambda self: tuple((i, _NORMALISERS[t]) for i, t in enumerate(self.types) if t in _NORMALISERS),
            takes_self=True,
        )
    )

    def normalise(self, row: Sequence[Any]) -> tuple[Any, ...]:
        """A row (from Postgres, or converted from SQLite) as the checksum sees it: each value
        in the form Postgres prints it, so equal data gives equal rows on both sides."""
        normalisers = self.normalisers
        if not normalisers:
            return tuple(row)
        out = list(row)
        for i, f in normalisers:
            if out[i] is not None:
                out[i] = f(out[i])
        return tuple(out)


# -- converting values ------------------------------------------------------------------------


# Each converter returns the common case (the value already of the right Python type) first:
# they run once per value of every row copied and verified.


def _to_bool(v: Any) -> Any:
    # SQLite stores BOOLEAN as 0/1
    return v if v is None or v.__class__ is bool else bool(int(v))


def _to_bytes(v: Any) -> Any:
    if v is None or isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    return bytes(v)


def _to_int(v: Any) -> Any:
    return v if v.__class__ is int or v is None else int(v)


def _to_float(v: Any) -> Any:
    return v if v is None or isinstance(v, float) else float(v)


def _to_text(v: Any) -> Any:
    if v.__class__ is str and "\x00" not in v:
        return v
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8")
    elif not isinstance(v, str):
        v = str(v)
    if "\x00" in v:
        # Postgres text cannot hold NUL; dropping it silently would change the data.
        raise PortError(f"a text value holds a NUL character, which Postgres cannot store: {v[:80]!r}")
    return v


def _room_of_tags(v: Any) -> Any:
    # SQLite's index holds the room as the word "r<room_nid>" (mxserver.storage.search._Fts5)
    return None if v is None else int(str(v).strip().removeprefix("r"))


def _to_tsvector(v: Any) -> Any:
    return None if v is None else tsvector_document([w for w in str(v).split(" ") if w])


_CONVERTERS: dict[str, Converter] = {
    "boolean": _to_bool,
    "bytea": _to_bytes,
    "bigint": _to_int,
    "integer": _to_int,
    "smallint": _to_int,
    "double precision": _to_float,
    "real": _to_float,
    "text": _to_text,
    "character varying": _to_text,
    "character": _to_text,
    "json": _to_text,  # JSON stays text: the stores write and read it as text on both backends
    "jsonb": _to_text,
    "tsvector": _to_tsvector,
}

#: columns whose conversion is not their type's: ``(table, Postgres column) -> converter``
_COLUMN_CONVERTERS: dict[tuple[str, str], Converter] = {("event_search", "room_nid"): _room_of_tags}


def converter(pg_type: str) -> Converter:
    """How a SQLite value becomes the value of a Postgres column of type ``pg_type``."""
    if pg_type not in _CONVERTERS:
        raise PortError(f"no conversion known for the Postgres column type {pg_type!r}")
    return _CONVERTERS[pg_type]


def convert_row(shape: TableShape, row: Sequence[Any]) -> tuple[Any, ...]:
    try:
        return tuple([f(v) for f, v in zip(shape.converters, row, strict=True)])
    except PortError as e:
        raise PortError(f"table {shape.name}: {e}") from None
    except (TypeError, ValueError) as e:
        raise PortError(f"table {shape.name}: a value does not fit its Postgres column: {e}; row {row!r:.200}") from None


# -- checksums ---------------------------------------------------------------------------------

_LEXEME = re.compile(r"'((?:[^'\\]|''|\\.)*)'(?::([0-9A-D,]+))?")


def _normal_tsvector(text: str) -> str:
    """A tsvector's text, as Postgres would print it: lexemes sorted, each with its positions
    sorted and deduplicated (at most 256 each, as Postgres keeps)."""
    lexemes: dict[str, set[int]] = {}
    for lexeme, positions in _LEXEME.findall(text):
        seen = lexemes.setdefault(lexeme, set())
        for p in positions.split(",") if positions else ():
            seen.add(int(p.rstrip("ABCD")))
    return " ".join(
        f"'{lex}'" + (":" + ",".join(map(str, sorted(pos)[:256])) if pos else "") for lex, pos in sorted(lexemes.items())
    )


#: how a value of these Postgres types is normalised for the checksum (other types: as they are)
_NORMALISERS: dict[str, Callable[[Any], Any]] = {
    "tsvector": _normal_tsvector,
    "bytea": bytes,  # a memoryview, from some drivers
}


@attrs.define
class Checksum:
    """Row count and an order-independent hash of a table's rows (the sum of the rows' hashes),
    over values normalised to the Postgres types: the same on both sides when the rows are."""

    rows: int = 0
    digest: int = 0

    def add(self, row: tuple[Any, ...]) -> None:
        """Count a row, normalised already (:meth:`TableShape.normalise`)."""
        h = hashlib.blake2b(repr(row).encode("utf-8"), digest_size=16).digest()
        self.rows += 1
        self.digest = (self.digest + int.from_bytes(h, "big")) % (1 << 128)

    @property
    def hex(self) -> str:
        return f"{self.digest:032x}"


# -- the source --------------------------------------------------------------------------------


class Source:
    """The SQLite database, held under an exclusive lock for as long as it is open."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: str) -> Source:
        """Open ``path`` and take its exclusive lock, or raise :class:`PortError` if anything has
        the database open (a running server keeps connections open all the time)."""
        try:
            # mode=rw: never create an empty database where the server's should be
            conn = sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, timeout=1.0, isolation_level=None)
        except sqlite3.OperationalError as e:
            raise PortError(f"cannot open the SQLite database {path}: {e}") from None
        try:
            # In WAL mode, EXCLUSIVE locking mode taken before the first read makes this
            # connection hold the file's exclusive lock until it closes.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as e:
            conn.close()
            if "locked" in str(e) or "busy" in str(e):
                raise PortError(
                    f"the SQLite database {path} is in use (is mxserver running on it?): stop the server first"
                ) from None
            raise PortError(f"cannot read the SQLite database {path}: {e}") from None
        return cls(conn, path)

    def close(self) -> None:
        self.conn.close()

    def schema_version(self) -> int:
        row = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
        if row is None:
            return 0
        found = self.conn.execute("SELECT version FROM schema_version").fetchone()
        return int(found[0]) if found else 0

    def tables(self) -> dict[str, str]:
        """``{name: CREATE statement}`` of every table, SQLite's own and FTS5's shadow tables
        included."""
        return {name: sql or "" for name, sql in self.conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")}

    def columns(self, table: str) -> list[str]:
        return [r[1] for r in self.conn.execute(f"PRAGMA table_info({_quote(table)})")]

    def key_of(self, table: str) -> tuple[str, ...]:
        """The column(s) to walk a table by: its rowid, or the primary key of a WITHOUT ROWID table."""
        try:
            self.conn.execute(f"SELECT rowid FROM {_quote(table)} LIMIT 0")
            return ("rowid",)
        except sqlite3.OperationalError:
            info = sorted((r[5], r[1]) for r in self.conn.execute(f"PRAGMA table_info({_quote(table)})") if r[5])
            return tuple(name for _, name in info)

    def count(self, table: str) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()[0])

    def batch(self, shape: TableShape, after: Sequence[Any] | None, limit: int) -> tuple[list[tuple[Any, ...]], tuple[Any, ...] | None]:
        """Up to ``limit`` rows after the key ``after`` (keyset pagination, never OFFSET), in key
        order, and the key of the last one."""
        key = shape.source_key
        select = ", ".join([*(_quote(k) if k != "rowid" else "rowid" for k in key), *map(_source_col, shape.source_columns)])
        order = ", ".join(_quote(k) if k != "rowid" else "rowid" for k in key)
        where, args = "", list(after or ())
        if after is not None:
            where = f" WHERE ({order}) > ({', '.join('?' * len(key))})"
        rows = self.conn.execute(
            f"SELECT {select} FROM {_quote(shape.name)}{where} ORDER BY {order} LIMIT ?", (*args, limit)
        ).fetchall()
        if not rows:
            return [], None
        n = len(key)
        return [r[n:] for r in rows], tuple(rows[-1][:n])

    def rows(self, shape: TableShape) -> Iterator[tuple[Any, ...]]:
        cursor = self.conn.execute(f"SELECT {', '.join(map(_source_col, shape.source_columns))} FROM {_quote(shape.name)}")
        while batch := cursor.fetchmany(5000):
            yield from batch


def migration_rows() -> dict[str, list[tuple[str, ...]]]:
    """What the migrations themselves insert into an empty database: ``{table: rows}`` (values
    as text), from running them on a throwaway in-memory SQLite database."""
    conn = sqlite3.connect(":memory:")
    try:
        prepare_database(conn, SQLITE)
        out: dict[str, list[tuple[str, ...]]] = {}
        tables = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
        for name in tables:
            if sqlite_internal(name, tables):
                continue
            rows = conn.execute(f"SELECT * FROM {_quote(name)}").fetchall()
            if rows:
                cols = [r[1] for r in conn.execute(f"PRAGMA table_info({_quote(name)})")]
                out[name] = sorted(_text_row(dict(zip(cols, r, strict=True))) for r in rows)
        return out
    finally:
        conn.close()


def sqlite_internal(name: str, tables: dict[str, str]) -> bool:
    """Whether a SQLite table is SQLite's own (``sqlite_*``), a virtual table (FTS5), or the
    shadow table of one (``event_search_data``, ...): not a table Postgres has by that name."""
    if name.startswith("sqlite_"):
        return True
    virtual = [t for t, sql in tables.items() if (sql or "").upper().startswith("CREATE VIRTUAL TABLE")]
    return name in virtual or any(name.startswith(v + "_") for v in virtual)


def _text_row(row: dict[str, Any]) -> tuple[str, ...]:
    # booleans are 0/1 in SQLite and false/true in Postgres: compare them as integers
    return tuple(
        json.dumps([k, int(v) if isinstance(v, bool) else v], default=lambda b: bytes(b).hex()) for k, v in sorted(row.items())
    )


# -- the target --------------------------------------------------------------------------------


class Target:
    """The Postgres database (a psycopg connection, one transaction per batch)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    def connect(cls, dsn: str) -> Target:
        import psycopg

        try:
            return cls(psycopg.connect(dsn))
        except psycopg.Error as e:
            raise PortError(f"cannot connect to Postgres: {e}") from None

    def close(self) -> None:
        self.conn.close()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, tuple(args))
            return cur.fetchall() if cur.description else []

    def tables(self) -> list[str]:
        """Every table of the connection's first schema (``public``), bookkeeping excluded."""
        rows = self._query(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        return [r[0] for r in rows if r[0] not in _BOOKKEEPING]

    def has_table(self, name: str) -> bool:
        return bool(self._query(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = %s", (name,)
        ))

    def schema_version(self) -> int | None:
        """The mxserver schema version, or None if there is no mxserver schema."""
        if not self.has_table("schema_version"):
            return None
        rows = self._query("SELECT version FROM schema_version")
        self.conn.commit()
        return int(rows[0][0]) if rows else 0

    def migrate(self) -> int:
        """Make (or bring up to date) mxserver's schema with the project's own migrations."""
        return prepare_database(self.conn, POSTGRES)

    def columns(self, table: str) -> list[tuple[str, str]]:
        """``(column, Postgres type)`` of ``table``, in order."""
        rows = self._query(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
        return [(r[0], r[1]) for r in rows]

    def count(self, table: str) -> int:
        return int(self._query(f"SELECT count(*) FROM {_quote(table)}")[0][0])

    def text_rows(self, table: str, limit: int) -> list[tuple[str, ...]] | None:
        """The rows of a small table as :func:`migration_rows` gives them, or None if it has
        more than ``limit``."""
        cols = [c for c, _ in self.columns(table)]
        rows = self._query(f"SELECT * FROM {_quote(table)} LIMIT %s", (limit + 1,))
        if len(rows) > limit:
            return None
        return sorted(_text_row(dict(zip(cols, r, strict=True))) for r in rows)

    def shape(self, table: str, source: Source) -> TableShape:
        """How ``table`` is copied from ``source``: its columns matched by name (or by
        :data:`_RENAMED`), each with the converter its Postgres type needs."""
        columns = self.columns(table)
        renamed = _RENAMED.get(table, {})
        source_columns = [renamed.get(c, c) for c, _ in columns]
        available = set(source.columns(table)) | {"rowid"}
        missing = [c for c in source_columns if c not in available]
        if missing:
            raise PortError(f"table {table}: the SQLite database has no column {', '.join(missing)}")
        extra = set(source.columns(table)) - set(source_columns)
        if extra and table not in _RENAMED:
            raise PortError(f"table {table}: the SQLite database has columns Postgres lacks: {', '.join(sorted(extra))}")
        return TableShape(
            name=table,
            columns=tuple(c for c, _ in columns),
            source_columns=tuple(source_columns),
            types=tuple(t for _, t in columns),
            converters=tuple(_COLUMN_CONVERTERS.get((table, c)) or converter(t) for c, t in columns),
            source_key=source.key_of(table),
        )

    # bookkeeping of a port in progress

    def begin_port(self, source_path: str, version: int, tables: Sequence[str]) -> None:
        """Empty every table (the migrations' own rows: the source has them too, perhaps
        advanced) and record the port, in one transaction."""
        with self.conn.cursor() as cur:
            for table in tables:
                cur.execute(f"DELETE FROM {_quote(table)}")
            cur.execute(f"CREATE TABLE {SOURCE_TABLE} (path TEXT NOT NULL, schema_version BIGINT NOT NULL)")
            cur.execute(f"INSERT INTO {SOURCE_TABLE} (path, schema_version) VALUES (%s, %s)", (source_path, version))
            cur.execute(
                f"CREATE TABLE {PROGRESS_TABLE} (table_name TEXT PRIMARY KEY, last_key TEXT,"
                " rows_done BIGINT NOT NULL, done BOOLEAN NOT NULL)"
            )
        self.conn.commit()

    def port_in_progress(self) -> tuple[str, int] | None:
        """``(source path, schema version)`` of an unfinished port, or None."""
        if not self.has_table(SOURCE_TABLE) or not self.has_table(PROGRESS_TABLE):
            return None
        rows = self._query(f"SELECT path, schema_version FROM {SOURCE_TABLE}")
        self.conn.commit()
        return (rows[0][0], int(rows[0][1])) if rows else None

    def progress(self) -> dict[str, tuple[tuple[Any, ...] | None, int, bool]]:
        """``{table: (last key copied, rows copied, finished)}`` of the port in progress."""
        rows = self._query(f"SELECT table_name, last_key, rows_done, done FROM {PROGRESS_TABLE}")
        self.conn.commit()
        return {t: (tuple(json.loads(k)) if k else None, int(n), bool(d)) for t, k, n, d in rows}

    def write_batch(self, shape: TableShape, rows: Sequence[tuple[Any, ...]], last_key: tuple[Any, ...] | None,
                    rows_done: int, done: bool, before_commit: Callable[[], None] | None = None) -> None:
        """Copy ``rows`` (converted already) and record how far the table got, in one
        transaction: an interruption loses at most this batch, and nothing of it stays."""
        try:
            with self.conn.cursor() as cur:
                if rows:
                    cols = ", ".join(map(_quote, shape.columns))
                    with cur.copy(f"COPY {_quote(shape.name)} ({cols}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                cur.execute(
                    f"INSERT INTO {PROGRESS_TABLE} (table_name, last_key, rows_done, done) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (table_name) DO UPDATE SET last_key = excluded.last_key,"
                    " rows_done = excluded.rows_done, done = excluded.done",
                    (shape.name, json.dumps(list(last_key)) if last_key is not None else None, rows_done, done),
                )
            if before_commit is not None:
                before_commit()
            self.conn.commit()
        except BaseException:
            # Ctrl-C may land in the middle of COPY: the connection may be unusable, and then
            # closing it (the caller does) discards the transaction all the same.
            with contextlib.suppress(Exception):
                self.conn.rollback()
            raise

    def fix_sequences(self) -> list[tuple[str, str, int]]:
        """Move the sequence of every serial or identity column past the largest value copied:
        ``(table, column, next value)`` for each."""
        fixed = []
        columns = self._query(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND (column_default LIKE 'nextval(%%' OR is_identity = 'YES') ORDER BY table_name, column_name"
        )
        for table, column in columns:
            if table in _BOOKKEEPING:
                continue
            (seq,) = self._query("SELECT pg_get_serial_sequence(%s, %s)", (_quote(table), column))[0]
            if seq is None:
                continue
            (top,) = self._query(f"SELECT COALESCE(MAX({_quote(column)}), 0) FROM {_quote(table)}")[0]
            # setval(..., false): the next nextval() returns exactly max + 1
            self._query("SELECT setval(%s, %s, false)", (seq, int(top) + 1))
            fixed.append((table, column, int(top) + 1))
        self.conn.commit()
        return fixed

    def analyze(self) -> None:
        """Give the planner statistics of the loaded tables (a bulk load leaves it none)."""
        self.conn.autocommit = True
        try:
            self.conn.execute("ANALYZE")
        finally:
            self.conn.autocommit = False

    def end_port(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {PROGRESS_TABLE}")
            cur.execute(f"DROP TABLE IF EXISTS {SOURCE_TABLE}")
        self.conn.commit()

    def rows(self, shape: TableShape) -> Iterator[tuple[Any, ...]]:
        """Every row of the table (streamed by a server-side cursor)."""
        cols = ", ".join(map(_quote, shape.columns))
        with self.conn.cursor(name=f"port_db_read_{shape.name}") as cur:
            cur.itersize = 5000
            cur.execute(f"SELECT {cols} FROM {_quote(shape.name)}")
            yield from cur
        self.conn.commit()


def source_version_check(source: Source) -> int:
    """The source's schema version, which must be this code's: the target gets this code's."""
    version = source.schema_version()
    latest = latest_version()
    if version < latest:
        raise PortError(
            f"the SQLite database is at schema version {version}, this mxserver makes {latest}: start this "
            "mxserver once on the SQLite database (it migrates it), stop it, then port"
        )
    if version > latest:
        raise PortError(f"the SQLite database (schema version {version}) is newer than this mxserver ({latest})")
    return version


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _source_col(name: str) -> str:
    return "rowid" if name == "rowid" else _quote(name)

