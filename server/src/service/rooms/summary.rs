//! Room previews (`/room_summary`, MSC3266, spec v1.15): what someone deciding whether to join
//! a room may learn about it.

use ruma::{
    EventEncryptionAlgorithm, OwnedRoomAliasId, OwnedRoomId, RoomId, RoomVersionId, UInt, UserId,
    room::{AllowRule, JoinRule, JoinRuleSummary, RoomSummary},
};
use serde_json::Value;

use crate::{
    http::error::{Error, Result},
    service::Services,
};

/// A room's summary and, for a signed-in asker, their membership (`leave` when they have none).
pub type Preview = (RoomSummary, Option<String>);

impl Services {
    /// The summary of a room the asker may preview: its join rule lets anyone join or knock,
    /// its history is world-readable, the asker is joined or invited, or a restricted rule
    /// names a room the asker is joined to. Any other room answers 404 like a room that does
    /// not exist, so private rooms cannot be probed.
    pub async fn room_summary(&self, room_id: &RoomId, asker: Option<&UserId>) -> Result<Preview> {
        let not_found = || Error::not_found(format!("No room {room_id} that you may preview"));
        let room = self
            .store
            .room(room_id.as_str())
            .await?
            .ok_or_else(not_found)?;
        let join_rule = self
            .state_content(room_id, "m.room.join_rules", "")
            .await?
            .and_then(|content| serde_json::from_value::<JoinRule>(content).ok())
            .unwrap_or(JoinRule::Invite);
        let membership = match asker {
            Some(user) => self.membership(room_id, user).await?,
            None => None,
        };
        let card = self.room_card(room_id).await?;
        let open = matches!(
            join_rule,
            JoinRule::Public | JoinRule::Knock | JoinRule::KnockRestricted(_)
        );
        let member = matches!(membership.as_deref(), Some("join" | "invite"));
        if !(open || card.world_readable || member) {
            let allowed_rooms: Vec<OwnedRoomId> = match &join_rule {
                JoinRule::Restricted(restricted) => restricted
                    .allow
                    .iter()
                    .filter_map(|rule| match rule {
                        AllowRule::RoomMembership(m) => Some(m.room_id.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let allowed = match asker {
                Some(user) => self.joined_any(user, &allowed_rooms).await?,
                None => false,
            };
            if !allowed {
                return Err(not_found());
            }
        }
        let mut summary = RoomSummary::new(
            room_id.to_owned(),
            JoinRuleSummary::from(join_rule),
            card.guest_can_join,
            UInt::new(card.joined).unwrap_or_default(),
            card.world_readable,
        );
        summary.name = card.name;
        summary.topic = card.topic;
        summary.canonical_alias = card
            .canonical_alias
            .and_then(|alias| OwnedRoomAliasId::try_from(alias).ok());
        summary.avatar_url = card.avatar_url.map(Into::into);
        summary.room_type = card.room_type.map(Into::into);
        summary.room_version = RoomVersionId::try_from(room.version.as_str()).ok();
        summary.encryption = self
            .state_content(room_id, "m.room.encryption", "")
            .await?
            .and_then(|c| {
                c.get("algorithm")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .map(EventEncryptionAlgorithm::from);
        let membership = asker.map(|_| membership.unwrap_or_else(|| "leave".to_owned()));
        Ok((summary, membership))
    }

    /// Whether the user is joined to any of the rooms.
    pub(super) async fn joined_any(&self, user: &UserId, rooms: &[OwnedRoomId]) -> Result<bool> {
        for room in rooms {
            if self.membership(room, user).await?.as_deref() == Some("join") {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
