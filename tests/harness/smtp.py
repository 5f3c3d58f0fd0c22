"""An SMTP server on loopback for tests (Twisted's own ESMTP server): keeps every message it is given."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.mail import smtp
from zope.interface import implementer


@attrs.frozen
class Mail:
    sender: str
    to: str
    message: EmailMessage

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())

    @property
    def link(self) -> str:
        """The first URL of the body (what SyTest looks for too)."""
        m = re.search(r"(https?://\S+)", self.body)
        assert m is not None, self.body
        return m.group(1)


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, sink: SmtpSink, sender: str, to: str) -> None:
        self._sink, self._sender, self._to = sink, sender, to
        self._lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self._lines.append(line)

    def eomReceived(self) -> Deferred[None]:
        parsed = email.message_from_bytes(b"\n".join(self._lines), policy=email.policy.default)
        self._sink.received(Mail(self._sender, self._to, parsed))  # type: ignore[arg-type]
        return succeed(None)

    def connectionLost(self) -> None:
        pass


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink
        self._sender = ""

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
        return b"Received: by the test sink"

    def validateFrom(self, helo: Any, origin: Any) -> Any:
        self._sender = str(origin)
        return origin

    def validateTo(self, user: Any) -> Any:
        return lambda: _Message(self._sink, self._sender, str(user.dest))


class _Factory(smtp.SMTPFactory):
    def __init__(self, sink: SmtpSink) -> None:
        super().__init__()
        self._sink = sink

    def buildProtocol(self, addr: Any) -> Any:
        protocol = smtp.ESMTP()
        protocol.delivery = _Delivery(self._sink)
        protocol.factory = self
        return protocol


class SmtpSink:
    """``listen(test)`` then configure ``email.smtp_port: sink.port`` (``tls: none``)."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.port = 0

    def listen(self, test: Any) -> int:
        listening = reactor.listenTCP(0, _Factory(self), interface="127.0.0.1")
        test.addCleanup(listening.stopListening)
        self.port = listening.getHost().port
        return self.port

    def received(self, mail: Mail) -> None:
        # The server answers requestToken once the SMTP server took the message: it is here by then.
        self.mails.append(mail)

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.mails if m.to == address]
