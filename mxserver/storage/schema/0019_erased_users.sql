-- Accounts deactivated with erase: true (account_deactivation.yaml `erase`): their events are
-- served redacted to users who were not joined when they were sent, and to other servers.
CREATE TABLE erased_users (
    user_id TEXT PRIMARY KEY
);
