"""Persisted EDUs of the federation sender: send-to-device messages survive outages and restarts.

An EDU queued with ``persistent=True`` is written to ``federation_outbox``
(schema 0014) with a sequence number, and deleted once a transaction carrying
it succeeds. Normally it also waits in the destination's in-memory queue like
any EDU; when that queue overflows, or after a restart, the destination is
marked ``outbox_in_store`` and its persisted EDUs are read back from the store
(oldest first) as transactions are built. The remote deduplicates on the EDU's
own ID (``message_id``), so a rare second delivery after a crash is harmless.
"""

from __future__ import annotations

from typing import Any

from mxserver.storage.federation_sender import FederationSenderStore, OrderedWrites

#: the first element of the in-memory queue key of a persisted EDU (no EDU type starts with NUL)
OUTBOX = "\x00outbox"


class Outbox:
    """Sequence numbers, writes and reads of persisted EDUs (one per sender)."""

    def __init__(self, store: FederationSenderStore, writer: OrderedWrites) -> None:
        self._store = store
        self._writer = writer
        self._next_seq = 1

    async def load(self) -> set[str]:
        """At start-up: continue the numbering; the destinations with stored EDUs."""
        highest, destinations = await self._store.outbox_state()
        self._next_seq = max(self._next_seq, highest + 1)
        return destinations

    def add(self, destination: str, edu: dict[str, Any], now_ms: int) -> tuple[str, int]:
        """Store ``edu`` (in order with the sender's other writes); its in-memory queue key."""
        seq = self._next_seq
        self._next_seq += 1
        self._writer.write(lambda: self._store.add_outbox(destination, seq, edu["edu_type"], edu["content"], now_ms))
        return (OUTBOX, seq)

    async def take(self, dest: Any, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """The next stored EDUs of a destination marked ``outbox_in_store`` (at most ``limit``).

        Persisted EDUs in memory are dropped first (they are in the store); ones
        queued while the store is read go to memory, and are taken out of it
        again if the read returns them. A full answer leaves the mark set.
        """
        for key in [k for k in dest.edus if isinstance(k, tuple) and k and k[0] == OUTBOX]:
            del dest.edus[key]
        dest.outbox_in_store = False
        await self._writer.flush()
        rows = await self._store.outbox_after(dest.name, dest.outbox_after, limit)
        for seq, _ in rows:
            dest.edus.pop((OUTBOX, seq), None)
        if len(rows) >= limit:
            dest.outbox_in_store = True
        return rows

    def delivered(self, destination: str, seqs: list[int]) -> None:
        self._writer.write(lambda: self._store.delete_outbox(destination, seqs))
