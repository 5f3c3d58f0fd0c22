-- The media repository (issue 7): local uploads, the cache of remote media,
-- and thumbnails of both. The bytes live in the media storage module
-- (mxserver.media_storage, a sharded directory tree by default); these rows
-- say what exists and where.

-- Media uploaded here. uploaded_ts NULL marks an ID reserved by
-- POST /_matrix/media/v1/create whose bytes have not arrived yet; it is
-- usable until unused_expires_ts. authenticated is true for media stored
-- while the unauthenticated endpoints were frozen: the deprecated
-- /_matrix/media/v3/download and /thumbnail do not serve it. width, height
-- and animated describe images (NULL for anything else).
CREATE TABLE local_media (
    media_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    content_type TEXT,
    upload_name TEXT,
    size {BIGINT},
    created_ts {BIGINT} NOT NULL,
    uploaded_ts {BIGINT},
    unused_expires_ts {BIGINT},
    authenticated BOOLEAN NOT NULL,
    width INTEGER,
    height INTEGER,
    animated BOOLEAN
);
CREATE INDEX local_media_user ON local_media (user_id, uploaded_ts);

-- Media of other servers cached here. filesystem_id names the stored file
-- (a fresh random ID per fetch, so a re-fetch never collides with a file
-- being purged). last_access_ts drives retention.
CREATE TABLE remote_media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    filesystem_id TEXT NOT NULL,
    content_type TEXT,
    upload_name TEXT,
    size {BIGINT} NOT NULL,
    fetched_ts {BIGINT} NOT NULL,
    last_access_ts {BIGINT} NOT NULL,
    authenticated BOOLEAN NOT NULL,
    width INTEGER,
    height INTEGER,
    animated BOOLEAN,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX remote_media_access ON remote_media (last_access_ts);

-- Thumbnails. origin is '' for local media. For local media and cached remote
-- originals these are generated here (the pre-generated sizes and any made on
-- demand); for remote media whose original is not cached, a thumbnail fetched
-- from the origin is stored under the geometry the client asked for.
-- storage_key is where the bytes are in the media storage module.
CREATE TABLE media_thumbnails (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    animated BOOLEAN NOT NULL,
    content_type TEXT NOT NULL,
    size {BIGINT} NOT NULL,
    storage_key TEXT NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method, animated)
)
