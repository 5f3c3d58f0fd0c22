"""Sending e-mail through the configured SMTP server (``email:``), with Twisted's SMTP client.

One message per call, one connection each (validation mail is rare). The caller awaits the
result: a failure becomes a Matrix error for the client that asked (502 M_UNKNOWN), who may try
again with a new ``send_attempt``.
"""

from __future__ import annotations

import email.utils
from email.message import EmailMessage
from io import BytesIO
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime, ITCPTransport
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.mail.smtp import ESMTPSender, ESMTPSenderFactory
from twisted.python.failure import Failure

from mxserver.config import EmailConfig
from mxserver.errors import MatrixError

log = Logger()

#: the longest one message may take to send (seconds)
SEND_TIMEOUT_S = 30
#: how long the server may take to close the connection after QUIT (seconds)
QUIT_GRACE_S = 5


class _Sender(ESMTPSender):
    """One message per connection; tells its factory when the connection is gone (after QUIT),
    so that a send ends with it."""

    def smtpState_msgSent(self, code: int, resp: bytes) -> None:
        # The base class sends RSET to start another message; with one message per connection
        # QUIT comes next instead (and a minimal server answering 500 to RSET, as SyTest's does,
        # would otherwise get RSET again, forever).
        if self._from is not None:
            self.sentMail(code, resp, len(self.successAddresses), self.toAddressesResult, self.log)
        self.toAddressesResult = []
        self._from = None
        self._disconnectFromServer()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        super().connectionLost(reason)
        closed = self.factory.closed
        if not closed.called:
            closed.callback(None)


class _SenderFactory(ESMTPSenderFactory):
    protocol = _Sender

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closed: Deferred[None] = Deferred()
        #: the connection's protocol, once connected (currentProtocol is cleared when the send ends)
        self.sender: _Sender | None = None

    def buildProtocol(self, addr: Any) -> _Sender:
        self.sender = super().buildProtocol(addr)
        return self.sender


class Mailer:
    """Sends plain-text e-mail (``email.smtp_host`` must be set)."""

    def __init__(self, config: EmailConfig, reactor: Any, clock: IReactorTime, server_name: str) -> None:
        self._config = config
        self._reactor = reactor
        self._clock = clock
        host = server_name.rsplit(":", 1)[0] if not server_name.endswith("]") else server_name
        self.sender = config.notif_from or f"noreply@{host}"

    def message(self, to: str, subject: str, body: str) -> bytes:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = email.utils.formatdate(self._clock.seconds())
        msg["Message-ID"] = email.utils.make_msgid(domain=email.utils.parseaddr(self.sender)[1].rpartition("@")[2] or None)
        msg.set_content(body)
        return msg.as_bytes()

    async def send(self, to: str, subject: str, body: str) -> None:
        """Send one message to ``to``; MatrixError 502 when the SMTP server did not take it."""
        config = self._config
        assert config.smtp_host is not None, "e-mail is off"
        data = self.message(to, subject, body)
        done: Deferred[Any] = Deferred()
        factory = _SenderFactory(
            config.smtp_user.encode() if config.smtp_user is not None else None,
            config.smtp_password.encode() if config.smtp_password is not None else None,
            email.utils.parseaddr(self.sender)[1],
            to,
            BytesIO(data),
            done,
            retries=0,
            timeout=SEND_TIMEOUT_S,
            contextFactory=optionsForClientTLS(config.smtp_host) if config.tls == "starttls" else None,
            heloFallback=config.tls == "none",
            requireAuthentication=config.smtp_user is not None,
            requireTransportSecurity=config.tls == "starttls",
        )
        endpoint: Any = HostnameEndpoint(self._reactor, config.smtp_host, config.smtp_port, timeout=SEND_TIMEOUT_S)
        if config.tls == "tls":
            endpoint = wrapClientTLS(optionsForClientTLS(config.smtp_host), endpoint)
        try:
            await endpoint.connect(factory)
            await done
        except Exception as e:
            log.warn("Could not send e-mail through {host}: {error}", host=config.smtp_host, error=f"{type(e).__name__}: {e}")
            raise MatrixError(502, "M_UNKNOWN", "The e-mail could not be sent; try again later") from None
        finally:
            await self._closed(factory)

    async def _closed(self, factory: _SenderFactory) -> None:
        """Wait for the connection to end (QUIT), cutting it if the server does not close it soon:
        nothing is left open once a send returns."""
        sender = factory.sender
        if sender is None or factory.closed.called:
            return
        def cut() -> None:
            if sender.transport is not None:
                cast(ITCPTransport, sender.transport).abortConnection()

        timer = self._clock.callLater(QUIT_GRACE_S, cut)
        try:
            await factory.closed
        finally:
            if timer.active():
                timer.cancel()
