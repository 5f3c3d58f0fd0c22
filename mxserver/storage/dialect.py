"""The few ways SQL differs between the storage backends.

Stores write one SQL text with ``?`` placeholders and portable syntax
(``INSERT ... ON CONFLICT ... DO UPDATE``, ``RETURNING`` and ``BOOLEAN`` work
on SQLite >= 3.35 and Postgres alike). Schema files use ``{BLOB}`` and
``{BIGINT}``, which the dialect fills in.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Dialect:
    name: str
    #: the DB-API paramstyle marker that replaces "?"
    placeholder: str
    blob_type: str
    bigint_type: str
    #: whether a single writer connection must serialise every write (SQLite)
    single_writer: bool

    def translate(self, sql: str) -> str:
        """Rewrite a store's ``?`` placeholders for this backend."""
        if self.placeholder == "?":
            return sql
        # psycopg treats "%" as the start of a placeholder: escape literal ones first.
        return sql.replace("%", "%%").replace("?", self.placeholder)

    def schema(self, sql: str) -> str:
        return sql.replace("{BLOB}", self.blob_type).replace("{BIGINT}", self.bigint_type)


SQLITE = Dialect(name="sqlite", placeholder="?", blob_type="BLOB", bigint_type="INTEGER", single_writer=True)
POSTGRES = Dialect(name="postgres", placeholder="%s", blob_type="BYTEA", bigint_type="BIGINT", single_writer=False)
