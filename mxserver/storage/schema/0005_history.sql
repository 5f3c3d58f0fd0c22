-- Reading room history (issue: rooms and events, client room APIs).
--
-- A user's membership changes in a room, newest first: history visibility
-- asks when a user who is no longer joined was last joined.
CREATE INDEX events_room_type_state_key ON events (room_nid, type, state_key, stream_ordering);
