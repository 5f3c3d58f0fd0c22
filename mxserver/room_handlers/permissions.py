"""Client-API permission checks that read the room's current state.

They answer "may this user do X now" with the same power-level helpers the
auth rules use (:mod:`mxserver.rooms.power_levels`), for actions that are not
themselves events (publishing a room, deleting an alias, upgrading).
"""

from __future__ import annotations

from mxserver.events.model import Event
from mxserver.rooms.api import ClientRooms
from mxserver.rooms.power_levels import CREATE_KEY, POWER_LEVELS_KEY, StateKey, can_send_event
from mxserver.storage.accounts import AccountStore


async def power_state(rooms: ClientRooms, room_id: str, user_id: str | None = None) -> dict[StateKey, Event]:
    """The create and power-levels events (and ``user_id``'s membership) of a room's current state."""
    keys = [CREATE_KEY, POWER_LEVELS_KEY]
    if user_id is not None:
        keys.append(("m.room.member", user_id))
    return await rooms.current_state_events(room_id, keys)


def membership_in(state: dict[StateKey, Event], user_id: str) -> str | None:
    member = state.get(("m.room.member", user_id))
    return member.membership if member is not None else None


def may_send_state(state: dict[StateKey, Event], user_id: str, event_type: str) -> bool:
    """Whether ``user_id`` is joined and reaches the level for state event ``event_type``."""
    return membership_in(state, user_id) == "join" and can_send_event(user_id, event_type, True, state)


async def is_server_admin(accounts: AccountStore, user_id: str) -> bool:
    user = await accounts.get_user(user_id)
    return bool(user is not None and user.is_admin)
