"""SQL for room aliases and the published room directory.

Tables ``room_aliases`` and ``room_directory`` (schema 0004), and the application services'
directories per network ``appservice_room_list`` (schema 0029). The public room
list also reads the current state and membership tables that the room server
writes (readers may read them; only the room server writes them).
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.events.redaction import redact_pdu
from mxserver.events.versions import KNOWN_ROOM_VERSIONS
from mxserver.storage.database import Database, Txn

#: ``get_published_rooms`` scope: the server's directory and every application service network's
ALL_NETWORKS = "all"

#: the state (type, "") a public room list entry is made of
SUMMARY_STATE_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
)


@attrs.frozen
class AliasRecord:
    room_alias: str
    room_id: str
    creator: str


@attrs.frozen
class PublishedRoom:
    """A published room's current summary state and joined-member count."""

    room_id: str
    #: event type -> content (as clients see it: pruned if the event was redacted)
    state: dict[str, dict[str, Any]]
    num_joined_members: int


class DirectoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- aliases -----------------------------------------------------------------

    async def get_alias(self, room_alias: str) -> AliasRecord | None:
        row = await self.db.select_one(
            "get_alias", "SELECT room_alias, room_id, creator FROM room_aliases WHERE room_alias = ?", room_alias
        )
        return AliasRecord(*row) if row else None

    def create_alias(self, room_alias: str, room_id: str, creator: str, now_ms: int) -> Deferred[bool]:
        """Map ``room_alias`` to ``room_id``; False (and nothing written) if the alias exists."""

        def txn(t: Txn) -> bool:
            rows = t.query(
                "INSERT INTO room_aliases (room_alias, room_id, creator, created_ts) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (room_alias) DO NOTHING RETURNING room_alias",
                (room_alias, room_id, creator, now_ms),
            )
            return bool(rows)

        return self.db.run_interaction("create_alias", txn)

    def delete_alias(self, room_alias: str) -> Deferred[str | None]:
        """Remove an alias; the room it pointed to, or None if there was none."""

        def txn(t: Txn) -> str | None:
            rows = t.query("DELETE FROM room_aliases WHERE room_alias = ? RETURNING room_id", (room_alias,))
            return rows[0][0] if rows else None

        return self.db.run_interaction("delete_alias", txn)

    async def get_aliases_for_room(self, room_id: str) -> list[str]:
        rows = await self.db.select(
            "get_aliases_for_room",
            "SELECT room_alias FROM room_aliases WHERE room_id = ? ORDER BY created_ts, room_alias",
            room_id,
        )
        return [r[0] for r in rows]

    def delete_aliases_for_room(self, room_id: str) -> Deferred[list[str]]:
        """Remove every alias of the room (it is being shut down); the aliases removed."""

        def txn(t: Txn) -> list[str]:
            rows = t.query("DELETE FROM room_aliases WHERE room_id = ? RETURNING room_alias", (room_id,))
            return sorted(r[0] for r in rows)

        return self.db.run_interaction("delete_aliases_for_room", txn)

    def move_aliases(self, old_room_id: str, new_room_id: str) -> Deferred[list[str]]:
        """Point every alias of ``old_room_id`` at ``new_room_id`` (room upgrades)."""

        def txn(t: Txn) -> list[str]:
            rows = t.query(
                "UPDATE room_aliases SET room_id = ? WHERE room_id = ? RETURNING room_alias", (new_room_id, old_room_id)
            )
            return sorted(r[0] for r in rows)

        return self.db.run_interaction("move_aliases", txn)

    # -- the published room directory ---------------------------------------------------

    async def is_published(self, room_id: str) -> bool:
        row = await self.db.select_one("is_published", "SELECT 1 FROM room_directory WHERE room_id = ?", room_id)
        return row is not None

    def set_published(self, room_id: str, published: bool, now_ms: int) -> Deferred[None]:
        def txn(t: Txn) -> None:
            if published:
                t.execute(
                    "INSERT INTO room_directory (room_id, published_ts) VALUES (?, ?) ON CONFLICT (room_id) DO NOTHING",
                    (room_id, now_ms),
                )
            else:
                t.execute("DELETE FROM room_directory WHERE room_id = ?", (room_id,))

        return self.db.run_interaction("set_published", txn)

    def set_appservice_listed(self, appservice_id: str, network_id: str, room_id: str, listed: bool) -> Deferred[None]:
        """Publish ``room_id`` in (or remove it from) an application service's directory for a network."""

        def txn(t: Txn) -> None:
            if listed:
                t.execute(
                    "INSERT INTO appservice_room_list (appservice_id, network_id, room_id) VALUES (?, ?, ?)"
                    " ON CONFLICT (appservice_id, network_id, room_id) DO NOTHING",
                    (appservice_id, network_id, room_id),
                )
            else:
                t.execute(
                    "DELETE FROM appservice_room_list WHERE appservice_id = ? AND network_id = ? AND room_id = ?",
                    (appservice_id, network_id, room_id),
                )

        return self.db.run_interaction("set_appservice_listed", txn)

    async def get_published_rooms(self, scope: str | tuple[str, str] | None = None) -> list[PublishedRoom]:
        """Every published room this server knows, with its summary state: of the server's own
        directory (``scope`` None), of one application service network (``(service id, network
        id)``), or of both together (:data:`ALL_NETWORKS`)."""
        return await self.db.run_read("get_published_rooms", self._published_rooms_txn, scope)

    def _published_rooms_txn(self, t: Txn, scope: str | tuple[str, str] | None) -> list[PublishedRoom]:
        listed: str
        args: tuple[Any, ...] = ()
        if scope is None:
            listed = "SELECT room_id FROM room_directory"
        elif scope == ALL_NETWORKS:
            listed = "SELECT room_id FROM room_directory UNION SELECT room_id FROM appservice_room_list"
        else:
            listed = "SELECT room_id FROM appservice_room_list WHERE appservice_id = ? AND network_id = ?"
            args = tuple(scope)
        counts: dict[str, int] = {}
        for room_id, count in t.query(
            f"SELECT d.room_id, COUNT(m.user_id) FROM ({listed}) d"
            " JOIN rooms r ON r.room_id = d.room_id"
            " LEFT JOIN room_memberships m ON m.room_nid = r.room_nid AND m.membership = 'join'"
            " GROUP BY d.room_id",
            args,
        ):
            counts[room_id] = int(count)
        marks = ",".join("?" * len(SUMMARY_STATE_TYPES))
        states: dict[str, dict[str, Any]] = {room_id: {} for room_id in counts}
        rows = t.query(
            f"SELECT d.room_id, r.room_version, cs.type, e.json, e.redacted_by FROM ({listed}) d"
            " JOIN rooms r ON r.room_id = d.room_id"
            " JOIN current_state cs ON cs.room_nid = r.room_nid"
            " JOIN events e ON e.event_id = cs.event_id"
            f" WHERE cs.state_key = '' AND cs.type IN ({marks})",
            (*args, *SUMMARY_STATE_TYPES),
        )
        for room_id, version, etype, raw, redacted_by in rows:
            states.setdefault(room_id, {})[etype] = stored_content(raw, version, redacted_by)
        return [PublishedRoom(room_id, states.get(room_id, {}), n) for room_id, n in counts.items()]


def stored_content(raw: str, version: str, redacted_by: str | None) -> dict[str, Any]:
    """The content of an event's stored JSON as clients see it: pruned if it was redacted."""
    pdu = json.loads(raw)
    rv = KNOWN_ROOM_VERSIONS.get(version)
    if redacted_by and rv is not None:
        pdu = redact_pdu(pdu, rv)
    content = pdu.get("content")
    return content if isinstance(content, dict) else {}
