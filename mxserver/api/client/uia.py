"""The UIA part of an HTTP request, for the handlers that run User-Interactive Authentication."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.uia import UIARequest
from mxserver.api.http import JsonDict, get_dict


def uia_request(request: IRequest, body: JsonDict) -> UIARequest:
    """The request's method and raw path (what a UIA session is bound to), and the body's ``auth``."""
    key = request.method.decode("ascii", "replace") + " " + request.path.decode("ascii", "replace")
    return UIARequest(key, get_dict(body, "auth", None))
