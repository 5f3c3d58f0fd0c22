"""The HTTP details of serving media: safe headers, file names, multipart bodies.

client-server-api §Content repository, "Serving inline content": only a short
list of content types may be served ``inline``; everything else is an
``attachment``. Every download carries a sandboxing ``Content-Security-Policy``
and ``X-Content-Type-Options: nosniff`` so a browser never runs what a user
uploaded. Federation downloads (server-server-api ``/media/download``) are
``multipart/mixed`` with a JSON metadata part and the file.
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import quote, unquote

import attrs

#: client-server-api §Content repository: the recommended policy
CONTENT_SECURITY_POLICY = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # v1.4: lets web clients use the media with cross-origin isolation.
    "Cross-Origin-Resource-Policy": "cross-origin",
}

#: client-server-api §Serving inline content
INLINE_TYPES = frozenset(
    """text/css text/plain text/csv application/json application/ld+json image/jpeg image/gif image/png
    image/apng image/webp image/avif video/mp4 video/webm video/ogg video/quicktime audio/mp4 audio/webm
    audio/aac audio/mpeg audio/ogg audio/wave audio/wav audio/x-wav audio/x-pn-wav audio/flac audio/x-flac""".split()
)

DEFAULT_CONTENT_TYPE = "application/octet-stream"

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})")
_CHARSET = re.compile(r"""charset\s*=\s*"?([A-Za-z0-9_.:-]{1,40})"?""", re.IGNORECASE)
MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
#: longest upload file name kept
MAX_FILENAME_LENGTH = 255


def sanitise_content_type(raw: str | None) -> str:
    """A well-formed, lower-case ``type/subtype`` (plus a charset for text), else the default.

    Parameters other than charset are dropped: nothing a browser could be
    talked into interpreting survives.
    """
    if not raw:
        return DEFAULT_CONTENT_TYPE
    main, _, params = raw.partition(";")
    m = _MEDIA_TYPE.fullmatch(main.strip())
    if m is None:
        return DEFAULT_CONTENT_TYPE
    ctype = f"{m.group(1)}/{m.group(2)}".lower()
    if ctype.startswith("text/"):
        cm = _CHARSET.search(params)
        if cm:
            ctype += f"; charset={cm.group(1).lower()}"
    return ctype


def base_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def sanitise_filename(name: str | None) -> str | None:
    """An upload name without path separators or control characters, or None."""
    if not name:
        return None
    name = "".join(c for c in name if c >= " " and c != "\x7f")
    name = name.replace("/", "_").replace("\\", "_").strip()
    return name[:MAX_FILENAME_LENGTH] or None


def content_disposition(content_type: str, filename: str | None) -> str:
    """``inline`` only for the safe types; the file name in RFC 6266 form."""
    kind = "inline" if base_type(content_type) in INLINE_TYPES else "attachment"
    if not filename:
        return kind
    if filename.isascii() and all(c.isalnum() or c in " ._-()[]+,!~@" for c in filename):
        return f'{kind}; filename="{filename}"'
    return f"{kind}; filename*=utf-8''{quote(filename, safe='')}"


def filename_from_disposition(value: str | None) -> str | None:
    """The file name in a remote's ``Content-Disposition`` (``filename*`` preferred)."""
    if not value:
        return None
    m = re.search(r"filename\*\s*=\s*([A-Za-z0-9_-]+)'[^']*'([^;\s]+)", value, re.IGNORECASE)
    if m:
        try:
            return sanitise_filename(unquote(m.group(2), encoding=m.group(1), errors="strict"))
        except (LookupError, UnicodeDecodeError):
            pass
    m = re.search(r'filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))', value, re.IGNORECASE)
    if m:
        return sanitise_filename(m.group(1) if m.group(1) is not None else m.group(2))
    return None


def download_headers(content_type: str, filename: str | None) -> dict[str, str]:
    headers = dict(SECURITY_HEADERS)
    headers["Content-Disposition"] = content_disposition(content_type, filename)
    # Media never changes under its ID, so clients may keep it; but not shared caches: a proxy
    # must not hand media fetched with an access token to requests without one.
    headers["Cache-Control"] = "private, max-age=86400, immutable"
    return headers


# -- multipart/mixed (server-server-api /media/download and /media/thumbnail) ----------------


def encode_multipart(content_type: str, disposition: str, data: bytes) -> tuple[bytes, str]:
    """``(body, Content-Type)`` of a federation media answer: ``{}`` metadata, then the file."""
    boundary = secrets.token_hex(16)
    head = (
        f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
        f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + data + tail, f"multipart/mixed; boundary={boundary}"


class MultipartError(ValueError):
    """The body is not the two-part multipart/mixed the spec describes."""


@attrs.frozen
class Part:
    headers: dict[str, str]
    body: bytes


def boundary_of(content_type: str) -> str | None:
    m = re.search(r"""boundary\s*=\s*(?:"([^"]{1,70})"|([^;\s]{1,70}))""", content_type, re.IGNORECASE)
    if m is None:
        return None
    return m.group(1) if m.group(1) is not None else m.group(2)


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """The parts of a ``multipart/mixed`` body (RFC 2046 §5.1.1)."""
    if base_type(content_type) != "multipart/mixed":
        raise MultipartError(f"expected multipart/mixed, got {base_type(content_type)}")
    boundary = boundary_of(content_type)
    if not boundary:
        raise MultipartError("multipart/mixed without a boundary")
    delim = b"--" + boundary.encode("latin-1")
    # The first delimiter may start the body or follow the preamble's CRLF.
    if body.startswith(delim):
        pos = len(delim)
    else:
        start = body.find(b"\r\n" + delim)
        if start < 0:
            raise MultipartError("no multipart delimiter")
        pos = start + 2 + len(delim)
    parts: list[Part] = []
    sep = b"\r\n" + delim
    while True:
        if body[pos : pos + 2] == b"--":
            return parts
        # Transport padding, then the CRLF ending the delimiter line.
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            raise MultipartError("truncated multipart body")
        end = body.find(sep, eol)
        if end < 0:
            raise MultipartError("multipart body has no closing delimiter")
        raw = body[eol + 2 : end]
        if raw.startswith(b"\r\n"):  # a part without headers
            head, content = b"", raw[2:]
        else:
            head, found, content = raw.partition(b"\r\n\r\n")
            if not found:
                raise MultipartError("multipart part without a header block")
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            if not line.strip():
                continue
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise MultipartError("malformed part header")
            headers[name.strip().lower()] = value.strip()
        parts.append(Part(headers, content))
        pos = end + len(sep)
