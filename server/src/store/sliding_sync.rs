//! Simplified sliding sync: the rooms a connection orders and the positions it continues from.

use sqlx::Row;

use super::Store;

/// A room of the user's as a sliding-sync list sorts and filters it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomStamp {
    /// `!…`.
    pub room_id: String,
    /// `join`, `invite`, `knock`, `leave` or `ban`.
    pub membership: String,
    /// Stream position where that membership began.
    pub member_stream: i64,
    /// Stream position of the room's latest event (0 for none).
    pub latest: i64,
    /// Stream position of the room's latest event of a type that moves it up a room list.
    pub bump: Option<i64>,
}

/// Event types that move a room up the list (Synapse's defaults): messages and the like,
/// not state changes or reactions. Migration 0020 backfills with the same list.
const BUMP_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

/// Whether an event of this type moves its room up room lists.
pub fn is_bump_type(kind: &str) -> bool {
    BUMP_TYPES.contains(&kind)
}

impl Store {
    /// The user's rooms (any membership) with an `m.room.encryption` state event.
    pub async fn encrypted_rooms_of(
        &self,
        user_id: &str,
    ) -> Result<std::collections::HashSet<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT c.room_id FROM current_state c JOIN memberships m ON m.room_id = c.room_id \
             WHERE m.user_id = $1 AND c.type = 'm.room.encryption' AND c.state_key = ''",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map(|rooms| rooms.into_iter().collect())
    }

    /// The user's rooms whose create event names a type, with it.
    pub async fn room_types_of(
        &self,
        user_id: &str,
    ) -> Result<std::collections::HashMap<String, String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT c.room_id, e.json FROM current_state c \
             JOIN memberships m ON m.room_id = c.room_id \
             JOIN events e ON e.event_id = c.event_id \
             WHERE m.user_id = $1 AND c.type = 'm.room.create' AND c.state_key = ''",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        let mut types = std::collections::HashMap::new();
        for row in &rows {
            let json: String = row.try_get(1)?;
            let kind = serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|pdu| pdu["content"]["type"].as_str().map(str::to_owned));
            if let Some(kind) = kind {
                types.insert(row.try_get(0)?, kind);
            }
        }
        Ok(types)
    }

    /// The user's rooms (those forgotten after leaving since `since` too), each with the
    /// positions lists sort and compare by (kept on the room's row by every append).
    pub async fn room_stamps(
        &self,
        user_id: &str,
        since: i64,
    ) -> Result<Vec<RoomStamp>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT m.room_id, m.membership, m.membership_since, r.latest_stream, r.bump_stream \
             FROM memberships m LEFT JOIN rooms r ON r.room_id = m.room_id \
             WHERE m.user_id = $1 AND (m.forgotten = 0 OR m.membership_since > $2) \
             ORDER BY m.room_id",
        )
        .bind(user_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RoomStamp {
                    room_id: row.try_get(0)?,
                    membership: row.try_get(1)?,
                    member_stream: row.try_get(2)?,
                    latest: row.try_get::<Option<i64>, _>(3)?.unwrap_or(0),
                    bump: row.try_get(4)?,
                })
            })
            .collect()
    }

    /// What a connection had sent as of `pos`, if that position is still kept.
    pub async fn sliding_position(
        &self,
        (user_id, device_id, conn_id): (&str, &str, &str),
        pos: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT state FROM sliding_sync_positions \
             WHERE user_id = $1 AND device_id = $2 AND conn_id = $3 AND pos = $4",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(conn_id)
        .bind(pos)
        .fetch_optional(&self.pool)
        .await
    }

    /// Records a connection's new position; of its older ones only `asked_from` stays (the
    /// client retries from it when this answer is lost).
    pub async fn save_sliding_position(
        &self,
        (user_id, device_id, conn_id): (&str, &str, &str),
        asked_from: Option<&str>,
        (pos, state): (&str, &str),
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM sliding_sync_positions \
             WHERE user_id = $1 AND device_id = $2 AND conn_id = $3 AND pos <> $4",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(conn_id)
        .bind(asked_from.unwrap_or_default())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO sliding_sync_positions \
             (user_id, device_id, conn_id, pos, state, created_ts) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(conn_id)
        .bind(pos)
        .bind(state)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// How many connections a device has open (each is bounded; their number is too).
    pub async fn sliding_connections(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT conn_id FROM sliding_sync_positions \
             WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Forgets the positions of connections not used since `before_ms`.
    pub async fn prune_sliding_positions(&self, before_ms: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM sliding_sync_positions WHERE created_ts < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
