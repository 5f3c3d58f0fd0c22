"""Finding and constructing pluggable modules through entry points.

The core never imports ``mxserver_modules``: even the first-party defaults are found
here, by entry-point group and name, exactly as a third party's would be.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from zope.interface import Interface

STORAGE = "mxserver.storage"
LOGIN = "mxserver.login"
PRESENCE = "mxserver.presence"
TYPING = "mxserver.typing"
MODULES = "mxserver.modules"
MEDIA_STORAGE = "mxserver.media_storage"

GROUPS = (STORAGE, LOGIN, PRESENCE, TYPING, MODULES, MEDIA_STORAGE)


class ModuleLoadError(Exception):
    """A configured module cannot be found or does not provide its interface."""


def find_entry_point(group: str, name: str) -> EntryPoint:
    matches = [ep for ep in entry_points(group=group) if ep.name == name]
    if not matches:
        available = sorted({ep.name for ep in entry_points(group=group)})
        raise ModuleLoadError(
            f"no module {name!r} in entry-point group {group} (available: {', '.join(available) or 'none'})"
        )
    return matches[0]


def load_factory(group: str, name: str) -> Any:
    ep = find_entry_point(group, name)
    try:
        return ep.load()
    except Exception as e:
        raise ModuleLoadError(f"module {name!r} ({group}) failed to import: {e}") from e


def construct(group: str, name: str, interface: type[Interface], *args: Any) -> Any:
    """Load ``name`` from ``group``, call it with ``args`` and check it provides ``interface``."""
    factory = load_factory(group, name)
    try:
        obj = factory(*args)
    except Exception as e:
        raise ModuleLoadError(f"module {name!r} ({group}) failed to start: {e}") from e
    if not interface.providedBy(obj):
        raise ModuleLoadError(f"module {name!r} ({group}) does not provide {interface.__name__}")
    return obj
