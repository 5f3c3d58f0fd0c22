"""SQL for push rules: user-defined rules, changes to server-default rules, change positions.

Tables ``push_rules``, ``push_rule_default_overrides`` and
``push_rules_changes`` (schema 0006). Every change takes a position on the
``account_data`` stream (clients see push rules as the ``m.push_rules``
account data event) and records it in ``push_rules_changes``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn
from mxserver.storage.stream_positions import PersistedStream


@attrs.frozen
class StoredRule:
    """A user-defined push rule as stored."""

    kind: str
    rule_id: str
    conditions: list[Any] | None
    pattern: str | None
    actions: list[Any]
    enabled: bool


@attrs.frozen
class DefaultOverride:
    """A user's change to a server-default rule: None keeps the default."""

    enabled: bool | None
    actions: list[Any] | None


class RuleNotFound(Exception):
    """The ``before``/``after`` anchor of a new rule does not exist."""

    def __init__(self, rule_id: str) -> None:
        super().__init__(rule_id)
        self.rule_id = rule_id


#: user IDs per IN (...) list: under SQLite's default bound on parameters
_CHUNK = 500


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class PushRulesStore:
    """The users' own push rules and changes to default rules.

    Most users never change their rules: their ruleset is the server's defaults, which
    needs no read. The store keeps in memory who ever changed a rule (``push_rules_changes``
    has a row for each, written with every change) and reads only those: a join into a big
    room evaluates it for every member, and the newest member's rules are always cold.
    """

    def __init__(self, db: Database, stream: PersistedStream) -> None:
        self.db = db
        self.stream = stream
        #: users with a row in push_rules_changes (once loaded) and every user whose rules
        #: changed since start; only ever grows
        self._changed_users: set[str] = set()
        self._changed_loaded = False

    # -- reading -----------------------------------------------------------------

    async def get_rules(self, user_id: str) -> tuple[list[StoredRule], dict[str, DefaultOverride]]:
        """The user's own rules (most important first within each kind) and default-rule changes."""
        return (await self.get_rules_for_users([user_id], "get_push_rules"))[user_id]

    async def get_rules_for_users(
        self, user_ids: Sequence[str], desc: str = "get_push_rules_of_users"
    ) -> dict[str, tuple[list[StoredRule], dict[str, DefaultOverride]]]:
        """:meth:`get_rules` of many users in one transaction (push evaluation of a big room);
        ``desc`` names the transaction (its timing metric). Users who never changed a rule
        are answered without a read."""
        changed = await self._changed()
        out: dict[str, tuple[list[StoredRule], dict[str, DefaultOverride]]] = {u: ([], {}) for u in user_ids}
        users = [u for u in out if u in changed]
        if users:
            out.update(await self._read_rules(users, desc))
        return out

    async def users_with_changes(self, user_ids: Sequence[str]) -> set[str]:
        """Those of ``user_ids`` who ever changed a rule (the others are on the defaults)."""
        changed = await self._changed()
        return {u for u in user_ids if u in changed}

    def note_changed(self, user_id: str) -> None:
        """Another process (the cluster's writer) may have changed the user's rules: read them."""
        self._changed_users.add(user_id)

    async def _changed(self) -> set[str]:
        if not self._changed_loaded:
            # Two first reads at once both load: the same rows, merged.
            users = await self.db.run_read(
                "push_rules_changed_users", lambda t: {str(r[0]) for r in t.query("SELECT user_id FROM push_rules_changes")}
            )
            self._changed_users |= users
            self._changed_loaded = True
        return self._changed_users

    def _read_rules(
        self, users: list[str], desc: str
    ) -> Deferred[dict[str, tuple[list[StoredRule], dict[str, DefaultOverride]]]]:
        def txn(t: Txn) -> dict[str, tuple[list[StoredRule], dict[str, DefaultOverride]]]:
            out: dict[str, tuple[list[StoredRule], dict[str, DefaultOverride]]] = {u: ([], {}) for u in users}
            for i in range(0, len(users), _CHUNK):
                chunk = users[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for r in t.query(
                    "SELECT user_id, kind, rule_id, conditions, pattern, actions, enabled FROM push_rules"
                    f" WHERE user_id IN ({marks}) ORDER BY user_id, kind, position",
                    chunk,
                ):
                    out[r[0]][0].append(
                        StoredRule(
                            r[1],
                            r[2],
                            json.loads(r[3]) if r[3] is not None else None,
                            r[4],
                            json.loads(r[5]),
                            bool(r[6]),
                        )
                    )
                for r in t.query(
                    "SELECT user_id, rule_id, enabled, actions FROM push_rule_default_overrides"
                    f" WHERE user_id IN ({marks})",
                    chunk,
                ):
                    out[r[0]][1][r[1]] = DefaultOverride(
                        None if r[2] is None else bool(r[2]), json.loads(r[3]) if r[3] is not None else None
                    )
            return out

        return self.db.run_read(desc, txn)

    async def changed_between(self, user_id: str, from_pos: int, to_pos: int) -> bool:
        """Whether the user's push rules changed at a position in (from_pos, to_pos]."""
        row = await self.db.select_one(
            "push_rules_changed", "SELECT stream_id FROM push_rules_changes WHERE user_id = ?", user_id
        )
        # Only the latest change is kept: a change after to_pos may hide one inside the range,
        # so that case counts as changed too (sending the rules again is harmless).
        return row is not None and int(row[0]) > from_pos

    # -- writing -----------------------------------------------------------------

    def put_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        conditions: list[Any] | None,
        pattern: str | None,
        actions: list[Any],
        before: str | None,
        after: str | None,
    ) -> Deferred[int]:
        """Create or update a user rule, placed per ``before``/``after`` (pushrules.yaml).

        ``before`` wins when both are given; with neither, a new rule becomes the
        most important of its kind and an existing one keeps its place. Raises
        :class:`RuleNotFound` (nothing written) for an unknown anchor.
        """

        def txn(t: Txn) -> int:
            position = self.stream.allocate_txn(t)
            order = [
                r[0]
                for r in t.query(
                    "SELECT rule_id FROM push_rules WHERE user_id = ? AND kind = ? ORDER BY position",
                    (user_id, kind),
                )
            ]
            existing = t.query_one(
                "SELECT enabled FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?",
                (user_id, kind, rule_id),
            )
            if before is not None or after is not None or existing is None:
                if rule_id in order:
                    order.remove(rule_id)
                anchor = before if before is not None else after
                if anchor is None:
                    index = 0
                elif anchor in order:
                    index = order.index(anchor) + (0 if before is not None else 1)
                else:
                    raise RuleNotFound(anchor)
                order.insert(index, rule_id)
            # pushrules.yaml: "When creating push rules, they MUST be enabled by default";
            # an update keeps the rule's enabled flag.
            enabled = True if existing is None else bool(existing[0])
            t.execute(
                "INSERT INTO push_rules (user_id, kind, rule_id, position, conditions, pattern, actions, enabled)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET"
                " conditions = excluded.conditions, pattern = excluded.pattern, actions = excluded.actions",
                (
                    user_id,
                    kind,
                    rule_id,
                    order.index(rule_id),
                    None if conditions is None else _dump(conditions),
                    pattern,
                    _dump(actions),
                    enabled,
                ),
            )
            t.executemany(
                "UPDATE push_rules SET position = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                [(i, user_id, kind, rid) for i, rid in enumerate(order)],
            )
            self._mark_changed_txn(t, user_id, position)
            return position

        return self.db.run_interaction("put_push_rule", txn)

    def delete_rule(self, user_id: str, kind: str, rule_id: str) -> Deferred[int | None]:
        """Delete a user rule; the change's position, or None (nothing written) if there was none."""

        def txn(t: Txn) -> int | None:
            position = self.stream.allocate_txn(t)
            t.execute("DELETE FROM push_rules WHERE user_id = ? AND kind = ? AND rule_id = ?", (user_id, kind, rule_id))
            if t.rowcount == 0:
                raise _NothingChanged()
            self._mark_changed_txn(t, user_id, position)
            return position

        return _none_if_unchanged(self.db.run_interaction("delete_push_rule", txn))

    def set_rule_field(self, user_id: str, kind: str, rule_id: str, field: str, value: Any) -> Deferred[int | None]:
        """Set ``enabled`` or ``actions`` of a user rule; None (nothing written) if there is no such rule."""
        assert field in ("enabled", "actions"), field
        stored = _dump(value) if field == "actions" else bool(value)

        def txn(t: Txn) -> int | None:
            position = self.stream.allocate_txn(t)
            t.execute(
                f"UPDATE push_rules SET {field} = ? WHERE user_id = ? AND kind = ? AND rule_id = ?",
                (stored, user_id, kind, rule_id),
            )
            if t.rowcount == 0:
                raise _NothingChanged()
            self._mark_changed_txn(t, user_id, position)
            return position

        return _none_if_unchanged(self.db.run_interaction(f"set_push_rule_{field}", txn))

    def set_default_field(self, user_id: str, rule_id: str, field: str, value: Any) -> Deferred[int]:
        """Change ``enabled`` or ``actions`` of a server-default rule for this user."""
        assert field in ("enabled", "actions"), field
        stored = _dump(value) if field == "actions" else bool(value)

        def txn(t: Txn) -> int:
            position = self.stream.allocate_txn(t)
            t.execute(
                f"INSERT INTO push_rule_default_overrides (user_id, rule_id, {field}) VALUES (?, ?, ?)"
                f" ON CONFLICT (user_id, rule_id) DO UPDATE SET {field} = excluded.{field}",
                (user_id, rule_id, stored),
            )
            self._mark_changed_txn(t, user_id, position)
            return position

        return self.db.run_interaction(f"set_default_push_rule_{field}", txn)

    def _mark_changed_txn(self, t: Txn, user_id: str, position: int) -> None:
        # Known before the change commits: a read racing it reads the rows, never skips them.
        self._changed_users.add(user_id)
        t.execute(
            "INSERT INTO push_rules_changes (user_id, stream_id) VALUES (?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id",
            (user_id, position),
        )


class _NothingChanged(Exception):
    """Raised inside a transaction to roll back its position allocation."""


def _none_if_unchanged(d: Deferred[Any]) -> Deferred[Any]:
    def trap(failure: Any) -> None:
        failure.trap(_NothingChanged)
        return None

    return d.addErrback(trap)
