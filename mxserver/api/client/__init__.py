"""Client-Server API routes (Klein servlets); homeserver.py lists and wires them."""
