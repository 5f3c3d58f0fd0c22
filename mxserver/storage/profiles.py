"""SQL for user profiles: table ``profiles`` (schema 0001), one row per local user.

Registration creates the row (with the account, in
:meth:`~mxserver.storage.accounts.AccountStore.create_user`); this store reads
and changes it. A NULL column is an unset field.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn

#: profile fields with a column of their own
FIELDS = ("displayname", "avatar_url")

Profile = tuple[str | None, str | None]

_CHUNK = 500


class ProfileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get_profile(self, user_id: str) -> Deferred[Profile | None]:
        """``(displayname, avatar_url)`` of a local user, None if there is no such user."""

        def txn(t: Txn) -> Profile | None:
            row = t.query_one("SELECT displayname, avatar_url FROM profiles WHERE user_id = ?", (user_id,))
            return (row[0], row[1]) if row else None

        return self.db.run_read("get_profile", txn)

    def get_profiles(self, user_ids: Sequence[str]) -> Deferred[dict[str, Profile]]:
        """The profiles of those of ``user_ids`` that are local users."""

        def txn(t: Txn) -> dict[str, Profile]:
            out: dict[str, Profile] = {}
            for i in range(0, len(user_ids), _CHUNK):
                chunk = list(user_ids[i : i + _CHUNK])
                marks = ",".join("?" * len(chunk))
                for user_id, displayname, avatar_url in t.query(
                    f"SELECT user_id, displayname, avatar_url FROM profiles WHERE user_id IN ({marks})", chunk
                ):
                    out[user_id] = (displayname, avatar_url)
            return out

        return self.db.run_read("get_profiles", txn)

    def set_field(self, user_id: str, field: str, value: str | None) -> Deferred[bool]:
        """Set one field (``displayname`` or ``avatar_url``); False if there is no such user."""
        if field not in FIELDS:
            raise ValueError(f"unknown profile field {field!r}")

        def txn(t: Txn) -> bool:
            t.execute(f"UPDATE profiles SET {field} = ? WHERE user_id = ?", (value, user_id))
            return t.rowcount > 0

        return self.db.run_interaction("set_profile_field", txn)
