"""mxserver test suite (trial)."""
