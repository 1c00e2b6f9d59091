//! Joining, inviting, leaving, kicking, banning, knocking and forgetting. The authorization
//! rules decide every transition; this module only builds the member events.

use ruma::{OwnedEventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use super::{EventDraft, Pdu};
use crate::{
    http::error::{Error, Result},
    service::Services,
};

/// A power level from power-levels content (integers, or strings in old rooms).
pub(crate) fn level(value: Option<&Value>) -> Option<i64> {
    value.and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
}

/// The memberships a kick may end.
const KICKABLE: &[&str] = &["join", "invite", "knock"];

/// A membership change one user makes for another (or themselves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Invite the target.
    Invite,
    /// Leave (target = sender) or kick.
    Leave,
    /// Ban the target.
    Ban,
    /// Lift a ban (the target becomes `leave`).
    Unban,
    /// Ask to join.
    Knock,
}

impl Services {
    /// Joins `user_id` to the room, with `custom` keys (a `reason`, say) in the member event
    /// beside those the server sets; the join event's id.
    ///
    /// A room this server is not in is joined through another server: one of `via`, or the
    /// room id's own.
    pub async fn join(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        custom: serde_json::Map<String, Value>,
        via: &[ruma::OwnedServerName],
    ) -> Result<OwnedEventId> {
        let known = self.store.room(room_id.as_str()).await?.is_some();
        // Only a federating server reads the member list here (to see whether it is in the
        // room itself); without federation a join costs what it did before.
        let local_resident = self.config.federation.enabled
            && known
            && self.store.has_member_with(room_id.as_str(), "join").await?
            && self
                .store
                .room_members(room_id.as_str(), "join")
                .await?
                .iter()
                .any(|m| {
                    UserId::parse(m.as_str())
                        .is_ok_and(|m| m.server_name() == self.config.server_name)
                });
        if self.config.federation.enabled && !local_resident {
            let mut via = via.to_vec();
            if known {
                // Servers whose users are still in the room can let this one back in, and
                // the server that invited this user.
                via.extend(self.servers_in_room(room_id).await?);
                if let Some((_, inviter)) = self
                    .store
                    .remote_invite_state(room_id.as_str(), user_id.as_str())
                    .await?
                    && let Ok(inviter) = ruma::OwnedServerName::try_from(inviter)
                {
                    via.insert(0, inviter);
                }
            }
            if !via.is_empty()
                || room_id
                    .server_name()
                    .is_some_and(|s| s != self.config.server_name)
            {
                if self.is_guest(user_id).await? {
                    return Err(Error::forbidden(
                        "Guests cannot join rooms on other servers",
                    ));
                }
                return self.join_remote(room_id, user_id, custom, &via).await;
            }
        }
        if !known {
            return Err(Error::not_found(format!(
                "No room {room_id} on this server"
            )));
        }
        if !self.store.has_member_with(room_id.as_str(), "join").await? {
            // As Synapse: with nobody left there is no server to join through.
            return Err(Error::not_found(format!(
                "Nobody is left in {room_id}: there is no one to join"
            )));
        }
        self.ensure_guest_may_join(room_id, user_id).await?;
        let mut content = Value::Object(custom);
        if let (Some(content), Value::Object(own)) = (
            content.as_object_mut(),
            self.member_content(user_id, "join").await?,
        ) {
            content.extend(own);
        }
        if let Some(via) = self.restricted_join_authoriser(room_id, user_id).await? {
            content["join_authorised_via_users_server"] = Value::from(via);
        }
        let joined = self
            .append(
                room_id,
                user_id,
                EventDraft::state("m.room.member", user_id.as_str(), content),
                None,
            )
            .await?;
        // Someone following an upgraded room keeps what they had set for the old one.
        if let Some(old) = self
            .state_content(room_id, "m.room.create", "")
            .await?
            .and_then(|c| {
                c.get("predecessor")?
                    .get("room_id")?
                    .as_str()
                    .map(str::to_owned)
            })
            .and_then(|old| RoomId::parse(old).ok())
            && self.membership(&old, user_id).await?.is_some()
            && let Err(error) = self.carry_user_state(&old, room_id, user_id).await
        {
            tracing::warn!(%room_id, %user_id, %error, "settings not carried from the old room");
        }
        Ok(joined)
    }

    /// Guests join only rooms whose `m.room.guest_access` is `can_join`: 403
    /// `M_GUEST_ACCESS_FORBIDDEN` otherwise.
    pub(crate) async fn ensure_guest_may_join(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<()> {
        if !self.is_guest(user_id).await? {
            return Ok(());
        }
        let access = self
            .state_content(room_id, "m.room.guest_access", "")
            .await?
            .and_then(|c| {
                c.get("guest_access")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        if access.as_deref() == Some("can_join") {
            return Ok(());
        }
        Err(Error::new(
            http::StatusCode::FORBIDDEN,
            ruma::api::error::ErrorKind::GuestAccessForbidden,
            format!("{room_id} does not let guests join"),
        ))
    }

    /// Removes every guest from a room that stopped letting guests in, as `sender` (who
    /// changed the room's guest access).
    pub(crate) async fn remove_guests(&self, room_id: &RoomId, sender: &UserId) -> Result<()> {
        for member in self.store.room_members(room_id.as_str(), "join").await? {
            let Ok(member) = UserId::parse(member.as_str()) else {
                continue;
            };
            if !self.is_guest(&member).await? {
                continue;
            }
            match self
                .change_membership(room_id, sender, &member, MembershipChange::Leave, None)
                .await
            {
                Ok(_) => {
                    tracing::info!(%room_id, guest = %member, "guest removed: guest access revoked")
                }
                Err(e) => {
                    tracing::warn!(%room_id, guest = %member, error = %e, "could not remove a guest")
                }
            }
        }
        Ok(())
    }

    /// Knocks on `room_id`: here when this server is in the room, otherwise through `via`
    /// (or the room id's server) over federation.
    pub async fn knock(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        reason: Option<&str>,
        via: &[ruma::OwnedServerName],
    ) -> Result<OwnedEventId> {
        let resident = self
            .store
            .current_state_event(room_id.as_str(), "m.room.create", "")
            .await?
            .is_some();
        if !resident && self.config.federation.enabled {
            if self.is_guest(user_id).await? {
                return Err(Error::forbidden(
                    "Guests cannot knock on rooms on other servers",
                ));
            }
            return self.knock_remote(room_id, user_id, reason, via).await;
        }
        self.change_membership(room_id, user_id, user_id, MembershipChange::Knock, reason)
            .await
    }

    /// Changes `target`'s membership as `sender` (invite, leave/kick, ban, unban, knock).
    pub async fn change_membership(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        change: MembershipChange,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        if self.store.room(room_id.as_str()).await?.is_none() {
            return Err(Error::not_found(format!(
                "No room {room_id} on this server"
            )));
        }
        if change == MembershipChange::Invite && target.server_name() != self.config.server_name {
            let mut content = json!({ "membership": "invite" });
            if let Some(reason) = reason {
                content["reason"] = Value::from(reason);
            }
            return self.invite_remote(room_id, sender, target, content).await;
        }
        // An invite to (or a knock on) a room this server is not in is rejected (withdrawn)
        // through the server it came from.
        if change == MembershipChange::Leave
            && sender == target
            && matches!(
                self.membership(room_id, target).await?.as_deref(),
                Some("invite" | "knock")
            )
            && self
                .store
                .current_state_event(room_id.as_str(), "m.room.create", "")
                .await?
                .is_none()
        {
            return self.reject_remote_invite(room_id, target).await;
        }
        let mut content = match change {
            MembershipChange::Invite => {
                self.ensure_local_user_exists(target).await?;
                self.member_content(target, "invite").await?
            }
            MembershipChange::Leave | MembershipChange::Unban => json!({"membership": "leave"}),
            MembershipChange::Ban => json!({"membership": "ban"}),
            MembershipChange::Knock => self.member_content(target, "knock").await?,
        };
        if change == MembershipChange::Unban
            && self.membership(room_id, target).await?.as_deref() != Some("ban")
        {
            return Err(Error::forbidden(format!("{target} is not banned")));
        }
        if change == MembershipChange::Leave
            && sender == target
            && self.membership(room_id, target).await?.is_none()
        {
            return Err(Error::forbidden(format!(
                "You are not in {room_id}, so you cannot leave it"
            )));
        }
        // A kick removes someone who is there: kicking a user who left would say nothing,
        // and kicking a banned one would lift the ban (Synapse refuses both).
        let kick = change == MembershipChange::Leave && sender != target;
        if kick
            && !self
                .membership(room_id, target)
                .await?
                .is_some_and(|m| KICKABLE.contains(&m.as_str()))
        {
            return Err(Error::forbidden(format!(
                "{target} is not in {room_id} (joined, invited or knocking), so cannot be kicked"
            )));
        }
        if let Some(reason) = reason {
            content["reason"] = Value::from(reason);
        }
        let mut draft = EventDraft::state("m.room.member", target.as_str(), content);
        if kick {
            draft.target_must_be = Some(KICKABLE);
        }
        self.append(room_id, sender, draft, None).await
    }

    /// Kicks `target` only if they are still joined when the room is locked (a ban given
    /// meanwhile stands).
    pub async fn kick_if_joined(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: &str,
    ) -> Result<OwnedEventId> {
        let mut draft = EventDraft::state(
            "m.room.member",
            target.as_str(),
            json!({"membership": "leave", "reason": reason}),
        );
        draft.target_must_be = Some(&["join"]);
        self.append(room_id, sender, draft, None).await
    }

    /// Forgets a room the user has left.
    pub async fn forget(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        match self.membership(room_id, user_id).await?.as_deref() {
            Some("leave" | "ban") => {
                self.store
                    .forget_room(room_id.as_str(), user_id.as_str())
                    .await?;
                Ok(())
            }
            Some(_) => Err(Error::bad_request("Leave the room before forgetting it")),
            None => Err(Error::not_found(format!("You were never in {room_id}"))),
        }
    }

    /// Rooms the user is joined to.
    pub async fn joined_rooms(&self, user_id: &UserId) -> Result<Vec<OwnedRoomId>> {
        Ok(self
            .store
            .user_rooms(user_id.as_str())
            .await?
            .into_iter()
            .filter(|(_, membership, _)| membership == "join")
            .filter_map(|(room, _, _)| RoomId::parse(room).ok())
            .collect())
    }

    /// Whether `user_id` has the power to send the state event `kind`.
    pub async fn has_power_for_state(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        kind: &str,
    ) -> Result<bool> {
        let (own, levels) = self.power_level(room_id, user_id).await?;
        let needed = level(levels.get("events").and_then(|e| e.get(kind)))
            .or(level(levels.get("state_default")))
            .unwrap_or(50);
        Ok(own >= needed)
    }

    /// 403 unless `sender` may redact `target`: their own event, or with the room's
    /// `redact` power. (The authorization rules accept any redaction; servers apply only
    /// these, so refusing here keeps clients from believing in a redaction that did nothing.)
    pub async fn ensure_may_redact(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &ruma::EventId,
    ) -> Result<()> {
        let Some(event) = self.store.event(target.as_str()).await? else {
            return Err(Error::not_found(format!("No event {target} in {room_id}")));
        };
        if event.room_id != room_id.as_str() {
            return Err(Error::invalid_param(format!(
                "{target} is not an event of {room_id}"
            )));
        }
        // A redacted gate opens the room: only those who may change the gate may do that.
        let gate = crate::service::gate::GATE_EVENT_TYPE;
        if event.kind == gate && event.state_key.is_some() {
            return if self.has_power_for_state(room_id, sender, gate).await? {
                Ok(())
            } else {
                Err(Error::forbidden(format!(
                    "Redacting {gate} needs the power to change it"
                )))
            };
        }
        if event.sender == sender.as_str() {
            return Ok(());
        }
        let (own, levels) = self.power_level(room_id, sender).await?;
        if own >= level(levels.get("redact")).unwrap_or(50) {
            return Ok(());
        }
        Err(Error::forbidden(
            "Only the sender, or someone with the room's redact power, can redact this event",
        ))
    }

    /// The user's power level (unlimited for room version 12 creators) and the room's
    /// power-levels content.
    pub async fn power_level(&self, room_id: &RoomId, user_id: &UserId) -> Result<(i64, Value)> {
        let levels = self
            .state_content(room_id, "m.room.power_levels", "")
            .await?
            .unwrap_or_default();
        if self.is_room_creator(room_id, user_id).await? {
            return Ok((i64::MAX, levels));
        }
        let own = level(levels.get("users").and_then(|u| u.get(user_id.as_str())))
            .or(level(levels.get("users_default")))
            .unwrap_or(0);
        Ok((own, levels))
    }

    /// Room version 12 creators hold unlimited power.
    async fn is_room_creator(&self, room_id: &RoomId, user_id: &UserId) -> Result<bool> {
        let Some(room) = self.store.room(room_id.as_str()).await? else {
            return Ok(false);
        };
        let (_, rules) = super::version_rules(&room.version)?;
        if !rules.authorization.explicitly_privilege_room_creators {
            return Ok(false);
        }
        let Some(create) = self
            .store
            .current_state_event(room_id.as_str(), "m.room.create", "")
            .await?
        else {
            return Ok(false);
        };
        let pdu = Pdu::from_stored(&create).map_err(Error::Internal)?;
        let additional = pdu
            .content_object()
            .get("additional_creators")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|c| c.as_str() == Some(user_id.as_str())));
        Ok(pdu.sender == user_id || additional)
    }

    /// For rooms with a `restricted` join rule: a local member who may invite, to vouch for
    /// a user who belongs to one of the allowed rooms (and is not already invited).
    pub(crate) async fn restricted_join_authoriser(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Option<String>> {
        let Some(rules) = self.state_content(room_id, "m.room.join_rules", "").await? else {
            return Ok(None);
        };
        let rule = rules.get("join_rule").and_then(Value::as_str);
        if !matches!(rule, Some("restricted" | "knock_restricted")) {
            return Ok(None);
        }
        if matches!(
            self.membership(room_id, user_id).await?.as_deref(),
            Some("invite" | "join")
        ) {
            return Ok(None);
        }
        let allowed = rules
            .get("allow")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut member_of_allowed = false;
        for allow in &allowed {
            if allow.get("type").and_then(Value::as_str) == Some("m.room_membership")
                && let Some(allowed_room) = allow
                    .get("room_id")
                    .and_then(Value::as_str)
                    .and_then(|r| RoomId::parse(r).ok())
                && self.membership(&allowed_room, user_id).await?.as_deref() == Some("join")
            {
                member_of_allowed = true;
                break;
            }
        }
        if !member_of_allowed {
            return Ok(None);
        }
        let levels = self
            .state_content(room_id, "m.room.power_levels", "")
            .await?
            .unwrap_or_default();
        let invite_level = levels.get("invite").and_then(Value::as_i64).unwrap_or(0);
        for member in self.store.room_members(room_id.as_str(), "join").await? {
            let Ok(member_id) = UserId::parse(member.as_str()) else {
                continue;
            };
            if member_id.server_name() != self.config.server_name {
                continue;
            }
            let level = levels
                .get("users")
                .and_then(|u| u.get(member.as_str()))
                .and_then(Value::as_i64)
                .or(levels.get("users_default").and_then(Value::as_i64))
                .unwrap_or(0);
            if level >= invite_level || self.is_room_creator(room_id, &member_id).await? {
                return Ok(Some(member));
            }
        }
        Ok(None)
    }
}
