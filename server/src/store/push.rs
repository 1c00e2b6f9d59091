//! Push: the notifications push rules decided on, and the pushers that deliver them.

use std::collections::HashMap;

use sqlx::{Any, Row, Transaction};

use super::Store;

/// A notification for one recipient.
#[derive(Clone, Debug)]
pub struct PushAction {
    /// The recipient.
    pub user_id: String,
    /// The actions' JSON.
    pub actions: String,
    /// Whether a highlight tweak was set.
    pub highlight: bool,
}

/// One pusher as stored.
#[derive(Clone, Debug)]
pub struct PusherRow {
    /// Owner.
    pub user_id: String,
    /// App ID.
    pub app_id: String,
    /// Push key.
    pub pushkey: String,
    /// `http`.
    pub kind: String,
    /// Shown to the user.
    pub app_display_name: String,
    /// Shown to the user.
    pub device_display_name: String,
    /// Which rules apply (unused beyond echoing).
    pub profile_tag: Option<String>,
    /// Preferred language.
    pub lang: String,
    /// `data` object JSON (holds `url` and `format`).
    pub data: String,
    /// When it was set, ms.
    pub created_ts: i64,
    /// The device that set it (none for pushers from before devices owned them).
    pub device_id: Option<String>,
}

/// One notification as `/notifications` lists it.
#[derive(Clone, Debug)]
pub struct NotificationRow {
    /// The room.
    pub room_id: String,
    /// The event.
    pub event_id: String,
    /// Its stream position (pagination token).
    pub stream_ordering: i64,
    /// Actions JSON.
    pub actions: String,
    /// When it was made.
    pub ts: i64,
    /// Whether the user's read receipt is past it.
    pub read: bool,
}

fn pusher_row(r: &sqlx::any::AnyRow) -> Result<PusherRow, sqlx::Error> {
    Ok(PusherRow {
        user_id: r.try_get(0)?,
        app_id: r.try_get(1)?,
        pushkey: r.try_get(2)?,
        kind: r.try_get(3)?,
        app_display_name: r.try_get(4)?,
        device_display_name: r.try_get(5)?,
        profile_tag: r.try_get(6)?,
        lang: r.try_get(7)?,
        data: r.try_get(8)?,
        created_ts: r.try_get(9)?,
        device_id: r.try_get(10)?,
    })
}

const PUSHER_COLUMNS: &str = "user_id, app_id, pushkey, kind, app_display_name, \
    device_display_name, profile_tag, lang, data, created_ts, device_id";

/// The stream position up to which a user has read a room: their latest unthreaded or
/// main-timeline receipt (a receipt in a thread reads only that thread), or their join when
/// that is later (what came before the join is not theirs to read). `row` names the row
/// (of notifications or summaries) whose user and room are meant.
fn read_upto(row: &str) -> String {
    format!(
        "(SELECT COALESCE(MAX(t.upto), 0) FROM ( \
         SELECT MAX(e.stream_ordering) AS upto FROM receipts r JOIN events e \
         ON e.event_id = r.event_id WHERE r.room_id = {row}.room_id AND r.user_id = {row}.user_id \
         AND r.thread_id IN ('', 'main') \
         UNION ALL SELECT m.membership_since AS upto FROM memberships m \
         WHERE m.room_id = {row}.room_id AND m.user_id = {row}.user_id AND m.membership = 'join') t)"
    )
}

/// Whether the row's user is still joined to its room.
fn joined(row: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM memberships j WHERE j.room_id = {row}.room_id \
         AND j.user_id = {row}.user_id AND j.membership = 'join')"
    )
}

/// Records one event's notifications, in the transaction that appends it (a sync that sees
/// the event sees its unread counts too).
pub(super) async fn insert_push_actions(
    tx: &mut Transaction<'_, Any>,
    (room_id, event_id, stream_ordering, ts): (&str, &str, i64, i64),
    actions: &[PushAction],
) -> Result<(), sqlx::Error> {
    // Three parameters a row, the event's own bound once, and small statements: SQLite
    // finds each parameter by a linear scan of the statement's, so binding costs the square
    // of their number (7 a row in chunks of 500 was a fifth of a large room's send).
    for chunk in actions.chunks(100) {
        let mut sql = String::from(
            "INSERT INTO event_push_actions (user_id, room_id, event_id, stream_ordering, \
             highlight, actions, ts) SELECT v.column1, $1, $2, $3, v.column2, v.column3, $4 \
             FROM (VALUES ",
        );
        for i in 0..chunk.len() {
            let b = 4 + i * 3;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("(${}, ${}, ${})", b + 1, b + 2, b + 3));
        }
        // `WHERE true` tells SQLite's parser the ON CONFLICT belongs to the INSERT.
        sql.push_str(
            ") AS v WHERE true ON CONFLICT (user_id, room_id, stream_ordering) DO NOTHING",
        );
        let mut query = sqlx::query(&sql)
            .bind(room_id)
            .bind(event_id)
            .bind(stream_ordering)
            .bind(ts);
        for action in chunk {
            query = query
                .bind(action.user_id.as_str())
                .bind(i64::from(action.highlight))
                .bind(action.actions.as_str());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

impl Store {
    /// `(notifications, highlights)` after each user's read receipt in a room (users with
    /// none are left out).
    pub async fn notification_counts(
        &self,
        room_id: &str,
        users: &[&str],
    ) -> Result<HashMap<String, (i64, i64)>, sqlx::Error> {
        let mut counts = HashMap::new();
        if users.is_empty() {
            return Ok(counts);
        }
        let placeholders: Vec<String> = (2..users.len() + 2).map(|i| format!("${i}")).collect();
        let users_in = placeholders.join(", ");
        let sql = format!(
            "SELECT c.user_id, CAST(SUM(c.n) AS BIGINT), CAST(SUM(c.h) AS BIGINT) FROM ( \
             SELECT a.user_id, COUNT(*) AS n, COALESCE(SUM(a.highlight), 0) AS h \
             FROM event_push_actions a WHERE a.room_id = $1 AND a.user_id IN ({users_in}) \
             AND a.stream_ordering > {read} GROUP BY a.user_id \
             UNION ALL SELECT a.user_id, a.notif_count AS n, a.highlight_count AS h \
             FROM event_push_summary a WHERE a.room_id = $1 AND a.user_id IN ({users_in}) \
             AND a.stream_ordering > {read}) c GROUP BY c.user_id",
            read = read_upto("a"),
        );
        let mut query = sqlx::query(&sql).bind(room_id);
        for user in users {
            query = query.bind(*user);
        }
        for row in query.fetch_all(&self.pool).await? {
            counts.insert(row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?));
        }
        Ok(counts)
    }

    /// Unread notifications across the rooms the user is in (the badge a push shows).
    pub async fn total_unread(&self, user_id: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(&format!(
            "SELECT CAST((SELECT COUNT(*) FROM event_push_actions a \
             WHERE a.user_id = $1 AND {joined} AND a.stream_ordering > {read}) \
             + (SELECT COALESCE(SUM(a.notif_count), 0) FROM event_push_summary a \
             WHERE a.user_id = $1 AND {joined} AND a.stream_ordering > {read}) AS BIGINT)",
            joined = joined("a"),
            read = read_upto("a"),
        ))
        .bind(user_id)
        .fetch_one(&self.pool)
        .await
    }

    /// A user's notifications, newest first, before `before` (a stream position).
    pub async fn notifications(
        &self,
        user_id: &str,
        before: Option<i64>,
        limit: i64,
        only_highlight: bool,
    ) -> Result<Vec<NotificationRow>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT a.room_id, a.event_id, a.stream_ordering, a.actions, a.ts, \
             CASE WHEN a.stream_ordering <= {read} THEN 1 ELSE 0 END \
             FROM event_push_actions a WHERE a.user_id = $1 AND a.stream_ordering < $2 \
             AND ($3 = 0 OR a.highlight = 1) ORDER BY a.stream_ordering DESC LIMIT $4",
            read = read_upto("a"),
        ))
        .bind(user_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(only_highlight))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NotificationRow {
                    room_id: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    stream_ordering: r.try_get(2)?,
                    actions: r.try_get(3)?,
                    ts: r.try_get(4)?,
                    read: r.try_get::<i64, _>(5)? != 0,
                })
            })
            .collect()
    }

    /// Deletes up to `limit` notifications older than `before_ts` that no count needs any
    /// more: read ones, and those of users no longer joined to the room; how many went.
    pub async fn prune_push_actions(&self, before_ts: i64, limit: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(&format!(
            "DELETE FROM event_push_actions WHERE (user_id, room_id, stream_ordering) IN ( \
             SELECT a.user_id, a.room_id, a.stream_ordering FROM event_push_actions a WHERE a.ts < $1 \
             AND (a.stream_ordering <= {read} OR NOT {joined}) LIMIT $2)",
            read = read_upto("a"),
            joined = joined("a"),
        ))
        .bind(before_ts)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Folds up to `limit` unread notifications older than `before_ts` into their user's
    /// summary of the room, which counts them until a receipt passes the newest of them (a
    /// receipt among them leaves them all counted); how many rows went.
    pub async fn fold_push_actions(&self, before_ts: i64, limit: i64) -> Result<u64, sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        // PostgreSQL returns only the rows this transaction deleted, so two instances
        // folding at once never count a row twice.
        let rows = sqlx::query(&format!(
            "DELETE FROM event_push_actions WHERE (user_id, room_id, stream_ordering) IN ( \
             SELECT a.user_id, a.room_id, a.stream_ordering FROM event_push_actions a WHERE a.ts < $1 \
             AND a.stream_ordering > {read} AND {joined} LIMIT $2) \
             RETURNING user_id, room_id, stream_ordering, highlight",
            read = read_upto("a"),
            joined = joined("a"),
        ))
        .bind(before_ts)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut folded: HashMap<(String, String), (i64, i64, i64)> = HashMap::new();
        for row in &rows {
            let key = (row.try_get(0)?, row.try_get(1)?);
            let (stream_ordering, highlight): (i64, i64) = (row.try_get(2)?, row.try_get(3)?);
            let entry = folded.entry(key).or_insert((stream_ordering, 0, 0));
            entry.0 = entry.0.max(stream_ordering);
            entry.1 += 1;
            entry.2 += highlight;
        }
        // A summary the user has read since is replaced, not added to.
        let summary = "event_push_summary";
        let sql = format!(
            "INSERT INTO event_push_summary (user_id, room_id, stream_ordering, notif_count, \
             highlight_count) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, room_id) \
             DO UPDATE SET \
             notif_count = CASE WHEN {summary}.stream_ordering > {read} \
               THEN {summary}.notif_count + excluded.notif_count ELSE excluded.notif_count END, \
             highlight_count = CASE WHEN {summary}.stream_ordering > {read} \
               THEN {summary}.highlight_count + excluded.highlight_count \
               ELSE excluded.highlight_count END, \
             stream_ordering = CASE WHEN {summary}.stream_ordering > excluded.stream_ordering \
               THEN {summary}.stream_ordering ELSE excluded.stream_ordering END",
            read = read_upto(summary),
        );
        for ((user_id, room_id), (stream_ordering, count, highlights)) in folded {
            sqlx::query(&sql)
                .bind(user_id)
                .bind(room_id)
                .bind(stream_ordering)
                .bind(count)
                .bind(highlights)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Deletes the summaries no count reads any more: read past, or their user left.
    pub async fn prune_push_summaries(&self) -> Result<u64, sqlx::Error> {
        // The test is on the row itself, not on a list taken first: on PostgreSQL a summary
        // that another instance's fold renewed meanwhile is tested again as it now is.
        let summary = "event_push_summary";
        let done = sqlx::query(&format!(
            "DELETE FROM event_push_summary \
             WHERE {summary}.stream_ordering <= {read} OR NOT {joined}",
            read = read_upto(summary),
            joined = joined(summary),
        ))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// How many pushers a user has.
    pub async fn pusher_count(&self, user_id: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM pushers WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await
    }

    /// A user's pushers.
    pub async fn pushers(&self, user_id: &str) -> Result<Vec<PusherRow>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY created_ts"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pusher_row).collect()
    }

    /// The pushers of any of `users`, by user: one query per 500 users, not one per user
    /// (a send to a large room notifies every member).
    pub async fn pushers_of(
        &self,
        users: &[&str],
    ) -> Result<HashMap<String, Vec<PusherRow>>, sqlx::Error> {
        let mut found: HashMap<String, Vec<PusherRow>> = HashMap::new();
        for chunk in users.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id IN ({}) ORDER BY created_ts",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for user in chunk {
                query = query.bind(*user);
            }
            for row in query.fetch_all(&self.pool).await? {
                let pusher = pusher_row(&row)?;
                found
                    .entry(pusher.user_id.clone())
                    .or_default()
                    .push(pusher);
            }
        }
        Ok(found)
    }

    /// Adds or replaces a pusher; unless `append`, the same app ID and push key are taken
    /// away from every other user.
    pub async fn set_pusher(&self, pusher: &PusherRow, append: bool) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        if !append {
            sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3")
                .bind(&pusher.app_id)
                .bind(&pusher.pushkey)
                .bind(&pusher.user_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(&format!(
            "INSERT INTO pushers ({PUSHER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = excluded.kind, \
             device_id = excluded.device_id, \
             app_display_name = excluded.app_display_name, \
             device_display_name = excluded.device_display_name, \
             profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data"
        ))
        .bind(&pusher.user_id)
        .bind(&pusher.app_id)
        .bind(&pusher.pushkey)
        .bind(&pusher.kind)
        .bind(&pusher.app_display_name)
        .bind(&pusher.device_display_name)
        .bind(pusher.profile_tag.as_deref())
        .bind(&pusher.lang)
        .bind(&pusher.data)
        .bind(pusher.created_ts)
        .bind(pusher.device_id.as_deref())
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Removes a pusher; false when there was none.
    pub async fn delete_pusher(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
    ) -> Result<bool, sqlx::Error> {
        let done =
            sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
                .bind(user_id)
                .bind(app_id)
                .bind(pushkey)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Push rules (account data `m.push_rules`) and profile display names of a room's joined
    /// members and `extra` users: `(user, rules JSON, display name, joined)`.
    pub async fn push_recipients(
        &self,
        room_id: &str,
        extra: Option<&str>,
    ) -> Result<Vec<(String, Option<String>, Option<String>, bool)>, sqlx::Error> {
        // `extra` (an invitee) is read from the accounts, not the room: the invite that
        // makes them a member is not stored yet when its notifications are decided.
        let rows = sqlx::query(
            "SELECT m.user_id, a.content, p.displayname, m.membership FROM memberships m \
             LEFT JOIN account_data a ON a.user_id = m.user_id AND a.room_id = '' \
             AND a.type = 'm.push_rules' \
             LEFT JOIN profiles p ON p.user_id = m.user_id \
             WHERE m.room_id = $1 AND m.membership = 'join' \
             UNION ALL \
             SELECT u.user_id, a.content, p.displayname, 'invite' FROM users u \
             LEFT JOIN account_data a ON a.user_id = u.user_id AND a.room_id = '' \
             AND a.type = 'm.push_rules' \
             LEFT JOIN profiles p ON p.user_id = u.user_id \
             WHERE u.user_id = $2 AND u.deactivated = 0 AND NOT EXISTS (SELECT 1 FROM memberships j \
             WHERE j.room_id = $1 AND j.user_id = u.user_id AND j.membership = 'join')",
        )
        .bind(room_id)
        .bind(extra.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let membership: String = r.try_get(3)?;
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    membership == "join",
                ))
            })
            .collect()
    }
}
