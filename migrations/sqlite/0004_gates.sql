-- Token-gated rooms. gate_rooms mirrors each room's current io.matrixon.room.gate content and
-- schedules its re-verification: an instance claims a due room by moving next_check_ms
-- forward and taking a lease (sweeping_until_ms) in one conditional UPDATE, so several
-- instances never sweep the same room at once.
CREATE TABLE gate_rooms (
    room_id            TEXT PRIMARY KEY,
    content            TEXT NOT NULL,
    next_check_ms      INTEGER NOT NULL,
    sweeping_until_ms  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX gate_rooms_due ON gate_rooms (next_check_ms);

-- Members who failed their room's gate, and since when (for grace periods).
CREATE TABLE gate_failures (
    room_id           TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    failing_since_ms  INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- Every gate decision: allowed, refused, kicked, unavailable (chain could not be asked).
CREATE TABLE gate_audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms     INTEGER NOT NULL,
    room_id   TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    decision  TEXT NOT NULL,
    -- JSON object: CAIP-2 chain → block number the decision was read at.
    blocks    TEXT NOT NULL,
    -- JSON: the leaves that failed, or why the chain could not be asked.
    detail    TEXT NOT NULL
);
CREATE INDEX gate_audit_room ON gate_audit (room_id, id);
