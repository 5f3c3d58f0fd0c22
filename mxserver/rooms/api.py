"""What each consumer may ask of the room server: one narrow interface per consumer.

Client-facing handlers see :data:`ClientRooms`, the federation side (receiver,
resident and joining membership, backfill) :data:`FederationRooms`, readers of
the stream (sync, ephemeral caches) :data:`ReaderRooms`. Each names only the
methods its consumer calls, so a reader (and mypy) sees what a part may do to
rooms, and a test can hand in a fake.
"""

from __future__ import annotations

from mxserver.rooms.room_server import RoomServer

# Placeholders while the room server is being split: each becomes a Protocol.
ClientRooms = RoomServer
FederationRooms = RoomServer
ReaderRooms = RoomServer
