-- Application services (issue 16): each one is a destination (DESIGN.md §Destinations) with
-- a persisted queue, the transaction in flight, and backoff.
--
-- The appservice reader (a reader of the room event stream, its position in stream_readers
-- under the name 'appservices') queues each event an application service is interested in
-- here, in the same database transaction that moves its position: an event is queued once,
-- also across a crash.
CREATE TABLE appservice_events (
    appservice_id TEXT NOT NULL,
    stream_ordering {BIGINT} NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (appservice_id, stream_ordering)
);

-- Ephemeral data (m.typing, m.receipt, m.presence: kind 'ephemeral') and to-device messages
-- (kind 'to_device') queued for an application service that asked for them
-- (receive_ephemeral), in the order they happened.
CREATE TABLE appservice_ephemeral (
    appservice_id TEXT NOT NULL,
    seq {BIGINT} NOT NULL,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (appservice_id, seq)
);

-- One row per application service that has had traffic.
CREATE TABLE appservice_state (
    appservice_id TEXT PRIMARY KEY,
    -- the last transaction ID handed out (IDs only grow, across restarts)
    last_txn_id {BIGINT} NOT NULL DEFAULT 0,
    -- the transaction sent but not yet acknowledged (NULL: none): it is resent with the same
    -- ID and the same queued rows (events up to pending_events_upto, ephemeral data up to
    -- pending_ephemeral_upto) until the service answers 2xx
    pending_txn_id {BIGINT},
    pending_events_upto {BIGINT},
    pending_ephemeral_upto {BIGINT},
    -- backoff, as for federation destinations and pushers (mxserver.delivery.destinations)
    failure_ts {BIGINT},
    retry_last_ts {BIGINT},
    retry_interval {BIGINT} NOT NULL DEFAULT 0,
    last_success_ts {BIGINT}
);

-- Rooms an application service published in its own room directory for one of its networks
-- (PUT /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}).
CREATE TABLE appservice_room_list (
    appservice_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (appservice_id, network_id, room_id)
);
CREATE INDEX appservice_room_list_room ON appservice_room_list (room_id);
