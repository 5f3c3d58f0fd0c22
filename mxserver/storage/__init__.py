"""mxserver.storage."""
