"""Log observers built from the ``log:`` config: level filter, text or JSON, file or stderr."""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsJSON,
    formatEventAsClassicLogText,
)
from zope.interface import implementer

from mxserver.config import LogConfig

_LEVELS = {
    "DEBUG": LogLevel.debug,
    "INFO": LogLevel.info,
    "WARNING": LogLevel.warn,
    "ERROR": LogLevel.error,
    "CRITICAL": LogLevel.critical,
}


@implementer(ILogObserver)
class _StreamObserver:
    def __init__(self, stream: IO[str], fmt: str) -> None:
        self._stream = stream
        self._json = fmt == "json"

    def __call__(self, event: dict[str, Any]) -> None:
        text: str | None
        if self._json:
            text = eventAsJSON(event) + "\n"
        else:
            text = formatEventAsClassicLogText(event)
        if text:
            self._stream.write(text)
            self._stream.flush()


def make_observer(config: LogConfig) -> ILogObserver:
    """An observer writing events at ``config.level`` and above where ``config`` says."""
    stream: IO[str] = sys.stderr
    if config.path:
        stream = open(config.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[config.level])
    return FilteringLogObserver(_StreamObserver(stream, config.format), [predicate])
