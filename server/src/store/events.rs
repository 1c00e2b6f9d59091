//! Rooms, their events, state snapshots and memberships.
//!
//! Appending an event is one transaction that takes the next stream position under a lock
//! (a PostgreSQL advisory lock across instances; the caller's in-process lock for SQLite),
//! so positions commit in order and a reader at position N has seen everything up to N.

use std::collections::HashMap;

use sqlx::{Any, Row, Transaction, any::AnyRow};

use super::{Backend, Store};

/// A full snapshot is written after this many deltas, so reading state stays cheap.
pub(super) const MAX_STATE_DELTAS: i64 = 50;

/// State groups kept in memory before the cache starts over.
const STATE_CACHE_GROUPS: usize = 4096;
/// State entries (each some 200 bytes) kept in memory before the cache starts over: a
/// group of a 10,000-member room holds 10,000, and 4,096 of them were gigabytes.
const STATE_CACHE_ENTRIES: usize = 250_000;

/// Recently read state groups (they never change once written), bounded by entries.
#[derive(Debug, Default)]
pub(super) struct StateCache {
    groups: HashMap<i64, std::sync::Arc<StateMap>>,
    entries: usize,
}

impl StateCache {
    fn get(&self, group: i64) -> Option<std::sync::Arc<StateMap>> {
        self.groups.get(&group).cloned()
    }

    /// Keeps `state` unless it alone is over the budget; starts over when full.
    fn insert(&mut self, group: i64, state: std::sync::Arc<StateMap>) {
        if state.len() > STATE_CACHE_ENTRIES {
            return;
        }
        if self.groups.len() >= STATE_CACHE_GROUPS
            || self.entries + state.len() > STATE_CACHE_ENTRIES
        {
            self.groups.clear();
            self.entries = 0;
        }
        self.entries += state.len();
        if let Some(replaced) = self.groups.insert(group, state) {
            self.entries -= replaced.len();
        }
    }
}

/// Key of the advisory lock that serialises event appends across instances.
pub(super) const APPEND_LOCK: i64 = 0x6d78_6e65_7665_6e74;

/// `(type, state_key)` → event id.
pub type StateMap = HashMap<(String, String), String>;

/// The room row.
#[derive(Clone, Debug)]
pub struct RoomRow {
    /// Room version id (`"11"`).
    pub version: String,
    /// The local latest events, the next event's `prev_events`.
    pub extremities: Vec<String>,
    /// Depth of the latest event.
    pub depth: i64,
    /// State group of the current state.
    pub state_group: Option<i64>,
    /// Listed in the public room directory.
    pub published: bool,
}

/// An event as stored.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// Global position.
    pub stream_ordering: i64,
    /// `$…`.
    pub event_id: String,
    /// `!…`.
    pub room_id: String,
    /// The sender.
    pub sender: String,
    /// Event type.
    pub kind: String,
    /// Present for state events.
    pub state_key: Option<String>,
    /// The PDU (redacted once a redaction applies to it).
    pub json: String,
    /// The redaction that redacted it.
    pub redacted_by: Option<String>,
    /// State group before the event.
    pub state_before: Option<i64>,
    /// Device that sent it with a transaction id.
    pub txn_device: Option<String>,
    /// That transaction id.
    pub txn_id: Option<String>,
    /// Origin timestamp.
    pub origin_server_ts: i64,
    /// The event this one relates to (`m.relates_to.event_id`).
    pub relates_to: Option<String>,
    /// How (`m.relates_to.rel_type`).
    pub rel_type: Option<String>,
    /// Kept as state or auth only, out of the timeline ([`NewEvent::outlier`]).
    pub outlier: bool,
}

const EVENT_COLUMNS: &str = "stream_ordering, event_id, room_id, sender, type, state_key, json, \
    redacted_by, state_before, txn_device, txn_id, origin_server_ts, relates_to, rel_type, outlier";

fn event_row(row: &AnyRow) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        stream_ordering: row.try_get(0)?,
        event_id: row.try_get(1)?,
        room_id: row.try_get(2)?,
        sender: row.try_get(3)?,
        kind: row.try_get(4)?,
        state_key: row.try_get(5)?,
        json: row.try_get(6)?,
        redacted_by: row.try_get(7)?,
        state_before: row.try_get(8)?,
        txn_device: row.try_get(9)?,
        txn_id: row.try_get(10)?,
        origin_server_ts: row.try_get(11)?,
        relates_to: row.try_get(12)?,
        rel_type: row.try_get(13)?,
        outlier: row.try_get::<i64, _>(14)? != 0,
    })
}

/// A user's membership in a room.
#[derive(Clone, Debug)]
pub struct MembershipRow {
    /// `join`, `invite`, `leave`, `ban` or `knock`.
    pub membership: String,
    /// The latest member event.
    pub event_id: String,
    /// Its stream position.
    pub stream_ordering: i64,
    /// Where the current membership began.
    pub since: i64,
    /// Whether the user was ever joined.
    pub ever_joined: bool,
}

/// An event to append, already built, signed and authorised.
#[derive(Debug)]
pub struct NewEvent<'a> {
    /// `$…`.
    pub event_id: &'a str,
    /// `!…`.
    pub room_id: &'a str,
    /// The sender.
    pub sender: &'a str,
    /// Event type.
    pub kind: &'a str,
    /// Present for state events.
    pub state_key: Option<&'a str>,
    /// Depth.
    pub depth: i64,
    /// Origin timestamp.
    pub origin_server_ts: i64,
    /// The signed PDU.
    pub json: &'a str,
    /// For membership events: the new membership.
    pub membership: Option<&'a str>,
    /// `m.relates_to.event_id` and `rel_type`.
    pub relation: Option<(&'a str, &'a str)>,
    /// The event this one redacts, with the target's redacted JSON to store.
    pub redaction: Option<(&'a str, &'a str)>,
    /// `(device, txn_id)` of the sending device.
    pub txn: Option<(&'a str, &'a str)>,
    /// The room's state group before this event.
    pub state_before: Option<i64>,
    /// The notifications its recipients' push rules decided on.
    pub push_actions: &'a [super::push::PushAction],
    /// Kept as state or auth only, out of the timeline (a remote room's state at a join).
    pub outlier: bool,
    /// For an event on a fork of the room's history: its branch's state and the resolved
    /// state after it (then `state_before` is the room's current group, the base of both).
    pub resolution: Option<&'a super::Resolution>,
}

impl Store {
    /// Creates the room row (before its create event is appended).
    pub async fn insert_room(
        &self,
        room_id: &str,
        version: &str,
        creator: &str,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4)",
        )
        .bind(room_id)
        .bind(version)
        .bind(creator)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The room, if this server knows it.
    pub async fn room(&self, room_id: &str) -> Result<Option<RoomRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT room_version, extremities, depth, state_group, published FROM rooms WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let extremities: String = row.try_get(1)?;
            Ok(RoomRow {
                version: row.try_get(0)?,
                extremities: serde_json::from_str(&extremities)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                depth: row.try_get(2)?,
                state_group: row.try_get(3)?,
                published: row.try_get::<i64, _>(4)? != 0,
            })
        })
        .transpose()
    }

    /// Lists or unlists the room in the public directory.
    pub async fn set_room_published(&self, room_id: &str, on: bool) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE rooms SET published = $1 WHERE room_id = $2")
            .bind(i64::from(on))
            .bind(room_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Appends an event: stream position, state snapshot, current state, membership, the
    /// room's extremities and the sender's transaction id, all in one transaction.
    ///
    /// `None` (and nothing written) when the room's extremities are no longer `built_on`:
    /// another instance appended meanwhile, and the event must be built again.
    pub async fn append_event(
        &self,
        event: &NewEvent<'_>,
        built_on: &[String],
    ) -> Result<Option<i64>, sqlx::Error> {
        // SQLite has one writer: queue here rather than fail with SQLITE_BUSY.
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(APPEND_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let built_on =
            serde_json::to_string(built_on).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let extremities = match event.resolution {
            Some(resolution) => serde_json::to_string(&resolution.extremities),
            None => serde_json::to_string(&[event.event_id]),
        }
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        // Writing first: on SQLite a transaction that read before writing cannot take the
        // write lock once another connection has committed (SQLITE_BUSY_SNAPSHOT).
        let moved = sqlx::query(
            "UPDATE rooms SET extremities = $1, depth = $2 WHERE room_id = $3 AND extremities = $4",
        )
        .bind(extremities)
        .bind(event.depth)
        .bind(event.room_id)
        .bind(built_on)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let stream: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(stream_ordering), 0) + 1 FROM events")
                .fetch_one(&mut *tx)
                .await?;
        // The room's latest event, and its latest that moves it up room lists (sliding sync).
        let bumps = super::sliding_sync::is_bump_type(event.kind);
        sqlx::query(
            "UPDATE rooms SET latest_stream = $1, \
             bump_stream = CASE WHEN $2 THEN $1 ELSE bump_stream END WHERE room_id = $3",
        )
        .bind(stream)
        .bind(bumps)
        .bind(event.room_id)
        .execute(&mut *tx)
        .await?;
        let (relates_to, rel_type) = event.relation.unzip();
        let (txn_device, txn_id) = event.txn.unzip();
        let state_before = match event.resolution {
            Some(resolution) => Some(
                super::forks::group_for(
                    &mut tx,
                    event.room_id,
                    event.state_before,
                    &resolution.previous,
                    &resolution.state_before,
                )
                .await?,
            ),
            None => event.state_before,
        };
        sqlx::query(
            "INSERT INTO events (stream_ordering, event_id, room_id, sender, type, state_key, \
             depth, origin_server_ts, json, state_before, relates_to, rel_type, txn_device, txn_id, \
             outlier) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(stream)
        .bind(event.event_id)
        .bind(event.room_id)
        .bind(event.sender)
        .bind(event.kind)
        .bind(event.state_key)
        .bind(event.depth)
        .bind(event.origin_server_ts)
        .bind(event.json)
        .bind(state_before)
        .bind(relates_to)
        .bind(rel_type)
        .bind(txn_device)
        .bind(txn_id)
        .bind(i64::from(event.outlier))
        .execute(&mut *tx)
        .await?;

        let mut state_group = event.state_before;
        if let Some(resolution) = event.resolution {
            state_group = Some(
                super::forks::apply(
                    &mut tx,
                    event.room_id,
                    event.state_before,
                    stream,
                    resolution,
                )
                .await?,
            );
        } else if let Some(state_key) = event.state_key {
            state_group = Some(
                new_state_group(
                    &mut tx,
                    event.room_id,
                    event.state_before,
                    (event.kind, state_key, event.event_id),
                )
                .await?,
            );
            sqlx::query(
                "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id",
            )
            .bind(event.room_id)
            .bind(event.kind)
            .bind(state_key)
            .bind(event.event_id)
            .execute(&mut *tx)
            .await?;
            if let Some(membership) = event.membership {
                upsert_membership(
                    &mut tx,
                    event.room_id,
                    (state_key, membership, event.event_id),
                    stream,
                )
                .await?;
            }
        }
        if let Some((target, redacted_json)) = event.redaction {
            sqlx::query(
                "UPDATE events SET json = $1, redacted_by = $2 WHERE event_id = $3 AND room_id = $4",
            )
            .bind(redacted_json)
            .bind(event.event_id)
            .bind(target)
            .bind(event.room_id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE rooms SET state_group = $1 WHERE room_id = $2")
            .bind(state_group)
            .bind(event.room_id)
            .execute(&mut *tx)
            .await?;
        if let (Some((device, txn_id)), Some(sender)) = (event.txn, Some(event.sender)) {
            sqlx::query(
                "INSERT INTO transaction_ids (user_id, device_id, room_id, txn_id, event_id) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(sender)
            .bind(device)
            .bind(event.room_id)
            .bind(txn_id)
            .bind(event.event_id)
            .execute(&mut *tx)
            .await?;
        }
        super::push::insert_push_actions(
            &mut tx,
            (
                event.room_id,
                event.event_id,
                stream,
                event.origin_server_ts,
            ),
            event.push_actions,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(stream))
    }

    /// The event a device already sent with this transaction id.
    pub async fn txn_event(
        &self,
        user_id: &str,
        device_id: &str,
        room_id: &str,
        txn_id: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT event_id FROM transaction_ids WHERE user_id = $1 AND device_id = $2 AND room_id = $3 AND txn_id = $4",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(room_id)
        .bind(txn_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// State as of a state group.
    pub async fn state_of_group(&self, group: Option<i64>) -> Result<StateMap, sqlx::Error> {
        Ok(self.shared_state_group(group).await?.as_ref().clone())
    }

    /// State as of a state group, shared with the cache (groups never change, so a
    /// lookup needs no copy of a large room's state).
    pub async fn shared_state_group(
        &self,
        group: Option<i64>,
    ) -> Result<std::sync::Arc<StateMap>, sqlx::Error> {
        let Some(id) = group else {
            return Ok(std::sync::Arc::default());
        };
        let cache = || {
            self.state_cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(state) = cache().get(id) {
            return Ok(state);
        }
        let state = std::sync::Arc::new(self.read_state_group(id).await?);
        cache().insert(id, state.clone());
        Ok(state)
    }

    async fn read_state_group(&self, group: i64) -> Result<StateMap, sqlx::Error> {
        let group = Some(group);
        let mut state = StateMap::new();
        let mut next = group;
        while let Some(id) = next {
            let rows = sqlx::query(
                "SELECT type, state_key, event_id FROM state_group_entries WHERE group_id = $1",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                state
                    .entry((row.try_get(0)?, row.try_get(1)?))
                    .or_insert(row.try_get(2)?);
            }
            next = sqlx::query_scalar("SELECT parent FROM state_groups WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .flatten();
        }
        Ok(state)
    }

    /// The room's current state.
    pub async fn current_state(&self, room_id: &str) -> Result<StateMap, sqlx::Error> {
        let rows =
            sqlx::query("SELECT type, state_key, event_id FROM current_state WHERE room_id = $1")
                .bind(room_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| Ok(((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?)))
            .collect()
    }

    /// The room's current state events of one type (its space children, say), at most
    /// `limit` of them.
    pub async fn current_state_of_type(
        &self,
        room_id: &str,
        kind: &str,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN \
             (SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2 \
             ORDER BY state_key LIMIT $3)"
        ))
        .bind(room_id)
        .bind(kind)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_row).collect()
    }

    /// One piece of the room's current state.
    pub async fn current_state_event(
        &self,
        room_id: &str,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<StoredEvent>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = \
             (SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3)"
        ))
        .bind(room_id)
        .bind(kind)
        .bind(state_key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(event_row).transpose()
    }

    /// An event by id.
    pub async fn event(&self, event_id: &str) -> Result<Option<StoredEvent>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1"
        ))
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(event_row).transpose()
    }

    /// Events by id, in stream order (unknown ids are left out).
    pub async fn events(&self, event_ids: &[String]) -> Result<Vec<StoredEvent>, sqlx::Error> {
        self.events_where_in("event_id", event_ids).await
    }

    /// Events whose `column` is one of `values`, in stream order.
    async fn events_where_in(
        &self,
        column: &'static str,
        values: &[String],
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let mut events = Vec::with_capacity(values.len());
        for chunk in values.chunks(100) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE {column} IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for value in chunk {
                query = query.bind(value);
            }
            for row in query.fetch_all(&self.pool).await? {
                events.push(event_row(&row)?);
            }
        }
        events.sort_by_key(|e| e.stream_ordering);
        Ok(events)
    }

    /// Up to `limit` events of a room strictly after `after` and at most `upto`, oldest first
    /// (`forward`), or strictly before `before` and after `after`, newest first (backward).
    pub async fn room_events(
        &self,
        room_id: &str,
        after: i64,
        before_or_upto: i64,
        forward: bool,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let sql = if forward {
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering > $2 \
                 AND stream_ordering <= $3 AND outlier = 0 ORDER BY stream_ordering ASC LIMIT $4"
            )
        } else {
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering > $2 \
                 AND stream_ordering < $3 AND outlier = 0 ORDER BY stream_ordering DESC LIMIT $4"
            )
        };
        let rows = sqlx::query(&sql)
            .bind(room_id)
            .bind(after)
            .bind(before_or_upto)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_row).collect()
    }

    /// The latest `limit` events that set one piece of a room's state, oldest first.
    pub async fn state_history(
        &self,
        room_id: &str,
        (kind, state_key): (&str, &str),
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND type = $2 \
             AND state_key = $3 ORDER BY stream_ordering DESC LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(room_id)
            .bind(kind)
            .bind(state_key)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut events = rows.iter().map(event_row).collect::<Result<Vec<_>, _>>()?;
        events.reverse();
        Ok(events)
    }

    /// Events of every room after a stream position, oldest first.
    pub async fn events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_ordering > $1 \
             ORDER BY stream_ordering ASC LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_row).collect()
    }

    /// Events that relate to `event_id` (optionally of one relation type), oldest first.
    pub async fn relations(
        &self,
        event_id: &str,
        rel_type: Option<&str>,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let rows = match rel_type {
            Some(rel_type) => {
                sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE relates_to = $1 AND rel_type = $2 \
                     ORDER BY stream_ordering ASC"
                ))
                .bind(event_id)
                .bind(rel_type)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE relates_to = $1 ORDER BY stream_ordering ASC"
                ))
                .bind(event_id)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(event_row).collect()
    }

    /// Every event relating to one of `event_ids`, oldest first.
    pub async fn relations_of(
        &self,
        event_ids: &[String],
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        self.events_where_in("relates_to", event_ids).await
    }

    /// Thread roots of a room whose latest reply is before `before`, most recently active
    /// first: `(root event id, stream position of its latest reply)`.
    pub async fn thread_roots(
        &self,
        room_id: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT relates_to, MAX(stream_ordering) AS latest FROM events \
             WHERE room_id = $1 AND rel_type = 'm.thread' GROUP BY relates_to \
             HAVING MAX(stream_ordering) < $2 ORDER BY latest DESC LIMIT $3",
        )
        .bind(room_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// The highest stream position persisted.
    pub async fn max_stream_ordering(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COALESCE(MAX(stream_ordering), 0) FROM events")
            .fetch_one(&self.pool)
            .await
    }

    /// A user's membership in a room: `(membership, event id, stream position)`.
    pub async fn membership(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Option<(String, String, i64)>, sqlx::Error> {
        Ok(self
            .membership_row(room_id, user_id)
            .await?
            .map(|m| (m.membership, m.event_id, m.stream_ordering)))
    }

    /// Everything stored about a user's membership in a room.
    pub async fn membership_row(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Option<MembershipRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT membership, event_id, stream_ordering, membership_since, ever_joined \
             FROM memberships WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(MembershipRow {
                membership: row.try_get(0)?,
                event_id: row.try_get(1)?,
                stream_ordering: row.try_get(2)?,
                since: row.try_get(3)?,
                ever_joined: row.try_get::<i64, _>(4)? != 0,
            })
        })
        .transpose()
    }

    /// Every room the user has a membership in and has not forgotten:
    /// `(room, membership, stream position where that membership began)`.
    pub async fn user_rooms(
        &self,
        user_id: &str,
    ) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT room_id, membership, membership_since FROM memberships \
             WHERE user_id = $1 AND forgotten = 0 ORDER BY room_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }

    /// [`Store::user_rooms`] plus the rooms forgotten after leaving since stream position
    /// `since`: an incremental sync still reports that leave once.
    pub async fn sync_rooms(
        &self,
        user_id: &str,
        since: Option<i64>,
    ) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
        let Some(since) = since else {
            return self.user_rooms(user_id).await;
        };
        let rows = sqlx::query(
            "SELECT room_id, membership, membership_since FROM memberships \
             WHERE user_id = $1 AND (forgotten = 0 OR membership_since > $2) ORDER BY room_id",
        )
        .bind(user_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }

    /// The people who became joined members of a room the user is joined to within
    /// `(since, upto]`, and everyone in the rooms the user joined then: whose presence an
    /// incremental sync owes the user although it did not change.
    pub async fn arrivals_since(
        &self,
        user_id: &str,
        since: i64,
        upto: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT other.user_id FROM memberships mine \
             JOIN memberships other ON other.room_id = mine.room_id \
             WHERE mine.user_id = $1 AND mine.membership = 'join' \
             AND other.membership = 'join' AND mine.membership_since <= $3 \
             AND other.membership_since <= $3 \
             AND (other.membership_since > $2 OR mine.membership_since > $2)",
        )
        .bind(user_id)
        .bind(since)
        .bind(upto)
        .fetch_all(&self.pool)
        .await
    }

    /// Members of a room with a given membership.
    pub async fn room_members(
        &self,
        room_id: &str,
        membership: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT user_id FROM memberships WHERE room_id = $1 AND membership = $2 ORDER BY user_id",
        )
        .bind(room_id)
        .bind(membership)
        .fetch_all(&self.pool)
        .await
    }

    /// Whether anyone has the membership in the room (without reading the member list).
    pub async fn has_member_with(
        &self,
        room_id: &str,
        membership: &str,
    ) -> Result<bool, sqlx::Error> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM memberships WHERE room_id = $1 AND membership = $2 LIMIT 1",
        )
        .bind(room_id)
        .bind(membership)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Whether any user of `server` has `membership` in the room.
    pub async fn has_member_of_server(
        &self,
        room_id: &str,
        membership: &str,
        server: &str,
    ) -> Result<bool, sqlx::Error> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM memberships WHERE room_id = $1 AND membership = $2 \
             AND user_id LIKE $3 LIMIT 1",
        )
        .bind(room_id)
        .bind(membership)
        .bind(format!("%:{server}"))
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Hides a left room from the user's sync and room lists.
    pub async fn forget_room(&self, room_id: &str, user_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE memberships SET forgotten = 1 WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Writes the state group after `entry` on top of `parent`: a delta, or a full snapshot when
/// the delta chain has grown long.
/// Records `user_id`'s membership in a room as of stream position `stream`.
pub(super) async fn upsert_membership(
    tx: &mut Transaction<'static, Any>,
    room_id: &str,
    (user_id, membership, event_id): (&str, &str, &str),
    stream: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering, \
         membership_since, ever_joined) VALUES ($1, $2, $3, $4, $5, $5, $6) \
         ON CONFLICT (room_id, user_id) DO UPDATE SET \
         membership_since = CASE WHEN memberships.membership = excluded.membership \
             THEN memberships.membership_since ELSE excluded.stream_ordering END, \
         membership = excluded.membership, event_id = excluded.event_id, \
         stream_ordering = excluded.stream_ordering, forgotten = 0, \
         ever_joined = CASE WHEN memberships.ever_joined = 1 OR excluded.ever_joined = 1 \
             THEN 1 ELSE 0 END",
    )
    .bind(room_id)
    .bind(user_id)
    .bind(membership)
    .bind(event_id)
    .bind(stream)
    .bind(i64::from(membership == "join"))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn new_state_group(
    tx: &mut Transaction<'static, Any>,
    room_id: &str,
    parent: Option<i64>,
    (kind, state_key, event_id): (&str, &str, &str),
) -> Result<i64, sqlx::Error> {
    let id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM state_groups")
        .fetch_one(&mut **tx)
        .await?;
    let parent_depth: Option<i64> = match parent {
        Some(parent) => {
            sqlx::query_scalar("SELECT depth FROM state_groups WHERE id = $1")
                .bind(parent)
                .fetch_optional(&mut **tx)
                .await?
        }
        None => None,
    };
    let full = parent_depth.is_some_and(|d| d + 1 >= MAX_STATE_DELTAS);
    let (stored_parent, depth) = match parent_depth {
        Some(d) if !full => (parent, d + 1),
        _ => (None, 0),
    };
    sqlx::query("INSERT INTO state_groups (id, room_id, parent, depth) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(room_id)
        .bind(stored_parent)
        .bind(depth)
        .execute(&mut **tx)
        .await?;
    if full {
        // The current state is the parent's state: copy it, then apply the entry below.
        sqlx::query(
            "INSERT INTO state_group_entries (group_id, type, state_key, event_id) \
             SELECT $1, type, state_key, event_id FROM current_state WHERE room_id = $2",
        )
        .bind(id)
        .bind(room_id)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (group_id, type, state_key) DO UPDATE SET event_id = excluded.event_id",
    )
    .bind(id)
    .bind(kind)
    .bind(state_key)
    .bind(event_id)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

impl Store {
    /// Rooms listed in the public directory.
    pub async fn published_rooms(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT room_id FROM rooms WHERE published = 1 ORDER BY room_id")
            .fetch_all(&self.pool)
            .await
    }

    /// A room's events nearest to `ts`, nearest first: from it onwards (`forward`) or back
    /// from it, no later than stream position `upto`; `limit` of them after skipping `skip`.
    pub async fn events_near_ts(
        &self,
        room_id: &str,
        ts: i64,
        forward: bool,
        upto: i64,
        (skip, limit): (i64, i64),
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let sql = if forward {
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND origin_server_ts >= $2 \
                 AND stream_ordering <= $3 AND outlier = 0 ORDER BY origin_server_ts ASC, stream_ordering ASC \
                 LIMIT $4 OFFSET $5"
            )
        } else {
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND origin_server_ts <= $2 \
                 AND stream_ordering <= $3 AND outlier = 0 ORDER BY origin_server_ts DESC, stream_ordering DESC \
                 LIMIT $4 OFFSET $5"
            )
        };
        let rows = sqlx::query(&sql)
            .bind(room_id)
            .bind(ts)
            .bind(upto)
            .bind(limit)
            .bind(skip)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_row).collect()
    }
}

impl Store {
    /// Messages in these rooms whose JSON contains `needle` (lower-cased), newest first, up
    /// to stream position `before`: candidates for message search.
    pub async fn message_candidates(
        &self,
        room_ids: &[String],
        needle: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        if room_ids.is_empty() {
            return Ok(Vec::new());
        }
        let escaped = needle
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let placeholders: Vec<String> = (4..4 + room_ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE type = 'm.room.message' AND redacted_by IS NULL \
             AND LOWER(json) LIKE $1 ESCAPE '\\' AND stream_ordering < $2 AND room_id IN ({}) \
             ORDER BY stream_ordering DESC LIMIT $3",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql)
            .bind(format!("%{escaped}%"))
            .bind(before)
            .bind(limit);
        for room in room_ids {
            query = query.bind(room);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(event_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn state(entries: usize) -> Arc<StateMap> {
        Arc::new(
            (0..entries)
                .map(|i| {
                    (
                        ("m.room.member".to_owned(), format!("@u{i}:x")),
                        format!("$e{i}"),
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn the_state_cache_stays_within_its_entry_budget() {
        let mut cache = StateCache::default();
        let large = STATE_CACHE_ENTRIES / 10;
        for group in 0..25 {
            cache.insert(group, state(large));
            assert!(cache.entries <= STATE_CACHE_ENTRIES, "{}", cache.entries);
            assert_eq!(
                cache.entries,
                cache.groups.values().map(|s| s.len()).sum::<usize>()
            );
            assert!(cache.get(group).is_some(), "the latest group is kept");
        }
        // The same group again is counted once.
        cache.insert(24, state(large));
        assert_eq!(
            cache.entries,
            cache.groups.values().map(|s| s.len()).sum::<usize>()
        );
        // A group larger than the whole budget is read but not kept.
        cache.insert(1_000, state(STATE_CACHE_ENTRIES + 1));
        assert!(cache.get(1_000).is_none());
        assert!(cache.get(24).is_some());
    }
}
