"""Push rule routes (pushrules.yaml). Only the ``global`` scope exists."""

from __future__ import annotations

from twisted.web.iweb import IRequest

from mxserver.accounts.auth import Auth
from mxserver.api.http import JsonDict, get_bool, get_list, json_body, query_str, route
from mxserver.sync.push_rules import PushRulesHandler


def _paths(*suffixes: str) -> list[str]:
    return [prefix + suffix for suffix in suffixes for prefix in ("/_matrix/client/v3", "/_matrix/client/r0")]


class PushRulesServlet:
    def __init__(self, auth: Auth, push_rules: PushRulesHandler) -> None:
        self.auth = auth
        self.push_rules = push_rules

    @route("GET", *_paths("/pushrules/"))
    async def get_all(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        return {"global": await self.push_rules.get_ruleset(requester.user_id)}

    @route("GET", *_paths("/pushrules/global/"))
    async def get_global(self, request: IRequest) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.push_rules.get_ruleset(requester.user_id)

    @route("GET", *_paths("/pushrules/global/{kind}/{rule_id}"))
    async def get_rule(self, request: IRequest, kind: str, rule_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        return await self.push_rules.get_rule(requester.user_id, kind, rule_id)

    @route("PUT", *_paths("/pushrules/global/{kind}/{rule_id}"))
    async def put_rule(self, request: IRequest, kind: str, rule_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        body = json_body(request)
        get_list(body, "actions")
        before = query_str(request, "before")
        after = query_str(request, "after")
        await self.push_rules.put_rule(requester.user_id, kind, rule_id, body, before, after)
        return {}

    @route("DELETE", *_paths("/pushrules/global/{kind}/{rule_id}"))
    async def delete_rule(self, request: IRequest, kind: str, rule_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        await self.push_rules.delete_rule(requester.user_id, kind, rule_id)
        return {}

    @route("GET", *_paths("/pushrules/global/{kind}/{rule_id}/enabled"))
    async def get_enabled(self, request: IRequest, kind: str, rule_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        return {"enabled": await self.push_rules.get_enabled(requester.user_id, kind, rule_id)}

    @route("PUT", *_paths("/pushrules/global/{kind}/{rule_id}/enabled"))
    async def put_enabled(self, request: IRequest, kind: str, rule_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        enabled = get_bool(json_body(request), "enabled")
        await self.push_rules.set_enabled(requester.user_id, kind, rule_id, enabled)
        return {}

    @route("GET", *_paths("/pushrules/global/{kind}/{rule_id}/actions"))
    async def get_actions(self, request: IRequest, kind: str, rule_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        return {"actions": await self.push_rules.get_actions(requester.user_id, kind, rule_id)}

    @route("PUT", *_paths("/pushrules/global/{kind}/{rule_id}/actions"))
    async def put_actions(self, request: IRequest, kind: str, rule_id: str) -> JsonDict:
        requester = await self.auth.get_user(request)
        actions = get_list(json_body(request), "actions")
        await self.push_rules.set_actions(requester.user_id, kind, rule_id, actions)
        return {}
