"""Rooms: room versions, auth rules, state resolution and the room server."""
