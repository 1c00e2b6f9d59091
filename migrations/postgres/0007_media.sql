-- The media repository. Files live on disk under media.directory, named by their SHA-256,
-- so identical uploads are stored once; these rows map media IDs to them.
CREATE TABLE media (
    media_id      TEXT PRIMARY KEY,
    -- NULL until an asynchronous upload (POST /media/v1/create) receives its content.
    sha256        TEXT,
    content_type  TEXT,
    filename      TEXT,
    size          BIGINT NOT NULL DEFAULT 0,
    uploader      TEXT NOT NULL,
    created_ts    BIGINT NOT NULL,
    -- An asynchronous upload not done by then is void.
    unused_expires_ts BIGINT
);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_pending ON media (uploader, unused_expires_ts);

-- Thumbnails made on first request, stored like media (by SHA-256).
CREATE TABLE media_thumbnails (
    media_id      TEXT NOT NULL REFERENCES media (media_id) ON DELETE CASCADE,
    width         BIGINT NOT NULL,
    height        BIGINT NOT NULL,
    method        TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    PRIMARY KEY (media_id, width, height, method)
);
