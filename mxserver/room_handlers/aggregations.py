"""Bundled aggregations: the ``unsigned["m.relations"]`` of events served to a client.

client-server-api §Aggregations of child events. For each non-state event of a page
(state events "do not currently receive bundled aggregations"):

* ``m.thread`` (threading.md §Server-side aggregation): the number of replies, whether
  the reader took part, and the latest reply *the reader may see* (history visibility,
  as /messages applies it), itself with its own ``m.replace``/``m.reference`` bundle;
* ``m.replace`` (event_replacements.md): the most recent valid edit the reader may see,
  by ``origin_server_ts`` then the larger event ID. The original's content is left
  alone (v1.7); a redacted original bundles no edit;
* ``m.reference`` (reference_relations.md): the IDs of the referencing events.

Redacted children are never counted, nor children sent by users the reader ignores
(§Aggregations of child events, modules/ignore_users.md). What each parent's children
add up to is kept in memory by the store, for every reader alike
(:class:`~mxserver.storage.aggregations.AggregationsStore`); a page costs at most one
read for its parents not in memory, and one more for the latest thread replies' own
bundles when the page has threads. The events are fetched in batches and checked for
visibility, for each reader, in one call per batch. Only rare cases go further: a
thread whose latest reply the reader may not see, an edit that turns out invalid.

Left out, knowingly: ``count`` counts replies the reader may not see (it is "the
number of events ... as known to the server", threading.md); ``m.reference`` lists
IDs only (reference_relations.md), without a visibility check of each child.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from mxserver.events.model import Event
from mxserver.events.relations import THREAD, Bundle, ThreadSummary, may_be_replaced, replacement_fits
from mxserver.storage.aggregations import NO_CHILDREN, AggregationsStore, ThreadTotals
from mxserver.storage.relations import RelationFilter, RelationsStore

#: thread replies read at a time, and batches at most, looking for one the reader may see
#: when the latest is not theirs to see (a former member, an ignored sender)
FALLBACK_BATCH = 50
FALLBACK_BATCHES = 4


class EventSource(Protocol):
    async def get_events(self, event_ids: Collection[str], include_rejected: bool = True) -> dict[str, Event]: ...


class VisibilityFilter(Protocol):
    async def filter_events_for_user(self, user_id: str, events: Sequence[Event]) -> list[Event]: ...


class IgnoredUsers(Protocol):
    async def ignored_users(self, user_id: str) -> frozenset[str]: ...


class Aggregations(Protocol):
    """What endpoints that serve room events ask for (implemented by :class:`BundledAggregations`)."""

    async def bundles(self, events: Sequence[Event], user_id: str) -> dict[str, Bundle]: ...


class BundledAggregations:
    """Computes the bundles of a page of events for one reader."""

    def __init__(
        self,
        store: AggregationsStore,
        relations: RelationsStore,
        events: EventSource,
        visibility: VisibilityFilter,
        ignored: IgnoredUsers,
    ) -> None:
        self.store = store
        self.relations = relations
        self.events = events
        self.visibility = visibility
        self.ignored = ignored

    async def bundles(self, events: Sequence[Event], user_id: str) -> dict[str, Bundle]:
        """The non-empty bundles of ``events`` (by event ID) as ``user_id`` sees them, and those
        of the latest thread replies they carry."""
        ignored = await self.ignored.ignored_users(user_id)
        out = await self._bundle(events, user_id, ignored, threads=True)
        latest = [b.thread.latest for b in out.values() if b.thread is not None]
        if latest:
            page = {ev.event_id for ev in events}
            latest = [ev for ev in latest if ev.event_id not in page]
        if latest:
            # threading.md: the latest event carries its own aggregations. Not its threads: a
            # thread reply cannot be a thread root, and this keeps a chain of them from looping.
            out.update(await self._bundle(latest, user_id, ignored, threads=False))
        return out

    async def _bundle(
        self, events: Sequence[Event], user_id: str, ignored: frozenset[str], threads: bool
    ) -> dict[str, Bundle]:
        parents: dict[str, Event] = {}
        for ev in events:
            if not ev.is_state():
                parents[ev.event_id] = ev
        if not parents:
            return {}
        # Every parent is asked about (from memory, or one read for those not in it), and the
        # per-event checks are made only for those with children: most pages have none.
        found = await self.store.children(list(parents))
        with_children = {p: c for p, c in found.items() if c is not NO_CHILDREN}
        if not with_children:
            return {}
        thread_rows: dict[str, tuple[ThreadTotals, int]] = {}
        edit_candidates: dict[str, list[str]] = {}
        for parent, children in with_children.items():
            thread = children.thread
            if threads and thread is not None:
                # threading.md: count and latest_event leave out the replies of ignored users
                count = thread.count - sum(thread.senders.get(u, 0) for u in ignored) if ignored else thread.count
                if count > 0:
                    thread_rows[parent] = (thread, count)
            if children.edits:
                original = parents[parent]
                if original.sender not in ignored and may_be_replaced(original):
                    edit_candidates[parent] = list(children.edits)  # the most recent first
        # Usually the first candidates are the answers: the latest replies and the newest edits,
        # fetched and checked for visibility together.
        first = [t.latest_event_id for t, _ in thread_rows.values()] + [c[0] for c in edit_candidates.values()]
        seen = await self._fetch_visible(user_id, first, ignored) if first else {}
        summaries = await self._threads(parents, thread_rows, seen, user_id, ignored) if thread_rows else {}
        edits = await self._edits(parents, edit_candidates, seen, user_id) if edit_candidates else {}
        out: dict[str, Bundle] = {}
        for event_id, children in with_children.items():
            refs = tuple(child for child, sender in children.references if sender not in ignored)
            bundle = Bundle(thread=summaries.get(event_id), replace=edits.get(event_id), references=refs)
            if bundle:
                out[event_id] = bundle
        return out

    async def _threads(
        self,
        roots: Mapping[str, Event],
        threads: Mapping[str, tuple[ThreadTotals, int]],
        seen: Mapping[str, Event],
        user_id: str,
        ignored: frozenset[str],
    ) -> dict[str, ThreadSummary]:
        out: dict[str, ThreadSummary] = {}
        for root, (thread, count) in threads.items():
            shown = seen.get(thread.latest_event_id)
            if shown is None:
                # rare: the latest reply is not the reader's to see; look further back
                shown = await self._latest_visible(root, thread, user_id, ignored)
            if shown is None:
                continue  # none of the replies is theirs to see: no thread, as far as they know
            participated = roots[root].sender == user_id or thread.senders.get(user_id, 0) > 0
            out[root] = ThreadSummary(latest=shown, count=count, participated=participated)
        return out

    async def _latest_visible(
        self, root: str, thread: ThreadTotals, user_id: str, ignored: frozenset[str]
    ) -> Event | None:
        position = thread.latest_position - 1
        for _ in range(FALLBACK_BATCHES):
            batch = await self.relations.children(
                thread.room_nid, root, RelationFilter(rel_type=THREAD), position, None, True, FALLBACK_BATCH
            )
            seen = await self._keep(user_id, batch, ignored)
            for ev in batch:
                if ev.event_id in seen:
                    return seen[ev.event_id]
            if len(batch) < FALLBACK_BATCH:
                return None
            last = batch[-1].metadata.stream_ordering
            assert last is not None
            position = last - 1
        return None

    async def _edits(
        self,
        parents: Mapping[str, Event],
        candidates: Mapping[str, list[str]],
        seen: Mapping[str, Event],
        user_id: str,
    ) -> dict[str, Event]:
        out: dict[str, Event] = {}
        pending: dict[str, list[str]] = {}
        for parent, ids in candidates.items():
            first = seen.get(ids[0])
            if first is not None and replacement_fits(parents[parent], first):
                out[parent] = first
            elif len(ids) > 1:
                pending[parent] = ids[1:]
        take = 2
        while pending:
            # The newest was invalid or hidden: try twice as many of the next, all parents at once.
            wanted = {p: ids[:take] for p, ids in pending.items()}
            more = await self._fetch_visible(user_id, [e for ids in wanted.values() for e in ids], frozenset())
            for parent, ids in wanted.items():
                chosen = next((more[e] for e in ids if e in more and replacement_fits(parents[parent], more[e])), None)
                rest = pending.pop(parent)[take:]
                if chosen is not None:
                    out[parent] = chosen
                elif rest:
                    pending[parent] = rest
            take *= 2
        return out

    async def _fetch_visible(self, user_id: str, event_ids: Sequence[str], ignored: frozenset[str]) -> dict[str, Event]:
        wanted = list(dict.fromkeys(event_ids))
        found = await self.events.get_events(wanted)
        return await self._keep(user_id, [found[e] for e in wanted if e in found], ignored)

    async def _keep(self, user_id: str, events: Sequence[Event], ignored: frozenset[str]) -> dict[str, Event]:
        """``events`` the reader may see and does not ignore, by ID, as they may see them."""
        candidates = [ev for ev in events if ev.sender not in ignored]
        return {ev.event_id: ev for ev in await self.visibility.filter_events_for_user(user_id, candidates)}
