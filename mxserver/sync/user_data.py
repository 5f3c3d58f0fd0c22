"""Builds the per-user data sources /sync reads: account data, push rules, filters, to-device."""

from __future__ import annotations

from typing import Any


def build_user_data_handlers(hs: Any) -> None:
    """Attach ``hs.account_data``, ``hs.push_rules``, ``hs.filters`` and ``hs.to_device``.

    Registers the persisted ``account_data`` and ``to_device`` streams with
    ``hs.notifier`` and loads their positions at start-up (``hs.start_hooks``).
    Needs ``hs.db``, ``hs.notifier`` and ``hs.clock``.
    """
    from mxserver.storage.account_data import AccountDataStore
    from mxserver.storage.filters import FilterStore
    from mxserver.storage.push_rules import PushRulesStore
    from mxserver.storage.stream_positions import PersistedStream
    from mxserver.storage.to_device import ToDeviceStore
    from mxserver.sync.account_data import AccountDataHandler
    from mxserver.sync.filtering import FilterHandler
    from mxserver.sync.push_rules import PushRulesHandler
    from mxserver.sync.to_device import ToDeviceHandler

    account_data_stream = PersistedStream(hs.db, "account_data")
    to_device_stream = PersistedStream(hs.db, "to_device")
    hs.push_rules = PushRulesHandler(hs, PushRulesStore(hs.db, account_data_stream))
    hs.account_data = AccountDataHandler(hs, AccountDataStore(hs.db, account_data_stream), account_data_stream)
    hs.filters = FilterHandler(FilterStore(hs.db))
    hs.to_device = ToDeviceHandler(hs, ToDeviceStore(hs.db, to_device_stream), to_device_stream)

    hs.notifier.register_stream("account_data", lambda: account_data_stream.current)
    hs.notifier.register_stream("to_device", lambda: to_device_stream.current)
    hs.start_hooks.append(account_data_stream.load)
    hs.start_hooks.append(to_device_stream.load)
