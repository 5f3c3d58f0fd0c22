"""Interop tests: mxserver federating with a real Synapse on loopback (see harness.py)."""
