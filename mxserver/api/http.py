"""The HTTP layer's one way of doing things: routes, bodies, parameters, errors.

Routes are methods decorated with :func:`route`; :func:`build_app` registers
them on a Klein app with a wrapper that (1) percent-decodes each path segment
itself, so ``%2F`` inside event IDs and state keys survives, (2) awaits the
handler, and (3) renders the result or the :class:`MatrixError` as JSON. A
crash becomes ``500 M_UNKNOWN`` without internals; the traceback goes to the
log.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from mxserver.crypto.canonical import decode_json, encode_json
from mxserver.errors import (
    InteractiveAuthRequired,
    MatrixError,
    bad_json,
    invalid_param,
    missing_param,
    not_json,
    too_large,
    unrecognized,
)
from mxserver.request_info import access_token, client_ip, query_str  # noqa: F401 (part of this module's API)

log = Logger()

JsonDict = dict[str, Any]
Handler = Callable[..., Awaitable[Any] | Any]

#: a request's JSON body may not exceed this unless the route says otherwise
DEFAULT_MAX_BODY = 1024 * 1024
#: a federation transaction may carry 50 PDUs of up to 64 KiB each plus 100 EDUs
#: (server-server-api §Transactions, §Size limits): far more than a client body
MAX_TRANSACTION_BODY = 10 * 1024 * 1024


def route(method: str, *paths: str) -> Callable[[Handler], Handler]:
    """Mark a servlet method as the handler of ``method`` on each path.

    Paths use ``{name}`` for one path segment; the handler receives it
    percent-decoded as a keyword argument.
    """

    def deco(fn: Handler) -> Handler:
        routes = list(getattr(fn, "__mx_routes__", []))
        routes.extend((method.upper(), p) for p in paths)
        fn.__mx_routes__ = routes  # type: ignore[attr-defined]
        return fn

    return deco


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _werkzeug_path(path: str) -> str:
    return _PLACEHOLDER.sub(r"<\1>", path)


_CLIENT_V3 = "/_matrix/client/v3/"
_CLIENT_R0 = "/_matrix/client/r0/"


def _with_r0_aliases(routes: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every client-server ``v3`` route also under ``r0``, unless the servlet names one itself.

    v3 replaced r0 (client-server-api §API Standards, v1.1), and Synapse still serves the
    client API under both prefixes, which older clients and SyTest call.
    """
    have = set(routes)
    out = list(routes)
    for method, path in routes:
        if path.startswith(_CLIENT_V3):
            alias = (method, _CLIENT_R0 + path[len(_CLIENT_V3) :])
            if alias not in have:
                have.add(alias)
                out.append(alias)
    return out


def build_app(servlets: list[Any]) -> Klein:
    """A Klein app serving every route of every servlet (client-server v3 routes under r0 too)."""
    app = Klein()
    # The path is the raw one: werkzeug must neither merge "//" nor redirect on "/".
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    for servlet in servlets:
        for attr in dir(type(servlet)):
            fn = getattr(servlet, attr)
            for i, (method, path) in enumerate(_with_r0_aliases(list(getattr(fn, "__mx_routes__", ())))):
                endpoint = f"{type(servlet).__name__}.{attr}.{i}.{method}"
                methods = [method, "HEAD"] if method == "GET" else [method]
                app.route(_werkzeug_path(path), methods=methods, endpoint=endpoint)(_view(fn, path))

    @app.handle_errors(NotFound)
    def _not_found(request: IRequest, failure: Any) -> bytes:
        return render_error(request, unrecognized())

    @app.handle_errors(MethodNotAllowed)
    def _bad_method(request: IRequest, failure: Any) -> bytes:
        return render_error(request, unrecognized("Unrecognized request: method not allowed", 405))

    return app


def _view(fn: Handler, pattern: str) -> Callable[..., Deferred[bytes]]:
    def view(request: IRequest, **kwargs: str) -> Deferred[bytes]:
        request.mx_endpoint = pattern  # type: ignore[attr-defined]
        return ensureDeferred(_handle(request, fn, kwargs))

    return view


async def _handle(request: IRequest, fn: Handler, kwargs: dict[str, str]) -> bytes:
    try:
        args = {k: unquote(v, errors="strict") for k, v in kwargs.items()}
        result = fn(request, **args)
        if isinstance(result, Awaitable):
            result = await result
    except MatrixError as e:
        return render_error(request, e)
    except InteractiveAuthRequired as e:
        return render_json(request, 401, e.body)
    except UnicodeDecodeError:
        return render_error(request, invalid_param("Path is not valid UTF-8"))
    except CancelledError:
        raise
    except Exception:
        log.failure("Error handling {method} {path}", method=_method(request), path=_path(request))
        return render_error(request, MatrixError(500, "M_UNKNOWN", "Internal server error"))
    if isinstance(result, Response):
        return result.render(request)
    if isinstance(result, tuple):
        status, body = result
        return render_json(request, status, body)
    return render_json(request, 200, result)


class Response:
    """A non-JSON response (media, metrics): raw bytes with headers."""

    def __init__(self, body: bytes, content_type: str, code: int = 200, headers: dict[str, str] | None = None):
        self.body = body
        self.content_type = content_type
        self.code = code
        self.headers = headers or {}

    def render(self, request: IRequest) -> bytes:
        request.setResponseCode(self.code)
        request.setHeader(b"Content-Type", self.content_type.encode())
        for k, v in self.headers.items():
            request.setHeader(k.encode(), v.encode())
        return self.body


def _method(request: IRequest) -> str:
    return request.method.decode("ascii", "replace")


def _path(request: IRequest) -> str:
    # Never the query string: it may hold an access token.
    return request.path.decode("ascii", "replace")


def render_json(request: IRequest, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-cache, no-store, must-revalidate")
    return encode_json(body)


def render_error(request: IRequest, error: MatrixError) -> bytes:
    if error.errcode == "M_LIMIT_EXCEEDED" and "retry_after_ms" in error.extra:
        request.setHeader(b"Retry-After", str(max(1, error.extra["retry_after_ms"] // 1000)).encode())
    return render_json(request, error.code, error.to_json())


# -- request bodies -------------------------------------------------------------



def read_body(request: IRequest, max_size: int = DEFAULT_MAX_BODY) -> bytes:
    """The raw request body, refusing bodies over ``max_size`` with M_TOO_LARGE."""
    if getattr(request, "mx_too_large", False):
        raise too_large()
    content = request.content
    if content is None:
        return b""
    content.seek(0, 2)
    if content.tell() > max_size:
        raise too_large()
    content.seek(0)
    return content.read()


def json_body(request: IRequest, max_size: int = DEFAULT_MAX_BODY, allow_empty: bool = False) -> JsonDict:
    """The request body as a JSON object: M_NOT_JSON if it is not JSON, M_BAD_JSON if not an object."""
    raw = read_body(request, max_size)
    if not raw.strip() and allow_empty:
        return {}
    try:
        body = decode_json(raw)
    except ValueError:
        raise not_json() from None
    if not isinstance(body, dict):
        raise bad_json("Request body must be a JSON object")
    return body


# -- typed fields of a JSON body ----------------------------------------------------

_MISSING: Any = object()


def _field(body: JsonDict, key: str, types: type | tuple[type, ...], what: str, default: Any) -> Any:
    if key not in body or (body[key] is None and default is not _MISSING):
        if default is _MISSING:
            raise missing_param(f"Missing '{key}'")
        return default
    value = body[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))):
        raise bad_json(f"'{key}' must be {what}")
    return value


def get_str(body: JsonDict, key: str, default: Any = _MISSING, max_length: int | None = None) -> Any:
    value = _field(body, key, str, "a string", default)
    if isinstance(value, str) and max_length is not None and len(value) > max_length:
        raise bad_json(f"'{key}' is too long")
    return value


def get_bool(body: JsonDict, key: str, default: Any = _MISSING) -> Any:
    return _field(body, key, bool, "a boolean", default)


def get_int(body: JsonDict, key: str, default: Any = _MISSING) -> Any:
    return _field(body, key, int, "an integer", default)


def get_dict(body: JsonDict, key: str, default: Any = _MISSING) -> Any:
    return _field(body, key, dict, "an object", default)


def get_list(body: JsonDict, key: str, default: Any = _MISSING) -> Any:
    return _field(body, key, list, "an array", default)


def get_str_list(body: JsonDict, key: str, default: Any = _MISSING) -> Any:
    value = get_list(body, key, default)
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        raise bad_json(f"'{key}' must be an array of strings")
    return value


# -- query parameters -----------------------------------------------------------------


def query_int(
    request: IRequest, name: str, default: Any = None, minimum: int | None = None, maximum: int | None = None
) -> Any:
    raw = query_str(request, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_param(f"Query parameter '{name}' must be an integer") from None
    if minimum is not None and value < minimum:
        raise invalid_param(f"Query parameter '{name}' must be at least {minimum}")
    if maximum is not None and value > maximum:
        value = maximum
    return value


def query_bool(request: IRequest, name: str, default: bool = False) -> bool:
    raw = query_str(request, name)
    if raw is None:
        return default
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise invalid_param(f"Query parameter '{name}' must be true or false")
