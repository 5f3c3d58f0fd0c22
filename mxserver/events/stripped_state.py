"""Stripped state: the few state events shown with an invite or a knock.

client-server-api §Stripped state; server-server-api §Inviting to a room. Sync
shows them for invited and knocking rooms, and the federation side sends them
with invites and knocks it hands to other servers.
"""

from __future__ import annotations

#: the state types of a room's stripped state, in the order they are listed
STRIPPED_STATE_TYPES = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
    # Not in the spec's list, which allows more ("The server might include events not
    # described here as well"): it lets the invitee's server know, before joining, that its
    # guests may join (guest_access.md: only if it is "can_join").
    "m.room.guest_access",
)
