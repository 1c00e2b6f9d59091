//! The federation outbox: events queued per destination server, and each destination's
//! back-off.

use sqlx::Row;

use super::Store;

impl Store {
    /// Queues `event_id` for each of `destinations`.
    pub async fn queue_for_servers(
        &self,
        event_id: &str,
        destinations: &[String],
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let destinations: Vec<&str> = destinations.iter().map(String::as_str).collect();
        self.enqueue(
            "INSERT INTO federation_outbox (destination, event_id, created_ts) VALUES ($1, $2, $3)",
            event_id,
            &destinations,
            now_ms,
        )
        .await
    }

    /// Queues `edu` (JSON) for each of `destinations`, to be kept until acknowledged.
    pub async fn queue_edu_for_servers(
        &self,
        edu: &str,
        destinations: &[&str],
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        self.enqueue(
            "INSERT INTO federation_edu_outbox (destination, edu, created_ts) VALUES ($1, $2, $3)",
            edu,
            destinations,
            now_ms,
        )
        .await
    }

    /// Runs `sql` (`destination, value, created_ts`) once per destination, in one transaction.
    async fn enqueue(
        &self,
        sql: &str,
        value: &str,
        destinations: &[&str],
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        if destinations.is_empty() {
            return Ok(());
        }
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        for destination in destinations {
            sqlx::query(sql)
                .bind(*destination)
                .bind(value)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// The oldest kept EDUs for `destination`: `(queue id, EDU JSON)`.
    pub async fn queued_edus_for(
        &self,
        destination: &str,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, sqlx::Error> {
        self.queue_head(
            "SELECT id, edu FROM federation_edu_outbox WHERE destination = $1 ORDER BY id LIMIT $2",
            destination,
            limit,
        )
        .await
    }

    /// `(queue id, value)` rows of one destination's queue, oldest first.
    async fn queue_head(
        &self,
        sql: &str,
        destination: &str,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, sqlx::Error> {
        let rows = sqlx::query(sql)
            .bind(destination)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// Removes the kept EDUs `destination` acknowledged (queue ids up to `upto`).
    pub async fn edus_sent_to(&self, destination: &str, upto: i64) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        sqlx::query("DELETE FROM federation_edu_outbox WHERE destination = $1 AND id <= $2")
            .bind(destination)
            .bind(upto)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops kept EDUs older than `before_ms` (for servers gone for good).
    pub async fn prune_edu_outbox(&self, before_ms: i64) -> Result<u64, sqlx::Error> {
        let _writer = self.writer().await;
        let done = sqlx::query("DELETE FROM federation_edu_outbox WHERE created_ts < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Destinations with queued events that are not backing off at `now_ms`.
    pub async fn due_destinations(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT o.destination FROM (SELECT destination FROM federation_outbox \
             UNION SELECT destination FROM federation_edu_outbox) o \
             LEFT JOIN federation_destinations d ON d.destination = o.destination \
             WHERE d.retry_at IS NULL OR d.retry_at <= $1 LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Whether `destination` is backing off at `now_ms`.
    pub async fn backing_off(&self, destination: &str, now_ms: i64) -> Result<bool, sqlx::Error> {
        let retry_at: Option<i64> = sqlx::query_scalar(
            "SELECT retry_at FROM federation_destinations WHERE destination = $1",
        )
        .bind(destination)
        .fetch_optional(&self.pool)
        .await?;
        Ok(retry_at.is_some_and(|at| at > now_ms))
    }

    /// Takes or renews the lease on sending `destination`'s queued events for `holder`
    /// until `until_ms`: false while another holder's lease runs.
    pub async fn claim_destination(
        &self,
        destination: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let _writer = self.writer().await;
        let done = sqlx::query(
            "INSERT INTO federation_sender_leases (destination, holder, until_ts) \
             VALUES ($1, $2, $3) ON CONFLICT (destination) DO UPDATE \
             SET holder = excluded.holder, until_ts = excluded.until_ts \
             WHERE federation_sender_leases.holder = excluded.holder \
             OR federation_sender_leases.until_ts <= $4",
        )
        .bind(destination)
        .bind(holder)
        .bind(until_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The oldest queued events for `destination`: `(queue id, event id)`.
    pub async fn queued_for(
        &self,
        destination: &str,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, sqlx::Error> {
        self.queue_head(
            "SELECT id, event_id FROM federation_outbox WHERE destination = $1 ORDER BY id LIMIT $2",
            destination,
            limit,
        )
        .await
    }

    /// Removes what `destination` acknowledged (queue ids up to `upto`) and ends its back-off.
    pub async fn sent_to(&self, destination: &str, upto: i64) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM federation_outbox WHERE destination = $1 AND id <= $2")
            .bind(destination)
            .bind(upto)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM federation_destinations WHERE destination = $1")
            .bind(destination)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Records a failed send: the destination is not tried again before `retry_at`; the
    /// number of failures in a row so far.
    pub async fn send_failed(
        &self,
        destination: &str,
        retry_at: impl Fn(i64) -> i64,
    ) -> Result<i64, sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        // Written first: a SQLite transaction that read first could not take the write lock.
        sqlx::query(
            "INSERT INTO federation_destinations (destination, failures, retry_at) VALUES ($1, 1, 0) \
             ON CONFLICT (destination) DO UPDATE SET failures = federation_destinations.failures + 1",
        )
        .bind(destination)
        .execute(&mut *tx)
        .await?;
        let failures: i64 = sqlx::query_scalar(
            "SELECT failures FROM federation_destinations WHERE destination = $1",
        )
        .bind(destination)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE federation_destinations SET retry_at = $1 WHERE destination = $2")
            .bind(retry_at(failures))
            .bind(destination)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(failures)
    }
}

impl Store {
    /// Keeps what an inviting server showed of a room this server is not in.
    pub async fn set_remote_invite_state(
        &self,
        room_id: &str,
        user_id: &str,
        stripped: &str,
        inviter_server: &str,
    ) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO remote_invite_state (room_id, user_id, stripped, inviter_server) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, user_id) DO UPDATE SET \
             stripped = excluded.stripped, inviter_server = excluded.inviter_server",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(stripped)
        .bind(inviter_server)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Corrects the version of a room this server holds no create event of.
    pub async fn set_room_version(&self, room_id: &str, version: &str) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        sqlx::query(
            "UPDATE rooms SET room_version = $1 WHERE room_id = $2 AND NOT EXISTS \
             (SELECT 1 FROM current_state WHERE room_id = $2 AND type = 'm.room.create')",
        )
        .bind(version)
        .bind(room_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `(stripped state JSON, inviting server)` of a remote invite.
    pub async fn remote_invite_state(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT stripped, inviter_server FROM remote_invite_state WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    }
}
