"""``python -m mxserver port-db``: move a server's SQLite database into an empty Postgres database.

What it does, in order (the SQL is in :mod:`mxserver.storage.port_db`):

1. Takes the SQLite database's exclusive lock, which it holds to the end. A running server
   keeps connections open on its database (in WAL mode each holds a shared lock on the
   file), so the lock is refused while one runs: the port refuses, and no server can start
   on the SQLite database (nor change it) while the port runs.
2. Makes the schema on Postgres with the project's own migrations, so the target is exactly
   what the server would make. The target must be empty: no tables at all, or mxserver's
   schema holding nothing but the rows the migrations themselves insert (the stream
   counters at 0, the schema version), which are found by running the migrations on a
   throwaway in-memory database and compared. Anything else is refused, untouched.
3. Copies every table in batches, walking SQLite's rowid (keyset pagination, never
   OFFSET), each value converted by the rule for its Postgres column type (booleans stored
   as 0/1, BLOB to bytea; JSON stays text), with a progress bar per table.
4. Resumable: each batch is written with ``COPY`` in one transaction with the table's
   progress (the last key copied) in a bookkeeping table on the target, so an interruption
   (Ctrl-C, a crash, a lost connection) loses at most the batch in flight and leaves none
   of it; running the same command again continues from there. The bookkeeping tables are
   dropped when the port has been verified. (If a server ran on the SQLite database between
   the two runs, the verification finds the difference: port again into an empty database.)
5. Moves every sequence past the copied values (see the store's docstring for how the
   server allocates IDs: from the copied rows themselves), and ANALYZEs the target.
6. Verifies: row count and a checksum per table, computed alike on both sides over values
   normalised to the Postgres types; prints a table of results; any mismatch fails.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import IO, Any

import attrs
import yaml
from tqdm import tqdm

from mxserver.storage.port_db import (
    Checksum,
    PortError,
    Source,
    TableShape,
    Target,
    convert_row,
    migration_rows,
    source_version_check,
    sqlite_internal,
)

DEFAULT_BATCH_SIZE = 10_000


class PortInterrupted(Exception):
    """The port stopped before the end (``stop_after_batches``); running it again continues."""


@attrs.frozen
class TableCheck:
    """What the verification found for one table."""

    table: str
    source_rows: int
    target_rows: int
    source_sum: str
    target_sum: str

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_sum == self.target_sum


@attrs.frozen
class PortResult:
    checks: list[TableCheck]
    #: ``(table, column, next value)`` of every sequence moved
    sequences: list[tuple[str, str, int]]
    rows_copied: int
    seconds: float

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def port(
    sqlite_path: str,
    dsn: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: IO[str] | None = None,
    stop_after_batches: int | None = None,
    before_commit: Callable[[str, int], None] | None = None,
) -> PortResult:
    """Copy the SQLite database at ``sqlite_path`` into the Postgres database ``dsn`` and verify
    it (see the module docstring), with progress bars on ``progress``. Raises :class:`PortError` when it refuses.

    ``stop_after_batches`` ends the port with :class:`PortInterrupted` once that many batches
    are committed, and ``before_commit(table, batch number)`` runs inside each batch's
    transaction (an exception from it rolls the batch back): both simulate interruptions.
    """
    if batch_size < 1:
        raise PortError("the batch size must be at least 1")
    started = time.monotonic()
    sqlite_path = os.path.abspath(sqlite_path)
    if not os.path.exists(sqlite_path):
        raise PortError(f"no SQLite database at {sqlite_path}")
    source = Source.open(sqlite_path)
    try:
        version = source_version_check(source)
        target = Target.connect(dsn)
        try:
            resuming = _prepare_target(target, sqlite_path, version)
            shapes = _shapes(source, target)
            if not resuming:
                target.begin_port(sqlite_path, version, [s.name for s in shapes])
            copied = _copy(source, target, shapes, batch_size, progress, stop_after_batches, before_commit)
            sequences = target.fix_sequences()
            target.analyze()
            checks = verify_tables(source, target, shapes, progress)
            if all(c.ok for c in checks):
                target.end_port()
            return PortResult(checks, sequences, copied, time.monotonic() - started)
        finally:
            target.close()
    finally:
        source.close()


def verify(sqlite_path: str, dsn: str, progress: IO[str] | None = None) -> list[TableCheck]:
    """Compare a ported database with its source again (row counts and checksums)."""
    source = Source.open(os.path.abspath(sqlite_path))
    try:
        source_version_check(source)
        target = Target.connect(dsn)
        try:
            return verify_tables(source, target, _shapes(source, target), progress)
        finally:
            target.close()
    finally:
        source.close()


def _prepare_target(target: Target, sqlite_path: str, version: int) -> bool:
    """Make the target's schema; whether this run resumes an unfinished port."""
    unfinished = target.port_in_progress()
    if unfinished is not None:
        path, their_version = unfinished
        if (path, their_version) != (sqlite_path, version):
            raise PortError(
                f"the Postgres database holds an unfinished port of another SQLite database ({path}, schema "
                f"version {their_version}): use an empty database"
            )
        return True
    baseline = migration_rows()
    existing = target.tables()
    if target.schema_version() is None:
        if existing:
            raise PortError(
                "the Postgres database is not empty (it has tables, and not mxserver's: "
                f"{', '.join(existing[:5])}{', ...' if len(existing) > 5 else ''}): use an empty database"
            )
    else:
        # Refuse what clearly holds data before the migrations touch anything.
        for table in existing:
            n = target.count(table)
            if n > len(baseline.get(table, [])):
                raise _not_empty(table, n)
    try:
        target.migrate()
    except Exception as e:
        raise PortError(f"cannot make the schema on Postgres: {e}") from None
    for table in target.tables():
        allowed = baseline.get(table, [])
        n = target.count(table)
        if n and target.text_rows(table, len(allowed)) != allowed:
            raise _not_empty(table, n)
    return False


def _not_empty(table: str, rows: int) -> PortError:
    return PortError(
        f"the Postgres database already holds data (table {table}: {rows} rows that the migrations did not "
        "make): port into an empty database"
    )


def _shapes(source: Source, target: Target) -> list[TableShape]:
    """Every table to copy: those of the Postgres schema, each of which SQLite must have too."""
    pg_tables = target.tables()
    sqlite_tables = source.tables()
    for table in sqlite_tables:
        if table not in pg_tables and not sqlite_internal(table, sqlite_tables):
            raise PortError(f"the SQLite database has a table Postgres lacks: {table}")
    missing = [t for t in pg_tables if t not in sqlite_tables]
    if missing:
        raise PortError(f"the SQLite database lacks tables: {', '.join(missing)}")
    return [target.shape(t, source) for t in pg_tables]


def _copy(
    source: Source,
    target: Target,
    shapes: list[TableShape],
    batch_size: int,
    progress: IO[str] | None,
    stop_after_batches: int | None,
    before_commit: Callable[[str, int], None] | None,
) -> int:
    done = target.progress()
    batches = copied = 0
    width = max(len(s.name) for s in shapes)
    for shape in shapes:
        last, rows_done, finished = done.get(shape.name, (None, 0, False))
        total = source.count(shape.name)
        with tqdm(total=total, initial=rows_done, desc=shape.name.ljust(width), unit=" rows", unit_scale=True,
                  file=progress, disable=progress is None, mininterval=0.5, smoothing=0.1) as bar:
            while not finished:
                rows, key = source.batch(shape, last, batch_size)
                converted = [convert_row(shape, r) for r in rows]
                rows_done += len(rows)
                finished = len(rows) < batch_size
                if key is not None:
                    last = key
                batches += 1
                hook = functools.partial(before_commit, shape.name, batches) if before_commit else None
                target.write_batch(shape, converted, last, rows_done, finished, hook)
                copied += len(rows)
                bar.update(len(rows))
                if stop_after_batches is not None and batches >= stop_after_batches and not finished:
                    raise PortInterrupted(f"stopped after {batches} batches (in table {shape.name})")
    return copied


def verify_tables(source: Source, target: Target, shapes: list[TableShape], progress: IO[str] | None) -> list[TableCheck]:
    checks = []
    total = sum(source.count(s.name) for s in shapes)
    with tqdm(total=2 * total, desc="verifying", unit=" rows", unit_scale=True, file=progress,
              disable=progress is None, mininterval=0.5) as bar:
        for shape in shapes:
            mine, theirs = Checksum(), Checksum()
            for row in source.rows(shape):
                mine.add(shape.normalise(convert_row(shape, row)))
                bar.update(1)
            for row in target.rows(shape):
                theirs.add(shape.normalise(row))
                bar.update(1)
            checks.append(TableCheck(shape.name, mine.rows, theirs.rows, mine.hex, theirs.hex))
    return checks


def render_checks(checks: list[TableCheck]) -> str:
    """The verification as a table, one line per table."""
    width = max([len("table"), *(len(c.table) for c in checks)])
    lines = [f"{'table'.ljust(width)}  {'SQLite rows':>11}  {'Postgres rows':>13}  checksum"]
    for c in checks:
        if c.ok:
            verdict = f"ok {c.source_sum[:12]}"
        elif c.source_rows != c.target_rows:
            verdict = "MISMATCH (row count)"
        else:
            verdict = f"MISMATCH ({c.source_sum[:12]} != {c.target_sum[:12]})"
        lines.append(f"{c.table.ljust(width)}  {c.source_rows:>11}  {c.target_rows:>13}  {verdict}")
    return "\n".join(lines)


def config_block(dsn: str, pool_size: int) -> str:
    """The ``database`` section for the ported database, in the config's format."""
    section: dict[str, Any] = {"database": {"backend": "postgres", "dsn": dsn, "pool_size": pool_size}}
    return yaml.safe_dump(section, default_flow_style=False, sort_keys=False)
