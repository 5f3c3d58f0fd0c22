"""Stream tokens: one position per stream, in a compact opaque string.

Every stream a client syncs has integer positions: room events (the events'
stream ordering), typing, receipts, presence, account data, to-device and
device lists. A ``/sync`` ``next_batch`` is all of them at once, e.g.
``s120_4_9_0_31_2_7``. Persistent streams keep their positions across
restarts, so old tokens keep working; in-memory streams (typing) restart at
zero and a token ahead of them is read as "nothing new".
"""

from __future__ import annotations

import re

import attrs

from mxserver.errors import invalid_param

STREAMS = ("room", "typing", "receipts", "presence", "account_data", "to_device", "device_lists")


@attrs.frozen
class StreamToken:
    room: int = 0
    typing: int = 0
    receipts: int = 0
    presence: int = 0
    account_data: int = 0
    to_device: int = 0
    device_lists: int = 0

    def serialize(self) -> str:
        return "s" + "_".join(str(getattr(self, name)) for name in STREAMS)

    @classmethod
    def parse(cls, token: str) -> StreamToken:
        if not isinstance(token, str) or not token.startswith("s"):
            raise invalid_param("Unknown stream token")
        parts = token[1:].split("_")
        if not 1 <= len(parts) <= len(STREAMS):
            raise invalid_param("Unknown stream token")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise invalid_param("Unknown stream token") from None
        # Tokens from an older release with fewer streams still parse: missing streams start at 0.
        return cls(**dict(zip(STREAMS, values, strict=False)))

    def copy_and_replace(self, stream: str, position: int) -> StreamToken:
        return attrs.evolve(self, **{stream: position})

    def is_after(self, other: StreamToken) -> bool:
        """Whether any stream of ``self`` is ahead of ``other``."""
        return any(getattr(self, s) > getattr(other, s) for s in STREAMS)


#: a room-stream pagination token (/messages, prev_batch): ``s<position>``, or a whole sync token
_ROOM_TOKEN = re.compile(r"s(-?[0-9]{1,18})(?:_[0-9A-Za-z_.~-]*)?")


def room_token(position: int) -> str:
    return f"s{position}"


def parse_room_token(token: str, name: str = "from") -> int:
    """The room-stream position of a pagination (or sync) token; M_INVALID_PARAM if it is not one."""
    m = _ROOM_TOKEN.fullmatch(token)
    if m is None:
        raise invalid_param(f"Invalid pagination token in '{name}'")
    return int(m.group(1))
