"""SQL for third-party identifiers (schema 0033): users' 3PIDs, their identity-server bindings,
and the homeserver's validation sessions."""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn


@attrs.frozen
class Threepid:
    medium: str
    address: str
    validated_at: int
    added_at: int


@attrs.frozen
class ValidationSession:
    session_id: str
    client_secret: str
    medium: str
    address: str
    last_send_attempt: int
    token: str
    token_expires: int
    next_link: str | None
    validated_at: int | None


_SESSION_COLUMNS = (
    "session_id, client_secret, medium, address, last_send_attempt, token, token_expires, next_link, validated_at"
)


def _session(row: tuple[object, ...] | None) -> ValidationSession | None:
    if row is None:
        return None
    return ValidationSession(
        str(row[0]), str(row[1]), str(row[2]), str(row[3]), int(row[4]),  # type: ignore[call-overload]
        str(row[5]), int(row[6]), row[7] if row[7] is None else str(row[7]),  # type: ignore[call-overload]
        None if row[8] is None else int(row[8]),  # type: ignore[call-overload]
    )


class ThreepidStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- a user's 3PIDs -------------------------------------------------------------------

    async def user_threepids(self, user_id: str) -> list[Threepid]:
        rows = await self.db.select(
            "user_threepids",
            "SELECT medium, address, validated_at, added_at FROM user_threepids WHERE user_id = ?"
            " ORDER BY added_at, medium, address",
            user_id,
        )
        return [Threepid(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def owner(self, medium: str, address: str) -> str | None:
        """The user a 3PID is associated with, if any."""
        row = await self.db.select_one(
            "threepid_owner", "SELECT user_id FROM user_threepids WHERE medium = ? AND address = ?", medium, address
        )
        return str(row[0]) if row else None

    def add_threepid(self, user_id: str, medium: str, address: str, validated_at: int, added_at: int) -> Deferred[bool]:
        """Associate a 3PID with ``user_id``; False when another account has it (re-adding one's
        own is fine and keeps the first times)."""

        def txn(t: Txn) -> bool:
            t.execute(
                "INSERT INTO user_threepids (user_id, medium, address, validated_at, added_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (medium, address) DO NOTHING",
                (user_id, medium, address, validated_at, added_at),
            )
            if t.rowcount:
                return True
            row = t.query_one("SELECT user_id FROM user_threepids WHERE medium = ? AND address = ?", (medium, address))
            return row is not None and row[0] == user_id

        return self.db.run_interaction("add_threepid", txn)

    def remove_threepid(self, user_id: str, medium: str, address: str) -> Deferred[None]:
        return self.db.execute(
            "remove_threepid",
            "DELETE FROM user_threepids WHERE user_id = ? AND medium = ? AND address = ?",
            user_id,
            medium,
            address,
        )

    def remove_all_threepids(self, user_id: str) -> Deferred[None]:
        return self.db.execute("remove_all_threepids", "DELETE FROM user_threepids WHERE user_id = ?", user_id)

    # -- identity-server bindings -----------------------------------------------------------

    def add_binding(self, user_id: str, medium: str, address: str, id_server: str) -> Deferred[None]:
        return self.db.execute(
            "add_threepid_binding",
            "INSERT INTO user_threepid_id_servers (user_id, medium, address, id_server) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            user_id,
            medium,
            address,
            id_server,
        )

    def remove_binding(self, user_id: str, medium: str, address: str, id_server: str) -> Deferred[None]:
        return self.db.execute(
            "remove_threepid_binding",
            "DELETE FROM user_threepid_id_servers WHERE user_id = ? AND medium = ? AND address = ? AND id_server = ?",
            user_id,
            medium,
            address,
            id_server,
        )

    async def bindings(self, user_id: str, medium: str | None = None, address: str | None = None) -> list[tuple[str, str, str]]:
        """``(medium, address, id_server)`` of the user's bindings (of one 3PID when given)."""
        if medium is None or address is None:
            rows = await self.db.select(
                "threepid_bindings",
                "SELECT medium, address, id_server FROM user_threepid_id_servers WHERE user_id = ?"
                " ORDER BY medium, address, id_server",
                user_id,
            )
        else:
            rows = await self.db.select(
                "threepid_bindings",
                "SELECT medium, address, id_server FROM user_threepid_id_servers"
                " WHERE user_id = ? AND medium = ? AND address = ? ORDER BY id_server",
                user_id,
                medium,
                address,
            )
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    # -- validation sessions ----------------------------------------------------------------

    async def session_for(self, client_secret: str, medium: str, address: str) -> ValidationSession | None:
        row = await self.db.select_one(
            "threepid_session_for",
            f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions"
            " WHERE client_secret = ? AND medium = ? AND address = ?",
            client_secret,
            medium,
            address,
        )
        return _session(row)

    async def session(self, session_id: str) -> ValidationSession | None:
        row = await self.db.select_one(
            "threepid_session",
            f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions WHERE session_id = ?",
            session_id,
        )
        return _session(row)

    def start_session(self, session: ValidationSession, created_at: int) -> Deferred[ValidationSession]:
        """Store a new session, or, when one exists for its (client_secret, medium, address), give
        that one a new token, send attempt and next_link; the session as stored."""

        def txn(t: Txn) -> ValidationSession:
            t.execute(
                "INSERT INTO threepid_validation_sessions (session_id, client_secret, medium, address,"
                " last_send_attempt, token, token_expires, next_link, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (client_secret, medium, address) DO UPDATE SET"
                " last_send_attempt = excluded.last_send_attempt, token = excluded.token,"
                " token_expires = excluded.token_expires, next_link = excluded.next_link",
                (
                    session.session_id,
                    session.client_secret,
                    session.medium,
                    session.address,
                    session.last_send_attempt,
                    session.token,
                    session.token_expires,
                    session.next_link,
                    created_at,
                ),
            )
            stored = _session(
                t.query_one(
                    f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions"
                    " WHERE client_secret = ? AND medium = ? AND address = ?",
                    (session.client_secret, session.medium, session.address),
                )
            )
            assert stored is not None
            return stored

        return self.db.run_interaction("start_threepid_session", txn)

    def mark_validated(self, session_id: str, now_ms: int) -> Deferred[None]:
        return self.db.execute(
            "threepid_session_validated",
            "UPDATE threepid_validation_sessions SET validated_at = ? WHERE session_id = ? AND validated_at IS NULL",
            now_ms,
            session_id,
        )

    def delete_expired_sessions(self, before_ms: int) -> Deferred[None]:
        """Forget the sessions of no more use at ``before_ms``: their token expired before it
        and they were not validated, or were validated before it."""
        return self.db.execute(
            "threepid_sessions_expire",
            "DELETE FROM threepid_validation_sessions WHERE token_expires < ?"
            " AND (validated_at IS NULL OR validated_at < ?)",
            before_ms,
            before_ms,
        )
