"""Cryptography: signing keys, canonical JSON, content/reference hashes, signatures."""
