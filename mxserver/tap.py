"""The twistd side: command-line options and the service twistd runs.

``twistd -n mxserver`` with no options serves ``localhost`` from ``./data``
on 127.0.0.1:8008. Configuration problems end start-up with one line naming
the key path, and no traceback.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.logger import ILogObserver
from twisted.python import usage

from mxserver.config import ConfigError, HomeserverConfig, ListenerConfig, check_config, load_config

if TYPE_CHECKING:
    from mxserver.homeserver import Homeserver

#: what a bare --listen HOST:PORT serves
DEFAULT_RESOURCES = ["client", "federation", "media"]


class Options(usage.Options):
    synopsis = "[--config FILE] [--server-name NAME] [--data-dir DIR] [--listen HOST:PORT[=res,...]]"
    longdesc = "Run a Matrix homeserver. Without options: server name localhost, data in ./data, 127.0.0.1:8008."
    optParameters = [
        ["config", "c", None, "YAML config file (see python -m mxserver generate-config)"],
        ["server-name", None, None, "server name (overrides the config)"],
        ["data-dir", None, None, "data directory (overrides the config)"],
        ["worker", None, None, "which process of the config's cluster this is: main or a key of workers"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, value: str) -> None:
        """HOST:PORT[=client,federation,...] to listen on (repeatable; replaces the config's listeners)"""
        self["listen"].append(value)


def parse_listen(spec: str) -> ListenerConfig:
    resources = list(DEFAULT_RESOURCES)
    if "=" in spec:
        spec, res = spec.split("=", 1)
        resources = [r for r in res.split(",") if r]
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--listen {spec}: expected HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    for r in resources:
        if r not in ("client", "federation", "media", "metrics"):
            raise ConfigError(f"--listen: unknown resource {r!r}")
    return ListenerConfig(port=int(port), host=host, resources=resources)  # type: ignore[arg-type]


def build_config(options: dict[str, Any]) -> HomeserverConfig:
    config = load_config(options.get("config"))
    if options.get("server-name"):
        config.server_name = options["server-name"]
        from mxserver.ids import is_valid_server_name

        if not is_valid_server_name(config.server_name):
            raise ConfigError(f"--server-name: invalid server name {config.server_name!r}")
    if options.get("data-dir"):
        config.data_dir = options["data-dir"]
    if options.get("listen"):
        config.listeners = [parse_listen(s) for s in options["listen"]]
    if options.get("worker"):
        config.worker.name = options["worker"]
        check_config(config)
    return config


class _TwistdRoot(service.MultiService):
    """Wraps the Homeserver for twistd and installs our log observer on the application.

    twistd uses an ``ILogObserver`` component of the application if there is
    one (twisted.application.app.AppLogger.start), which is how the ``log:``
    config (level, file, format) takes effect instead of twistd's defaults.
    """

    def __init__(self, observer: Any, hs: Homeserver | None = None) -> None:
        super().__init__()
        self._observer = observer
        self._hs = hs

    def startService(self) -> None:
        super().startService()
        if self._hs is not None:
            from mxserver.memory import freeze_startup_heap

            # Start-up's objects live as long as the process: out of the collector's way
            # once the server is ready (see mxserver.memory).
            # A failed start is reported (and stops the reactor) where it happens.
            self._hs.when_ready().addCallbacks(lambda _: freeze_startup_heap(), lambda _: None)

    def setServiceParent(self, parent: Any) -> None:
        if self._observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self._observer)
        super().setServiceParent(parent)


def makeService(options: dict[str, Any]) -> service.IService:
    from mxserver.homeserver import Homeserver, preflight
    from mxserver.logsetup import make_observer

    try:
        config = build_config(options)
        preflight(config)
    except ConfigError as e:
        sys.stderr.write(f"mxserver: configuration error: {e}\n")
        raise SystemExit(1) from None
    except Exception as e:  # start-up checks: unreadable key, schema too new, bad module...
        sys.stderr.write(f"mxserver: cannot start: {e}\n")
        raise SystemExit(1) from None
    from mxserver.memory import tune_malloc

    tune_malloc()
    # Daemonised with no log file configured, stderr goes nowhere: leave logging to
    # twistd's --logfile (twistd.log by default) rather than lose every line.
    parent = getattr(options, "parent", None)
    daemonised = parent is not None and not parent.get("nodaemon", True)
    observer = None if daemonised and config.log.path is None else make_observer(config.log)
    hs = Homeserver(config)
    hs.stop_reactor_on_failure = True
    _reload_on_sighup(hs)
    root = _TwistdRoot(observer, hs)
    hs.setServiceParent(root)
    return root


def _reload_on_sighup(hs: Homeserver) -> None:
    """SIGHUP re-reads the application service registrations (``app_service_config_files``);
    a bad file is logged and the registrations in force stay."""
    import signal

    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.logger import Logger

    log = Logger()

    def reload() -> None:
        d = ensureDeferred(hs.reload_appservices())
        d.addErrback(lambda f: log.error("reloading application services failed: {reason}", reason=f.getErrorMessage()))

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(reload))  # type: ignore[attr-defined]
