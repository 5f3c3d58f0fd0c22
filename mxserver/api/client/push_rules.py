"""Push rule routes (pushrules.yaml). Only the ``global`` scope exists.

The spec's endpoints are ``/pushrules/``, ``/pushrules/global/``,
``/pushrules/global/{kind}/{ruleId}`` and its ``/enabled`` and ``/actions``.
Paths between those (a scope or kind without its trailing slash, a missing
kind or rule ID, an unknown scope, kind or attribute) are not spec endpoints;
the spec says nothing of them, so they are answered as Synapse does (and
SyTest's tests/61push/80torture.pl checks): 400, with ``/pushrules/global/{kind}/``
listing that kind's rules like Synapse. ``/pushrules`` without its slash is no
endpoint at all: 404 ``M_UNRECOGNIZED`` (client-server-api §Standard error
response). The 400s carry ``M_INVALID_PARAM``/``M_MISSING_PARAM`` rather than
``M_UNRECOGNIZED``, which the spec expects with 404 or 405 only.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, get_bool, get_list, json_body, query_str, route
from mxserver.errors import MatrixError, invalid_param, missing_param, unrecognized
from mxserver.sync.push_rules import PushRulesHandler, check_kind, check_scope

#: the rule attributes with endpoints of their own (pushrules.yaml)
ATTRIBUTES = ("enabled", "actions")


def _paths(*suffixes: str) -> list[str]:
    return [prefix + suffix for suffix in suffixes for prefix in ("/_matrix/client/v3", "/_matrix/client/r0")]


def _has_trailing_slash(request: IRequest) -> bool:
    """Whether the raw path ends in "/": the router matches ``/x/`` routes without it too."""
    return bool(request.path.endswith(b"/"))


def _need_trailing_slash(request: IRequest, what: str) -> None:
    if not _has_trailing_slash(request):
        raise invalid_param(f"{what} are listed at a path with a trailing slash")


def _check_attr(attr: str) -> None:
    if attr not in ATTRIBUTES:
        raise invalid_param(f"Unknown push rule attribute {attr!r}: expected one of {', '.join(ATTRIBUTES)}")


def _incomplete_path(scope: str | None = None, kind: str | None = None) -> MatrixError:
    """A PUT or DELETE naming no rule: say what is missing (after checking what is given)."""
    if scope is None:
        return missing_param("The path names no push rule scope (expected /pushrules/global/{kind}/{ruleId})")
    check_scope(scope)
    if kind is None:
        return missing_param("The path names no push rule kind (expected /pushrules/global/{kind}/{ruleId})")
    check_kind(kind)
    return missing_param("The path names no push rule ID (expected /pushrules/global/{kind}/{ruleId})")


class PushRulesServlet:
    def __init__(self, auth: Auth, push_rules: PushRulesHandler) -> None:
        self.auth = auth
        self.push_rules = push_rules

    # -- reading -----------------------------------------------------------------

    @route("GET", *_paths("/pushrules/"))
    async def get_all(self, request: IRequest) -> JsonDict:
        if not _has_trailing_slash(request):
            # Only "/pushrules/" is an endpoint (Synapse and SyTest: 404 without the slash).
            raise unrecognized()
        requester = await self.auth.get_user(request)
        return {"global": await self.push_rules.get_ruleset(requester.user_id)}

    @route("GET", *_paths("/pushrules/{scope}/"))
    async def get_scope(self, request: IRequest, scope: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        check_scope(scope)
        _need_trailing_slash(request, "The rules of a scope")
        return await self.push_rules.get_ruleset(requester.user_id)

    @route("GET", *_paths("/pushrules/{scope}/{kind}/"))
    async def get_kind(self, request: IRequest, scope: str, kind: str) -> list[dict[str, Any]]:
        """One kind's rules, most important first, as a bare array (not a spec endpoint: Synapse's answer)."""
        requester = await self.auth.get_user(request)
        check_scope(scope)
        check_kind(kind)
        _need_trailing_slash(request, "The rules of a kind")
        return await self.push_rules.get_kind(requester.user_id, kind)

    @route("GET", *_paths("/pushrules/{scope}/{kind}/{rule_id}"))
    async def get_rule(self, request: IRequest, scope: str, kind: str, rule_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        check_scope(scope)
        return await self.push_rules.get_rule(requester.user_id, kind, rule_id)

    @route("GET", *_paths("/pushrules/{scope}/{kind}/{rule_id}/{attr}"))
    async def get_attr(self, request: IRequest, scope: str, kind: str, rule_id: str, attr: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        check_scope(scope)
        _check_attr(attr)
        if attr == "enabled":
            return {"enabled": await self.push_rules.get_enabled(requester.user_id, kind, rule_id)}
        return {"actions": await self.push_rules.get_actions(requester.user_id, kind, rule_id)}

    # -- changing ----------------------------------------------------------------

    @route("PUT", *_paths("/pushrules/"))
    @route("DELETE", *_paths("/pushrules/"))
    async def change_nothing(self, request: IRequest) -> JsonDict:
        await self.auth.get_user(request)
        raise _incomplete_path()

    @route("PUT", *_paths("/pushrules/{scope}/"))
    @route("DELETE", *_paths("/pushrules/{scope}/"))
    async def change_scope(self, request: IRequest, scope: str) -> JsonDict:
        await self.auth.get_user(request)
        raise _incomplete_path(scope)

    @route("PUT", *_paths("/pushrules/{scope}/{kind}/"))
    @route("DELETE", *_paths("/pushrules/{scope}/{kind}/"))
    async def change_kind(self, request: IRequest, scope: str, kind: str) -> JsonDict:
        await self.auth.get_user(request)
        raise _incomplete_path(scope, kind)

    @route("PUT", *_paths("/pushrules/{scope}/{kind}/{rule_id}"))
    async def put_rule(self, request: IRequest, scope: str, kind: str, rule_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        check_scope(scope)
        body = json_body(request)
        get_list(body, "actions")
        before = query_str(request, "before")
        after = query_str(request, "after")
        await self.push_rules.put_rule(requester.user_id, kind, rule_id, body, before, after)
        return {}

    @route("DELETE", *_paths("/pushrules/{scope}/{kind}/{rule_id}"))
    async def delete_rule(self, request: IRequest, scope: str, kind: str, rule_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        check_scope(scope)
        await self.push_rules.delete_rule(requester.user_id, kind, rule_id)
        return {}

    @route("PUT", *_paths("/pushrules/{scope}/{kind}/{rule_id}/{attr}"))
    async def put_attr(self, request: IRequest, scope: str, kind: str, rule_id: str, attr: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        check_scope(scope)
        _check_attr(attr)
        body = json_body(request)
        if attr == "enabled":
            await self.push_rules.set_enabled(requester.user_id, kind, rule_id, get_bool(body, "enabled"))
        else:
            await self.push_rules.set_actions(requester.user_id, kind, rule_id, get_list(body, "actions"))
        return {}
