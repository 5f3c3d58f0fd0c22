"""mxserver: a Matrix homeserver on Twisted.

The public entry points are :class:`mxserver.homeserver.Homeserver` (an
``IService`` exposing a ``twisted.web`` resource) and the ``twistd mxserver``
plugin. ``Homeserver`` is imported lazily so that ``import mxserver`` stays
cheap for the twistd plugin scan.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["Homeserver", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Homeserver":
        from mxserver.homeserver import Homeserver

        return Homeserver
    raise AttributeError(name)
