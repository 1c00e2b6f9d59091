-- Rooms and their events. Every event is a full PDU (json); the columns beside it are what
-- queries need. stream_ordering is the global position that sync and /messages tokens use:
-- allocated under a lock so positions commit in order and a reader never skips one.
CREATE TABLE rooms (
    room_id       TEXT PRIMARY KEY,
    room_version  TEXT NOT NULL,
    creator       TEXT NOT NULL,
    created_ts    BIGINT NOT NULL,
    published     BIGINT NOT NULL DEFAULT 0,
    -- The local server's latest events (JSON array of event ids): the next event's prev_events.
    extremities   TEXT NOT NULL DEFAULT '[]',
    depth         BIGINT NOT NULL DEFAULT 0,
    state_group   BIGINT
);

CREATE TABLE events (
    stream_ordering  BIGINT PRIMARY KEY,
    event_id         TEXT NOT NULL UNIQUE,
    room_id          TEXT NOT NULL REFERENCES rooms (room_id),
    sender           TEXT NOT NULL,
    type             TEXT NOT NULL,
    state_key        TEXT,
    depth            BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    json             TEXT NOT NULL,
    -- State before this event (a state group); state after = this plus the event if it is state.
    state_before     BIGINT,
    redacted_by      TEXT,
    relates_to       TEXT,
    rel_type         TEXT,
    -- For unsigned.transaction_id, shown to the sending device only.
    txn_device       TEXT,
    txn_id           TEXT
);
CREATE INDEX events_room_order ON events (room_id, stream_ordering);
CREATE INDEX events_relates ON events (relates_to, rel_type);

-- State snapshots: a group is its parent's state plus its own entries (deltas), with a full
-- copy every so often so that reading one never walks a long chain.
CREATE TABLE state_groups (
    id        BIGINT PRIMARY KEY,
    room_id   TEXT NOT NULL,
    parent    BIGINT,
    depth     BIGINT NOT NULL
);
CREATE TABLE state_group_entries (
    group_id  BIGINT NOT NULL,
    type      TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (group_id, type, state_key)
);

CREATE TABLE current_state (
    room_id   TEXT NOT NULL,
    type      TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);

-- Current membership of every user in every room they ever touched.
CREATE TABLE memberships (
    room_id         TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    membership      TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    -- Where the current membership began (a profile change keeps a join a join).
    membership_since BIGINT NOT NULL,
    -- Whether the user was ever joined: leaving after a knock or an invite shows nothing.
    ever_joined     BIGINT NOT NULL DEFAULT 0,
    forgotten       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id, membership);

CREATE TABLE transaction_ids (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

CREATE TABLE room_aliases (
    alias    TEXT PRIMARY KEY,
    room_id  TEXT NOT NULL,
    creator  TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Global and per-room account data; room_id '' is global. stream_id orders changes for sync.
CREATE TABLE account_data (
    user_id   TEXT NOT NULL,
    room_id   TEXT NOT NULL,
    type      TEXT NOT NULL,
    content   TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);

CREATE TABLE filters (
    user_id   TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    json      TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

CREATE TABLE receipts (
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    type       TEXT NOT NULL,
    thread_id  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    ts         BIGINT NOT NULL,
    stream_id  BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_id);

-- One sequence for the non-event streams (account data, receipts): positions only grow.
CREATE TABLE stream_counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- Display names and avatars; an account without a row shows its localpart.
CREATE TABLE profiles (
    user_id     TEXT PRIMARY KEY,
    displayname TEXT,
    avatar_url  TEXT
);
