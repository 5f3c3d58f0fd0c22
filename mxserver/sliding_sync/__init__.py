"""Simplified sliding sync (MSC4186): room lists in windows, per-connection deltas, extensions.

The request model is :mod:`.request`, the per-connection memory of what was
sent :mod:`.connections`, the room list (filters, activity order, ranges)
:mod:`.room_lists`, the room results :mod:`.rooms`, the extensions
:mod:`.extensions`; :mod:`.handler` puts them together and long-polls on the
notifier /sync uses.
"""
