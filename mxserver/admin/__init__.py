"""The server admin API's handlers: the logic behind ``mxserver.api.admin``'s servlets."""
