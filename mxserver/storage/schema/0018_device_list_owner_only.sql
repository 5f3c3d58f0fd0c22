-- A change only its owner may hear of: a new user-signing key, which nobody but its
-- owner can see (client-server-api, End-to-end encryption §Cross-signing: the
-- user-signing key and its signatures are visible to the user alone). /sync and
-- /keys/changes list such a row's user to that user only; no server is told.
ALTER TABLE device_list_changes ADD COLUMN owner_only BOOLEAN NOT NULL DEFAULT FALSE;
