"""The logic behind the server admin API (:mod:`mxserver.api.admin`): no HTTP, no SQL."""
