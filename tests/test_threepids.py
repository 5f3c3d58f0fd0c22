"""Third-party identifiers: e-mail validation through the homeserver (a local SMTP sink), adding,
listing and deleting 3PIDs, sign-up, login and password reset by e-mail, and binding through an
identity server (a stub on loopback)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, urlparse

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.trial import unittest

from mxserver.accounts.mailer import Mailer
from mxserver.config import EmailConfig
from mxserver.crypto.keys import key_id
from tests.harness import C, HomeserverTestCase, TestUser, deep_merge
from tests.harness.identity_server import ACCESS_TOKEN, FakeIdentityServer
from tests.harness.network import free_port
from tests.harness.smtp import Mail, SmtpSink
from tests.test_account import UIAMixin, password_auth

ADD_TOKEN = f"{C}/account/3pid/email/requestToken"
REGISTER_TOKEN = f"{C}/register/email/requestToken"
RESET_TOKEN = f"{C}/account/password/email/requestToken"
MSISDN_TOKENS = [f"{C}/register/msisdn/requestToken", f"{C}/account/3pid/msisdn/requestToken",
                 f"{C}/account/password/msisdn/requestToken"]


def email_login(address: str, password: str, deprecated: bool = False) -> dict[str, Any]:
    if deprecated:
        return {"type": "m.login.password", "medium": "email", "address": address, "password": password}
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": address},
        "password": password,
    }


class EmailOffTests(UIAMixin):
    """No ``email:`` block: nothing is sent, and the endpoints say so."""

    async def test_email_endpoints_refuse(self) -> None:
        body = {"client_secret": "secret", "email": "a@example.com", "send_attempt": 1}
        for path in (ADD_TOKEN, REGISTER_TOKEN, RESET_TOKEN, *MSISDN_TOKENS):
            self.assertMatrixError(await self.post(path, body), 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
        code, flows = await self.post(f"{C}/register", {"password": "pw"})
        self.assertEqual((code, flows["flows"]), (401, [{"stages": ["m.login.dummy"]}]))
        # No e-mail: a password change needs a session, as before.
        self.assertMatrixError(await self.post(f"{C}/account/password", {"new_password": "x"}), 401, "M_MISSING_TOKEN")

    async def test_threepids_capability_and_empty_list(self) -> None:
        alice = await self.register("alice")
        code, caps = await self.get(f"{C}/capabilities", alice)
        self.assertEqual(caps["capabilities"]["m.3pid_changes"], {"enabled": True})
        self.assertEqual(await self.get(f"{C}/account/3pid", alice), (200, {"threepids": []}))
        self.assertMatrixError(await self.get(f"{C}/account/3pid"), 401, "M_MISSING_TOKEN")


class EmailTestCase(UIAMixin):
    async def _set_up(self) -> None:
        self.sink = SmtpSink()
        port = self.sink.listen(self)
        email = {"smtp_host": "127.0.0.1", "smtp_port": port, "tls": "none", "notif_from": "Server <hs@mail.example>"}
        self.config_overrides = deep_merge(self.config_overrides, {"email": email})
        await super()._set_up()

    async def request_token(
        self, path: str, address: str, secret: str = "s3cret", attempt: int = 1, token: Any = None, **extra: Any
    ) -> tuple[int, Any]:
        body = {"client_secret": secret, "email": address, "send_attempt": attempt, **extra}
        return await self.post(path, body, token)

    async def follow(self, mail: Mail) -> tuple[int, Any]:
        """Open the e-mail's link (on this server: the public base URL is not this test's port)."""
        url = urlparse(mail.link)
        return await self.get(f"{url.path}?{url.query}")

    async def validated_session(self, path: str, address: str, secret: str = "s3cret", token: Any = None) -> str:
        code, body = await self.request_token(path, address, secret, token=token)
        self.assertEqual(code, 200, body)
        code, _ = await self.follow(self.sink.to(address)[-1])
        self.assertEqual(code, 200)
        return str(body["sid"])

    async def add_email(self, user: TestUser, address: str, secret: str = "s3cret") -> None:
        sid = await self.validated_session(ADD_TOKEN, address, secret, token=user)
        body = {"sid": sid, "client_secret": secret}
        code, resp = await self.with_password_uia("POST", f"{C}/account/3pid/add", body, user)
        self.assertEqual((code, resp), (200, {}))


class EmailValidationTests(EmailTestCase):
    async def test_add_list_login_delete(self) -> None:
        alice = await self.register("alice")
        code, body = await self.request_token(ADD_TOKEN, "Alice@Example.com ", token=alice)
        self.assertEqual(code, 200, body)
        self.assertTrue(body["submit_url"].endswith("/_matrix/client/unstable/add_threepid/email/submit_token"))
        [mail] = self.sink.mails
        # Addresses are kept trimmed and lower-cased; the mail says what it is for.
        self.assertEqual((mail.to, mail.sender), ("alice@example.com", "hs@mail.example"))
        self.assertEqual(mail.message["From"], "Server <hs@mail.example>")
        self.assertIn("add this e-mail address", mail.body)
        self.assertEqual(parse_qs(urlparse(mail.link).query)["sid"], [body["sid"]])

        code, page = await self.follow(mail)
        self.assertEqual(code, 200)
        add = {"sid": body["sid"], "client_secret": "s3cret"}
        session = await self.uia_session("POST", f"{C}/account/3pid/add", add, alice)  # UIA-protected
        code, resp = await self.post(f"{C}/account/3pid/add", {**add, "auth": password_auth(alice, session)}, alice)
        self.assertEqual((code, resp), (200, {}))

        code, listed = await self.get(f"{C}/account/3pid", alice)
        [threepid] = listed["threepids"]
        self.assertEqual((threepid["medium"], threepid["address"]), ("email", "alice@example.com"))
        self.assertIsInstance(threepid["validated_at"], int)
        self.assertGreaterEqual(threepid["added_at"], threepid["validated_at"])
        # The admin API shows them too.
        root = await self.register("root")
        await self.hs.accounts.set_admin(root.user_id, True)
        code, shown = await self.get("/_synapse/admin/v2/users/@alice:test", root)
        self.assertEqual((code, shown["threepids"]), (200, listed["threepids"]))

        for login in (email_login("ALICE@example.com", alice.password), email_login("alice@example.com", alice.password, True)):
            code, resp = await self.post(f"{C}/login", login)
            self.assertEqual((code, resp.get("user_id")), (200, "@alice:test"), resp)
        self.assertMatrixError(await self.post(f"{C}/login", email_login("alice@example.com", "wrong")), 403, "M_FORBIDDEN")
        self.assertMatrixError(await self.post(f"{C}/login", email_login("nobody@example.com", "x")), 403, "M_FORBIDDEN")

        # Never bound through an identity server: nothing to unbind.
        code, resp = await self.post(f"{C}/account/3pid/delete", {"medium": "email", "address": "alice@example.com"}, alice)
        self.assertEqual((code, resp), (200, {"id_server_unbind_result": "no-support"}))
        self.assertEqual(await self.get(f"{C}/account/3pid", alice), (200, {"threepids": []}))
        self.assertMatrixError(await self.post(f"{C}/login", email_login("alice@example.com", alice.password)), 403, "M_FORBIDDEN")

    async def test_uia_password_stage_by_email(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        await self.add_email(alice, "alice@example.com")
        await self.add_email(bob, "bob@example.com")
        path, body = f"{C}/account/password", {"new_password": "new pw"}

        def by_email(address: str, session: str) -> dict[str, Any]:
            return {"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email",
                    "address": address}, "password": alice.password, "session": session}

        session = await self.uia_session("POST", path, body, alice)
        code, resp = await self.post(path, {**body, "auth": by_email("nobody@example.com", session)}, alice)
        self.assertEqual((code, resp["errcode"]), (401, "M_FORBIDDEN"))
        code, resp = await self.post(path, {**body, "auth": by_email("bob@example.com", session)}, alice)
        # bob's address and bob's (same) password: valid credentials of someone else, a plain 403
        self.assertEqual((code, resp["errcode"]), (403, "M_FORBIDDEN"))
        self.assertNotIn("flows", resp)
        session = await self.uia_session("POST", path, body, alice)
        self.assertEqual(await self.post(path, {**body, "auth": by_email("alice@example.com", session)}, alice), (200, {}))

    async def test_same_send_attempt_sends_once(self) -> None:
        code, first = await self.request_token(REGISTER_TOKEN, "new@example.com")
        code, again = await self.request_token(REGISTER_TOKEN, "new@example.com")
        self.assertEqual((code, again["sid"]), (200, first["sid"]))
        self.assertEqual(len(self.sink.mails), 1)
        code, third = await self.request_token(REGISTER_TOKEN, "new@example.com", attempt=2)
        self.assertEqual((code, third["sid"]), (200, first["sid"]))
        old, new = self.sink.mails
        # A new attempt sends a new token: the old link no longer works.
        self.assertMatrixError(await self.follow(old), 403, "M_THREEPID_AUTH_FAILED")
        self.assertEqual((await self.follow(new))[0], 200)
        # Another client secret is another session.
        code, other = await self.request_token(REGISTER_TOKEN, "new@example.com", secret="other")
        self.assertNotEqual(other["sid"], first["sid"])

    async def test_unvalidated_or_wrong_sessions_are_refused(self) -> None:
        alice = await self.register("alice")
        code, body = await self.request_token(ADD_TOKEN, "a@example.com", token=alice)
        sid = body["sid"]
        for creds in ({"sid": sid, "client_secret": "s3cret"}, {"sid": sid, "client_secret": "wrong"},
                      {"sid": "unknown", "client_secret": "s3cret"}):
            code, resp = await self.with_password_uia("POST", f"{C}/account/3pid/add", creds, alice)
            self.assertEqual((code, resp["errcode"]), (403, "M_THREEPID_AUTH_FAILED"), resp)
        mail = self.sink.mails[0]
        link = urlparse(mail.link)
        self.assertMatrixError(await self.get(f"{link.path}?sid={sid}&client_secret=s3cret&token=nope"), 403, "M_THREEPID_AUTH_FAILED")
        self.assertMatrixError(await self.get(f"{link.path}?sid={sid}"), 400, "M_MISSING_PARAM")
        code, resp = await self.post(link.path, {"sid": sid, "client_secret": "s3cret", "token": "nope"})
        self.assertEqual((code, resp["errcode"]), (403, "M_THREEPID_AUTH_FAILED"))
        self.assertEqual(await self.get(f"{C}/account/3pid", alice), (200, {"threepids": []}))

    async def test_bad_input(self) -> None:
        good = {"client_secret": "s3cret", "email": "a@example.com", "send_attempt": 1}
        for bad, errcode in (
            ({"client_secret": "has space"}, "M_INVALID_PARAM"),
            ({"client_secret": "x" * 256}, "M_BAD_JSON"),
            ({"email": "not an address"}, "M_INVALID_PARAM"),
            ({"email": 7}, "M_BAD_JSON"),
            ({"send_attempt": "1"}, "M_BAD_JSON"),
            ({"send_attempt": -1}, "M_INVALID_PARAM"),
            ({"next_link": "javascript:alert(1)"}, "M_INVALID_PARAM"),
        ):
            self.assertMatrixError(await self.post(REGISTER_TOKEN, {**good, **bad}), 400, errcode)
        for key in good:
            body = {k: v for k, v in good.items() if k != key}
            self.assertMatrixError(await self.post(REGISTER_TOKEN, body), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.post(REGISTER_TOKEN, [1]), 400, "M_BAD_JSON")
        self.assertEqual(self.sink.mails, [])
        alice = await self.register("alice")
        for body in ({"medium": "email"}, {"medium": "carrier pigeon", "address": "x"}, {"medium": 1, "address": "x"}):
            code, resp = await self.post(f"{C}/account/3pid/delete", body, alice)
            self.assertIn(resp["errcode"], ("M_MISSING_PARAM", "M_INVALID_PARAM", "M_BAD_JSON"))
            self.assertEqual(code, 400)
        self.assertMatrixError(await self.post(f"{C}/account/3pid", {}, alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.post(f"{C}/account/3pid/add", {"sid": "x"}, alice), 400, "M_MISSING_PARAM")

    async def test_address_in_use_and_unknown(self) -> None:
        alice = await self.register("alice")
        bob = await self.register("bob")
        await self.add_email(alice, "alice@example.com")
        self.assertMatrixError(await self.request_token(ADD_TOKEN, "alice@example.com", token=bob), 400, "M_THREEPID_IN_USE")
        self.assertMatrixError(await self.request_token(REGISTER_TOKEN, "ALICE@example.com"), 400, "M_THREEPID_IN_USE")
        self.assertMatrixError(await self.request_token(RESET_TOKEN, "bob@example.com"), 400, "M_THREEPID_NOT_FOUND")
        # Once deleted, it is free again.
        await self.post(f"{C}/account/3pid/delete", {"medium": "email", "address": "alice@example.com"}, alice)
        await self.add_email(bob, "alice@example.com")
        code, listed = await self.get(f"{C}/account/3pid", bob)
        self.assertEqual(len(listed["threepids"]), 1)

    async def test_register_with_email(self) -> None:
        code, resp = await self.post(f"{C}/register", {"username": "carol", "password": "pw"})
        self.assertEqual(code, 401)
        self.assertIn({"stages": ["m.login.email.identity"]}, resp["flows"])
        sid = await self.validated_session(REGISTER_TOKEN, "carol@example.com")
        self.assertIn("create an account", self.sink.mails[0].body)
        auth = {"type": "m.login.email.identity", "session": resp["session"],
                "threepid_creds": {"sid": sid, "client_secret": "s3cret"}}
        code, registered = await self.post(f"{C}/register", {"username": "carol", "password": "pw", "auth": auth})
        self.assertEqual((code, registered["user_id"]), (200, "@carol:test"), registered)
        code, listed = await self.get(f"{C}/account/3pid", registered["access_token"])
        self.assertEqual([(t["medium"], t["address"]) for t in listed["threepids"]], [("email", "carol@example.com")])

    async def test_register_email_stage_needs_a_validated_session(self) -> None:
        code, resp = await self.post(f"{C}/register", {"username": "dave", "password": "pw"})
        code, _ = await self.request_token(REGISTER_TOKEN, "dave@example.com")
        code, body = await self.request_token(REGISTER_TOKEN, "dave@example.com")
        auth = {"type": "m.login.email.identity", "session": resp["session"],
                "threepid_creds": {"sid": body["sid"], "client_secret": "s3cret"}}
        code, failed = await self.post(f"{C}/register", {"username": "dave", "password": "pw", "auth": auth})
        self.assertEqual((code, failed["errcode"], failed["completed"]), (401, "M_THREEPID_AUTH_FAILED", []))
        auth["threepid_creds"] = "nope"
        code, failed = await self.post(f"{C}/register", {"username": "dave", "password": "pw", "auth": auth})
        self.assertEqual((code, failed["errcode"]), (401, "M_BAD_JSON"))

    async def test_password_reset(self) -> None:
        alice = await self.register("alice")
        await self.add_email(alice, "alice@example.com")
        sid = await self.validated_session(RESET_TOKEN, "alice@example.com", secret="reset")
        self.assertIn("reset the password", self.sink.mails[-1].body)
        self.assertEqual(self.sink.mails[-1].message["Subject"], "[test] Password reset")
        code, resp = await self.post(f"{C}/account/password", {"new_password": "new pw"})
        self.assertEqual((code, resp["flows"]), (401, [{"stages": ["m.login.email.identity"]}]))
        auth = {"type": "m.login.email.identity", "session": resp["session"],
                "threepid_creds": {"sid": sid, "client_secret": "reset"}}
        self.assertEqual(await self.post(f"{C}/account/password", {"new_password": "new pw", "auth": auth}), (200, {}))
        # Every session is logged out (logout_devices defaults to true); the new password works.
        self.assertMatrixError(await self.get(f"{C}/account/whoami", alice), 401, "M_UNKNOWN_TOKEN")
        self.assertMatrixError(await self.login("alice", alice.password), 403, "M_FORBIDDEN")
        code, resp = await self.post(f"{C}/login", email_login("alice@example.com", "new pw"))
        self.assertEqual(code, 200, resp)

    async def test_next_link_and_submit_url(self) -> None:
        # The link redirects to next_link (here a page of this server, which the client follows).
        next_link = self.base_url + "/_matrix/client/versions"
        code, body = await self.request_token(REGISTER_TOKEN, "e@example.com", next_link=next_link)
        code, page = await self.follow(self.sink.mails[0])
        self.assertEqual(code, 200)
        self.assertIn("versions", page)
        # The submit_url takes the token by POST, as an identity server's submitToken does.
        code, body = await self.request_token(REGISTER_TOKEN, "f@example.com")
        token = parse_qs(urlparse(self.sink.mails[1].link).query)["token"][0]
        submit = urlparse(body["submit_url"]).path
        self.assertEqual(await self.post(submit, {"sid": body["sid"], "client_secret": "s3cret", "token": token}),
                         (200, {"success": True}))

    async def test_legacy_post_account_3pid(self) -> None:
        alice = await self.register("alice")
        sid = await self.validated_session(ADD_TOKEN, "alice@example.com", token=alice)
        creds = {"three_pid_creds": {"sid": sid, "client_secret": "s3cret", "id_server": "is.example", "id_access_token": "t"}}
        self.assertEqual(await self.post(f"{C}/account/3pid", creds, alice), (200, {}))
        code, listed = await self.get(f"{C}/account/3pid", alice)
        self.assertEqual(len(listed["threepids"]), 1)
        creds["three_pid_creds"]["sid"] = "unknown"
        self.assertMatrixError(await self.post(f"{C}/account/3pid", creds, alice), 403, "M_THREEPID_AUTH_FAILED")


class EmailExpiryTests(EmailTestCase):
    use_fake_clock = True
    config_overrides = {"email": {"token_lifetime_ms": "10m"}}

    async def test_links_and_validations_expire(self) -> None:
        alice = await self.register("alice")
        self.clock.advance(1000)
        code, body = await self.request_token(ADD_TOKEN, "a@example.com", token=alice)
        self.clock.advance(11 * 60)
        self.assertMatrixError(await self.follow(self.sink.mails[0]), 403, "M_THREEPID_AUTH_FAILED")
        # A new attempt gives a new link, which works; the validation itself lasts as long.
        await self.request_token(ADD_TOKEN, "a@example.com", attempt=2, token=alice)
        self.assertEqual((await self.follow(self.sink.mails[1]))[0], 200)
        self.clock.advance(11 * 60)
        creds = {"sid": body["sid"], "client_secret": "s3cret"}
        code, resp = await self.with_password_uia("POST", f"{C}/account/3pid/add", creds, alice)
        self.assertEqual((code, resp["errcode"]), (403, "M_THREEPID_AUTH_FAILED"))


class EmailClosedRegistrationTests(EmailTestCase):
    config_overrides = {"registration": {"enabled": False}}

    async def test_no_sign_up_mail_when_registration_is_closed(self) -> None:
        self.assertMatrixError(await self.request_token(REGISTER_TOKEN, "a@example.com"), 403, "M_FORBIDDEN")
        self.assertEqual(self.sink.mails, [])


class SmtpFailureTests(EmailTestCase):
    async def _set_up(self) -> None:
        self.config_overrides = {"email": {"smtp_host": "127.0.0.1", "smtp_port": free_port(), "tls": "none"}}
        await HomeserverTestCase._set_up(self)
        self.sink = SmtpSink()

    async def test_unreachable_smtp_server_is_a_matrix_error(self) -> None:
        self.assertMatrixError(await self.request_token(REGISTER_TOKEN, "a@example.com"), 502, "M_UNKNOWN")
        # Nothing was sent, so the same attempt tries again (and fails again) rather than claiming success.
        self.assertMatrixError(await self.request_token(REGISTER_TOKEN, "a@example.com"), 502, "M_UNKNOWN")


class IdentityServerTests(UIAMixin):
    async def _set_up(self) -> None:
        self.id_server = FakeIdentityServer()
        name, cert = self.id_server.listen(self, os.path.join(self.mktemp(), "certs"))
        self.config_overrides = deep_merge(
            self.config_overrides,
            {"federation": {"ip_range_whitelist": ["127.0.0.0/8"], "ca_certificates": [cert]}},
        )
        await super()._set_up()
        self.id_server.hs_name = self.hs.server_name
        self.id_server.hs_keys = {key_id(self.hs.signing_key): self.hs.signing_key.verify_key}

    async def bind(self, user: TestUser, address: str, sid: str = "sid1") -> tuple[int, Any]:
        self.id_server.validate(sid, "secret", "email", address)
        body = {"id_server": self.id_server.name, "id_access_token": ACCESS_TOKEN, "sid": sid, "client_secret": "secret"}
        return await self.post(f"{C}/account/3pid/bind", body, user)

    async def test_bind_then_unbind_where_it_was_bound(self) -> None:
        alice = await self.register("alice")
        self.assertEqual(await self.bind(alice, "alice@example.com"), (200, {}))
        self.assertEqual(self.id_server.bindings, {("email", "alice@example.com"): "@alice:test"})
        bind = self.id_server.requests[-1]
        self.assertEqual(bind.body, {"sid": "sid1", "client_secret": "secret", "mxid": "@alice:test"})
        # Bound on the identity server, not added to the account.
        self.assertEqual(await self.get(f"{C}/account/3pid", alice), (200, {"threepids": []}))

        unbind = {"medium": "email", "address": "alice@example.com"}
        self.assertEqual(await self.post(f"{C}/account/3pid/unbind", unbind, alice), (200, {"id_server_unbind_result": "success"}))
        self.assertEqual(self.id_server.bindings, {})
        self.assertTrue(self.id_server.requests[-1].authorization.startswith("X-Matrix "))
        # The binding is forgotten: nothing left to unbind from.
        self.assertEqual(await self.post(f"{C}/account/3pid/unbind", unbind, alice), (200, {"id_server_unbind_result": "no-support"}))

    async def test_delete_with_id_server_unbinds_out_of_band_binding(self) -> None:
        alice = await self.register("alice")
        self.id_server.bindings[("email", "alice@example.com")] = "@alice:test"
        body = {"medium": "email", "address": "alice@example.com", "id_server": self.id_server.name}
        self.assertEqual(await self.post(f"{C}/account/3pid/delete", body, alice), (200, {"id_server_unbind_result": "success"}))
        self.assertEqual(self.id_server.bindings, {})
        # The identity server refusing (not bound there) is "no-support", not an error.
        self.assertEqual(await self.post(f"{C}/account/3pid/delete", body, alice), (200, {"id_server_unbind_result": "no-support"}))

    async def test_deactivation_unbinds(self) -> None:
        alice = await self.register("alice")
        await self.bind(alice, "alice@example.com")
        await self.bind(alice, "alice2@example.com", sid="sid2")
        code, resp = await self.with_password_uia("POST", f"{C}/account/deactivate", {}, alice)
        self.assertEqual((code, resp), (200, {"id_server_unbind_result": "success"}))
        self.assertEqual(self.id_server.bindings, {})

    async def test_bind_errors(self) -> None:
        alice = await self.register("alice")
        # The identity server's own error is passed through.
        self.id_server.validate("sid1", "other secret", "email", "a@example.com")
        body = {"id_server": self.id_server.name, "id_access_token": ACCESS_TOKEN, "sid": "sid1", "client_secret": "secret"}
        self.assertMatrixError(await self.post(f"{C}/account/3pid/bind", body, alice), 400, "M_NO_VALID_SESSION")
        self.assertMatrixError(await self.post(f"{C}/account/3pid/bind", {**body, "id_access_token": "bad"}, alice), 401, "M_UNAUTHORIZED")
        # Unreachable, refused by the IP filter, or not a server name at all.
        for id_server, status, errcode in (
            (f"127.0.0.1:{free_port()}", 502, "M_UNKNOWN"),
            ("10.1.2.3", 400, "M_SERVER_NOT_TRUSTED"),
            ("not a server!", 400, "M_INVALID_PARAM"),
        ):
            self.assertMatrixError(await self.post(f"{C}/account/3pid/bind", {**body, "id_server": id_server}, alice), status, errcode)
        for key in body:
            partial = {k: v for k, v in body.items() if k != key}
            self.assertMatrixError(await self.post(f"{C}/account/3pid/bind", partial, alice), 400, "M_MISSING_PARAM")
        self.assertMatrixError(await self.post(f"{C}/account/3pid/bind", body), 401, "M_MISSING_TOKEN")
        self.assertEqual(self.id_server.bindings, {})


class _MinimalSmtp(LineReceiver):
    """An SMTP server as minimal as SyTest's: HELO only (500 to EHLO), 500 to RSET and QUIT, and it
    never closes the connection itself."""

    delimiter = b"\r\n"

    def connectionMade(self) -> None:
        self.in_data = False
        self.lines: list[bytes] = []
        self.sendLine(b"220 minimal")

    def lineReceived(self, line: bytes) -> None:
        if self.in_data:
            if line == b".":
                self.in_data = False
                self.factory.messages.append(b"\n".join(self.lines))  # type: ignore[attr-defined]
                self.sendLine(b"250 ok")
            else:
                self.lines.append(line)
            return
        verb = line.split(b" ")[0].upper()
        if verb in (b"HELO", b"MAIL", b"RCPT"):
            self.sendLine(b"250 ok")
        elif verb == b"DATA":
            self.in_data = True
            self.sendLine(b"354 go on")
        else:
            self.sendLine(b"500 unrecognized command")

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.lost.callback(None)  # type: ignore[attr-defined]


class MailerTests(unittest.TestCase):
    async def test_minimal_smtp_server(self) -> None:
        factory = Factory.forProtocol(_MinimalSmtp)
        factory.messages = []  # type: ignore[attr-defined]
        factory.lost = Deferred()  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        config = EmailConfig(smtp_host="127.0.0.1", smtp_port=port.getHost().port, tls="none")
        mailer = Mailer(config, reactor, reactor, "example.org:8448")
        # One message, then QUIT (not RSET, which such a server refuses, forever): the send ends.
        await mailer.send("bob@example.com", "Subject line", "Body text")
        await factory.lost  # type: ignore[attr-defined]
        [message] = factory.messages  # type: ignore[attr-defined]
        self.assertIn(b"From: noreply@example.org", message)
        self.assertIn(b"Subject: Subject line", message)
        self.assertIn(b"Body text", message)
