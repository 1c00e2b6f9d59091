//! To-device messages: relayed between devices (encryption key sharing, verification),
//! each delivered once and dropped after the next sync acknowledges it.

use ruma::UserId;

use super::Services;
use crate::http::error::{Error, Result};

/// Most messages one `sendToDevice` request may carry.
const MAX_MESSAGES_PER_REQUEST: usize = 10_000;
/// Most bytes of one message's content.
const MAX_CONTENT_BYTES: usize = 65_536;

impl Services {
    /// Queues one request's messages (`(user, device or "*", content JSON)`), once per
    /// transaction ID of the sending device, and wakes the recipients; other servers' users'
    /// messages go to their servers.
    pub async fn send_to_device(
        &self,
        (sender, sender_device, txn_id): (&UserId, &str, &str),
        kind: &str,
        messages: Vec<(String, String, String)>,
    ) -> Result<()> {
        if messages.len() > MAX_MESSAGES_PER_REQUEST {
            return Err(Error::invalid_param(format!(
                "At most {MAX_MESSAGES_PER_REQUEST} messages per request"
            )));
        }
        if messages.iter().any(|(_, _, c)| c.len() > MAX_CONTENT_BYTES) {
            return Err(Error::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                ruma::api::error::ErrorKind::TooLarge,
                format!("A to-device message may hold at most {MAX_CONTENT_BYTES} bytes"),
            ));
        }
        let (local, remote): (Vec<_>, Vec<_>) = messages.into_iter().partition(|(user, _, _)| {
            UserId::parse(user.as_str())
                .is_ok_and(|u| u.server_name() == self.config.server_name.as_str())
        });
        let (fresh, recipients) = self
            .store
            .queue_to_device((sender.as_str(), sender_device, txn_id), kind, &local)
            .await?;
        // Other servers' users get theirs once per transaction too.
        if fresh && !remote.is_empty() {
            let message_id = super::secrets::random_alphanumeric(24);
            self.send_remote_to_device((sender, &message_id), kind, &remote)
                .await;
        }
        self.wake_recipients(recipients);
        Ok(())
    }

    /// Wakes the syncs of the users to-device messages were just queued for.
    pub(crate) fn wake_recipients(&self, recipients: Vec<String>) {
        let recipients: Vec<ruma::OwnedUserId> = recipients
            .into_iter()
            .filter_map(|u| UserId::parse(u).ok())
            .collect();
        self.bus.wake(recipients.iter().map(|u| &**u));
    }
}
