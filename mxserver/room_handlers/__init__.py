"""The client-facing room handlers: creation, membership, aliases and the directory, history, sending, upgrades, spaces.

They are writers (through the room server) and readers (through the stores); the
room server itself lives in :mod:`mxserver.rooms`.
"""
