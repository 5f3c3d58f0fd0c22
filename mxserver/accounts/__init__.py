"""mxserver.accounts."""
