"""What server-side search indexes of an event, and how text becomes search words.

client-server-api §Server Side Search, ``room_events``: the searchable keys are
``content.body`` of ``m.room.message``, ``content.name`` of ``m.room.name`` and,
of ``m.room.topic``, ``content.topic`` "as well as the ``body`` of the
``text/plain`` representation in ``content['m.topic']``". Each of those event
types has exactly one key, so an event has at most one indexed text.
Encrypted events (``m.room.encrypted``) have nothing to index.

Words are decided here, in Python, for both storage backends alike: a word is
a run of letters, marks and digits (Unicode categories L, M and N) of the
NFKC-normalised text, compared case-insensitively (``str.casefold``). The
backends only ever see these words (SQLite's FTS5 with its ``ascii``
tokenizer splits them on the spaces between them; Postgres gets a literal
``tsvector``), so a plain-word search finds the same events on both, and no
user text is ever read as FTS5 or tsquery syntax.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: search.yaml ``keys``: the searchable keys, the default when a request names none
SEARCH_KEYS = ("content.body", "content.name", "content.topic")

#: the one key each searchable event type is indexed under
KEY_OF_TYPE = {
    "m.room.message": "content.body",
    "m.room.name": "content.name",
    "m.room.topic": "content.topic",
}

#: longer "words" (hashes, base64 blobs) are not indexed: nobody types them as search words,
#: and Postgres refuses lexemes over 2047 bytes
MAX_WORD_CHARS = 100

_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")


def searchable_text(etype: str, content: Any) -> tuple[str, str] | None:
    """``(key, text)`` that search indexes for an event of type ``etype`` with ``content``,
    or None when it has nothing to index."""
    key = KEY_OF_TYPE.get(etype)
    if key is None or not isinstance(content, Mapping):
        return None
    parts: list[str] = []
    value = content.get(key.removeprefix("content."))
    if isinstance(value, str):
        parts.append(value)
    if etype == "m.room.topic":
        # m.room.topic (v1.15): the text/plain representations of m.topic, which SHOULD
        # duplicate `topic` (then they add nothing)
        for rep in _text_representations(content.get("m.topic")):
            if rep not in parts:
                parts.append(rep)
    text = "\n".join(p for p in parts if p)
    return (key, text) if text else None


def _text_representations(block: Any) -> list[str]:
    if not isinstance(block, Mapping):
        return []
    reps = block.get("m.text")
    if not isinstance(reps, Sequence) or isinstance(reps, str):
        return []
    out = []
    for rep in reps:
        # m_text_content_block.yaml: the mimetype "defaults to text/plain if omitted"
        if isinstance(rep, Mapping) and rep.get("mimetype", "text/plain") == "text/plain":
            body = rep.get("body")
            if isinstance(body, str):
                out.append(body)
    return out


@functools.lru_cache(maxsize=65536)
def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LMN"


def split_words(text: str) -> list[str]:
    """The words of ``text`` as written (NFKC-normalised, case kept), too long ones left out."""
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        found = _ASCII_WORD.findall(text)
    else:
        found = "".join(ch if _is_word_char(ch) else " " for ch in text).split()
    return [w for w in found if len(w) <= MAX_WORD_CHARS]


def search_words(text: str) -> list[str]:
    """The words of ``text`` as they are indexed and searched for: case-folded, in order."""
    return [w.casefold() for w in split_words(text)]


def highlights(text: str, query_words: Iterable[str]) -> list[str]:
    """The words of ``text`` (as written) that a search for ``query_words`` matched: those
    starting with one of them, case-insensitively (search matches word prefixes)."""
    prefixes = tuple(query_words)
    if not prefixes:
        return []
    return [w for w in dict.fromkeys(split_words(text)) if w.casefold().startswith(prefixes)]
