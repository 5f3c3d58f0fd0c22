-- The processes of a cluster (issue 19), for the admin API's list of workers: each process
-- records itself when it starts (pid, started_ts) and then every 10 s (last_seen_ts), so a
-- process not seen for a while is down. A single-process server records itself as main.
-- The row of a name is replaced when a process of that name starts again. (IF NOT EXISTS:
-- tests replay the migrations after an older one on a database that has this table.)
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_ts {BIGINT} NOT NULL,
    last_seen_ts {BIGINT} NOT NULL
);
