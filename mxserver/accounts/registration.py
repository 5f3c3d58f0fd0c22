"""Creating accounts: :class:`UserRegistrar` and ``POST /register`` (:class:`RegistrationHandler`).

:class:`UserRegistrar` knows nothing of HTTP: the admin CLI
(``python -m mxserver register-user``) and shared-secret registration call it
too. It needs the account store, the password hasher and the clock (of a
started Homeserver, or one whose database has been migrated).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.accounts.auth import Auth
from mxserver.accounts.devices import DeviceHandler
from mxserver.accounts.passwords import PasswordHasher
from mxserver.accounts.protocols import RateLimit, UserNamespaces
from mxserver.accounts.registration_tokens import RegistrationTokens
from mxserver.accounts.threepids import ThreepidHandler, ThreepidValidator, ValidatedThreepid
from mxserver.accounts.uia import DUMMY, EMAIL_IDENTITY, REGISTRATION_TOKEN, Flows, UIARequest, UserInteractiveAuth
from mxserver.appservice.registration import AppService
from mxserver.config import PasswordConfig, RegistrationConfig
from mxserver.errors import MatrixError, forbidden, invalid_param, invalid_username, missing_param, user_in_use
from mxserver.ids import MAX_ID_LENGTH, is_valid_localpart
from mxserver.storage.accounts import AccountStore

log = Logger()

#: longest password accepted (hashing a megabyte of password is a cheap denial of service)
MAX_PASSWORD_LENGTH = 512


def check_localpart(server_name: str, localpart: str, reserved: Callable[[str], bool] | None = None) -> str:
    """The user ID for ``localpart``, or M_INVALID_USERNAME / M_EXCLUSIVE.

    appendices §User Identifiers: new localparts use only ``a-z 0-9 . _ = - / +``;
    mxserver rejects the rest (upper case included) rather than mapping it.
    Purely numeric localparts are kept for guests. ``reserved(user_id)``: an application
    service claims the user ID exclusively (application-service-api §Registration).
    """
    if not localpart:
        raise invalid_username("The username must not be empty")
    if not is_valid_localpart(localpart):
        raise invalid_username("The username may contain only a-z, 0-9, '.', '_', '=', '-', '/' and '+'")
    if localpart.isdigit():
        raise invalid_username("Numeric usernames are reserved for guest accounts")
    user_id = f"@{localpart}:{server_name}"
    if len(user_id.encode("utf-8")) > MAX_ID_LENGTH:
        raise invalid_username("The username is too long")
    if reserved is not None and reserved(user_id):
        raise exclusive("This username is reserved (by an application service or by the server)")
    return user_id


def exclusive(msg: str) -> MatrixError:
    return MatrixError(400, "M_EXCLUSIVE", msg)


def check_password_strength(config: PasswordConfig, password: str) -> None:
    if len(password) < config.minimum_length:
        raise MatrixError(400, "M_WEAK_PASSWORD", f"The password must be at least {config.minimum_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise invalid_param(f"The password must be at most {MAX_PASSWORD_LENGTH} characters")


class UserRegistrar:
    """Creates (non-guest) accounts with their profile, without HTTP."""

    def __init__(
        self,
        server_name: str,
        password_config: PasswordConfig,
        store: AccountStore,
        passwords: PasswordHasher,
        clock: IReactorTime,
        namespaces: UserNamespaces | None = None,
        server_users: frozenset[str] = frozenset(),
    ) -> None:
        """``server_users``: user IDs the server itself uses (the server notices' system user),
        which nobody may register."""
        self._server_name = server_name
        self._password_config = password_config
        self._store = store
        self._passwords = passwords
        self._clock = clock
        self._namespaces = namespaces
        self._server_users = server_users

    def reserved(self, user_id: str, by: AppService | None = None) -> bool:
        """Whether the server itself uses ``user_id``, or an application service other than
        ``by`` claims it exclusively."""
        if user_id in self._server_users:
            return True
        return self._namespaces is not None and self._namespaces.user_reserved(user_id, by)

    async def register_user(
        self,
        localpart: str,
        password: str | None,
        admin: bool = False,
        *,
        displayname: str | None = None,
        app_service: AppService | None = None,
    ) -> str:
        """Create a (non-guest) account with its profile; returns the user ID.

        Raises MatrixError: M_INVALID_USERNAME, M_EXCLUSIVE, M_WEAK_PASSWORD,
        M_USER_IN_USE. ``password=None`` makes an account that cannot log in with
        a password. The display name defaults to the localpart. ``app_service``: the
        service registering one of its users (application-service-api §Server admin style
        permissions): the ID must be in its user namespaces and in no other's exclusive one.
        """
        user_id = check_localpart(self._server_name, localpart, lambda u: self.reserved(u, app_service))
        if app_service is not None and not app_service.is_interested_in_user(user_id):
            raise exclusive(f"{user_id} is not in the user namespaces of application service {app_service.id}")
        if password is not None:
            check_password_strength(self._password_config, password)
        password_hash = await self._passwords.hash(password) if password is not None else None
        created = await self._store.create_user(
            user_id,
            password_hash,
            int(self._clock.seconds() * 1000),
            is_admin=admin,
            displayname=displayname if displayname is not None else localpart,
        )
        if not created:
            raise user_in_use()
        log.info("Registered {user_id} (admin: {admin})", user_id=user_id, admin=admin)
        return user_id


@attrs.frozen
class RegistrationParams:
    """The parameters of ``POST /register`` (kind=user), parsed: what a UIA session remembers."""

    username: str | None = None
    password: str | None = None
    device_id: str | None = None
    device_display_name: str | None = None
    inhibit_login: bool = False
    #: guest_access.md: a guest upgrading its own account to a full one
    guest_access_token: str | None = None
    #: the client asked for a refresh token (client-server-api §Refreshing access tokens)
    refresh_token: bool = False


class RegistrationHandler:
    """``POST /register`` and its helpers."""

    #: attempts to find a free generated localpart before giving up
    GENERATE_ATTEMPTS = 10

    def __init__(
        self,
        config: RegistrationConfig,
        password_config: PasswordConfig,
        *,
        server_name: str,
        store: AccountStore,
        passwords: PasswordHasher,
        registrar: UserRegistrar,
        uia: UserInteractiveAuth,
        devices: DeviceHandler,
        auth: Auth,
        ratelimit_register: RateLimit,
        clock: IReactorTime,
        tokens: RegistrationTokens,
        threepid_validator: ThreepidValidator | None = None,
        threepids: ThreepidHandler | None = None,
    ) -> None:
        self._threepid_validator = threepid_validator
        self._threepids = threepids
        self._auth = auth
        self._tokens = tokens
        self._config = config
        self._password_config = password_config
        self._server_name = server_name
        self._store = store
        self._passwords = passwords
        self._registrar = registrar
        self._uia = uia
        self._devices = devices
        self._ratelimit_register = ratelimit_register
        self._clock = clock

    # -- policy --------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """Whether users may sign up: open registration, or with a registration token."""
        return self._config.enabled or self._tokens.required

    def flows(self) -> Flows:
        # With tokens required, dummy alone is not enough: the token is the gate.
        email = self._threepids is not None and self._threepid_validator is not None and self._threepid_validator.email_enabled
        if self._tokens.required:
            return [[REGISTRATION_TOKEN], [REGISTRATION_TOKEN, EMAIL_IDENTITY]] if email else [[REGISTRATION_TOKEN]]
        # With e-mail on, signing up with an address is offered beside the plain flow.
        return [[DUMMY], [EMAIL_IDENTITY]] if email else [[DUMMY]]

    # -- endpoints -------------------------------------------------------------------------

    async def check_available(self, username: str) -> None:
        """``GET /register/available``: M_INVALID_USERNAME / M_USER_IN_USE / M_EXCLUSIVE, else fine."""
        if not self.open:
            raise forbidden("Registration is disabled")
        user_id = check_localpart(self._server_name, username, self._registrar.reserved)
        if await self._store.get_user(user_id) is not None:
            raise user_in_use()

    async def request_email_token(
        self, client_secret: str, address: str, send_attempt: int, next_link: str | None, ip: str
    ) -> dict[str, Any]:
        """``POST /register/email/requestToken``: no e-mail for a sign-up that cannot happen."""
        if not self.open:
            raise forbidden("Registration is disabled")
        if self._threepid_validator is None:
            raise MatrixError(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "This homeserver does not validate email addresses")
        return await self._threepid_validator.request_email_token(
            "registration", client_secret, address, send_attempt, next_link, ip
        )

    async def token_valid(self, token: str, ip: str) -> bool:
        """``GET /register/m.login.registration_token/validity``."""
        if not self._tokens.required:
            raise forbidden("Registration tokens are not enabled on this homeserver")
        # registration_tokens.yaml: rate limit this endpoint against brute force.
        self._ratelimit_register.check(ip)
        return await self._tokens.is_valid(token)

    async def register(self, params: RegistrationParams | None, uia: UIARequest, ip: str) -> dict[str, Any]:
        """``POST /register`` for ``kind=user``: checks, then UIA, then the account and its session.

        ``params`` is None when the request brought only ``auth``: the UIA session's
        remembered parameters apply (see :mod:`mxserver.accounts.uia`). A retry of a
        completed session logs in again as the account it created.
        """
        if not self.open:
            raise forbidden("Registration is disabled")
        remembered, done_user = self._uia.remembered(uia)
        params = remembered if isinstance(remembered, RegistrationParams) else RegistrationParams()
        if params.username is not None:
            # Synapse downcases the requested localpart (SyTest "POST /register downcases
            # capitals in usernames"); the grammar (appendices §User Identifiers) is lower case.
            params = attrs.evolve(params, username=params.username.lower())
        guest_user_id: str | None = None
        if done_user is None:
            guest_user_id = await self._guest_to_upgrade(params)
            # registration.yaml: M_USER_IN_USE / M_INVALID_USERNAME / M_EXCLUSIVE come before UIA.
            if params.username is not None and guest_user_id is None:
                user_id = check_localpart(self._server_name, params.username, self._registrar.reserved)
                if await self._store.get_user(user_id) is not None:
                    raise user_in_use()
            if params.password is not None:
                check_password_strength(self._password_config, params.password)
            if uia.auth is not None:
                # Only real attempts count: asking for the flows costs nothing but a session.
                self._ratelimit_register.check(ip)
                if params.password is None:
                    raise missing_param("Missing 'password'")
        completed = await self._uia.authenticate(uia, self.flows(), keep=True)
        registered: str | None = completed.result
        try:
            if registered is None:
                password = params.password
                if password is None:  # a concurrent request changed the session's parameters
                    raise missing_param("Missing 'password'")
                if guest_user_id is not None:
                    registered = await self._upgrade_guest(guest_user_id, password)
                elif params.username is not None:
                    registered = await self._registrar.register_user(params.username, password)
                else:
                    registered = await self._register_generated(password, guest=False)
                if completed.threepid is not None and self._threepids is not None:
                    # registration.yaml: the address validated during sign-up belongs to the account.
                    t = completed.threepid
                    await self._threepids.add_validated(
                        registered, ValidatedThreepid(t.medium, t.address, t.validated_at)
                    )
                await self._uia.registration_done(completed.session_id)
            response = await self._login_response(
                registered, params.device_id, params.device_display_name, params.inhibit_login, params.refresh_token
            )
        finally:
            self._uia.record(completed.session_id, registered)
        return response

    async def _guest_to_upgrade(self, params: RegistrationParams) -> str | None:
        """guest_access.md: the guest account that ``guest_access_token`` upgrades, if any.

        The token must be a guest's, and ``username`` (required) its own localpart.
        """
        if params.guest_access_token is None:
            return None
        requester = await self._auth.get_user_by_token(params.guest_access_token)
        if not requester.is_guest:
            raise forbidden("'guest_access_token' is not a guest's access token")
        if params.username is None:
            raise missing_param("Upgrading a guest account requires 'username'")
        if f"@{params.username}:{self._server_name}" != requester.user_id:
            raise forbidden("A guest may only upgrade its own account")
        return requester.user_id

    async def _upgrade_guest(self, user_id: str, password: str) -> str:
        """Make the guest ``user_id`` a full account with ``password``; its tokens stay valid."""
        check_password_strength(self._password_config, password)
        password_hash = await self._passwords.hash(password)
        if not await self._store.upgrade_guest(user_id, password_hash):
            raise user_in_use()
        # Cached requesters still say "guest".
        self._auth.invalidate_user(user_id)
        log.info("Upgraded guest {user_id} to a full account", user_id=user_id)
        return user_id

    async def register_appservice_user(
        self,
        service: AppService,
        username: str,
        device_id: str | None,
        device_display_name: str | None,
        inhibit_login: bool,
    ) -> dict[str, Any]:
        """``POST /register`` with ``m.login.application_service`` (application-service-api
        §Server admin style permissions): no UIA, no password, not subject to
        ``registration.enabled`` or the registration rate limit."""
        if service.device_management and not inhibit_login:
            # MSC4190 (spec v1.17): a service managing its users' devices gets no access tokens
            # from /register; Synapse applies this to services registered with io.element.msc4190.
            raise MatrixError(
                400,
                "M_APPSERVICE_LOGIN_UNSUPPORTED",
                "This application service manages its users' devices: register with inhibit_login",
            )
        user_id = await self._registrar.register_user(username, None, app_service=service)
        return await self._login_response(user_id, device_id, device_display_name, inhibit_login)

    async def register_guest(self, device_display_name: str | None, ip: str) -> dict[str, Any]:
        """``POST /register?kind=guest``: no UIA; every parameter but the device name is ignored."""
        if not self._config.allow_guests:
            raise forbidden("Guest access is disabled")
        self._ratelimit_register.check(ip)
        user_id = await self._register_generated(None, guest=True)
        return await self._login_response(user_id, None, device_display_name, False)

    # -- internals -------------------------------------------------------------------------

    async def _register_generated(self, password: str | None, guest: bool) -> str:
        """An account with a generated localpart: numeric for guests, letters and digits for users."""
        password_hash = await self._passwords.hash(password) if password is not None else None
        now_ms = int(self._clock.seconds() * 1000)
        for _ in range(self.GENERATE_ATTEMPTS):
            if guest:
                localpart = str(secrets.randbelow(9 * 10**11) + 10**11)
            else:
                # Starts with a letter, so it is never numeric (numeric localparts are the guests').
                localpart = secrets.choice(string.ascii_lowercase) + "".join(
                    secrets.choice(string.ascii_lowercase + string.digits) for _ in range(11)
                )
            user_id = f"@{localpart}:{self._server_name}"
            if self._registrar.reserved(user_id):
                continue
            if await self._store.create_user(
                user_id, password_hash, now_ms, is_guest=guest, displayname=localpart
            ):
                log.info("Registered {user_id} (guest: {guest})", user_id=user_id, guest=guest)
                return user_id
        raise MatrixError(500, "M_UNKNOWN", "Could not allocate a user ID")

    async def _login_response(
        self,
        user_id: str,
        device_id: str | None,
        device_display_name: str | None,
        inhibit_login: bool,
        refresh: bool = False,
    ) -> dict[str, Any]:
        if inhibit_login:
            return {"user_id": user_id}
        session = await self._devices.open_session(user_id, device_id, device_display_name, refresh)
        return {"user_id": user_id, **session.to_json()}


def validate_kind(kind: str) -> str:
    if kind not in ("user", "guest"):
        raise invalid_param("'kind' must be 'user' or 'guest'")
    return kind
