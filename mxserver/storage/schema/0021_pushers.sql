-- Pushers (issue 13): where a user's notifications are delivered (pusher.yaml), and each
-- pusher's delivery state as a destination (DESIGN.md §Destinations).
--
-- A pusher is unique per (user_id, app_id, pushkey). It belongs to the device whose access
-- token created it: removing the device (logout, device deletion, a password change that
-- logs out other devices) removes its pushers.
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    -- pusher.yaml `data`, as JSON
    data TEXT NOT NULL,
    -- the device of the access token that created it (NULL: none known)
    device_id TEXT,
    -- when the pushkey was last set (ms): the gateway's `pushkey_ts`
    pushkey_ts {BIGINT} NOT NULL,
    -- every notification (event_push_actions row) of the user up to this stream position
    -- was delivered, dropped or read: delivery resumes after it (also after a restart)
    last_stream_ordering {BIGINT} NOT NULL,
    -- backoff, as for federation destinations (mxserver.delivery.destinations)
    failure_ts {BIGINT},
    retry_last_ts {BIGINT},
    retry_interval {BIGINT} NOT NULL DEFAULT 0,
    last_success_ts {BIGINT},
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_app_pushkey ON pushers (app_id, pushkey);
