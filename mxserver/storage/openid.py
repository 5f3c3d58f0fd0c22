"""SQL for OpenID tokens (schema 0024): hashed tokens with their owner and expiry."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from mxserver.storage.database import Database, Txn


class OpenIdStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, token_hash: str, user_id: str, expires_ts: int, now_ms: int) -> Deferred[None]:
        """Store a new token, and drop the expired ones (each new token pays for the clean-up)."""

        def txn(t: Txn) -> None:
            t.execute("DELETE FROM openid_tokens WHERE expires_ts <= ?", (now_ms,))
            t.execute(
                "INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES (?, ?, ?)",
                (token_hash, user_id, expires_ts),
            )

        return self.db.run_interaction("openid_token_add", txn)

    async def owner(self, token_hash: str, now_ms: int) -> str | None:
        """The user a token was issued to, if it exists and has not expired."""
        row = await self.db.select_one(
            "openid_token_owner",
            "SELECT user_id FROM openid_tokens WHERE token_hash = ? AND expires_ts > ?",
            token_hash,
            now_ms,
        )
        return str(row[0]) if row else None
