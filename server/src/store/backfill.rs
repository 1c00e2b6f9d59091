//! History fetched from other servers (`/backfill`): stored below everything this server had,
//! at negative stream positions, newest first, without touching the room's current state,
//! memberships or extremities. Events already kept as outliers (the state a join brought)
//! move to their place in the timeline.

use std::collections::HashSet;

use super::{Backend, Store, StoredEvent};

/// An event of a room's past, checked by its caller.
#[derive(Debug)]
pub struct PastEvent {
    /// `$…`.
    pub event_id: String,
    /// The sender.
    pub sender: String,
    /// Event type.
    pub kind: String,
    /// Present for state events.
    pub state_key: Option<String>,
    /// Origin timestamp.
    pub origin_server_ts: i64,
    /// The PDU as checked.
    pub json: String,
    /// `(m.relates_to.event_id, rel_type)`.
    pub relation: Option<(String, String)>,
    /// Kept only as another event's auth, out of the timeline.
    pub outlier: bool,
}

impl Store {
    /// The room's earliest event in the timeline: where history ends here.
    pub async fn earliest_timeline_event(
        &self,
        room_id: &str,
    ) -> Result<Option<StoredEvent>, sqlx::Error> {
        let first: Option<i64> = sqlx::query_scalar(
            "SELECT stream_ordering FROM events WHERE room_id = $1 AND outlier = 0 \
             ORDER BY stream_ordering ASC LIMIT 1",
        )
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(first) = first else {
            return Ok(None);
        };
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT event_id FROM events WHERE stream_ordering = $1")
                .bind(first)
                .fetch_all(&self.pool)
                .await?;
        Ok(self.events(&ids).await?.pop())
    }

    /// Which of `event_ids` this room's timeline holds (outliers are not in it).
    pub async fn in_timeline(
        &self,
        room_id: &str,
        event_ids: &[String],
    ) -> Result<HashSet<String>, sqlx::Error> {
        Ok(self
            .events(event_ids)
            .await?
            .into_iter()
            .filter(|e| e.room_id == room_id && !e.outlier)
            .map(|e| e.event_id)
            .collect())
    }

    /// Stores `events` (newest first) below every stream position, each with the state
    /// group `state_before`; outliers already here take their place instead. How many
    /// entered the timeline.
    pub async fn insert_past(
        &self,
        room_id: &str,
        events: &[PastEvent],
        state_before: Option<i64>,
    ) -> Result<usize, sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(super::events::APPEND_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let lowest: i64 =
            sqlx::query_scalar("SELECT COALESCE(MIN(stream_ordering), 0) FROM events")
                .fetch_one(&mut *tx)
                .await?;
        let mut next = lowest.min(0).saturating_sub(1);
        let mut entered = 0;
        for event in events {
            let moved = sqlx::query(
                "UPDATE events SET stream_ordering = $1, outlier = $2 \
                 WHERE event_id = $3 AND room_id = $4 AND outlier = 1",
            )
            .bind(next)
            .bind(i64::from(event.outlier))
            .bind(&event.event_id)
            .bind(room_id)
            .execute(&mut *tx)
            .await?;
            let placed = if moved.rows_affected() == 1 {
                true
            } else {
                let (relates_to, rel_type) = event
                    .relation
                    .as_ref()
                    .map(|(to, kind)| (to.as_str(), kind.as_str()))
                    .unzip();
                let inserted = sqlx::query(
                    "INSERT INTO events (stream_ordering, event_id, room_id, sender, type, state_key, \
                     depth, origin_server_ts, json, state_before, relates_to, rel_type, outlier) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (event_id) DO NOTHING",
                )
                .bind(next)
                .bind(&event.event_id)
                .bind(room_id)
                .bind(&event.sender)
                .bind(&event.kind)
                .bind(event.state_key.as_deref())
                .bind(next)
                .bind(event.origin_server_ts)
                .bind(&event.json)
                .bind(state_before)
                .bind(relates_to)
                .bind(rel_type)
                .bind(i64::from(event.outlier))
                .execute(&mut *tx)
                .await?;
                inserted.rows_affected() == 1
            };
            if placed {
                next = next.saturating_sub(1);
                entered += usize::from(!event.outlier);
            }
        }
        tx.commit().await?;
        Ok(entered)
    }
}
