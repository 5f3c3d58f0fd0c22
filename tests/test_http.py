"""The HTTP layer: discovery endpoints, errors, CORS, body limits, raw-path routing."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool
from twisted.web.iweb import IRequest

from mxserver.api.http import route
from tests.harness import ClientHttp, HomeserverTestCase, serve_servlets


class DiscoveryTests(HomeserverTestCase):
    async def test_versions(self) -> None:
        code, body = await self.get("/_matrix/client/versions")
        self.assertEqual(code, 200)
        self.assertIn("v1.1", body["versions"])
        # locking (v1.12) and suspension (v1.13) are here, and auth_metadata's refusal (v1.15)
        for version in ("v1.12", "v1.13", "v1.14", "v1.15"):
            self.assertIn(version, body["versions"])
        self.assertIsInstance(body["unstable_features"], dict)

    async def test_cors_headers_on_every_response(self) -> None:
        await self.get("/_matrix/client/versions")
        self.assertEqual(self.last_headers.getRawHeaders("access-control-allow-origin"), ["*"])
        await self.get("/_matrix/client/v3/nonexistent")
        self.assertEqual(self.last_headers.getRawHeaders("access-control-allow-origin"), ["*"])

    async def test_options_preflight(self) -> None:
        code, _ = await self.request("OPTIONS", "/_matrix/client/v3/login")
        self.assertIn(code, (200, 204))
        methods = self.last_headers.getRawHeaders("access-control-allow-methods")[0]
        self.assertIn("PUT", methods)
        self.assertIn("Authorization", self.last_headers.getRawHeaders("access-control-allow-headers")[0])

    async def test_unknown_endpoint_is_unrecognized(self) -> None:
        self.assertMatrixError(await self.get("/_matrix/client/v3/no/such/thing"), 404, "M_UNRECOGNIZED")
        self.assertMatrixError(await self.get("/not/matrix"), 404, "M_UNRECOGNIZED")

    async def test_no_oauth_and_no_sso(self) -> None:
        """mxserver has neither the OAuth 2.0 API nor SSO. oauth_server_metadata.yaml: 404
        M_UNRECOGNIZED says the OAuth 2.0 API is not supported (§Authentication API discovery);
        the SSO redirects are unsupported endpoints (404 M_UNRECOGNIZED, §Unsupported endpoints),
        and GET /login offers no m.login.sso flow that would lead a client to them."""
        self.assertMatrixError(await self.get("/_matrix/client/v1/auth_metadata"), 404, "M_UNRECOGNIZED")
        for path in ("/_matrix/client/v3/login/sso/redirect?redirectUrl=http%3A%2F%2Fclient.example%2F",
                     "/_matrix/client/v3/login/sso/redirect/oidc-github?redirectUrl=http%3A%2F%2Fclient.example%2F",
                     "/_matrix/client/v3/login/sso/redirect"):
            self.assertMatrixError(await self.get(path), 404, "M_UNRECOGNIZED")
        code, body = await self.get("/_matrix/client/v3/login")
        self.assertEqual(code, 200)
        self.assertNotIn("m.login.sso", [f["type"] for f in body["flows"]])

    async def test_wrong_method_is_405(self) -> None:
        self.assertMatrixError(await self.post("/_matrix/client/versions", {}), 405, "M_UNRECOGNIZED")

    async def test_federation_version(self) -> None:
        code, body = await self.get("/_matrix/federation/v1/version")
        self.assertEqual(code, 200)
        self.assertEqual(body["server"]["name"], "mxserver")

    async def test_well_known_client(self) -> None:
        code, body = await self.get("/.well-known/matrix/client")
        self.assertEqual(code, 200)
        self.assertTrue(body["m.homeserver"]["base_url"].startswith("http"))

    async def test_well_known_server_unconfigured(self) -> None:
        self.assertMatrixError(await self.get("/.well-known/matrix/server"), 404, "M_NOT_FOUND")
        self.assertMatrixError(await self.get("/.well-known/matrix/support"), 404, "M_NOT_FOUND")

    async def test_capabilities_requires_token(self) -> None:
        self.assertMatrixError(await self.get("/_matrix/client/v3/capabilities"), 401, "M_MISSING_TOKEN")
        self.assertMatrixError(await self.get("/_matrix/client/v3/capabilities", token="bogus"), 401, "M_UNKNOWN_TOKEN")
        code, body = await self.get("/_matrix/client/v3/capabilities", token="bogus")
        self.assertIs(body["soft_logout"], False)


class WellKnownConfiguredTests(HomeserverTestCase):
    config_overrides = {
        "well_known": {
            "server": "matrix.example.org:443",
            "client_base_url": "https://m.example.org",
            "support_contacts": [
                {"role": "m.role.admin", "matrix_id": "@admin:example.org", "email_address": "admin@example.org"},
                {"role": "m.role.security", "email_address": "security@example.org"},
            ],
            "support_page": "https://example.org/help",
        }
    }

    async def test_well_known_support(self) -> None:
        code, body = await self.get("/.well-known/matrix/support")
        self.assertEqual(code, 200, body)
        self.assertEqual(
            body,
            {
                "contacts": [
                    {"role": "m.role.admin", "matrix_id": "@admin:example.org", "email_address": "admin@example.org"},
                    {"role": "m.role.security", "email_address": "security@example.org"},
                ],
                "support_page": "https://example.org/help",
            },
        )

    async def test_well_known_server(self) -> None:
        self.assertEqual(await self.get("/.well-known/matrix/server"), (200, {"m.server": "matrix.example.org:443"}))

    async def test_well_known_client(self) -> None:
        code, body = await self.get("/.well-known/matrix/client")
        self.assertEqual(body, {"m.homeserver": {"base_url": "https://m.example.org"}})


class BodyLimitTests(HomeserverTestCase):
    config_overrides = {"limits": {"max_request_size": "1K"}}

    async def test_huge_body_is_too_large(self) -> None:
        result = await self.request("POST", "/_matrix/client/v3/login", raw=b'{"a":"' + b"x" * 5000 + b'"}')
        self.assertMatrixError(result, 413, "M_TOO_LARGE")
        # the server keeps serving
        self.assertEqual((await self.get("/_matrix/client/versions"))[0], 200)


class _EchoServlet:
    """Routes used only to test path handling."""

    @route("GET", "/_matrix/client/v3/echo/{a}/{b}")
    def echo(self, request: IRequest, a: str, b: str) -> dict[str, Any]:
        return {"a": a, "b": b}

    @route("GET", "/_matrix/client/v3/echo/{a}/")
    def echo_empty(self, request: IRequest, a: str) -> dict[str, Any]:
        return {"a": a, "b": ""}

    @route("GET", "/_matrix/client/v3/crash")
    def crash(self, request: IRequest) -> dict[str, Any]:
        raise RuntimeError("secret internal detail")


class RawPathTests(ClientHttp, unittest.TestCase):
    """Path handling of the HTTP layer (MatrixResource, MatrixSite, the Klein app), serving only _EchoServlet."""

    def setUp(self) -> None:
        self.base_url = serve_servlets(self, "client", [_EchoServlet()])
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)

    async def test_percent_encoded_slash_inside_segment(self) -> None:
        # An event ID (room v3) and a state key containing "/".
        code, body = await self.get("/_matrix/client/v3/echo/%24abc%2Fdef%2B/%40a%3Ab%2Fc")
        self.assertEqual((code, body), (200, {"a": "$abc/def+", "b": "@a:b/c"}))

    async def test_trailing_slash_is_empty_segment(self) -> None:
        self.assertEqual(await self.get("/_matrix/client/v3/echo/m.room.name/"), (200, {"a": "m.room.name", "b": ""}))

    async def test_crash_is_m_unknown_without_details(self) -> None:
        code, body = await self.get("/_matrix/client/v3/crash")
        self.assertEqual(code, 500)
        self.assertEqual(body["errcode"], "M_UNKNOWN")
        self.assertNotIn("secret", body["error"])
        self.flushLoggedErrors(RuntimeError)
