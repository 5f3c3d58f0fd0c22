"""Third-party identifiers (client-server-api §Adding Account Administrative Contact Information).

:class:`ThreepidValidator` runs the homeserver's own validation sessions: ``requestToken`` sends
an e-mail with a link carrying a token; following the link (or POSTing the token to the
``submit_url``) validates the session; ``3pid/add``, the ``m.login.email.identity`` UIA stage,
sign-up and password resets then use the validated (sid, client_secret). There is no SMS
provider: msisdn sessions are always refused with M_THREEPID_MEDIUM_NOT_SUPPORTED.

:class:`ThreepidHandler` is the account side: the user's 3PIDs (add, delete, list) and their
bindings on identity servers (``3pid/bind``, ``3pid/unbind``, unbinding on deletion and
deactivation), which it remembers per identity server so that it can unbind later without being
told where (the spec's ``id_server`` defaulting rule).
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Literal
from urllib.parse import urlencode, urlparse

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.accounts.auth import Requester
from mxserver.accounts.identity_client import IdentityServerClient, check_id_server
from mxserver.accounts.mailer import Mailer
from mxserver.accounts.protocols import RateLimit
from mxserver.accounts.uia import UIARequest, UserInteractiveAuth
from mxserver.config import EmailConfig
from mxserver.errors import MatrixError, invalid_param
from mxserver.storage.threepids import ThreepidStore, ValidationSession

log = Logger()

#: what a requestToken is for: each has its own checks, subject and link path
Purpose = Literal["registration", "add_threepid", "password_reset"]

MEDIA = ("email", "msisdn")
#: client-server-api §Adding Account Administrative Contact Information: client_secret grammar
_CLIENT_SECRET = re.compile(r"[0-9a-zA-Z.=_-]{1,255}")
_SID = re.compile(r"[0-9a-zA-Z.=_-]{1,255}")
#: a loose check: something@something, no spaces or angle brackets (RFC 5321 limits the length)
_EMAIL = re.compile(r"[^@\s<>]+@[^@\s<>]+")
MAX_EMAIL_LENGTH = 254
#: send_attempt values beyond this are refused (they are stored as INTEGER)
MAX_SEND_ATTEMPT = 2**31 - 1

_ACTIONS: dict[str, str] = {
    "registration": "create an account",
    "add_threepid": "add this e-mail address to an account",
    "password_reset": "reset the password of the account",
}


def medium_not_supported(medium: str) -> MatrixError:
    return MatrixError(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED", f"This homeserver does not validate {medium} addresses")


def auth_failed(msg: str = "The third-party identifier has not been validated") -> MatrixError:
    return MatrixError(403, "M_THREEPID_AUTH_FAILED", msg)


def threepid_in_use() -> MatrixError:
    return MatrixError(400, "M_THREEPID_IN_USE", "This third-party identifier is already in use on this server")


def canonical_email(address: str) -> str:
    """E-mail addresses are compared trimmed and lower-cased (as Synapse does: mail systems treat
    the local part case-insensitively in practice); M_INVALID_PARAM when it is not one."""
    address = address.strip().lower()
    if len(address) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(address):
        raise invalid_param("Not a valid e-mail address")
    return address


def canonical_address(medium: str, address: str) -> str:
    if medium not in MEDIA:
        raise invalid_param(f"'medium' must be one of {', '.join(MEDIA)}")
    return canonical_email(address) if medium == "email" else address.strip()


def check_client_secret(client_secret: str) -> str:
    if not _CLIENT_SECRET.fullmatch(client_secret):
        raise invalid_param("'client_secret' must be 1-255 characters of [0-9a-zA-Z.=_-]")
    return client_secret


@attrs.frozen
class ValidatedThreepid:
    medium: str
    address: str
    validated_at: int


class ThreepidValidator:
    """The homeserver's e-mail validation sessions."""

    def __init__(
        self,
        config: EmailConfig,
        base_url: str,
        server_name: str,
        store: ThreepidStore,
        mailer: Mailer | None,
        clock: IReactorTime,
        ratelimit: RateLimit | None = None,
    ) -> None:
        self._ratelimit = ratelimit
        self._config = config
        base = config.validation_base_url or base_url
        self._base_url = base if base.endswith("/") else base + "/"
        self._server_name = server_name
        self._store = store
        self._mailer = mailer
        self._clock = clock

    @property
    def email_enabled(self) -> bool:
        return self._mailer is not None and self._config.enabled

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def submit_path(self, purpose: Purpose) -> str:
        return f"_matrix/client/unstable/{purpose}/email/submit_token"

    async def request_email_token(
        self,
        purpose: Purpose,
        client_secret: str,
        address: str,
        send_attempt: int,
        next_link: str | None,
        ip: str = "",
    ) -> dict[str, Any]:
        """A ``.../email/requestToken``: ``{sid, submit_url}``; the e-mail goes out unless this
        ``send_attempt`` was already sent for this (client_secret, address). Each e-mail sent
        counts against the client's (``ip``) and the address's rate limit: no mail bombs."""
        if not self.email_enabled or self._mailer is None:
            raise medium_not_supported("email")
        check_client_secret(client_secret)
        address = canonical_email(address)
        if not 0 <= send_attempt <= MAX_SEND_ATTEMPT:
            raise invalid_param("'send_attempt' is out of range")
        if next_link is not None:
            parsed = urlparse(next_link)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise invalid_param("'next_link' must be an http or https URL")
        owner = await self._store.owner("email", address)
        if purpose == "password_reset" and owner is None:
            # password_management.yaml: M_THREEPID_NOT_FOUND for an unknown address.
            raise MatrixError(400, "M_THREEPID_NOT_FOUND", "No account has this e-mail address")
        if purpose != "password_reset" and owner is not None:
            raise threepid_in_use()

        submit_url = self._base_url + self.submit_path(purpose)
        existing = await self._store.session_for(client_secret, "email", address)
        if existing is not None and send_attempt <= existing.last_send_attempt:
            # registration.yaml: the same send_attempt sends nothing new.
            return {"sid": existing.session_id, "submit_url": submit_url}

        if self._ratelimit is not None:
            self._ratelimit.check("requestToken " + ip)
            self._ratelimit.check("requestToken " + address)
        now = self._now_ms()
        # Each new session pays for forgetting the ones of no more use.
        await self._store.delete_expired_sessions(now - self._config.token_lifetime_ms)
        token = secrets.token_urlsafe(24)
        session = await self._store.start_session(
            ValidationSession(
                session_id=existing.session_id if existing is not None else secrets.token_urlsafe(18),
                client_secret=client_secret,
                medium="email",
                address=address,
                last_send_attempt=send_attempt,
                token=token,
                token_expires=now + self._config.token_lifetime_ms,
                next_link=next_link,
                validated_at=None,
            ),
            now,
        )
        link = submit_url + "?" + urlencode({"token": token, "client_secret": client_secret, "sid": session.session_id})
        values = {
            "server_name": self._server_name,
            "address": address,
            "link": link,
            "token": token,
            "action": _ACTIONS[purpose],
        }
        subject = getattr(self._config, f"{purpose}_subject").format(**values)
        try:
            await self._mailer.send(address, subject, self._config.validation_body.format(**values))
        except MatrixError:
            # Not sent: the same send_attempt must try again.
            await self._store.start_session(
                attrs.evolve(session, last_send_attempt=existing.last_send_attempt if existing is not None else -1), now
            )
            raise
        return {"sid": session.session_id, "submit_url": submit_url}

    async def submit_token(self, sid: str, client_secret: str, token: str) -> str | None:
        """The link of the e-mail (or the submit_url): validates the session; its ``next_link``."""
        session = await self._store.session(sid)
        now = self._now_ms()
        if (
            session is None
            or not secrets.compare_digest(session.client_secret, client_secret)
            or not secrets.compare_digest(session.token, token)
        ):
            raise auth_failed("Unknown validation session or wrong token")
        if session.validated_at is None:
            if session.token_expires <= now:
                raise auth_failed("This validation link has expired; ask for a new one")
            await self._store.mark_validated(sid, now)
        return session.next_link

    async def owner(self, medium: str, address: str) -> str | None:
        """The local account a 3PID is associated with (login, password reset)."""
        try:
            address = canonical_address(medium, address)
        except MatrixError:
            return None
        return await self._store.owner(medium, address)

    async def validated(self, sid: Any, client_secret: Any) -> ValidatedThreepid:
        """The 3PID a session validated, or M_THREEPID_AUTH_FAILED (unknown, wrong secret, not
        validated yet, or older than the token lifetime)."""
        if not isinstance(sid, str) or not isinstance(client_secret, str):
            raise MatrixError(400, "M_BAD_JSON", "'sid' and 'client_secret' must be strings")
        if not _SID.fullmatch(sid):
            raise invalid_param("Invalid 'sid'")
        session = await self._store.session(sid)
        if session is None or not secrets.compare_digest(session.client_secret, client_secret):
            raise auth_failed("Unknown validation session")
        if session.validated_at is None:
            raise auth_failed()
        if session.validated_at + self._config.token_lifetime_ms <= self._now_ms():
            raise auth_failed("This validation has expired; validate the address again")
        return ValidatedThreepid(session.medium, session.address, session.validated_at)


class ThreepidHandler:
    """A user's 3PIDs and their identity-server bindings."""

    def __init__(
        self,
        store: ThreepidStore,
        validator: ThreepidValidator,
        uia: UserInteractiveAuth,
        identity: IdentityServerClient,
        clock: IReactorTime,
    ) -> None:
        self._store = store
        self._validator = validator
        self._uia = uia
        self._identity = identity
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def list_threepids(self, user_id: str) -> list[dict[str, Any]]:
        return [attrs.asdict(t) for t in await self._store.user_threepids(user_id)]

    async def add_validated(self, user_id: str, threepid: ValidatedThreepid) -> None:
        """Associate a validated 3PID with ``user_id``; M_THREEPID_IN_USE if another account has it."""
        if not await self._store.add_threepid(
            user_id, threepid.medium, threepid.address, threepid.validated_at, self._now_ms()
        ):
            raise threepid_in_use()
        log.info("Added a {medium} 3PID to {user_id}", medium=threepid.medium, user_id=user_id)

    async def add(self, requester: Requester, sid: str, client_secret: str, uia: UIARequest) -> None:
        """``POST /account/3pid/add``: after UIA, the session's 3PID joins the account."""
        check_client_secret(client_secret)
        await self._uia.authenticate(uia, self._uia.reauth_flows(), requester.user_id)
        await self.add_validated(requester.user_id, await self._validator.validated(sid, client_secret))

    async def add_legacy(self, requester: Requester, creds: dict[str, Any]) -> None:
        """Deprecated ``POST /account/3pid``: ``three_pid_creds`` naming a session this homeserver
        validated adds its 3PID (as Synapse does; the identity server is not asked)."""
        sid, client_secret = creds.get("sid"), creds.get("client_secret")
        if not isinstance(sid, str) or not isinstance(client_secret, str):
            raise MatrixError(400, "M_MISSING_PARAM", "'three_pid_creds' needs 'sid' and 'client_secret' strings")
        await self.add_validated(requester.user_id, await self._validator.validated(sid, client_secret))

    async def bind(self, requester: Requester, id_server: str, id_access_token: str, sid: str, client_secret: str) -> None:
        """``POST /account/3pid/bind``: the identity server binds the 3PID of its session to the
        user; the binding is remembered for unbinding later."""
        id_server = check_id_server(id_server)
        association = await self._identity.bind(id_server, id_access_token, sid, client_secret, requester.user_id)
        medium, address = association["medium"], association["address"]
        if medium in MEDIA:
            # Stored as unbind requests will name it (canonical), whatever case the IS kept.
            try:
                address = canonical_address(medium, address)
            except MatrixError:
                pass
        await self._store.add_binding(requester.user_id, medium, address, id_server)

    async def unbind(self, user_id: str, medium: str, address: str, id_server: str | None) -> bool:
        """Unbind from ``id_server``, or else from every identity server the binding was made
        through here: True when every one did (``success``), False when there was none or one
        refused (``no-support``)."""
        address = canonical_address(medium, address)
        if id_server is not None:
            servers = [check_id_server(id_server)]
        else:
            servers = [s for _, _, s in await self._store.bindings(user_id, medium, address)]
        if not servers:
            return False
        ok = True
        for server in servers:
            if await self._identity.unbind(server, user_id, medium, address):
                await self._store.remove_binding(user_id, medium, address, server)
            else:
                ok = False
        return ok

    async def delete(self, user_id: str, medium: str, address: str, id_server: str | None) -> bool:
        """``POST /account/3pid/delete``: unbind (as :meth:`unbind`), then drop it from the account."""
        address = canonical_address(medium, address)
        unbound = await self.unbind(user_id, medium, address, id_server)
        await self._store.remove_threepid(user_id, medium, address)
        return unbound

    async def remove_all(self, user_id: str, id_server: str | None) -> bool:
        """Deactivation: unbind every binding made here (and, with ``id_server``, every 3PID of the
        account from it), then forget the account's 3PIDs. An identity server that cannot be
        reached does not stop the deactivation: the answer is then ``no-support`` (False)."""
        targets = {(m, a, s) for m, a, s in await self._store.bindings(user_id)}
        if id_server is not None:
            server = check_id_server(id_server)
            targets |= {(t.medium, t.address, server) for t in await self._store.user_threepids(user_id)}
        ok = True
        for medium, address, server in sorted(targets):
            try:
                unbound = await self._identity.unbind(server, user_id, medium, address)
            except MatrixError as e:
                log.info("Unbinding at deactivation failed: {error}", error=e.msg)
                unbound = False
            if unbound:
                await self._store.remove_binding(user_id, medium, address, server)
            ok = ok and unbound
        await self._store.remove_all_threepids(user_id)
        return ok
