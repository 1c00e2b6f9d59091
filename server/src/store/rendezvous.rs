//! MSC4108 rendezvous sessions, shared by every instance on the database.

use sqlx::Row;

use super::Store;

/// A rendezvous session as last written.
#[derive(Debug)]
pub struct Rendezvous {
    /// The opaque ETag of the current content.
    pub etag: String,
    /// What was last written.
    pub content: String,
    /// When it was written.
    pub modified_ms: i64,
    /// When the session ends.
    pub expires_ms: i64,
}

/// What a conditional write found.
#[derive(Debug, PartialEq, Eq)]
pub enum RendezvousWrite {
    /// Written; the session ends at this time.
    Done(i64),
    /// The session exists but holds other content than the writer last saw.
    Changed,
    /// No such session (or it expired).
    Gone,
}

impl Store {
    /// Opens a session unless `max_live` are open already; expired ones are swept first.
    pub async fn create_rendezvous(
        &self,
        id: &str,
        session: &Rendezvous,
        now_ms: i64,
        max_live: i64,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query("DELETE FROM rendezvous_sessions WHERE expires_ts <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rendezvous_sessions")
            .fetch_one(&self.pool)
            .await?;
        if live >= max_live {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO rendezvous_sessions (id, etag, content, modified_ts, expires_ts) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(&session.etag)
        .bind(&session.content)
        .bind(session.modified_ms)
        .bind(session.expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(true)
    }

    /// A session that has not expired.
    pub async fn rendezvous(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<Rendezvous>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT etag, content, modified_ts, expires_ts FROM rendezvous_sessions \
             WHERE id = $1 AND expires_ts > $2",
        )
        .bind(id)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Rendezvous {
                etag: row.try_get(0)?,
                content: row.try_get(1)?,
                modified_ms: row.try_get(2)?,
                expires_ms: row.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Replaces the content if it is still what `if_match` names.
    pub async fn write_rendezvous(
        &self,
        id: &str,
        if_match: &str,
        (etag, content): (&str, &str),
        now_ms: i64,
    ) -> Result<RendezvousWrite, sqlx::Error> {
        let done: Option<i64> = sqlx::query_scalar(
            "UPDATE rendezvous_sessions SET etag = $1, content = $2, modified_ts = $3 \
             WHERE id = $4 AND etag = $5 AND expires_ts > $3 RETURNING expires_ts",
        )
        .bind(etag)
        .bind(content)
        .bind(now_ms)
        .bind(id)
        .bind(if_match)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(expires_ms) = done {
            return Ok(RendezvousWrite::Done(expires_ms));
        }
        Ok(match self.rendezvous(id, now_ms).await? {
            Some(_) => RendezvousWrite::Changed,
            None => RendezvousWrite::Gone,
        })
    }

    /// Ends a session; whether there was one.
    pub async fn delete_rendezvous(&self, id: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("DELETE FROM rendezvous_sessions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
