"""The UIA part of an HTTP request, for the handlers that run User-Interactive Authentication."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.accounts.uia import UIARequest
from mxserver.api.http import JsonDict, get_dict


def uia_request(request: IRequest, body: JsonDict, params: Any = None) -> UIARequest:
    """The request's method and raw path (what a UIA session is bound to), the body's ``auth``,
    and the request's parsed parameters (for sessions that remember them)."""
    key = request.method.decode("ascii", "replace") + " " + request.path.decode("ascii", "replace")
    return UIARequest(key, get_dict(body, "auth", None), params)
