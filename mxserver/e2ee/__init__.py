"""End-to-end encryption support (client-server-api §End-to-End Encryption, issue 6).

The Homeserver builds (``_build_e2ee``):

==========================  ===================================================
``device_lists``            device-list changes: /sync ``device_lists``, /keys/changes,
                            m.device_list_update / m.signing_key_update EDUs in
                            (out: :mod:`mxserver.e2ee.outbound_device_lists`)
``e2e_keys``                /keys/upload, /keys/query, /keys/claim (local and federated)
``cross_signing``           /keys/device_signing/upload, /keys/signatures/upload
``key_backup``              /room_keys/*
``dehydrated_devices``      dehydrated devices (MSC3814, unstable prefix)
==========================  ===================================================

The ``device_lists`` stream (persisted, schema 0017) is registered with the
notifier and loaded at start-up.
"""
