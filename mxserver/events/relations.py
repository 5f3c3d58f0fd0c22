"""Event relationships: what an event's ``m.relates_to`` says about its parent, and the
bundled aggregations a parent carries to clients.

client-server-api §Forming relationships between events: a child names its
parent in the cleartext ``content["m.relates_to"]`` with a ``rel_type`` and
an ``event_id``; relationships that do not match that schema are ignored.
Rich replies (``m.in_reply_to`` without a ``rel_type``) are not relations in
this sense (§Relationships API: "replies do not use rel_type").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from mxserver.events.model import Event

ANNOTATION = "m.annotation"
REPLACE = "m.replace"
THREAD = "m.thread"
REFERENCE = "m.reference"
#: the event type whose content the server cannot read (modules/end_to_end_encryption.md)
ENCRYPTED = "m.room.encrypted"


@attrs.frozen
class Relation:
    """A child event's relationship to its parent."""

    parent_id: str
    rel_type: str
    #: an annotation's ``key`` (event_annotations.md), None for other relation types
    key: str | None = None


def relation_of(content: Mapping[str, Any]) -> Relation | None:
    """The relationship ``content`` declares, or None if it declares no valid one."""
    relates_to = content.get("m.relates_to")
    if not isinstance(relates_to, Mapping):
        return None
    rel_type = relates_to.get("rel_type")
    parent_id = relates_to.get("event_id")
    if not isinstance(rel_type, str) or not isinstance(parent_id, str) or not rel_type or not parent_id:
        return None
    key = relates_to.get("key") if rel_type == ANNOTATION else None
    return Relation(parent_id, rel_type, key if isinstance(key, str) else None)


def may_be_replaced(original: Event) -> bool:
    """Whether ``original`` can have a bundled ``m.replace`` at all (event_replacements.md): not
    a state event, not redacted (§Server-side aggregation of m.replace relationships: a redacted
    original bundles no replacement), and not itself an edit ("you cannot edit an edit")."""
    if original.is_state() or original.metadata.redacted_by:
        return False
    relation = relation_of(original.content)
    return relation is None or relation.rel_type != REPLACE


def is_valid_replacement(original: Event, edit: Event) -> bool:
    """event_replacements.md §Validity of replacement events, for an ``edit`` whose
    ``m.relates_to`` names ``original`` with ``m.replace``."""
    return may_be_replaced(original) and replacement_fits(original, edit)


def replacement_fits(original: Event, edit: Event) -> bool:
    """The rules of :func:`is_valid_replacement` about ``edit``, for an ``original`` that
    :func:`may_be_replaced`."""
    if edit.is_state() or edit.metadata.redacted_by:
        return False
    if edit.room_id != original.room_id or edit.sender != original.sender or edit.type != original.type:
        return False
    if edit.type == ENCRYPTED:
        # §Editing encrypted events: m.new_content is inside the ciphertext, which the server
        # cannot read; a cleartext copy "would be ignored".
        return True
    return isinstance(edit.content.get("m.new_content"), Mapping)


@attrs.frozen
class ThreadSummary:
    """threading.md §Server-side aggregation of m.thread relationships."""

    #: the most recent reply the reader may see, as they may see it
    latest: Event
    #: unredacted replies, not counting those of users the reader ignores
    count: int
    #: the reader sent the root or a reply
    participated: bool


@attrs.frozen
class Bundle:
    """What one parent event's ``unsigned["m.relations"]`` summarises for one reader."""

    thread: ThreadSummary | None = None
    #: the most recent valid replacement (event_replacements.md)
    replace: Event | None = None
    #: the children with an ``m.reference`` relation, oldest first (reference_relations.md)
    references: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.thread is not None or self.replace is not None or bool(self.references)
