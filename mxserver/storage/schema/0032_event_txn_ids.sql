-- The client transaction of a local event kept in its row (client-server-api §Transaction
-- identifiers: the sending device sees `unsigned.transaction_id`). It was only in memory, so
-- an event read back from the table (after a restart, or once out of the event cache) lost
-- it. `txn_id` is the key event_txn_ids holds (scoped by endpoint where one was reused),
-- `txn_device` the session that sent it (its device, else the application service or token).
ALTER TABLE events ADD COLUMN txn_id TEXT;
ALTER TABLE events ADD COLUMN txn_device TEXT;

UPDATE events SET txn_id = t.txn_id, txn_device = t.device_id
    FROM event_txn_ids t WHERE t.event_id = events.event_id;
