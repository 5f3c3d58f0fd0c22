"""End-to-end encryption support (client-server-api §End-to-End Encryption, issue 6).

:func:`build_e2ee_handlers` attaches:

==========================  ===================================================
``hs.device_lists``         device-list changes: /sync ``device_lists``, /keys/changes,
                            m.device_list_update / m.signing_key_update EDUs in and out
``hs.e2e_keys``             /keys/upload, /keys/query, /keys/claim (local and federated)
``hs.cross_signing``        /keys/device_signing/upload, /keys/signatures/upload
``hs.key_backup``           /room_keys/*
``hs.dehydrated_devices``   dehydrated devices (MSC3814, unstable prefix)
==========================  ===================================================

The ``device_lists`` stream (persisted, schema 0017) is registered with the
notifier and loaded at start-up.
"""

from __future__ import annotations

from typing import Any


def build_e2ee_handlers(hs: Any) -> None:
    """Needs ``hs.db``, ``hs.notifier``, ``hs.room_members``, ``hs.uia`` and ``hs.federation_client``."""
    from mxserver.e2ee.backup import KeyBackupHandler
    from mxserver.e2ee.cross_signing import CrossSigningHandler
    from mxserver.e2ee.dehydrated import DehydratedDeviceHandler
    from mxserver.e2ee.device_lists import DeviceListHandler
    from mxserver.e2ee.keys import E2eKeysHandler
    from mxserver.storage.e2ee_backup import KeyBackupStore
    from mxserver.storage.e2ee_dehydrated import DehydratedDeviceStore
    from mxserver.storage.e2ee_device_lists import DeviceListStore
    from mxserver.storage.e2ee_keys import E2eKeyStore
    from mxserver.storage.stream_positions import PersistedStream

    stream = PersistedStream(hs.db, "device_lists")
    key_store = E2eKeyStore(hs.db, stream)
    hs.device_lists = DeviceListHandler(hs, DeviceListStore(hs.db, stream), key_store, stream)
    hs.e2e_keys = E2eKeysHandler(hs, key_store, hs.device_lists)
    hs.cross_signing = CrossSigningHandler(hs, key_store, hs.device_lists)
    hs.key_backup = KeyBackupHandler(hs, KeyBackupStore(hs.db))
    hs.dehydrated_devices = DehydratedDeviceHandler(hs, DehydratedDeviceStore(hs.db))
