"""mxserver.federation."""
