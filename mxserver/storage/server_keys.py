"""SQL for other servers' signing keys (the keyring's persistent cache)."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn


@attrs.frozen
class StoredServerKey:
    server_name: str
    key_id: str
    #: unpadded base64 of the public key
    verify_key: str
    #: until when the key may be used (expired_ts for old keys)
    valid_until_ts: int
    is_old: bool
    from_server: str
    fetched_ts: int
    #: the signed key response this key came in (JSON text, the origin's signatures only)
    key_json: str


_COLUMNS = "server_name, key_id, verify_key, valid_until_ts, is_old, from_server, fetched_ts, key_json"


def _row(row: tuple) -> StoredServerKey:
    return StoredServerKey(row[0], row[1], row[2], int(row[3]), bool(row[4]), row[5], int(row[6]), row[7])


class ServerKeyStore:
    """Signing keys of other servers, one row per (server, key ID)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def store_server_keys(self, keys: Sequence[StoredServerKey]) -> Deferred[None]:
        """Insert or replace ``keys`` (the latest fetch of a key wins), in one transaction."""

        def txn(t: Txn) -> None:
            t.executemany(
                f"INSERT INTO server_signing_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (server_name, key_id) DO UPDATE SET"
                " verify_key = excluded.verify_key, valid_until_ts = excluded.valid_until_ts,"
                " is_old = excluded.is_old, from_server = excluded.from_server,"
                " fetched_ts = excluded.fetched_ts, key_json = excluded.key_json",
                [
                    (
                        k.server_name,
                        k.key_id,
                        k.verify_key,
                        k.valid_until_ts,
                        k.is_old,
                        k.from_server,
                        k.fetched_ts,
                        k.key_json,
                    )
                    for k in keys
                ],
            )

        return self.db.run_interaction("store_server_keys", txn)

    def get_server_keys(self, server_name: str) -> Deferred[list[StoredServerKey]]:
        """Every key we hold for ``server_name``."""

        def txn(t: Txn) -> list[StoredServerKey]:
            rows = t.query(
                f"SELECT {_COLUMNS} FROM server_signing_keys WHERE server_name = ? ORDER BY key_id", (server_name,)
            )
            return [_row(r) for r in rows]

        return self.db.run_read("get_server_keys", txn)
