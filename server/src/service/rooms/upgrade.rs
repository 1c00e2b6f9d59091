//! Room upgrades: a new room of the requested version with the old room's important state,
//! a tombstone in the old room pointing at it, and the old room made read-only.

use ruma::{
    OwnedEventId, OwnedRoomId, RoomId, UserId,
    push::{SimplePushRule, SimplePushRuleInit},
};
use serde_json::{Value, json};

use super::{CreateRoom, EventDraft};
use crate::{
    http::error::{Error, Result},
    service::Services,
};

/// State carried into the replacement room.
const CARRIED_STATE: [&str; 10] = [
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
    crate::service::gate::GATE_EVENT_TYPE,
    crate::service::gate::ROLES_EVENT_TYPE,
];

impl Services {
    /// Upgrades `room_id` to `version` on behalf of `user_id`; the replacement room.
    pub async fn upgrade_room(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        version: &str,
    ) -> Result<OwnedRoomId> {
        super::version_rules(version)?;
        if self.store.room(room_id.as_str()).await?.is_none() {
            return Err(Error::not_found(format!("No room {room_id}")));
        }
        self.ensure_joined(room_id, user_id).await?;
        if !self
            .has_power_for_state(room_id, user_id, "m.room.tombstone")
            .await?
        {
            return Err(Error::forbidden(
                "You need the power to send m.room.tombstone to upgrade this room",
            ));
        }
        if self
            .state_content(room_id, "m.room.tombstone", "")
            .await?
            .is_some()
        {
            return Err(Error::bad_request("This room has already been upgraded"));
        }
        // Before version 12 the new room's id can be chosen first, so the tombstone goes
        // first and the new room's `predecessor` names it (as Synapse; clients and SyTest
        // follow the link). From 12 the id is the create event's hash: the room comes first
        // and `predecessor` names the old room's last event before the tombstone.
        let hashed_id = super::version_rules(version)?
            .1
            .authorization
            .room_create_event_id_as_room_id;
        let (chosen_id, predecessor_event) = if hashed_id {
            let last = self
                .store
                .room_events(room_id.as_str(), 0, i64::MAX, false, 1)
                .await?
                .pop()
                .ok_or_else(|| Error::not_found("The room has no events"))?;
            (None, last.event_id)
        } else {
            let chosen_id = self.new_room_id()?;
            let tombstone = self.tombstone(room_id, user_id, &chosen_id).await?;
            (Some(chosen_id), tombstone.to_string())
        };
        let mut creation = serde_json::Map::new();
        creation.insert(
            "predecessor".to_owned(),
            json!({ "room_id": room_id, "event_id": predecessor_event }),
        );
        // The room's kind (a space stays a space) and whether it federates carry over.
        let old_create = self
            .state_content(room_id, "m.room.create", "")
            .await?
            .unwrap_or_default();
        for key in ["type", "m.federate"] {
            if let Some(value) = old_create.get(key) {
                creation.insert(key.to_owned(), value.clone());
            }
        }
        let mut initial_state = Vec::new();
        for kind in CARRIED_STATE {
            if let Some(content) = self.state_content(room_id, kind, "").await? {
                initial_state.push((kind.to_owned(), String::new(), content));
            }
        }
        let old_levels = self
            .state_content(room_id, "m.room.power_levels", "")
            .await?
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        let mut power_levels = old_levels.clone();
        // The upgrader creates the new room and must be able to set it up: in v12 creators
        // hold power without a level, before that they get at least 100.
        let privileged = super::version_rules(version)?
            .1
            .authorization
            .explicitly_privilege_room_creators;
        let users = power_levels.entry("users").or_insert_with(|| json!({}));
        if let Some(users) = users.as_object_mut() {
            if privileged {
                users.remove(user_id.as_str());
            } else {
                let own = users
                    .get(user_id.as_str())
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                users.insert(user_id.to_string(), json!(own.max(100)));
            }
        }
        let new_room = self
            .create_room(
                user_id,
                CreateRoom {
                    preset: Some("private_chat".to_owned()),
                    creation_content: creation,
                    initial_state,
                    power_level_override: power_levels,
                    room_version: Some(version.to_owned()),
                    room_id: chosen_id.clone(),
                    ..CreateRoom::default()
                },
            )
            .await?;
        // Aliases move to the new room.
        for alias in self.store.aliases_of(room_id.as_str()).await? {
            self.store.delete_alias(&alias).await?;
            self.store
                .insert_alias(&alias, new_room.as_str(), user_id.as_str())
                .await?;
        }
        if let Some(alias) = self
            .state_content(room_id, "m.room.canonical_alias", "")
            .await?
        {
            self.append(
                &new_room,
                user_id,
                EventDraft::state("m.room.canonical_alias", "", alias),
                None,
            )
            .await?;
            // The aliases are the new room's now: the old room names none (as Synapse).
            if let Err(error) = self
                .append(
                    room_id,
                    user_id,
                    EventDraft::state("m.room.canonical_alias", "", json!({})),
                    None,
                )
                .await
            {
                tracing::warn!(%room_id, %error, "old room's canonical alias left in place");
            }
        }
        // Whoever was banned stays banned.
        for banned in self.store.room_members(room_id.as_str(), "ban").await? {
            let content = self
                .state_content(room_id, "m.room.member", &banned)
                .await?
                .unwrap_or_else(|| json!({"membership": "ban"}));
            self.append(
                &new_room,
                user_id,
                EventDraft::state("m.room.member", &banned, content),
                None,
            )
            .await?;
        }
        self.carry_user_state(room_id, &new_room, user_id).await?;
        if chosen_id.is_none() {
            self.tombstone(room_id, user_id, &new_room).await?;
        }
        // The old room goes quiet: only moderators may speak or invite.
        let mut power_levels = old_levels;
        let users_default = power_levels
            .get("users_default")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let restricted = (users_default + 1).max(50);
        power_levels.insert("events_default".to_owned(), json!(restricted));
        power_levels.insert("invite".to_owned(), json!(restricted));
        self.append(
            room_id,
            user_id,
            EventDraft::state("m.room.power_levels", "", Value::Object(power_levels)),
            None,
        )
        .await?;
        if self.room_published(room_id).await? {
            self.store
                .set_room_published(room_id.as_str(), false)
                .await?;
            self.store
                .set_room_published(new_room.as_str(), true)
                .await?;
        }
        Ok(new_room)
    }

    /// What a user keeps of a room when they follow it into its replacement (the upgrader at
    /// once, others when they join it), as Synapse: its tags, its place among their direct
    /// chats (`m.direct`) and their push rule for it.
    pub(crate) async fn carry_user_state(
        &self,
        old: &RoomId,
        new: &RoomId,
        user_id: &UserId,
    ) -> Result<()> {
        let tags = self.room_tags(user_id, old).await?;
        if tags.as_object().is_some_and(|t| !t.is_empty())
            && self
                .room_tags(user_id, new)
                .await?
                .as_object()
                .is_some_and(serde_json::Map::is_empty)
        {
            self.set_account_data(user_id, Some(new), "m.tag", json!({ "tags": tags }))
                .await?;
        }
        if let Ok(mut direct) = self.account_data(user_id, None, "m.direct").await {
            let mut changed = false;
            for rooms in direct
                .as_object_mut()
                .into_iter()
                .flat_map(|m| m.values_mut())
            {
                if let Some(list) = rooms.as_array_mut()
                    && list.iter().any(|r| r == old.as_str())
                    && !list.iter().any(|r| r == new.as_str())
                {
                    list.push(Value::from(new.as_str()));
                    changed = true;
                }
            }
            if changed {
                self.set_account_data(user_id, None, "m.direct", direct)
                    .await?;
            }
        }
        let mut rules = self.push_rules(user_id).await?;
        let copied = rules
            .room
            .iter()
            .find(|rule| rule.rule_id == old)
            .filter(|_| !rules.room.iter().any(|rule| rule.rule_id == new))
            .map(|rule| {
                SimplePushRule::from(SimplePushRuleInit {
                    actions: rule.actions.clone(),
                    default: false,
                    enabled: rule.enabled,
                    rule_id: new.to_owned(),
                })
            });
        if let Some(rule) = copied {
            rules.room.insert(rule);
            self.set_push_rules(user_id, &rules).await?;
        }
        Ok(())
    }

    /// Sends the old room's tombstone pointing at its replacement.
    async fn tombstone(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        replacement: &RoomId,
    ) -> Result<OwnedEventId> {
        self.append(
            room_id,
            user_id,
            EventDraft::state(
                "m.room.tombstone",
                "",
                json!({ "body": "This room has been replaced", "replacement_room": replacement }),
            ),
            None,
        )
        .await
    }
}
