//! `createRoom`: the create event, the creator's join, power levels, the preset's rules,
//! initial state, name, topic and invites, in the order the spec gives.

use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::{EventDraft, version_rules};
use crate::{
    http::error::{Error, Result},
    service::{Services, gate::GATE_EVENT_TYPE, secrets},
    store::RoomRow,
};

/// What a client asks for in `POST /createRoom`, already decoded.
#[derive(Debug, Default)]
pub struct CreateRoom {
    /// `private_chat`, `trusted_private_chat` or `public_chat`.
    pub preset: Option<String>,
    /// `public` lists the room in the directory.
    pub public: bool,
    /// The local part of the alias to create.
    pub alias_localpart: Option<String>,
    /// Room name.
    pub name: Option<String>,
    /// Room topic.
    pub topic: Option<String>,
    /// Users to invite.
    pub invite: Vec<OwnedUserId>,
    /// Extra content of the create event.
    pub creation_content: Map<String, Value>,
    /// State events to add: `(type, state_key, content)`.
    pub initial_state: Vec<(String, String, Value)>,
    /// Keys replacing those of the default power levels.
    pub power_level_override: Map<String, Value>,
    /// Room version; the default when `None`.
    pub room_version: Option<String>,
    /// The room is a direct chat (`is_direct` on invites).
    pub is_direct: bool,
    /// An id chosen beforehand (an upgrade's tombstone names the room before it exists);
    /// ignored from room version 12, where the id is the create event's hash.
    pub room_id: Option<OwnedRoomId>,
}

impl Services {
    /// A fresh room id of this server (room versions before 12).
    pub(crate) fn new_room_id(&self) -> Result<OwnedRoomId> {
        RoomId::parse(format!(
            "!{}:{}",
            secrets::random_alphanumeric(18),
            self.config.server_name
        ))
        .map_err(|e| Error::Internal(e.into()))
    }

    /// Creates a room as `creator`; its id.
    pub async fn create_room(&self, creator: &UserId, request: CreateRoom) -> Result<OwnedRoomId> {
        let version = request
            .room_version
            .clone()
            .unwrap_or_else(|| self.config.default_room_version.clone());
        let (_, rules) = version_rules(&version)?;
        let alias = match &request.alias_localpart {
            Some(localpart) => {
                let alias = RoomAliasId::parse(format!("#{localpart}:{}", self.config.server_name))
                    .map_err(|e| {
                        Error::invalid_param(format!("room_alias_name is not valid: {e}"))
                    })?;
                if self.store.alias_room(alias.as_str()).await?.is_some() {
                    return Err(Error::new(
                        http::StatusCode::BAD_REQUEST,
                        ruma::api::error::ErrorKind::RoomInUse,
                        format!("The alias {alias} is taken"),
                    ));
                }
                Some(alias)
            }
            None => None,
        };
        for user in request.invite.iter().filter(|u| {
            u.server_name() == self.config.server_name || !self.config.federation.enabled
        }) {
            self.ensure_local_user_exists(user).await?;
        }
        let preset = request.preset.clone().unwrap_or_else(|| {
            if request.public {
                "public_chat".to_owned()
            } else {
                "private_chat".to_owned()
            }
        });
        if !matches!(
            preset.as_str(),
            "private_chat" | "trusted_private_chat" | "public_chat"
        ) {
            return Err(Error::bad_json(format!("Unknown preset {preset}")));
        }

        // The create event. Since room version 12 the room id is its hash.
        let mut create = request.creation_content.clone();
        create.insert("room_version".to_owned(), Value::from(version.clone()));
        if !rules.authorization.use_room_create_sender {
            create.insert("creator".to_owned(), Value::from(creator.as_str()));
        }
        let create_draft = EventDraft::state("m.room.create", "", Value::Object(create));
        let empty = RoomRow {
            version: version.clone(),
            extremities: Vec::new(),
            depth: 0,
            state_group: None,
            published: false,
        };
        let room_id = if rules.authorization.room_create_event_id_as_room_id {
            let placeholder = RoomId::parse(format!("!pending:{}", self.config.server_name))
                .map_err(|e| Error::Internal(e.into()))?;
            let mut prepared = self
                .prepare(&placeholder, &empty, creator, &create_draft)
                .await?;
            let room_id = RoomId::parse(format!("!{}", &prepared.pdu.event_id.as_str()[1..]))
                .map_err(|e| Error::Internal(e.into()))?;
            prepared.pdu.room_id = room_id.clone();
            prepared.authorize()?;
            self.store
                .insert_room(room_id.as_str(), &version, creator.as_str(), self.now_ms())
                .await?;
            self.commit(prepared, &empty, None, &[]).await?;
            room_id
        } else {
            let room_id = match &request.room_id {
                Some(room_id) => room_id.clone(),
                None => self.new_room_id()?,
            };
            self.store
                .insert_room(room_id.as_str(), &version, creator.as_str(), self.now_ms())
                .await?;
            self.append(&room_id, creator, create_draft, None).await?;
            room_id
        };
        let state = |kind: &str, key: &str, content: Value| EventDraft::state(kind, key, content);

        let join = self.member_content(creator, "join").await?;
        self.append(
            &room_id,
            creator,
            state("m.room.member", creator.as_str(), join),
            None,
        )
        .await?;

        let mut users = Map::new();
        if !rules.authorization.explicitly_privilege_room_creators {
            users.insert(creator.to_string(), json!(100));
        }
        if preset == "trusted_private_chat" {
            for user in &request.invite {
                users.insert(user.to_string(), json!(100));
            }
        }
        let mut power_levels = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
                "m.room.server_acl": 100, "m.room.encryption": 100,
                "io.matrixon.room.gate": 100,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": if preset == "public_chat" { 50 } else { 0 },
            "notifications": {"room": 50},
        });
        if let Some(map) = power_levels.as_object_mut() {
            for (key, value) in &request.power_level_override {
                map.insert(key.clone(), value.clone());
            }
        }
        self.append(
            &room_id,
            creator,
            state("m.room.power_levels", "", power_levels),
            None,
        )
        .await?;

        if let Some(alias) = &alias {
            self.append(
                &room_id,
                creator,
                state("m.room.canonical_alias", "", json!({ "alias": alias })),
                None,
            )
            .await?;
        }

        // A gate given as initial state comes before the join rules: the room must never be
        // open without it.
        let (gates, initial_state): (Vec<_>, Vec<_>) = request
            .initial_state
            .iter()
            .partition(|(kind, _, _)| kind == GATE_EVENT_TYPE);
        for (kind, key, content) in gates {
            self.append(&room_id, creator, state(kind, key, content.clone()), None)
                .await?;
        }

        let join_rule = if preset == "public_chat" {
            "public"
        } else {
            "invite"
        };
        let mut preset_events = vec![
            ("m.room.join_rules", json!({ "join_rule": join_rule })),
            (
                "m.room.history_visibility",
                json!({ "history_visibility": "shared" }),
            ),
        ];
        if preset != "public_chat" {
            preset_events.push(("m.room.guest_access", json!({ "guest_access": "can_join" })));
        }
        for (kind, content) in preset_events {
            // initial_state wins over the preset for the same key.
            if !request
                .initial_state
                .iter()
                .any(|(k, key, _)| k == kind && key.is_empty())
            {
                self.append(&room_id, creator, state(kind, "", content), None)
                    .await?;
            }
        }
        for (kind, key, content) in initial_state {
            if kind == "m.room.create" || kind == "m.room.member" {
                return Err(Error::bad_json(format!(
                    "initial_state may not contain {kind} events"
                )));
            }
            if kind == "m.room.canonical_alias" {
                self.check_canonical_alias(&room_id, content).await?;
            }
            self.append(&room_id, creator, state(kind, key, content.clone()), None)
                .await?;
        }
        if let Some(name) = &request.name {
            self.append(
                &room_id,
                creator,
                state("m.room.name", "", json!({ "name": name })),
                None,
            )
            .await?;
        }
        if let Some(topic) = &request.topic {
            self.append(
                &room_id,
                creator,
                state("m.room.topic", "", json!({ "topic": topic })),
                None,
            )
            .await?;
        }
        for user in &request.invite {
            if user.server_name() != self.config.server_name {
                let mut content = json!({ "membership": "invite" });
                if request.is_direct {
                    content["is_direct"] = Value::Bool(true);
                }
                // The room exists by now: a server that cannot be reached leaves it uninvited.
                if let Err(error) = self.invite_remote(&room_id, creator, user, content).await {
                    tracing::info!(%room_id, %user, %error, "inviting a remote user failed");
                }
                continue;
            }
            let mut content = self.member_content(user, "invite").await?;
            if request.is_direct {
                content["is_direct"] = Value::Bool(true);
            }
            self.append(
                &room_id,
                creator,
                state("m.room.member", user.as_str(), content),
                None,
            )
            .await?;
        }
        // The alias finds the room only once it is set up (its gate included).
        if let Some(alias) = &alias
            && !self
                .store
                .insert_alias(alias.as_str(), room_id.as_str(), creator.as_str())
                .await?
        {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::RoomInUse,
                format!("The alias {alias} was taken while {room_id} was being created"),
            ));
        }
        if request.public {
            self.store
                .set_room_published(room_id.as_str(), true)
                .await?;
        }
        tracing::info!(%room_id, %creator, version, "room created");
        Ok(room_id)
    }

    /// 404 `M_NOT_FOUND` unless `user_id` is a local account (403 for a remote user while
    /// federation is off).
    pub(super) async fn ensure_local_user_exists(&self, user_id: &UserId) -> Result<()> {
        if user_id.server_name() != self.config.server_name {
            return Err(Error::forbidden(format!(
                "{user_id} is on another server, and federation is off here"
            )));
        }
        if self.store.user(user_id).await?.is_none() {
            return Err(Error::not_found(format!("No user {user_id} here")));
        }
        Ok(())
    }

    /// The room an alias points to.
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        self.store
            .alias_room(alias.as_str())
            .await?
            .map(|id| RoomId::parse(id).map_err(|e| Error::Internal(e.into())))
            .transpose()
    }

    /// Makes `alias` point at `room_id`.
    pub async fn create_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
    ) -> Result<()> {
        if alias.server_name() != self.config.server_name {
            return Err(Error::invalid_param(
                "Aliases of other servers cannot be set here",
            ));
        }
        if self.store.room(room_id.as_str()).await?.is_none() {
            return Err(Error::not_found("Unknown room"));
        }
        self.ensure_joined(room_id, creator).await?;
        if !self
            .store
            .insert_alias(alias.as_str(), room_id.as_str(), creator.as_str())
            .await?
        {
            return Err(Error::new(
                http::StatusCode::CONFLICT,
                ruma::api::error::ErrorKind::Unknown,
                format!("The alias {alias} already exists"),
            ));
        }
        Ok(())
    }

    /// Removes an alias: its creator or a room moderator may.
    pub async fn delete_alias(&self, alias: &RoomAliasId, user_id: &UserId) -> Result<()> {
        let Some((room_id, creator)) = self.store.alias(alias.as_str()).await? else {
            return Err(Error::not_found(format!("No alias {alias}")));
        };
        let room_id = RoomId::parse(room_id).map_err(|e| Error::Internal(e.into()))?;
        if creator != user_id.as_str()
            && !self
                .has_power_for_state(&room_id, user_id, "m.room.canonical_alias")
                .await?
        {
            return Err(Error::forbidden(
                "Only the alias's creator or a room moderator can remove it",
            ));
        }
        self.store.delete_alias(alias.as_str()).await?;
        self.drop_from_canonical_alias(&room_id, alias, user_id)
            .await
    }

    /// A deleted alias leaves the room's `m.room.canonical_alias` too (as on Synapse), when
    /// whoever deleted it may change that event; otherwise it stays there, resolving nowhere.
    async fn drop_from_canonical_alias(
        &self,
        room_id: &RoomId,
        alias: &RoomAliasId,
        user_id: &UserId,
    ) -> Result<()> {
        let Some(mut content) = self
            .state_content(room_id, "m.room.canonical_alias", "")
            .await?
        else {
            return Ok(());
        };
        let Some(map) = content.as_object_mut() else {
            return Ok(());
        };
        let mut changed = false;
        if map.get("alias").and_then(Value::as_str) == Some(alias.as_str()) {
            map.remove("alias");
            changed = true;
        }
        if let Some(alt) = map.get_mut("alt_aliases").and_then(Value::as_array_mut) {
            let before = alt.len();
            alt.retain(|a| a.as_str() != Some(alias.as_str()));
            changed |= alt.len() != before;
        }
        if !changed
            || !self
                .has_power_for_state(room_id, user_id, "m.room.canonical_alias")
                .await?
        {
            return Ok(());
        }
        self.append(
            room_id,
            user_id,
            EventDraft::state("m.room.canonical_alias", "", content),
            None,
        )
        .await?;
        Ok(())
    }

    /// Aliases of a room.
    pub async fn room_aliases(&self, room_id: &RoomId) -> Result<Vec<OwnedRoomAliasId>> {
        Ok(self
            .store
            .aliases_of(room_id.as_str())
            .await?
            .into_iter()
            .filter_map(|a| RoomAliasId::parse(a).ok())
            .collect())
    }
}
