"""mxserver.api."""
