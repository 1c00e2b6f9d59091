//! Reports of events, rooms and users to the server's administrators (spec: "Reporting
//! content"). They are kept, logged and listed for administrators; nothing is sent on.

use ruma::{EventId, RoomId, UserId};

use super::{Limit, Services};
use crate::{
    http::error::{Error, Result},
    store::reports::Report,
};

/// Longest reason kept (Synapse's limit for room reports).
const MAX_REASON: usize = 1000;

impl Services {
    /// A report of an event the reporter can see in a room they are joined to; 404 otherwise
    /// (the spec's answer for both, so that it says nothing of rooms one is not in).
    pub async fn report_event(
        &self,
        reporter: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        reason: Option<&str>,
    ) -> Result<()> {
        self.rate_limit(Limit::ReportsPerUser, reporter.as_str())?;
        let reason = checked_reason(reason)?;
        if self.membership(room_id, reporter).await?.as_deref() != Some("join") {
            return Err(Error::not_found(
                "The event was not found or you are not joined to its room",
            ));
        }
        self.visible_event(room_id, reporter, event_id)
            .await
            .map_err(|_| Error::not_found("The event was not found or you may not see it"))?;
        self.keep_report(Report {
            reporter: reporter.to_string(),
            room_id: Some(room_id.to_string()),
            event_id: Some(event_id.to_string()),
            reason,
            ..Report::default()
        })
        .await
    }

    /// A report of a room this server knows, whether or not the reporter is in it.
    pub async fn report_room(
        &self,
        reporter: &UserId,
        room_id: &RoomId,
        reason: &str,
    ) -> Result<()> {
        self.rate_limit(Limit::ReportsPerUser, reporter.as_str())?;
        let reason = checked_reason(Some(reason))?;
        if self.store.room(room_id.as_str()).await?.is_none() {
            return Err(Error::not_found("This server knows no such room"));
        }
        self.keep_report(Report {
            reporter: reporter.to_string(),
            room_id: Some(room_id.to_string()),
            reason,
            ..Report::default()
        })
        .await
    }

    /// A report of a user: one of this server's that exists, or anyone else's.
    pub async fn report_user(
        &self,
        reporter: &UserId,
        user_id: &UserId,
        reason: &str,
    ) -> Result<()> {
        self.rate_limit(Limit::ReportsPerUser, reporter.as_str())?;
        let reason = checked_reason(Some(reason))?;
        if user_id.server_name() == self.config.server_name
            && self.store.user(user_id).await?.is_none()
        {
            return Err(Error::not_found("There is no such user on this server"));
        }
        self.keep_report(Report {
            reporter: reporter.to_string(),
            user_id: Some(user_id.to_string()),
            reason,
            ..Report::default()
        })
        .await
    }

    async fn keep_report(&self, mut report: Report) -> Result<()> {
        report.received_ms = self.now_ms();
        self.store.insert_report(&report).await?;
        tracing::warn!(
            reporter = %report.reporter,
            room_id = report.room_id.as_deref(),
            event_id = report.event_id.as_deref(),
            user_id = report.user_id.as_deref(),
            "content reported"
        );
        Ok(())
    }
}

/// The reason as kept: at most [`MAX_REASON`] characters, none when empty.
fn checked_reason(reason: Option<&str>) -> Result<Option<String>> {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(reason) if reason.chars().count() > MAX_REASON => Err(Error::invalid_param(format!(
            "A reason is at most {MAX_REASON} characters"
        ))),
        reason => Ok(reason.map(str::to_owned)),
    }
}
