"""SQL for accounts: users, devices, access tokens, login tokens, profiles."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn


@attrs.frozen
class UserRecord:
    user_id: str
    password_hash: str | None
    is_admin: bool
    is_guest: bool
    deactivated: bool
    created_ts: int
    #: client-server-api §Account locking / §Account suspension
    locked: bool = False
    suspended: bool = False


@attrs.frozen
class DeviceRecord:
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None
    #: shown to server admins only (the admin API), never in the client API's GET /devices
    last_seen_user_agent: str | None = None

    def to_client(self) -> dict[str, Any]:
        """The device as GET /devices shows it.

        Unknown values are sent as null rather than left out: real clients
        (matrix-nio) require every key to be present.
        """
        return {
            "device_id": self.device_id,
            "display_name": self.display_name,
            "last_seen_ts": self.last_seen_ts,
            "last_seen_ip": self.last_seen_ip,
        }


@attrs.frozen
class TokenOwner:
    user_id: str
    device_id: str | None
    is_guest: bool
    deactivated: bool
    #: when the token stops working (ms), or None (admin "login as a user" tokens may expire)
    expires_ts: int | None = None
    locked: bool = False
    suspended: bool = False
    #: the refresh token this token's refresh token was made from, while it is still usable
    #: (revoked when this token is first used: client-server-api §Refreshing access tokens)
    refresh_parent: str | None = None
    #: the refresh token issued with this token, if any
    refresh_hash: str | None = None


@attrs.frozen
class RefreshOutcome:
    """What ``POST /refresh`` found: the refresh token's owner (None: unknown token), whether it
    had expired or the account is locked (nothing changed then), and the access-token hashes
    it removed (the old token's, and those of an earlier unused refresh), for the cache."""

    user_id: str | None
    device_id: str | None = None
    expired: bool = False
    locked: bool = False
    removed: tuple[str, ...] = ()


@attrs.frozen
class UserDetails:
    """A user as the admin API lists it: the account, its profile and whether it is erased."""

    user_id: str
    is_admin: bool
    is_guest: bool
    deactivated: bool
    erased: bool
    created_ts: int
    displayname: str | None
    avatar_url: str | None
    #: the latest "last seen" of the user's devices, or None
    last_seen_ts: int | None
    locked: bool = False
    suspended: bool = False


#: the admin API's ``order_by`` values and the column of :data:`_USER_DETAILS` each sorts on
#: (then by user ID)
USER_ORDER_COLUMNS = {
    "name": "user_id",
    "is_guest": "is_guest",
    "admin": "is_admin",
    "deactivated": "deactivated",
    "displayname": "displayname",
    "avatar_url": "avatar_url",
    "creation_ts": "created_ts",
    "last_seen_ts": "last_seen_ts",
    # mxserver has no user types or shadow bans: every user ties, so by user ID
    "user_type": "user_id",
    "shadow_banned": "user_id",
    "locked": "locked",
}

_USER_DETAILS = (
    "SELECT u.user_id, u.is_admin, u.is_guest, u.deactivated,"
    " (SELECT COUNT(*) FROM erased_users e WHERE e.user_id = u.user_id) AS erased, u.created_ts,"
    " p.displayname, p.avatar_url,"
    " (SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id) AS last_seen_ts,"
    " u.locked, u.suspended"
    " FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id"
)


def _user_details(row: tuple[Any, ...]) -> UserDetails:
    return UserDetails(
        row[0], bool(row[1]), bool(row[2]), bool(row[3]), bool(row[4]), row[5], row[6], row[7], row[8],
        bool(row[9]), bool(row[10]),
    )


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere (with ``ESCAPE '\\'``): its wildcards escaped."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


class AccountStore:
    """Users, their devices and tokens."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- users ----------------------------------------------------------------

    def create_user(
        self,
        user_id: str,
        password_hash: str | None,
        created_ts: int,
        *,
        is_admin: bool = False,
        is_guest: bool = False,
        displayname: str | None = None,
    ) -> Deferred[bool]:
        """Insert a user and its profile in one transaction; False if the ID is taken."""

        def txn(t: Txn) -> bool:
            # ON CONFLICT rather than SELECT-then-INSERT: two concurrent sign-ups for one
            # name on Postgres must yield one account and one M_USER_IN_USE, not a crash.
            t.execute(
                "INSERT INTO users (user_id, password_hash, is_admin, is_guest, deactivated, created_ts)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO NOTHING",
                (user_id, password_hash, is_admin, is_guest, False, created_ts),
            )
            if t.rowcount == 0:
                return False
            t.execute(
                "INSERT INTO profiles (user_id, displayname, avatar_url) VALUES (?, ?, NULL)"
                " ON CONFLICT (user_id) DO NOTHING",
                (user_id, displayname),
            )
            return True

        return self.db.run_interaction("create_user", txn)

    def get_user(self, user_id: str) -> Deferred[UserRecord | None]:
        def txn(t: Txn) -> UserRecord | None:
            row = t.query_one(
                "SELECT user_id, password_hash, is_admin, is_guest, deactivated, created_ts, locked, suspended"
                " FROM users WHERE user_id = ?",
                (user_id,),
            )
            if row is None:
                return None
            return UserRecord(row[0], row[1], bool(row[2]), bool(row[3]), bool(row[4]), row[5], bool(row[6]), bool(row[7]))

        return self.db.run_read("get_user", txn)

    def upgrade_guest(self, user_id: str, password_hash: str) -> Deferred[bool]:
        """Make a guest account a full one with a password; False if it is not a live guest."""

        def txn(t: Txn) -> bool:
            t.execute(
                "UPDATE users SET is_guest = ?, password_hash = ? WHERE user_id = ? AND is_guest = ? AND deactivated = ?",
                (False, password_hash, user_id, True, False),
            )
            return bool(t.rowcount)

        return self.db.run_interaction("upgrade_guest", txn)

    def set_password_hash(self, user_id: str, password_hash: str | None) -> Deferred[None]:
        return self.db.execute(
            "set_password_hash", "UPDATE users SET password_hash = ? WHERE user_id = ?", password_hash, user_id
        )

    def set_admin(self, user_id: str, admin: bool) -> Deferred[None]:
        return self.db.execute("set_admin", "UPDATE users SET is_admin = ? WHERE user_id = ?", admin, user_id)

    def set_moderation(self, user_id: str, *, locked: bool | None = None, suspended: bool | None = None) -> Deferred[None]:
        """Lock or unlock, suspend or unsuspend an account (None: leave that flag as it is)."""

        def txn(t: Txn) -> None:
            if locked is not None:
                t.execute("UPDATE users SET locked = ? WHERE user_id = ?", (locked, user_id))
            if suspended is not None:
                t.execute("UPDATE users SET suspended = ? WHERE user_id = ?", (suspended, user_id))

        return self.db.run_interaction("set_moderation", txn)

    def deactivate_user(self, user_id: str, erase: bool = False) -> Deferred[list[str]]:
        """Mark deactivated, drop password, devices and tokens; returns the device IDs removed.

        ``erase``: in the same transaction, record the user as erased and drop their account
        data (account_deactivation.yaml: the server "should additionally erase any non-event
        data associated with the user, such as account data").
        """

        def txn(t: Txn) -> list[str]:
            if erase:
                t.execute("DELETE FROM erased_users WHERE user_id = ?", (user_id,))
                t.execute("INSERT INTO erased_users (user_id) VALUES (?)", (user_id,))
                t.execute("DELETE FROM account_data WHERE user_id = ?", (user_id,))
            devices = [r[0] for r in t.query("SELECT device_id FROM devices WHERE user_id = ?", (user_id,))]
            t.execute("UPDATE users SET deactivated = ?, password_hash = NULL WHERE user_id = ?", (True, user_id))
            t.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))
            t.execute("DELETE FROM refresh_tokens WHERE user_id = ?", (user_id,))
            t.execute("DELETE FROM devices WHERE user_id = ?", (user_id,))
            t.execute("DELETE FROM login_tokens WHERE user_id = ?", (user_id,))
            t.execute("UPDATE profiles SET displayname = NULL, avatar_url = NULL WHERE user_id = ?", (user_id,))
            t.execute("DELETE FROM profile_fields WHERE user_id = ?", (user_id,))
            return devices

        return self.db.run_interaction("deactivate_user", txn)

    def reactivate_user(self, user_id: str, password_hash: str | None) -> Deferred[bool]:
        """Undo a deactivation (admin API): the account may log in again with ``password_hash``
        and is no longer erased. False if the user is not deactivated."""

        def txn(t: Txn) -> bool:
            t.execute(
                "UPDATE users SET deactivated = ?, password_hash = ? WHERE user_id = ? AND deactivated = ?",
                (False, password_hash, user_id, True),
            )
            if t.rowcount == 0:
                return False
            t.execute("DELETE FROM erased_users WHERE user_id = ?", (user_id,))
            return True

        return self.db.run_interaction("reactivate_user", txn)

    def get_user_details(self, user_id: str) -> Deferred[UserDetails | None]:
        """The user as the admin API shows it, or None."""

        def txn(t: Txn) -> UserDetails | None:
            row = t.query_one(f"{_USER_DETAILS} WHERE u.user_id = ?", (user_id,))
            return _user_details(row) if row else None

        return self.db.run_read("get_user_details", txn)

    def list_users(
        self,
        *,
        offset: int,
        limit: int,
        user_id: str | None = None,
        name: str | None = None,
        guests: bool = True,
        deactivated: bool | None = False,
        admins: bool | None = None,
        order_by: str = "name",
        backwards: bool = False,
    ) -> Deferred[tuple[list[UserDetails], int]]:
        """A page of users for the admin API and how many match in all.

        ``name`` matches a substring of the user ID or the display name (case-insensitively) and
        wins over ``user_id`` (a substring of the user ID); ``guests=False`` leaves guests out;
        ``deactivated`` keeps only deactivated users (True) or only the others (False), None keeps
        both; ``admins`` keeps only admins (True) or only the others (False). ``order_by`` is a key of :data:`USER_ORDER_COLUMNS`; ties go by user ID.
        """
        where: list[str] = []
        args: list[Any] = []
        if name is not None:
            where.append("(LOWER(u.user_id) LIKE ? ESCAPE '\\' OR LOWER(p.displayname) LIKE ? ESCAPE '\\')")
            args += [like_pattern(name), like_pattern(name)]
        elif user_id is not None:
            where.append("LOWER(u.user_id) LIKE ? ESCAPE '\\'")
            args.append(like_pattern(user_id))
        if not guests:
            where.append("u.is_guest = ?")
            args.append(False)
        if deactivated is not None:
            where.append("u.deactivated = ?")
            args.append(deactivated)
        if admins is not None:
            where.append("u.is_admin = ?")
            args.append(admins)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        column = USER_ORDER_COLUMNS[order_by]
        direction = "DESC" if backwards else "ASC"
        # NULLs sort first going forwards on both backends (SQLite and Postgres disagree by default).
        order = (
            f" ORDER BY CASE WHEN {column} IS NULL THEN 0 ELSE 1 END {direction}, {column} {direction},"
            " user_id ASC"
        )

        def txn(t: Txn) -> tuple[list[UserDetails], int]:
            count = t.query_one(
                f"SELECT COUNT(*) FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id{clause}", args
            )
            rows = t.query(
                f"SELECT * FROM ({_USER_DETAILS}{clause}) AS listed{order} LIMIT ? OFFSET ?", [*args, limit, offset]
            )
            return [_user_details(r) for r in rows], int(count[0]) if count else 0

        return self.db.run_read("list_users", txn)

    def get_erased_users(self) -> Deferred[list[str]]:
        """Every user deactivated with ``erase`` (few: kept in memory by ``ErasedUsers``)."""

        def txn(t: Txn) -> list[str]:
            return [r[0] for r in t.query("SELECT user_id FROM erased_users", ())]

        return self.db.run_interaction("get_erased_users", txn)

    # -- devices and tokens ------------------------------------------------------

    def create_device_and_token(
        self,
        user_id: str,
        device_id: str,
        display_name: str | None,
        token_hash: str | None,
        now_ms: int,
        *,
        new_only: bool = False,
        expires_ts: int | None = None,
        refresh_hash: str | None = None,
        refresh_expires_ts: int | None = None,
    ) -> Deferred[tuple[bool, list[str]] | None]:
        """Create (or reuse) a device and, if given, an access token for it: one transaction.

        Logging in again with an existing device ID replaces that device's old tokens
        (client-server-api §Relationship between access tokens and devices) and keeps
        its display name (login.yaml: ``initial_device_display_name`` is ignored for a
        known device). Returns whether the device is new (other users' device lists
        change) and the hashes of the tokens replaced, for cache invalidation; with
        ``new_only`` an existing device is left alone and the result is None (a
        generated ID that collided). ``expires_ts``: when the access token stops working;
        ``refresh_hash``: a refresh token issued with it (expiring at ``refresh_expires_ts``).
        """

        def txn(t: Txn) -> tuple[bool, list[str]] | None:
            t.execute(
                "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (user_id, device_id) DO NOTHING",
                (user_id, device_id, display_name, now_ms),
            )
            replaced: list[str] = []
            created = t.rowcount != 0
            if not created:  # the device exists
                if new_only:
                    return None
                replaced = self._delete_device_tokens_txn(t, user_id, device_id)
            if token_hash is not None:
                self._add_token_txn(t, user_id, device_id, token_hash, now_ms, expires_ts, refresh_hash)
            if refresh_hash is not None:
                self._add_refresh_token_txn(t, user_id, device_id, refresh_hash, None, now_ms, refresh_expires_ts)
            return created, replaced

        return self.db.run_interaction("create_device_and_token", txn)

    @staticmethod
    def _add_token_txn(
        t: Txn,
        user_id: str,
        device_id: str,
        token_hash: str,
        now_ms: int,
        expires_ts: int | None,
        refresh_hash: str | None,
    ) -> None:
        t.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_token_hash)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (token_hash, user_id, device_id, now_ms, expires_ts, refresh_hash),
        )

    @staticmethod
    def _add_refresh_token_txn(
        t: Txn,
        user_id: str,
        device_id: str,
        refresh_hash: str,
        parent_hash: str | None,
        now_ms: int,
        expires_ts: int | None,
    ) -> None:
        t.execute(
            "INSERT INTO refresh_tokens (token_hash, user_id, device_id, parent_hash, created_ts, expires_ts)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (refresh_hash, user_id, device_id, parent_hash, now_ms, expires_ts),
        )

    @staticmethod
    def _delete_device_tokens_txn(t: Txn, user_id: str, device_id: str) -> list[str]:
        """Delete a device's access and refresh tokens (client-server-api §Relationship between
        access tokens and devices); the access tokens' hashes, for the cache."""
        hashes = [
            r[0]
            for r in t.query(
                "SELECT token_hash FROM access_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id)
            )
        ]
        t.execute("DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id))
        t.execute("DELETE FROM refresh_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id))
        return hashes

    @classmethod
    def _delete_devices_txn(cls, t: Txn, user_id: str, device_ids: list[str]) -> list[str]:
        hashes: list[str] = []
        for device_id in device_ids:
            hashes += cls._delete_device_tokens_txn(t, user_id, device_id)
            t.execute("DELETE FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id))
        return hashes

    def get_token_owner(self, token_hash: str) -> Deferred[TokenOwner | None]:
        def txn(t: Txn) -> TokenOwner | None:
            row = t.query_one(
                "SELECT t.user_id, t.device_id, u.is_guest, u.deactivated, t.expires_ts, u.locked, u.suspended,"
                " r.parent_hash, t.refresh_token_hash FROM access_tokens t"
                " JOIN users u ON u.user_id = t.user_id"
                " LEFT JOIN refresh_tokens r ON r.token_hash = t.refresh_token_hash"
                " WHERE t.token_hash = ?",
                (token_hash,),
            )
            if row is None:
                return None
            return TokenOwner(
                row[0], row[1], bool(row[2]), bool(row[3]), row[4], bool(row[5]), bool(row[6]), row[7], row[8]
            )

        return self.db.run_read("get_token_owner", txn)

    def add_deviceless_token(self, user_id: str, token_hash: str, now_ms: int, expires_ts: int | None) -> Deferred[None]:
        """An access token on no device (the admin API's "login as a user"): it does not show in
        the user's device list; ``expires_ts`` (ms) or None."""
        return self.db.execute(
            "add_deviceless_token",
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts) VALUES (?, ?, NULL, ?, ?)",
            token_hash,
            user_id,
            now_ms,
            expires_ts,
        )

    def delete_token(self, token_hash: str) -> Deferred[None]:
        return self.db.execute("delete_token", "DELETE FROM access_tokens WHERE token_hash = ?", token_hash)

    def delete_devices(self, user_id: str, device_ids: list[str]) -> Deferred[list[str]]:
        """Delete devices and their tokens; returns the token hashes removed (for cache invalidation)."""
        return self.db.run_interaction("delete_devices", self._delete_devices_txn, user_id, list(device_ids))

    def delete_all_devices(self, user_id: str) -> Deferred[list[str]]:
        """Log a user out everywhere: every device and every token (device-less ones too)."""

        def txn(t: Txn) -> list[str]:
            hashes = [r[0] for r in t.query("SELECT token_hash FROM access_tokens WHERE user_id = ?", (user_id,))]
            t.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))
            t.execute("DELETE FROM refresh_tokens WHERE user_id = ?", (user_id,))
            t.execute("DELETE FROM devices WHERE user_id = ?", (user_id,))
            return hashes

        return self.db.run_interaction("delete_all_devices", txn)

    # -- refresh tokens ----------------------------------------------------------------

    def refresh(
        self,
        refresh_hash: str,
        new_refresh_hash: str,
        new_token_hash: str,
        now_ms: int,
        expires_ts: int | None,
        refresh_expires_ts: int | None,
    ) -> Deferred[RefreshOutcome]:
        """``POST /refresh`` in one transaction (client-server-api §Refreshing access tokens).

        A known, unexpired refresh token of an account that is not locked gets a new access
        token and a new refresh token on the same device. Using it revokes the refresh token it
        was made from (if that one was still usable); the access token issued with it stops
        working; an earlier refresh with it whose tokens were never used is undone (the client
        did not get that answer). The token itself stays usable until the new tokens are used.
        """

        def txn(t: Txn) -> RefreshOutcome:
            row = t.query_one(
                "SELECT r.user_id, r.device_id, r.parent_hash, r.expires_ts, u.locked, u.deactivated"
                " FROM refresh_tokens r JOIN users u ON u.user_id = r.user_id WHERE r.token_hash = ?",
                (refresh_hash,),
            )
            if row is None or row[5]:
                return RefreshOutcome(None)
            user_id, device_id, parent_hash, token_expires, locked = row[0], row[1], row[2], row[3], bool(row[4])
            if token_expires is not None and now_ms >= token_expires:
                return RefreshOutcome(user_id, device_id, expired=True)
            if locked:
                return RefreshOutcome(user_id, device_id, locked=True)
            if parent_hash is not None:
                t.execute("DELETE FROM refresh_tokens WHERE token_hash = ?", (parent_hash,))
                t.execute("UPDATE refresh_tokens SET parent_hash = NULL WHERE token_hash = ?", (refresh_hash,))
            revoked = [refresh_hash] + [
                r[0] for r in t.query("SELECT token_hash FROM refresh_tokens WHERE parent_hash = ?", (refresh_hash,))
            ]
            removed: list[str] = []
            for h in revoked:
                removed += [
                    r[0] for r in t.query("SELECT token_hash FROM access_tokens WHERE refresh_token_hash = ?", (h,))
                ]
                t.execute("DELETE FROM access_tokens WHERE refresh_token_hash = ?", (h,))
            t.execute("DELETE FROM refresh_tokens WHERE parent_hash = ?", (refresh_hash,))
            self._add_refresh_token_txn(
                t, user_id, device_id, new_refresh_hash, refresh_hash, now_ms, refresh_expires_ts
            )
            self._add_token_txn(t, user_id, device_id, new_token_hash, now_ms, expires_ts, new_refresh_hash)
            return RefreshOutcome(user_id, device_id, removed=tuple(removed))

        return self.db.run_interaction("refresh", txn)

    def revoke_refresh_parent(self, refresh_hash: str) -> Deferred[None]:
        """The tokens made from a refresh token were used: that refresh token stops working."""

        def txn(t: Txn) -> None:
            row = t.query_one("SELECT parent_hash FROM refresh_tokens WHERE token_hash = ?", (refresh_hash,))
            if row is None or row[0] is None:
                return
            t.execute("DELETE FROM refresh_tokens WHERE token_hash = ?", (row[0],))
            t.execute("UPDATE refresh_tokens SET parent_hash = NULL WHERE token_hash = ?", (refresh_hash,))

        return self.db.run_interaction("revoke_refresh_parent", txn)

    def get_devices(self, user_id: str) -> Deferred[list[DeviceRecord]]:
        def txn(t: Txn) -> list[DeviceRecord]:
            rows = t.query(
                "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent FROM devices"
                " WHERE user_id = ? ORDER BY device_id",
                (user_id,),
            )
            return [DeviceRecord(*r) for r in rows]

        return self.db.run_read("get_devices", txn)

    def get_device(self, user_id: str, device_id: str) -> Deferred[DeviceRecord | None]:
        def txn(t: Txn) -> DeviceRecord | None:
            row = t.query_one(
                "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent FROM devices"
                " WHERE user_id = ? AND device_id = ?",
                (user_id, device_id),
            )
            return DeviceRecord(*row) if row else None

        return self.db.run_read("get_device", txn)

    def set_device_display_name(self, user_id: str, device_id: str, name: str | None) -> Deferred[bool]:
        def txn(t: Txn) -> bool:
            t.execute(
                "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?", (name, user_id, device_id)
            )
            return t.rowcount > 0

        return self.db.run_interaction("set_device_display_name", txn)

    def record_device_seen(
        self, user_id: str, device_id: str, ts: int, ip: str, user_agent: str | None
    ) -> Deferred[None]:
        return self.db.execute(
            "record_device_seen",
            "UPDATE devices SET last_seen_ts = ?, last_seen_ip = ?, last_seen_user_agent = ? WHERE user_id = ? AND device_id = ?",
            ts,
            ip,
            user_agent,
            user_id,
            device_id,
        )

    def get_device_connections(self, user_id: str) -> Deferred[list[tuple[str, str | None, int | None, str | None]]]:
        """(device_id, last_seen_ip, last_seen_ts, last_seen_user_agent) for each of the user's devices."""

        def txn(t: Txn) -> list[tuple[str, str | None, int | None, str | None]]:
            rows = t.query(
                "SELECT device_id, last_seen_ip, last_seen_ts, last_seen_user_agent FROM devices"
                " WHERE user_id = ? ORDER BY device_id",
                (user_id,),
            )
            return [(r[0], r[1], r[2], r[3]) for r in rows]

        return self.db.run_read("get_device_connections", txn)

    def delete_other_tokens(self, user_id: str, keep_device_id: str | None) -> Deferred[list[str]]:
        """Log out every device but ``keep_device_id``: deletes those devices and tokens."""

        def txn(t: Txn) -> list[str]:
            return self._delete_other_devices_txn(t, user_id, keep_device_id)

        return self.db.run_interaction("delete_other_tokens", txn)

    @classmethod
    def _delete_other_devices_txn(cls, t: Txn, user_id: str, keep_device_id: str | None) -> list[str]:
        devices = [
            r[0]
            for r in t.query("SELECT device_id FROM devices WHERE user_id = ?", (user_id,))
            if r[0] != keep_device_id
        ]
        return cls._delete_devices_txn(t, user_id, devices)

    def change_password(
        self, user_id: str, password_hash: str, logout_others: bool, keep_device_id: str | None
    ) -> Deferred[list[str]]:
        """Set a new password and, if asked, log out every other device: one transaction.

        Returns the token hashes removed. Outstanding login tokens are dropped
        either way: they were issued under the old password.
        """

        def txn(t: Txn) -> list[str]:
            t.execute("UPDATE users SET password_hash = ? WHERE user_id = ?", (password_hash, user_id))
            t.execute("DELETE FROM login_tokens WHERE user_id = ?", (user_id,))
            if not logout_others:
                return []
            return self._delete_other_devices_txn(t, user_id, keep_device_id)

        return self.db.run_interaction("change_password", txn)

    # -- login tokens ---------------------------------------------------------------

    def add_login_token(self, token_hash: str, user_id: str, expires_ts: int) -> Deferred[None]:
        return self.db.execute(
            "add_login_token",
            "INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES (?, ?, ?)",
            token_hash,
            user_id,
            expires_ts,
        )

    def consume_login_token(self, token_hash: str, now_ms: int) -> Deferred[str | None]:
        """The token's user if it is valid; the token is deleted either way (single use)."""

        def txn(t: Txn) -> str | None:
            row = t.query_one("SELECT user_id, expires_ts FROM login_tokens WHERE token_hash = ?", (token_hash,))
            t.execute("DELETE FROM login_tokens WHERE token_hash = ? OR expires_ts < ?", (token_hash, now_ms))
            if row is None or row[1] < now_ms:
                return None
            return row[0]

        return self.db.run_interaction("consume_login_token", txn)

    # -- profiles -----------------------------------------------------------------

    def get_profile(self, user_id: str) -> Deferred[tuple[str | None, str | None] | None]:
        return self.db.run_read(
            "get_profile",
            lambda t: t.query_one("SELECT displayname, avatar_url FROM profiles WHERE user_id = ?", (user_id,)),
        )
