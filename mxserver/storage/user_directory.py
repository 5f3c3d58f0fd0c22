"""SQL for the in-memory user directory: rooms' visibility rules and remote users' member profiles.

Both are read from the current state (``current_state`` joined with
``events``); :class:`~mxserver.ephemeral.user_directory.UserDirectory` reads
them once (the rules) or per unseen remote user (the profiles) and then
follows the room stream.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn

#: (join_rule, history_visibility) of a room; None where the state has no such (string) value
RoomRules = tuple[str | None, str | None]

#: (displayname, avatar_url)
MemberProfile = tuple[str | None, str | None]

_CHUNK = 500


class UserDirectoryStore:
    """Reads for the user directory."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def member_profiles(self, user_ids: Sequence[str]) -> Deferred[dict[str, MemberProfile]]:
        """user -> (displayname, avatar_url) of their latest join event in any room's current state.

        Users without a join event in any current state are absent.
        """

        def txn(t: Txn) -> dict[str, MemberProfile]:
            out: dict[str, MemberProfile] = {}
            for i in range(0, len(user_ids), _CHUNK):
                chunk = list(user_ids[i : i + _CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = t.query(
                    "SELECT cs.state_key, e.json FROM current_state cs JOIN events e ON e.event_id = cs.event_id"
                    f" WHERE cs.type = 'm.room.member' AND cs.state_key IN ({marks})"
                    " ORDER BY e.origin_server_ts DESC",
                    chunk,
                )
                for user_id, raw in rows:
                    if user_id in out:
                        continue
                    content = json.loads(raw).get("content")
                    if isinstance(content, dict) and content.get("membership") == "join":
                        out[user_id] = member_profile(content)
            return out

        return self.db.run_read("user_directory_remote_profiles", txn)

    def room_rules(self) -> Deferred[dict[str, RoomRules]]:
        """room -> (join_rule, history_visibility) of every room with either in its current state."""

        def txn(t: Txn) -> dict[str, RoomRules]:
            rows = t.query(
                "SELECT r.room_id, cs.type, e.json FROM current_state cs"
                " JOIN rooms r ON r.room_nid = cs.room_nid JOIN events e ON e.event_id = cs.event_id"
                " WHERE cs.type IN ('m.room.join_rules', 'm.room.history_visibility') AND cs.state_key = ''"
            )
            out: dict[str, RoomRules] = {}
            for room_id, etype, raw in rows:
                content = json.loads(raw).get("content")
                key = "join_rule" if etype == "m.room.join_rules" else "history_visibility"
                value = content.get(key) if isinstance(content, dict) else None
                value = value if isinstance(value, str) else None
                join_rule, history = out.get(room_id, (None, None))
                out[room_id] = (value, history) if etype == "m.room.join_rules" else (join_rule, value)
            return out

        return self.db.run_read("user_directory_room_rules", txn)


def member_profile(content: Any) -> MemberProfile:
    """(displayname, avatar_url) of a member event's content; None for a missing or non-string value."""
    if not isinstance(content, dict):
        return None, None
    name, avatar = content.get("displayname"), content.get("avatar_url")
    return (name if isinstance(name, str) else None), (avatar if isinstance(avatar, str) else None)
