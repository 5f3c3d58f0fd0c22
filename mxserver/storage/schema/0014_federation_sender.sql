-- The outbound federation sender (issue: federation): per-destination backoff and catch-up.
--
-- One row per server we have sent to. A destination is backing off while
-- retry_interval > 0: the next attempt is due at retry_last_ts + retry_interval.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    -- when the current run of failures began (ms); NULL while the destination is healthy
    failure_ts {BIGINT},
    -- when the last attempt failed (ms)
    retry_last_ts {BIGINT},
    -- how long to wait after retry_last_ts (ms); 0 while healthy
    retry_interval {BIGINT} NOT NULL DEFAULT 0,
    -- when a transaction last succeeded (ms)
    last_success_ts {BIGINT},
    -- every one of our PDUs for this destination up to this room-stream position was
    -- delivered (or superseded by a later event of its room that was)
    last_successful_stream {BIGINT} NOT NULL DEFAULT 0
);

-- The latest of our events queued for a destination in each room. Rows ahead of
-- the destination's last_successful_stream are what a catch-up sends after an
-- outage or a restart (the destination then fetches what it missed before them
-- with /get_missing_events or /backfill).
CREATE TABLE federation_destination_rooms (
    destination TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering {BIGINT} NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (destination, room_id)
);
CREATE INDEX federation_destination_rooms_stream ON federation_destination_rooms (destination, stream_ordering);

-- EDUs that must not be lost (send-to-device messages): kept until a transaction
-- carrying them succeeds, so they survive an outage of the destination and a restart.
CREATE TABLE federation_outbox (
    destination TEXT NOT NULL,
    seq {BIGINT} NOT NULL,
    edu_type TEXT NOT NULL,
    content TEXT NOT NULL,
    created_ts {BIGINT} NOT NULL,
    PRIMARY KEY (destination, seq)
);
