"""SQL for user profiles: table ``profiles`` (schema 0001), one row per local user, and
``profile_fields`` (schema 0035), the user's other fields (``m.tz``, custom keys).

Registration creates the row (with the account, in
:meth:`~mxserver.storage.accounts.AccountStore.create_user`); this store reads
and changes it. A NULL column is an unset field; another field is unset when it has no row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

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

    # -- other fields ---------------------------------------------------------------------

    @staticmethod
    def _whole_txn(t: Txn, user_id: str) -> dict[str, Any] | None:
        row = t.query_one("SELECT displayname, avatar_url FROM profiles WHERE user_id = ?", (user_id,))
        if row is None:
            return None
        whole: dict[str, Any] = {k: v for k, v in zip(FIELDS, row, strict=True) if v is not None}
        for field, value in t.query(
            "SELECT field, value FROM profile_fields WHERE user_id = ? ORDER BY field", (user_id,)
        ):
            whole[field] = json.loads(value)
        return whole

    def get_whole_profile(self, user_id: str) -> Deferred[dict[str, Any] | None]:
        """Every field a local user has set (displayname and avatar_url among them), None if
        there is no such user."""
        return self.db.run_read("get_whole_profile", self._whole_txn, user_id)

    def set_other_field(self, user_id: str, field: str, value: Any, max_bytes: int) -> Deferred[bool | None]:
        """Set a field other than displayname and avatar_url to the JSON ``value``, unless the
        whole profile, JSON-encoded, would then be larger than ``max_bytes`` (False, nothing
        written); None if there is no such user. The size is checked in the transaction that
        writes, so concurrent changes cannot add up past it."""
        if field in FIELDS:
            raise ValueError(f"{field!r} has a column of its own")
        encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"))

        def txn(t: Txn) -> bool | None:
            whole = self._whole_txn(t, user_id)
            if whole is None:
                return None
            whole[field] = value
            if encoded_size(whole) > max_bytes:
                return False
            t.execute(
                "INSERT INTO profile_fields (user_id, field, value) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value",
                (user_id, field, encoded),
            )
            return True

        return self.db.run_interaction("set_other_profile_field", txn)

    def delete_other_field(self, user_id: str, field: str) -> Deferred[None]:
        return self.db.execute(
            "delete_other_profile_field", "DELETE FROM profile_fields WHERE user_id = ? AND field = ?", user_id, field
        )


def encoded_size(profile: dict[str, Any]) -> int:
    """The size in bytes of a profile as JSON (what the 64 KiB limit of profile.yaml counts)."""
    return len(json.dumps(profile, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
