//! Reports of events, rooms and users.

use sqlx::Row;

use super::Store;

/// What a report is about and why; exactly one of the three subjects for rooms and users,
/// the room and the event for events.
#[derive(Debug, Default)]
pub struct Report {
    /// The report's number (0 until stored).
    pub id: i64,
    /// When it arrived.
    pub received_ms: i64,
    /// Who reported.
    pub reporter: String,
    /// The room reported, or the room of the event reported.
    pub room_id: Option<String>,
    /// The event reported.
    pub event_id: Option<String>,
    /// The user reported.
    pub user_id: Option<String>,
    /// The reporter's words.
    pub reason: Option<String>,
}

impl Store {
    /// Keeps a report.
    pub async fn insert_report(&self, report: &Report) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO reports (received_ts, reporter, room_id, event_id, user_id, reason) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(report.received_ms)
        .bind(&report.reporter)
        .bind(&report.room_id)
        .bind(&report.event_id)
        .bind(&report.user_id)
        .bind(&report.reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Event reports, newest first, skipping the first `from`; and how many there are.
    pub async fn event_reports(
        &self,
        from: i64,
        limit: i64,
    ) -> Result<(Vec<Report>, i64), sqlx::Error> {
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM reports WHERE event_id IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        let rows = sqlx::query(
            "SELECT id, received_ts, reporter, room_id, event_id, user_id, reason FROM reports \
             WHERE event_id IS NOT NULL ORDER BY id DESC LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        let reports = rows
            .iter()
            .map(|row| {
                Ok(Report {
                    id: row.try_get(0)?,
                    received_ms: row.try_get(1)?,
                    reporter: row.try_get(2)?,
                    room_id: row.try_get(3)?,
                    event_id: row.try_get(4)?,
                    user_id: row.try_get(5)?,
                    reason: row.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok((reports, total))
    }
}
