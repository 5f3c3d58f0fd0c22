"""A tiny hand-driven room for the auth-rule tests.

Builds events with explicit event IDs (no hashing needed), picks each event's
auth events from the current state with ``auth_types_for_event`` and keeps the
state up to date as accepted events are applied.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mxserver.events.model import Event
from mxserver.events.versions import KNOWN_ROOM_VERSIONS, RoomVersion
from mxserver.rooms.auth import AuthError, auth_types_for_event, check_auth_rules
from mxserver.rooms.power_levels import StateKey

ALICE = "@alice:a.test"
BOB = "@bob:b.test"
CAROL = "@carol:c.test"
DAVE = "@dave:d.test"
EVE = "@eve:a.test"

ALL_VERSIONS = list(range(1, 13))


def domain(user_id: str) -> str:
    return user_id.split(":", 1)[1]


class Room:
    def __init__(
        self,
        version: int,
        creator: str = ALICE,
        create_content: dict[str, Any] | None = None,
        room_hash: str = "roomhash",
    ) -> None:
        self.n = version
        self.rv: RoomVersion = KNOWN_ROOM_VERSIONS[str(version)]
        self.counter = 0
        self.state: dict[StateKey, Event] = {}
        self.by_id: dict[str, Event] = {}
        self.last: list[str] = []
        if self.rv.hydra:
            self.room_id = "!" + room_hash
        else:
            self.room_id = f"!{room_hash}:{domain(creator)}"
        content: dict[str, Any] = {"room_version": str(version)}
        if not self.rv.implicit_room_creator:
            content["creator"] = creator
        content.update(create_content or {})
        create_id = "$" + room_hash if self.rv.hydra else None
        self.create = self.make("m.room.create", creator, content, state_key="", prev=[], event_id=create_id)
        self.apply(self.create)

    # -- building ----------------------------------------------------------
    def new_id(self, sender: str) -> str:
        self.counter += 1
        if self.rv.event_id_in_pdu:
            return f"${self.counter}:{domain(sender)}"
        return f"$ev{self.counter}"

    def make(
        self,
        type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = None,
        *,
        prev: list[str] | None = None,
        auth: Iterable[Event] | None = None,
        event_id: str | None = None,
        signatures: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        drop: Iterable[str] = (),
    ) -> Event:
        event_id = event_id or self.new_id(sender)
        if auth is None:
            keys = auth_types_for_event(self.rv, type, sender, state_key, content)
            auth = [self.state[k] for k in sorted(keys) if k in self.state]
        auth = list(auth)
        prev = self.last if prev is None else prev

        def ref(eid: str) -> Any:
            return [eid, {"sha256": "x"}] if self.rv.event_id_in_pdu else eid

        pdu: dict[str, Any] = {
            "type": type,
            "sender": sender,
            "content": content,
            "room_id": self.room_id,
            "depth": self.counter,
            "origin_server_ts": 1000 + self.counter,
            "prev_events": [ref(e) for e in prev],
            "auth_events": [ref(e.event_id) for e in auth],
            "hashes": {"sha256": "x"},
            "signatures": signatures if signatures is not None else {domain(sender): {"ed25519:k": "sig"}},
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        if type == "m.room.create" and self.rv.hydra:
            del pdu["room_id"]
        if self.rv.event_id_in_pdu:
            pdu["event_id"] = event_id
        pdu.update(extra or {})
        for key in drop:
            pdu.pop(key, None)
        ev = Event(pdu, self.rv, event_id=event_id)
        self.by_id[event_id] = ev
        return ev

    def auth_events_of(self, ev: Event) -> dict[StateKey, Event]:
        return {self.by_id[e].state_tuple(): self.by_id[e] for e in ev.auth_event_ids if e in self.by_id}

    def check(self, ev: Event, **kwargs: Any) -> None:
        if self.rv.hydra:
            kwargs.setdefault("create_event", self.create)
        check_auth_rules(ev, self.auth_events_of(ev), **kwargs)

    def allowed(self, ev: Event) -> bool:
        try:
            self.check(ev)
        except AuthError:
            return False
        return True

    def apply(self, ev: Event) -> Event:
        if ev.is_state():
            self.state[ev.state_tuple()] = ev
        self.last = [ev.event_id]
        return ev

    def send(self, type: str, sender: str, content: dict[str, Any], state_key: str | None = None, **kw: Any) -> Event:
        """Build, authorise (must pass) and apply an event."""
        ev = self.make(type, sender, content, state_key, **kw)
        self.check(ev)
        return self.apply(ev)

    # -- shorthands ----------------------------------------------------------
    def member(self, sender: str, target: str, membership: str, **content: Any) -> Event:
        return self.make("m.room.member", sender, {"membership": membership, **content}, target)

    def set_member(self, sender: str, target: str, membership: str, **content: Any) -> Event:
        return self.send("m.room.member", sender, {"membership": membership, **content}, target)

    def set_pl(self, sender: str, content: dict[str, Any]) -> Event:
        return self.send("m.room.power_levels", sender, content, "")

    def set_join_rule(self, sender: str, rule: str, **extra: Any) -> Event:
        return self.send("m.room.join_rules", sender, {"join_rule": rule, **extra}, "")


def pl_content(room: Room, users: dict[str, Any] | None = None, **levels: Any) -> dict[str, Any]:
    """Power-levels content; the creator is listed at 100 except in v12."""
    u: dict[str, Any] = {} if room.rv.hydra else {room.create.sender: 100}
    u.update(users or {})
    return {"users": u, **levels}


def basic_room(
    version: int, join_rule: str | None = "public", users: dict[str, Any] | None = None, **levels: Any
) -> Room:
    """create -> creator join -> power levels -> join rules."""
    room = Room(version)
    room.set_member(ALICE, ALICE, "join")
    room.set_pl(ALICE, pl_content(room, users, **levels))
    if join_rule is not None:
        room.set_join_rule(ALICE, join_rule)
    return room
