"""SQL for registration tokens (table ``registration_tokens``, schema 0030): the tokens of
``m.login.registration_token`` made through the admin API, with their use counts."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn


@attrs.frozen
class RegistrationToken:
    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_time: int | None

    def valid_at(self, now_ms: int) -> bool:
        """Whether it may still begin a registration: uses left, not expired."""
        if self.uses_allowed is not None and self.pending + self.completed >= self.uses_allowed:
            return False
        return self.expiry_time is None or self.expiry_time >= now_ms


_COLS = "token, uses_allowed, pending, completed, expiry_time"
#: a token that may still begin a registration (arguments: now in ms), as RegistrationToken.valid_at
_VALID = "(uses_allowed IS NULL OR pending + completed < uses_allowed) AND (expiry_time IS NULL OR expiry_time >= ?)"


def _token(row: tuple[Any, ...]) -> RegistrationToken:
    return RegistrationToken(row[0], row[1], int(row[2]), int(row[3]), row[4])


class RegistrationTokenStore:
    """The registration tokens and their use counts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, token: str) -> Deferred[RegistrationToken | None]:
        def txn(t: Txn) -> RegistrationToken | None:
            row = t.query_one(f"SELECT {_COLS} FROM registration_tokens WHERE token = ?", (token,))
            return _token(row) if row else None

        return self.db.run_read("get_registration_token", txn)

    def list(self, valid: bool | None, now_ms: int) -> Deferred[list[RegistrationToken]]:
        """Every token (``valid`` None), or only the valid ones (True) or only the others (False)."""
        where = ""
        args: tuple[Any, ...] = ()
        if valid is True:
            where, args = f" WHERE {_VALID}", (now_ms,)
        elif valid is False:
            where, args = f" WHERE NOT ({_VALID})", (now_ms,)

        def txn(t: Txn) -> list[RegistrationToken]:
            return [_token(r) for r in t.query(f"SELECT {_COLS} FROM registration_tokens{where} ORDER BY token", args)]

        return self.db.run_read("list_registration_tokens", txn)

    def create(self, token: str, uses_allowed: int | None, expiry_time: int | None) -> Deferred[bool]:
        """A new token; False if it exists already."""

        def txn(t: Txn) -> bool:
            t.execute(
                "INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_time)"
                " VALUES (?, ?, 0, 0, ?) ON CONFLICT (token) DO NOTHING",
                (token, uses_allowed, expiry_time),
            )
            return t.rowcount > 0

        return self.db.run_interaction("create_registration_token", txn)

    def update(self, token: str, changes: dict[str, int | None]) -> Deferred[RegistrationToken | None]:
        """Set ``uses_allowed`` and/or ``expiry_time`` (the keys of ``changes``); the token as it
        is now, or None if there is no such token."""
        columns = [c for c in ("uses_allowed", "expiry_time") if c in changes]

        def txn(t: Txn) -> RegistrationToken | None:
            if columns:
                t.execute(
                    f"UPDATE registration_tokens SET {', '.join(f'{c} = ?' for c in columns)} WHERE token = ?",
                    (*(changes[c] for c in columns), token),
                )
            row = t.query_one(f"SELECT {_COLS} FROM registration_tokens WHERE token = ?", (token,))
            return _token(row) if row else None

        return self.db.run_interaction("update_registration_token", txn)

    def delete(self, token: str) -> Deferred[bool]:
        def txn(t: Txn) -> bool:
            t.execute("DELETE FROM registration_tokens WHERE token = ?", (token,))
            return t.rowcount > 0

        return self.db.run_interaction("delete_registration_token", txn)

    def begin_use(self, token: str, now_ms: int) -> Deferred[bool]:
        """Count one more pending use if the token is valid (one statement: two sign-ups cannot
        both take a token's last use); whether it was."""

        def txn(t: Txn) -> bool:
            t.execute(f"UPDATE registration_tokens SET pending = pending + 1 WHERE token = ? AND {_VALID}", (token, now_ms))
            return t.rowcount > 0

        return self.db.run_interaction("begin_registration_token_use", txn)

    def end_use(self, token: str, completed: bool) -> Deferred[None]:
        """A pending use ends: the registration completed (counted) or was abandoned."""
        sql = "UPDATE registration_tokens SET pending = pending - 1{} WHERE token = ? AND pending > 0"
        return self.db.execute(
            "end_registration_token_use", sql.format(", completed = completed + 1" if completed else ""), token
        )
