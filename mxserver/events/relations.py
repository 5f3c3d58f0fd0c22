"""Event relationships: what an event's ``m.relates_to`` says about its parent.

client-server-api §Forming relationships between events: a child names its
parent in the cleartext ``content["m.relates_to"]`` with a ``rel_type`` and
an ``event_id``; relationships that do not match that schema are ignored.
Rich replies (``m.in_reply_to`` without a ``rel_type``) are not relations in
this sense (§Relationships API: "replies do not use rel_type").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

ANNOTATION = "m.annotation"


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
