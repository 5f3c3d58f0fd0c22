"""SQL for end-to-end encryption keys (schema 0017).

Device identity keys, one-time and fallback keys, cross-signing keys and the
signatures uploaded for them. Writes that change a device list also record
the change on the ``device_lists`` stream in the same transaction
(:func:`record_change_txn`), so a change is never visible without its
position, nor its position without the change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn
from mxserver.storage.stream_positions import PersistedStream

JsonDict = dict[str, Any]

_CHUNK = 200


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def record_change_txn(
    txn: Txn, stream: PersistedStream, user_id: str, device_id: str, owner_only: bool = False
) -> tuple[int, int | None]:
    """Record a change to ``user_id``'s device list; ``(stream_id, previous stream_id for the user)``.

    ``device_id`` is '' for a change of cross-signing keys; ``owner_only`` for one only
    ``user_id`` may hear of (a user-signing key: schema 0018).
    """
    # prev_id links outbound m.device_list_update EDUs, which exist for device changes only.
    prev = txn.query_one(
        "SELECT MAX(stream_id) FROM device_list_changes WHERE user_id = ? AND device_id <> ''", (user_id,)
    )
    position = stream.allocate_txn(txn)
    txn.execute(
        "INSERT INTO device_list_changes (stream_id, user_id, device_id, owner_only) VALUES (?, ?, ?, ?)",
        (position, user_id, device_id, owner_only),
    )
    return position, (int(prev[0]) if prev and prev[0] is not None else None)


class E2eKeyStore:
    """Device keys, one-time/fallback keys, cross-signing keys and signatures."""

    def __init__(self, db: Database, stream: PersistedStream) -> None:
        self.db = db
        self.stream = stream

    # -- upload -------------------------------------------------------------------------

    def upload_keys(
        self,
        user_id: str,
        device_id: str,
        device_keys: JsonDict | None,
        one_time_keys: dict[tuple[str, str], Any],
        fallback_keys: dict[tuple[str, str], Any],
        now_ms: int,
    ) -> Deferred[tuple[dict[str, int], list[tuple[int, int | None]]]]:
        """Store what /keys/upload brings, in one transaction.

        ``one_time_keys``/``fallback_keys`` map ``(algorithm, key_id)`` to the key.
        Returns the device's one-time key counts and, if the device keys
        changed, ``[(stream_id, prev_id)]`` of the change recorded. Raises
        ``KeyConflict`` if a one-time key ID is re-used with a different key.
        """

        def txn(t: Txn) -> tuple[dict[str, int], list[tuple[int, int | None]]]:
            changes: list[tuple[int, int | None]] = []
            if device_keys is not None:
                new_json = _dumps(device_keys)
                row = t.query_one(
                    "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?", (user_id, device_id)
                )
                if row is None or row[0] != new_json:
                    t.execute(
                        "INSERT INTO e2e_device_keys (user_id, device_id, key_json, display_name) VALUES (?, ?, ?, NULL)"
                        " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
                        (user_id, device_id, new_json),
                    )
                    changes.append(record_change_txn(t, self.stream, user_id, device_id))
            if one_time_keys:
                existing = {
                    (r[0], r[1]): r[2]
                    for r in t.query(
                        "SELECT algorithm, key_id, key_json FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?",
                        (user_id, device_id),
                    )
                }
                rows = []
                for (algorithm, key_id), key in one_time_keys.items():
                    key_json = _dumps(key)
                    old = existing.get((algorithm, key_id))
                    if old is not None:
                        if old != key_json:
                            raise KeyConflict(f"One-time key {algorithm}:{key_id} already exists with another value")
                        continue
                    rows.append((user_id, device_id, algorithm, key_id, key_json, now_ms))
                t.executemany(
                    "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json, upload_seq)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
            for (algorithm, key_id), key in fallback_keys.items():
                key_json = _dumps(key)
                row = t.query_one(
                    "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?",
                    (user_id, device_id, algorithm),
                )
                if row is not None and row[0] == key_id and row[1] == key_json:
                    continue  # the same key again: it keeps its "used" flag
                t.execute(
                    "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET"
                    " key_id = excluded.key_id, key_json = excluded.key_json, used = excluded.used",
                    (user_id, device_id, algorithm, key_id, key_json, False),
                )
            return _otk_counts_txn(t, user_id, device_id), changes

        return self.db.run_interaction("e2e_upload_keys", txn)

    # -- reads ----------------------------------------------------------------------------

    def one_time_key_counts(self, user_id: str, device_id: str) -> Deferred[dict[str, int]]:
        return self.db.run_read("e2e_otk_counts", _otk_counts_txn, user_id, device_id)

    def unused_fallback_key_types(self, user_id: str, device_id: str) -> Deferred[list[str]]:
        def txn(t: Txn) -> list[str]:
            rows = t.query(
                "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ? AND used = ?"
                " ORDER BY algorithm",
                (user_id, device_id, False),
            )
            return [r[0] for r in rows]

        return self.db.run_read("e2e_unused_fallback", txn)

    def get_device_keys(
        self, query: Sequence[tuple[str, str | None]]
    ) -> Deferred[dict[str, dict[str, tuple[JsonDict | None, str | None]]]]:
        """``{user: {device: (keys or None, remote display name)}}`` for ``(user, device or None=all)``."""

        def txn(t: Txn) -> dict[str, dict[str, tuple[JsonDict | None, str | None]]]:
            out: dict[str, dict[str, tuple[JsonDict | None, str | None]]] = {}
            for user_id, device_id in query:
                if device_id is None:
                    rows = t.query(
                        "SELECT device_id, key_json, display_name FROM e2e_device_keys WHERE user_id = ?", (user_id,)
                    )
                else:
                    rows = t.query(
                        "SELECT device_id, key_json, display_name FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
                        (user_id, device_id),
                    )
                by_device = out.setdefault(user_id, {})
                for d, key_json, name in rows:
                    by_device[d] = (json.loads(key_json) if key_json else None, name)
            return out

        return self.db.run_read("e2e_get_device_keys", txn)

    def get_cross_signing_keys(self, user_ids: Iterable[str]) -> Deferred[dict[str, dict[str, JsonDict]]]:
        """``{user: {key_type: key}}``."""
        users = list(dict.fromkeys(user_ids))

        def txn(t: Txn) -> dict[str, dict[str, JsonDict]]:
            out: dict[str, dict[str, JsonDict]] = {}
            for i in range(0, len(users), _CHUNK):
                chunk = users[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for user_id, key_type, key_json in t.query(
                    f"SELECT user_id, key_type, key_json FROM e2e_cross_signing_keys WHERE user_id IN ({marks})", chunk
                ):
                    out.setdefault(user_id, {})[key_type] = json.loads(key_json)
            return out

        return self.db.run_read("e2e_get_cross_signing_keys", txn)

    def get_signatures(
        self, targets: Iterable[str], signers: Iterable[str]
    ) -> Deferred[dict[tuple[str, str], dict[str, dict[str, str]]]]:
        """Uploaded signatures on keys of ``targets`` made by ``signers``.

        ``{(target user, target key id): {signer user: {signer key id: signature}}}``.
        """
        target_list = list(dict.fromkeys(targets))
        signer_set = set(signers)

        def txn(t: Txn) -> dict[tuple[str, str], dict[str, dict[str, str]]]:
            out: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
            for i in range(0, len(target_list), _CHUNK):
                chunk = target_list[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = t.query(
                    "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature"
                    f" FROM e2e_cross_signing_signatures WHERE target_user_id IN ({marks})",
                    chunk,
                )
                for tu, tk, su, sk, sig in rows:
                    if su in signer_set:
                        out.setdefault((tu, tk), {}).setdefault(su, {})[sk] = sig
            return out

        return self.db.run_read("e2e_get_signatures", txn)

    def get_local_device_names(self, user_ids: Iterable[str]) -> Deferred[dict[str, dict[str, str | None]]]:
        """``{user: {device: display name}}`` of existing local devices (the ``devices`` table)."""
        users = list(dict.fromkeys(user_ids))

        def txn(t: Txn) -> dict[str, dict[str, str | None]]:
            out: dict[str, dict[str, str | None]] = {u: {} for u in users}
            for i in range(0, len(users), _CHUNK):
                chunk = users[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for user_id, device_id, name in t.query(
                    f"SELECT user_id, device_id, display_name FROM devices WHERE user_id IN ({marks})", chunk
                ):
                    out[user_id][device_id] = name
            return out

        return self.db.run_read("e2e_local_device_names", txn)

    # -- claim --------------------------------------------------------------------------------

    def claim_keys(self, wanted: Sequence[tuple[str, str, str]]) -> Deferred[dict[str, dict[str, dict[str, Any]]]]:
        """Claim one key per ``(user, device, algorithm)``: the oldest one-time key, else the fallback key.

        A one-time key is deleted as it is claimed, in the same statement, so it
        is handed out at most once even to concurrent claims (keys.yaml). A
        fallback key stays and is marked used.
        """

        def txn(t: Txn) -> dict[str, dict[str, dict[str, Any]]]:
            out: dict[str, dict[str, dict[str, Any]]] = {}
            for user_id, device_id, algorithm in wanted:
                claimed = _claim_one_time_key_txn(t, user_id, device_id, algorithm)
                if claimed is None:
                    row = t.query_one(
                        "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ?"
                        " AND algorithm = ?",
                        (user_id, device_id, algorithm),
                    )
                    if row is not None:
                        t.execute(
                            "UPDATE e2e_fallback_keys SET used = ? WHERE user_id = ? AND device_id = ? AND algorithm = ?",
                            (True, user_id, device_id, algorithm),
                        )
                        claimed = (row[0], row[1])
                if claimed is not None:
                    key_id, key_json = claimed
                    out.setdefault(user_id, {}).setdefault(device_id, {})[f"{algorithm}:{key_id}"] = json.loads(
                        key_json
                    )
            return out

        return self.db.run_interaction("e2e_claim_keys", txn)

    # -- devices going away ---------------------------------------------------------------------

    def delete_device_keys(
        self, user_id: str, device_ids: Sequence[str] | None
    ) -> Deferred[list[tuple[str, int, int | None]]]:
        """Drop the keys of removed local devices and record each removal as a device-list change.

        ``device_ids`` None means every device of the user that no longer
        exists in ``devices`` (log out everywhere, deactivation). Returns
        ``[(device_id, stream_id, prev_id)]`` for each device removed.
        """

        def txn(t: Txn) -> list[tuple[str, int, int | None]]:
            if device_ids is None:
                gone = [
                    r[0]
                    for r in t.query(
                        "SELECT device_id FROM e2e_device_keys WHERE user_id = ?"
                        " AND device_id NOT IN (SELECT device_id FROM devices WHERE user_id = ?)",
                        (user_id, user_id),
                    )
                ]
            else:
                gone = list(device_ids)
            out = []
            for device_id in gone:
                for table in ("e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys"):
                    t.execute(f"DELETE FROM {table} WHERE user_id = ? AND device_id = ?", (user_id, device_id))
                t.execute(
                    "DELETE FROM e2e_cross_signing_signatures WHERE target_user_id = ? AND target_key_id = ?",
                    (user_id, device_id),
                )
                stream_id, prev = record_change_txn(t, self.stream, user_id, device_id)
                out.append((device_id, stream_id, prev))
            return out

        return self.db.run_interaction("e2e_delete_device_keys", txn)

    def record_device_change(self, user_id: str, device_id: str) -> Deferred[tuple[int, int | None]]:
        """A change with no key data of ours (a new device, a renamed one)."""
        return self.db.run_interaction("e2e_record_device_change", record_change_txn, self.stream, user_id, device_id)

    # -- cross-signing ----------------------------------------------------------------------------

    def set_cross_signing_keys(
        self, user_id: str, keys: dict[str, tuple[str, JsonDict]]
    ) -> Deferred[tuple[int, int | None]]:
        """Store ``{key_type: (public key, key)}`` and record the change, in one transaction.

        A change of the user-signing key alone is the owner's only: others cannot see
        that key (end_to_end_encryption.md §Cross-signing).
        """
        owner_only = set(keys) == {"user_signing"}

        def txn(t: Txn) -> tuple[int, int | None]:
            for key_type, (public_key, key) in keys.items():
                t.execute(
                    "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key,"
                    " key_json = excluded.key_json",
                    (user_id, key_type, public_key, _dumps(key)),
                )
            return record_change_txn(t, self.stream, user_id, "", owner_only)

        return self.db.run_interaction("e2e_set_cross_signing_keys", txn)

    def add_signatures(
        self, rows: Sequence[tuple[str, str, str, str, str]], changed: Sequence[tuple[str, str]]
    ) -> Deferred[list[tuple[str, str, int, int | None]]]:
        """Store ``(target user, target key, signer user, signer key, signature)`` rows.

        Records a device-list change for each ``(user, device or '')`` in
        ``changed``; returns ``[(user, device, stream_id, prev_id)]``.
        """

        def txn(t: Txn) -> list[tuple[str, str, int, int | None]]:
            for row in rows:
                t.execute(
                    "INSERT INTO e2e_cross_signing_signatures"
                    " (target_user_id, target_key_id, signer_user_id, signer_key_id, signature) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)"
                    " DO UPDATE SET signature = excluded.signature",
                    row,
                )
            out = []
            for user_id, device_id in dict.fromkeys(changed):
                stream_id, prev = record_change_txn(t, self.stream, user_id, device_id)
                out.append((user_id, device_id, stream_id, prev))
            return out

        return self.db.run_interaction("e2e_add_signatures", txn)


class KeyConflict(Exception):
    """A one-time key ID was uploaded again with a different key."""


def _otk_counts_txn(t: Txn, user_id: str, device_id: str) -> dict[str, int]:
    rows = t.query(
        "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? GROUP BY algorithm",
        (user_id, device_id),
    )
    return {r[0]: int(r[1]) for r in rows}


def _claim_one_time_key_txn(t: Txn, user_id: str, device_id: str, algorithm: str) -> tuple[str, str] | None:
    for _ in range(5):
        row = t.query_one(
            "SELECT key_id FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?"
            " ORDER BY upload_seq, key_id LIMIT 1",
            (user_id, device_id, algorithm),
        )
        if row is None:
            return None
        # DELETE ... RETURNING: of two concurrent claims of this row (Postgres), one gets it;
        # the other deletes nothing and tries the next key.
        got = t.query(
            "DELETE FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = ?"
            " RETURNING key_id, key_json",
            (user_id, device_id, algorithm, row[0]),
        )
        if got:
            return got[0][0], got[0][1]
    return None
