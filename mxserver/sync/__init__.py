"""mxserver.sync."""
