"""The web admin console's files: plain HTML, CSS and JavaScript modules shipped in the package.

The console is a static single-page application under ``/_mxserver/admin/``: it logs in
through the client API and then speaks only the admin API, with the access token in an
``Authorization`` header (kept in ``sessionStorage``, never in a cookie, so no request the
browser makes on its own carries it: nothing to forge across sites).

:class:`ConsoleFiles` reads ``static/`` once, at start: only the files found there are ever
served, by their bare name, so no request path can reach another file (no traversal, no
directory listing). The files need no build step; they are what the browser runs.
"""

from __future__ import annotations

from importlib import resources

import attrs

#: the Content-Security-Policy of every console file: scripts, styles and requests from the
#: server itself only, no inline script or style, never framed, no <base> or form posts
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

#: the security headers sent with every console file
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # New files take effect on the next load after an upgrade; they are small.
    "Cache-Control": "no-cache",
}

#: content types by extension; a file with any other extension is not served
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

INDEX = "index.html"


@attrs.frozen
class ConsoleFile:
    body: bytes
    content_type: str


class ConsoleFiles:
    """The console's files by name, read once from the package's ``static/`` directory."""

    def __init__(self, files: dict[str, ConsoleFile] | None = None) -> None:
        self._files = files if files is not None else _read_package_files()

    def get(self, name: str) -> ConsoleFile | None:
        """The file called ``name`` (``""`` is the index page), or None."""
        return self._files.get(name or INDEX)

    def names(self) -> list[str]:
        return sorted(self._files)


def _read_package_files() -> dict[str, ConsoleFile]:
    files: dict[str, ConsoleFile] = {}
    for entry in resources.files(__name__).joinpath("static").iterdir():
        name = entry.name
        ext = name[name.rfind(".") :] if "." in name else ""
        if entry.is_file() and ext in CONTENT_TYPES and not name.startswith("."):
            files[name] = ConsoleFile(entry.read_bytes(), CONTENT_TYPES[ext])
    return files
