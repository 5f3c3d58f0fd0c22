"""Builds the per-user data sources /sync reads: account data, push rules, filters."""

from __future__ import annotations

from typing import Any


def build_user_data_handlers(hs: Any) -> None:
    """Attach ``hs.account_data``, ``hs.push_rules`` and ``hs.filters``.

    Registers the persisted ``account_data`` stream with
    ``hs.notifier`` and loads their positions at start-up (``hs.start_hooks``).
    Needs ``hs.db``, ``hs.notifier`` and ``hs.clock``.
    """
    from mxserver.storage.account_data import AccountDataStore
    from mxserver.storage.filters import FilterStore
    from mxserver.storage.push_rules import PushRulesStore
    from mxserver.storage.stream_positions import PersistedStream
    from mxserver.sync.account_data import AccountDataHandler
    from mxserver.sync.filtering import FilterHandler
    from mxserver.sync.push_rules import PushRulesHandler

    account_data_stream = PersistedStream(hs.db, "account_data")
    hs.push_rules = PushRulesHandler(hs, PushRulesStore(hs.db, account_data_stream))
    hs.account_data = AccountDataHandler(hs, AccountDataStore(hs.db, account_data_stream), account_data_stream)
    hs.filters = FilterHandler(FilterStore(hs.db))

    hs.notifier.register_stream("account_data", lambda: account_data_stream.current)
    hs.start_hooks.append(account_data_stream.load)
