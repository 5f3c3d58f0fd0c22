"""Server-side key backups (end_to_end_encryption.md §Server-side key backups; key_backup.yaml).

The Homeserver's ``key_backup``. Versions are opaque strings to clients; here they are
the decimal form of a per-user counter. The server stores ``auth_data`` and
``session_data`` as given (it cannot read them) and decides, for a session
it already holds, whether an upload replaces it (:meth:`RoomKey.better_than`).
"""

from __future__ import annotations

from typing import Any

from mxserver.errors import MatrixError, bad_json, invalid_param, missing_param, not_found
from mxserver.ids import is_valid_room_id
from mxserver.storage.e2ee_backup import KeyBackupStore, RoomKey, VersionNotFound, WrongVersion

JsonDict = dict[str, Any]

ALGORITHMS = ("m.megolm_backup.v1.curve25519-aes-sha2",)
#: one upload's bound (a whole backup may be uploaded in chunks)
MAX_KEYS_PER_UPLOAD = 10_000
MAX_ID_LENGTH = 255


def parse_version(raw: Any) -> int:
    """A version string from a path or query; an unknown form is just an unknown version."""
    if not isinstance(raw, str) or not raw.isdigit() or len(raw) > 18:
        raise not_found("Unknown backup version")
    return int(raw)


def parse_room_key(obj: Any, what: str) -> RoomKey:
    """key_backup_data.yaml: all four fields required, with their types."""
    if not isinstance(obj, dict):
        raise bad_json(f"'{what}' must be an object")
    for field in ("first_message_index", "forwarded_count", "is_verified", "session_data"):
        if field not in obj:
            raise missing_param(f"Missing '{what}.{field}'")
    fmi, fc, verified, data = (
        obj["first_message_index"],
        obj["forwarded_count"],
        obj["is_verified"],
        obj["session_data"],
    )
    for name, value in (("first_message_index", fmi), ("forwarded_count", fc)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 2**53:
            raise bad_json(f"'{what}.{name}' must be a non-negative integer")
    if not isinstance(verified, bool):
        raise bad_json(f"'{what}.is_verified' must be a boolean")
    if not isinstance(data, dict):
        raise bad_json(f"'{what}.session_data' must be an object")
    return RoomKey(fmi, fc, verified, data)


def _check_room_id(room_id: str) -> None:
    if not is_valid_room_id(room_id):
        raise invalid_param(f"Invalid room ID {room_id!r}")


def _check_session_id(session_id: str) -> None:
    if not session_id or len(session_id) > MAX_ID_LENGTH:
        raise invalid_param("Invalid session ID")


def parse_sessions(obj: Any, what: str) -> dict[str, RoomKey]:
    if not isinstance(obj, dict):
        raise bad_json(f"'{what}' must be an object")
    out = {}
    for session_id, key in obj.items():
        _check_session_id(session_id)
        out[session_id] = parse_room_key(key, f"{what}.{session_id}")
    return out


class KeyBackupHandler:
    """/room_keys/*: backup versions and the room keys in them."""

    def __init__(self, store: KeyBackupStore) -> None:
        self.store = store

    @staticmethod
    def _parse_version_body(body: JsonDict) -> tuple[str, JsonDict]:
        algorithm = body.get("algorithm")
        auth_data = body.get("auth_data")
        if algorithm is None:
            raise missing_param("Missing 'algorithm'")
        if auth_data is None:
            raise missing_param("Missing 'auth_data'")
        if not isinstance(algorithm, str):
            raise bad_json("'algorithm' must be a string")
        if not isinstance(auth_data, dict):
            raise bad_json("'auth_data' must be an object")
        if algorithm not in ALGORITHMS:
            raise invalid_param(f"Unsupported backup algorithm {algorithm!r}")
        return algorithm, auth_data

    async def create_version(self, user_id: str, body: JsonDict) -> JsonDict:
        algorithm, auth_data = self._parse_version_body(body)
        return {"version": str(await self.store.create_version(user_id, algorithm, auth_data))}

    async def get_version(self, user_id: str, version: str | None) -> JsonDict:
        found = await self.store.get_version(user_id, None if version is None else parse_version(version))
        if found is None:
            raise not_found("No current backup version" if version is None else "Unknown backup version")
        return {
            "algorithm": found.algorithm,
            "auth_data": found.auth_data,
            "count": found.count,
            "etag": str(found.etag),
            "version": str(found.version),
        }

    async def update_version(self, user_id: str, version: str, body: JsonDict) -> JsonDict:
        number = parse_version(version)
        algorithm, auth_data = self._parse_version_body(body)
        if "version" in body and body["version"] != version:
            raise invalid_param("'version' does not match the version in the path")
        found = await self.store.get_version(user_id, number)
        if found is None:
            raise not_found("Unknown backup version")
        if found.algorithm != algorithm:
            raise invalid_param("Algorithm does not match the backup's")
        if not await self.store.update_auth_data(user_id, number, auth_data):
            raise not_found("Unknown backup version")
        return {}

    async def delete_version(self, user_id: str, version: str) -> JsonDict:
        # key_backup.yaml: deleting a version deleted before succeeds.
        if await self.store.delete_version(user_id, parse_version(version)) == "unknown":
            raise not_found("Unknown backup version")
        return {}

    # -- keys ------------------------------------------------------------------------------------------------

    async def put_keys(
        self, user_id: str, version: Any, body: JsonDict, room_id: str | None = None, session_id: str | None = None
    ) -> JsonDict:
        if version is None:
            raise missing_param("Missing 'version' query parameter")
        keys: list[tuple[str, str, RoomKey]] = []
        if room_id is not None and session_id is not None:
            _check_room_id(room_id)
            _check_session_id(session_id)
            keys.append((room_id, session_id, parse_room_key(body, "body")))
        elif room_id is not None:
            _check_room_id(room_id)
            if "sessions" not in body:
                raise missing_param("Missing 'sessions'")
            keys += [(room_id, s, k) for s, k in parse_sessions(body["sessions"], "sessions").items()]
        else:
            rooms = body.get("rooms")
            if rooms is None:
                raise missing_param("Missing 'rooms'")
            if not isinstance(rooms, dict):
                raise bad_json("'rooms' must be an object")
            for r, room in rooms.items():
                _check_room_id(r)
                if not isinstance(room, dict) or "sessions" not in room:
                    raise bad_json(f"'rooms.{r}' must be an object with 'sessions'")
                keys += [(r, s, k) for s, k in parse_sessions(room["sessions"], f"rooms.{r}.sessions").items()]
        if len(keys) > MAX_KEYS_PER_UPLOAD:
            raise bad_json(f"At most {MAX_KEYS_PER_UPLOAD} keys per upload")
        if not isinstance(version, str) or not version.isdigit() or len(version) > 18:
            number = -1  # cannot be the current version
        else:
            number = int(version)
        try:
            etag, count = await self.store.put_keys(user_id, number, keys)
        except VersionNotFound:
            raise not_found("Unknown backup version") from None
        except WrongVersion as e:
            raise MatrixError(
                403, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version.", current_version=str(e.current)
            ) from None
        return {"etag": str(etag), "count": count}

    async def get_keys(
        self, user_id: str, version: Any, room_id: str | None = None, session_id: str | None = None
    ) -> JsonDict:
        if version is None:
            raise missing_param("Missing 'version' query parameter")
        found = await self.store.get_keys(user_id, parse_version(version), room_id, session_id)
        if found is None:
            raise not_found("Unknown backup version")
        if session_id is not None:
            key = found.get(room_id or "", {}).get(session_id)
            if key is None:
                raise not_found("Key not found.")
            return key.to_json()
        if room_id is not None:
            return {"sessions": {s: k.to_json() for s, k in found.get(room_id, {}).items()}}
        return {"rooms": {r: {"sessions": {s: k.to_json() for s, k in ss.items()}} for r, ss in found.items()}}

    async def delete_keys(
        self, user_id: str, version: Any, room_id: str | None = None, session_id: str | None = None
    ) -> JsonDict:
        if version is None:
            raise missing_param("Missing 'version' query parameter")
        result = await self.store.delete_keys(user_id, parse_version(version), room_id, session_id)
        if result is None:
            raise not_found("Unknown backup version")
        etag, count = result
        return {"etag": str(etag), "count": count}
