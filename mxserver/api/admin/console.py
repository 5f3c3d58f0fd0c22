"""The web admin console's files under ``/_mxserver/admin/`` (see :mod:`mxserver.admin_console`).

Public, like any web page: the console itself asks for a login and every API call it makes
is checked by the admin API. Only the files :class:`~mxserver.admin_console.ConsoleFiles`
found in the package are served, with the console's Content-Security-Policy.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.admin_console import SECURITY_HEADERS, ConsoleFiles
from mxserver.api.http import Response, route
from mxserver.errors import unrecognized

PREFIX = "/_mxserver/admin"


class AdminConsoleServlet:
    """``GET /_mxserver/admin/`` (the console's page) and ``/_mxserver/admin/{file}``."""

    def __init__(self, files: ConsoleFiles) -> None:
        self.files = files

    @route("GET", PREFIX)
    def redirect(self, request: IRequest) -> Response:
        # The page loads its scripts and styles by relative URL: they resolve under the slash.
        return Response(b"", "text/plain; charset=utf-8", 301, {"Location": f"{PREFIX}/"})

    @route("GET", f"{PREFIX}/", f"{PREFIX}/{{name}}")
    def file(self, request: IRequest, name: str = "") -> Response:
        # The routes match with or without a trailing slash: "index.html/" names no file.
        found = self.files.get(name) if not (name and request.path.endswith(b"/")) else None
        if found is None:
            # Like any unknown path under the API prefixes (the admin API's own routes are more specific).
            raise unrecognized()
        return Response(found.body, found.content_type, 200, dict(SECURITY_HEADERS))
