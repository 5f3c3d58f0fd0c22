"""Builds the account handlers (registration, login, devices, account management)."""

from __future__ import annotations

from typing import Any


def build_account_handlers(hs: Any) -> None:
    """Attach the account handlers to ``hs``."""
