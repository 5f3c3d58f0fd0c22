"""User-Interactive Authentication (client-server-api §User-Interactive Authentication API).

A protected request is answered ``401`` with ``{flows, params, session,
completed}`` until the client has completed, in order, every stage of one
flow. Sessions live in memory, expire after a period of inactivity on the
homeserver's clock, and are bound to the request they began with (method,
path and user): a session begun to delete one device cannot authorise
deleting another, nor another user's request.

A session is single-use: once its flow is complete the protected operation
runs and the session is forgotten, so every operation is authorised afresh
(``POST /login/get_token`` requires exactly that). A client that retries a
completed request with the old session gets ``400 M_UNKNOWN`` and starts again.

Registration is the exception (``keep=True``), as in Synapse, whose behaviour
SyTest encodes (the spec is silent): its session remembers the parameters of
the request that brought them (so later requests may carry only ``auth``), and
outlives its completion with the registered user ID, so that a client whose
answer was lost can retry with the same session and log in as the account it
created instead of getting an error or a second account.

Stages: ``m.login.dummy``, ``m.login.registration_token``,
``m.login.email.identity`` (a session the homeserver validated, see
:mod:`mxserver.accounts.threepids`; the 3PID it proved is handed to the caller
in :class:`UIACompleted`) and every login flow module (the login flows, e.g.
``m.login.password``, which may name the user by a 3PID); a login-flow stage
authenticates only the requester's own account.

This module knows nothing of HTTP: the servlets build the :class:`UIARequest`
(``mxserver.api.client.uia.uia_request``).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from typing import Any

import attrs
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mxserver.accounts.identifiers import resolve_thirdparty
from mxserver.accounts.protocols import LoginFlows, RateLimit, ThreepidSessions, ValidatedThreepidLike
from mxserver.accounts.registration_tokens import RegistrationTokens
from mxserver.config import RegistrationConfig
from mxserver.errors import InteractiveAuthRequired, MatrixError, bad_json, forbidden

log = Logger()

DUMMY = "m.login.dummy"
REGISTRATION_TOKEN = "m.login.registration_token"
#: client-server-api §Email-based (identity / homeserver): a session the homeserver validated
EMAIL_IDENTITY = "m.login.email.identity"

Flows = list[list[str]]


@attrs.frozen
class UIARequest:
    """What a UIA-protected request brings: which request it is, and its ``auth`` dict (or None)."""

    #: identifies the request a session is bound to, e.g. ``"DELETE /_matrix/client/v3/devices/ABC"``
    key: str
    auth: dict[str, Any] | None
    #: the request's own parameters, opaque here; None when it brought none (only ``auth``).
    #: Kept sessions remember the latest ones given.
    params: Any = None


@attrs.frozen
class UIACompleted:
    """What :meth:`UserInteractiveAuth.authenticate` returns for a kept session."""

    session_id: str
    #: what an earlier completion of this session recorded (:meth:`UserInteractiveAuth.record`),
    #: or None the first time
    result: Any
    #: the 3PID an ``m.login.email.identity`` stage of the session proved, if any
    threepid: ValidatedThreepidLike | None = None


@attrs.define
class _Session:
    session_id: str
    key: str
    user_id: str | None
    last_used: float
    completed: list[str] = attrs.field(factory=list)
    params: Any = None
    #: kept sessions: what the completed operation recorded, and whether one is running
    result: Any = None
    running: bool = False
    #: the registration token whose use this session began (and has not ended yet)
    registration_token: str | None = None
    #: the 3PID an m.login.email.identity stage proved
    threepid: ValidatedThreepidLike | None = None


class UserInteractiveAuth:
    """Runs UIA for the endpoints that need it."""

    #: an unfinished session is forgotten after this long without a request
    SESSION_IDLE_SECONDS = 15 * 60
    #: bounds memory against floods of unauthenticated first requests (the oldest go first)
    MAX_SESSIONS = 10_000

    def __init__(
        self,
        clock: IReactorTime,
        login_flows: LoginFlows,
        registration_config: RegistrationConfig,
        ratelimit_login: RateLimit,
        registration_tokens: RegistrationTokens | None = None,
        threepid_sessions: ThreepidSessions | None = None,
    ) -> None:
        self._clock = clock
        self._threepid_sessions = threepid_sessions
        self._login_flows = login_flows
        self._tokens = registration_tokens or RegistrationTokens(registration_config, None, clock)
        self._ratelimit_login = ratelimit_login
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def reauth_flows(self) -> Flows:
        """Flows proving the requester is the account owner: one per login flow module."""
        return [[login_type] for login_type in self._login_flows]

    def remembered(self, request: UIARequest) -> tuple[Any, Any]:
        """The parameters in force for ``request`` and what its session's completion recorded.

        The parameters are the request's own, else those its (live, matching) session
        remembers; the result is None unless a kept session has completed before.
        """
        session = self._lookup(request)
        if session is None:
            return request.params, None
        return (request.params if request.params is not None else session.params), session.result

    async def registration_done(self, session_id: str) -> None:
        """The registration of a kept session completed: the use of its registration token (if
        any) is counted as completed."""
        session = self._sessions.get(session_id)
        if session is not None and session.registration_token is not None:
            token, session.registration_token = session.registration_token, None
            await self._tokens.end_use(token, completed=True)

    def record(self, session_id: str, result: Any) -> None:
        """Record the outcome of a kept session's operation, for retries of it (None: it failed)."""
        session = self._sessions.get(session_id)
        if session is not None:
            session.running = False
            if result is not None:
                session.result = result

    async def authenticate(
        self, request: UIARequest, flows: Flows, user_id: str | None = None, *, keep: bool = False
    ) -> UIACompleted:
        """Return once ``request`` completes a flow; otherwise raise the 401 (or a 4xx MatrixError).

        ``user_id`` is the authenticated requester (None for registration). With ``keep``
        the session survives completion: the caller must :meth:`record` the outcome, and
        a second request completing it meanwhile is refused.
        """
        if not flows:
            raise forbidden("No authentication flow is available for this request")
        now = self._clock.seconds()
        self._expire(now)
        auth = request.auth
        if auth is None:
            raise InteractiveAuthRequired(self._body(self._new_session(request, user_id, now), flows))

        session_id = auth.get("session")
        stage = auth.get("type")
        if session_id is not None and not isinstance(session_id, str):
            raise bad_json("'auth.session' must be a string")
        if stage is not None and not isinstance(stage, str):
            raise bad_json("'auth.type' must be a string")
        if session_id is None:
            session = self._new_session(request, user_id, now)
        else:
            session = self._existing_session(session_id, request, user_id)
        session.last_used = now
        self._sessions.move_to_end(session.session_id)

        # A request with only the session asks whether out-of-band stages are done (§REST API).
        if stage is not None and stage not in session.completed:
            error = await self._attempt(stage, auth, session, flows, user_id)
            if error is not None:
                raise InteractiveAuthRequired({**self._body(session, flows), **error.to_json()})

        if any(session.completed == flow for flow in flows):
            if keep:
                if self._sessions.get(session.session_id) is not session:
                    raise _unknown_session()
                if session.running:
                    raise MatrixError(400, "M_UNKNOWN", "This request is already being processed")
                session.running = True
                return UIACompleted(session.session_id, session.result, session.threepid)
            # Popped, not looked up: of two concurrent requests finishing one session, one wins.
            if self._sessions.pop(session.session_id, None) is None:
                raise _unknown_session()
            self._dropped(session)
            return UIACompleted(session.session_id, None, session.threepid)
        raise InteractiveAuthRequired(self._body(session, flows))

    # -- stages -----------------------------------------------------------------------

    async def _attempt(
        self, stage: str, auth: dict[str, Any], session: _Session, flows: Flows, user_id: str | None
    ) -> MatrixError | None:
        """Try one stage; None on success (recorded), else the error for the 401 body."""
        if not any(stage in flow for flow in flows):
            return MatrixError(401, "M_UNRECOGNIZED", f"Authentication type {stage} is not offered here")
        done = len(session.completed)
        # §Overview: a flow's stages must be completed in order.
        if not any(flow[:done] == session.completed and len(flow) > done and flow[done] == stage for flow in flows):
            return forbidden(f"Authentication stage {stage} is out of order")
        if stage in self._login_flows and user_id is not None:
            # Each attempt counts against the user's login limit: no password guessing here either.
            self._ratelimit_login.check(user_id)
        try:
            await self._check_stage(stage, auth, user_id, session)
        except _NotTheRequester:
            raise
        except MatrixError as e:
            if e.errcode == "M_LIMIT_EXCEEDED":
                raise
            return e
        if stage not in session.completed:  # a concurrent request may have completed it meanwhile
            session.completed.append(stage)
        return None

    async def _check_stage(self, stage: str, auth: dict[str, Any], user_id: str | None, session: _Session) -> None:
        if stage == DUMMY:
            return
        if stage == REGISTRATION_TOKEN:
            await self._check_registration_token(auth.get("token"), session)
            return
        if stage == EMAIL_IDENTITY and self._threepid_sessions is not None:
            session.threepid = await self._check_threepid_creds(auth, user_id)
            return
        flow = self._login_flows.get(stage)
        if flow is None or user_id is None:
            raise forbidden(f"Authentication type {stage} cannot be used here")
        authenticated = await flow.check_login(await resolve_thirdparty(auth, self._threepid_sessions))
        if authenticated != user_id:
            # Valid credentials of someone else: a plain 403, not a 401 inviting another try
            # (Synapse's answer, which SyTest "DELETE /device/{deviceId} requires UI auth user
            # to match device owner" expects; the spec does not say).
            raise _NotTheRequester()

    async def _check_registration_token(self, token: Any, session: _Session) -> None:
        if not isinstance(token, str):
            raise bad_json("'auth.token' must be a string")
        if not await self._tokens.begin_use(token):
            raise forbidden("Invalid registration token")
        if session.registration_token is not None:
            # a concurrent request on this session passed the stage first: one use is enough
            await self._tokens.end_use(token, completed=False)
        else:
            session.registration_token = token

    async def _check_threepid_creds(self, auth: dict[str, Any], user_id: str | None) -> ValidatedThreepidLike:
        """§Email-based (identity / homeserver): ``threepid_creds`` name a session this homeserver
        validated. For an authenticated requester the address must be one of theirs."""
        assert self._threepid_sessions is not None
        creds = auth.get("threepid_creds", auth.get("threepidCreds"))
        if not isinstance(creds, dict):
            raise bad_json("'auth.threepid_creds' must be an object")
        threepid = await self._threepid_sessions.validated(creds.get("sid"), creds.get("client_secret"))
        if user_id is not None and await self._threepid_sessions.owner(threepid.medium, threepid.address) != user_id:
            raise _NotTheRequester()
        return threepid

    def _dropped(self, session: _Session) -> None:
        """A session is gone (expired, evicted, used up): a token use it began and did not
        complete is given back."""
        token, session.registration_token = session.registration_token, None
        if token is not None:
            d = ensureDeferred(self._tokens.end_use(token, completed=False))
            d.addErrback(lambda f: log.failure("giving back a registration token use", f))

    # -- sessions ----------------------------------------------------------------------

    def _new_session(self, request: UIARequest, user_id: str | None, now: float) -> _Session:
        session = _Session(secrets.token_urlsafe(24), request.key, user_id, now, params=request.params)
        self._sessions[session.session_id] = session
        while len(self._sessions) > self.MAX_SESSIONS:
            self._dropped(self._sessions.popitem(last=False)[1])
        return session

    def _existing_session(self, session_id: str, request: UIARequest, user_id: str | None) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise _unknown_session()
        if session.key != request.key or session.user_id != user_id:
            raise forbidden("This authentication session belongs to a different request")
        if request.params is not None and session.result is None:
            session.params = request.params
        return session

    def _lookup(self, request: UIARequest) -> _Session | None:
        auth = request.auth
        session_id = auth.get("session") if auth is not None else None
        if not isinstance(session_id, str):
            return None
        session = self._sessions.get(session_id)
        if session is None or session.key != request.key:
            return None
        if self._clock.seconds() - session.last_used >= self.SESSION_IDLE_SECONDS:
            return None
        return session

    def _expire(self, now: float) -> None:
        # Sessions are ordered by last use: stop at the first live one.
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.last_used < self.SESSION_IDLE_SECONDS:
                break
            self._dropped(self._sessions.popitem(last=False)[1])

    @staticmethod
    def _body(session: _Session, flows: Flows) -> dict[str, Any]:
        return {
            "flows": [{"stages": list(flow)} for flow in flows],
            "params": {},
            "session": session.session_id,
            "completed": list(session.completed),
        }


class _NotTheRequester(MatrixError):
    def __init__(self) -> None:
        super().__init__(403, "M_FORBIDDEN", "The credentials given are not those of the requesting user")


def _unknown_session() -> MatrixError:
    return MatrixError(400, "M_UNKNOWN", "Unknown or expired authentication session")
