-- Inbound federation transactions (issue: federation). PUT /send/{txnId} is
-- idempotent per origin: the answer to a transaction is kept, and a
-- retransmission gets it again without anything being processed twice.
CREATE TABLE federation_inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response_json TEXT NOT NULL,
    received_ts {BIGINT} NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_ts ON federation_inbound_txns (received_ts);
