"""Media routes: the ``/_matrix/media`` API (uploads and the deprecated downloads),
the authenticated ``/_matrix/client/v1/media`` endpoints and the federation
``/_matrix/federation/v1/media`` endpoints; homeserver.py lists and wires them."""
