"""Sliding sync extensions: to-device (MSC3885), E2EE (MSC3884), account data (MSC3959),
receipts (MSC3960) and typing (MSC3961).

Each reads the same handlers /sync's sources read (the Protocols of
:mod:`mxserver.sync.source_adapters`). The room-scoped ones cover the rooms their
``lists``/``rooms`` select among the response's lists and subscriptions. Receipts
and room account data remember per room how far they were sent on the
connection, like the rooms themselves: a room that comes back into scope gets
what it missed, and a room new to the scope gets its current data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from mxserver.sliding_sync.connections import LIVE, RoomEntry
from mxserver.sliding_sync.request import ExtensionScope, ExtensionsRequest
from mxserver.sliding_sync.room_lists import RoomListsResult, scope_rooms
from mxserver.sliding_sync.rooms import RoomOutcome
from mxserver.storage.sync import MembershipRow
from mxserver.sync.source_adapters import (
    AccountDataReader,
    DeviceListsReader,
    ReceiptsReader,
    ToDeviceReader,
    TypingReader,
)
from mxserver.sync.tokens import StreamToken

if TYPE_CHECKING:
    from mxserver.accounts.auth import Requester

JsonDict = dict[str, Any]


@attrs.define
class ExtensionsResult:
    body: JsonDict = attrs.Factory(dict)
    #: whether anything here is worth ending a long-poll for
    has_data: bool = False
    #: room ID -> RoomEntry fields to change (receipts, account_data)
    patches: dict[str, dict[str, Any]] = attrs.Factory(dict)

    def patch(self, room_id: str, **fields: Any) -> None:
        self.patches.setdefault(room_id, {}).update(fields)


@attrs.frozen
class ExtensionContext:
    """What the extensions see of the request being answered."""

    requester: Requester
    since: StreamToken | None
    now: StreamToken
    memberships: Sequence[MembershipRow]
    lists: RoomListsResult
    #: the connection's rooms at the request's pos
    previous: Mapping[str, RoomEntry]
    #: the rooms of this response
    outcomes: Mapping[str, RoomOutcome]

    def scope(self, scope: ExtensionScope) -> set[str]:
        return scope_rooms(scope.lists, scope.rooms, self.lists.in_lists, self.lists.relevant)

    def sent_whole(self, room_id: str) -> bool:
        """The room goes out whole in this response: its receipts are sent afresh too (as Synapse)."""
        outcome = self.outcomes.get(room_id)
        return outcome is not None and bool(
            outcome.body.get("initial") or outcome.body.get("expanded_timeline")
        )


class Extensions:
    def __init__(
        self,
        *,
        to_device: ToDeviceReader,
        device_lists: DeviceListsReader,
        account_data: AccountDataReader,
        receipts: ReceiptsReader,
        typing: TypingReader,
    ) -> None:
        self._to_device = to_device
        self._device_lists = device_lists
        self._account_data = account_data
        self._receipts = receipts
        self._typing = typing

    async def build(self, request: ExtensionsRequest, ctx: ExtensionContext) -> ExtensionsResult:
        result = ExtensionsResult()
        if request.to_device is not None:
            await self._to_device_ext(request.to_device.since, request.to_device.limit, ctx, result)
        if request.e2ee:
            await self._e2ee(ctx, result)
        if request.account_data is not None:
            await self._account_data_ext(request.account_data, ctx, result)
        if request.receipts is not None:
            await self._receipts_ext(request.receipts, ctx, result)
        if request.typing is not None:
            self._typing_ext(request.typing, ctx, result)
        return result

    # -- to-device (MSC3885) ----------------------------------------------------------------------

    async def _to_device_ext(self, since: int | None, limit: int, ctx: ExtensionContext, result: ExtensionsResult) -> None:
        user_id, device_id = ctx.requester.user_id, ctx.requester.device_id
        upto = ctx.now.to_device
        if device_id is None:
            result.body["to_device"] = {"next_batch": str(upto), "events": []}
            return
        since_pos = since or 0
        if since_pos > upto:
            # From the future (or another server's): nothing to give, nothing to delete.
            result.body["to_device"] = {"next_batch": str(since_pos), "events": []}
            return
        if since is not None:
            # The client has every message up to its `since`: they can go (as /sync does).
            await self._to_device.ack_to_device(user_id, device_id, since_pos)
        messages, position = await self._to_device.get_to_device_for_sync(user_id, device_id, since_pos, limit, upto)
        result.body["to_device"] = {"next_batch": str(max(position, since_pos)), "events": list(messages)}
        result.has_data = result.has_data or bool(messages)

    # -- E2EE (MSC3884) ---------------------------------------------------------------------------------

    async def _e2ee(self, ctx: ExtensionContext, result: ExtensionsResult) -> None:
        fields, news = await self._device_lists.sync_fields(ctx.requester, ctx.since, ctx.now, list(ctx.memberships))
        body = dict(fields)
        if ctx.since is None:
            # As Synapse: device list changes only on an incremental request.
            body.pop("device_lists", None)
        result.body["e2ee"] = body
        # Key counts alone do not end a long-poll (as Synapse: they are always there).
        result.has_data = result.has_data or news

    # -- account data (MSC3959) ----------------------------------------------------------------------

    async def _account_data_ext(self, scope: ExtensionScope, ctx: ExtensionContext, result: ExtensionsResult) -> None:
        user_id = ctx.requester.user_id
        upto = ctx.now.account_data
        since = ctx.since.account_data if ctx.since is not None else None
        rooms = ctx.scope(scope)
        initial: list[str] = []
        live: list[str] = []
        behind: dict[int, list[str]] = {}
        for room_id in rooms:
            status = ctx.previous[room_id].account_data if room_id in ctx.previous else None
            if since is None or status is None:
                initial.append(room_id)
            elif status == LIVE:
                live.append(room_id)
            else:
                behind.setdefault(status, []).append(room_id)

        everything: tuple[Sequence[JsonDict], Mapping[str, Sequence[JsonDict]]] | None = None
        if since is None or initial:
            everything = await self._account_data.get_account_data_for_sync(user_id, None, upto)
        changed: tuple[Sequence[JsonDict], Mapping[str, Sequence[JsonDict]]] = ([], {})
        if since is not None:
            changed = await self._account_data.get_account_data_for_sync(user_id, since, upto)

        global_events = list(everything[0] if since is None and everything is not None else changed[0])
        by_room: dict[str, list[JsonDict]] = {}
        for room_id in initial:
            assert everything is not None
            if everything[1].get(room_id):
                by_room[room_id] = list(everything[1][room_id])
        for room_id in live:
            if changed[1].get(room_id):
                by_room[room_id] = list(changed[1][room_id])
        for position, room_ids in behind.items():
            # What the room missed since it left the scope (a superset is fine: content replaces).
            _, missed = await self._account_data.get_account_data_for_sync(user_id, position, upto)
            for room_id in room_ids:
                if missed.get(room_id):
                    by_room[room_id] = list(missed[room_id])
        for room_id in rooms:
            result.patch(room_id, account_data=LIVE)
        if since is not None:
            for room_id in changed[1]:
                entry = ctx.previous.get(room_id)
                if room_id not in rooms and entry is not None and entry.account_data == LIVE:
                    result.patch(room_id, account_data=since)
        result.body["account_data"] = {"global": global_events, "rooms": by_room}
        result.has_data = result.has_data or bool(global_events or by_room)

    # -- receipts (MSC3960) -----------------------------------------------------------------------------

    async def _receipts_ext(self, scope: ExtensionScope, ctx: ExtensionContext, result: ExtensionsResult) -> None:
        user_id = ctx.requester.user_id
        upto = ctx.now.receipts
        since = ctx.since.receipts if ctx.since is not None else None
        rooms = ctx.scope(scope)
        initial: list[str] = []
        live: list[str] = []
        behind: dict[int, list[str]] = {}
        for room_id in rooms:
            status = ctx.previous[room_id].receipts if room_id in ctx.previous else None
            if since is None or status is None or ctx.sent_whole(room_id):
                initial.append(room_id)
            elif status == LIVE:
                live.append(room_id)
            else:
                behind.setdefault(status, []).append(room_id)

        out: dict[str, JsonDict] = {}
        if initial:
            # A room new to the client: the receipts of its timeline's events and the user's own,
            # not every member's (as Synapse: receipts of a big room would swamp the response).
            current = await self._receipts.receipts_for_rooms(user_id, initial, None, upto)
            for room_id, event in current.items():
                outcome = ctx.outcomes.get(room_id)
                in_timeline = set(outcome.timeline_event_ids) if outcome is not None else set()
                content = _receipts_for(event.get("content", {}), in_timeline, user_id)
                if content:
                    out[room_id] = {"type": "m.receipt", "content": content}
        if live and since is not None:
            out.update(await self._receipts.receipts_for_rooms(user_id, live, since, upto))
        for position, room_ids in behind.items():
            out.update(await self._receipts.receipts_for_rooms(user_id, room_ids, position, upto))
        for room_id in rooms:
            result.patch(room_id, receipts=LIVE)
        if since is not None and since < upto:
            # Rooms out of scope now whose receipts moved: they get them when they come back.
            outside = [r for r, e in ctx.previous.items() if e.receipts == LIVE and r not in rooms]
            if outside:
                for room_id in await self._receipts.receipts_for_rooms(user_id, outside, since, upto):
                    result.patch(room_id, receipts=since)
        result.body["receipts"] = {"rooms": out}
        result.has_data = result.has_data or bool(out)

    # -- typing (MSC3961) ----------------------------------------------------------------------------------

    def _typing_ext(self, scope: ExtensionScope, ctx: ExtensionContext, result: ExtensionsResult) -> None:
        # Not tracked per room: typing times out long before a room comes back into scope (Synapse).
        rooms = ctx.scope(scope)
        joined = {m.room_id for m in ctx.memberships if m.membership == "join"}
        since = ctx.since.typing if ctx.since is not None else None
        got = self._typing.typing_for_rooms(sorted(rooms & joined), since) if rooms else {}
        result.body["typing"] = {"rooms": dict(got)}
        result.has_data = result.has_data or bool(got)


def _receipts_for(content: Mapping[str, Any], event_ids: set[str], user_id: str) -> JsonDict:
    """``m.receipt`` content cut to the given events' receipts plus ``user_id``'s own."""
    out: JsonDict = {}
    for event_id, by_type in content.items():
        if not isinstance(by_type, dict):
            continue
        for receipt_type, by_user in by_type.items():
            if not isinstance(by_user, dict):
                continue
            kept = by_user if event_id in event_ids else {u: r for u, r in by_user.items() if u == user_id}
            if kept:
                out.setdefault(event_id, {})[receipt_type] = dict(kept)
    return out
