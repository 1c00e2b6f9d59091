//! Joins across servers. As a room's server: `make_join` hands out a template built on the
//! current state, `send_join` takes the signed event back, appends it after the authorization
//! rules, and answers with the room's state and auth chain. As the joining user's server:
//! the same two requests the other way, and the answer's events checked and stored.

use std::collections::HashSet;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedServerName, RoomId,
    ServerName, UserId,
};
use serde_json::value::RawValue as RawJsonValue;

use crate::{
    http::error::{Error, Result},
    service::Services,
};

/// Most events an auth chain answer holds.
const MAX_AUTH_CHAIN: usize = 100_000;

/// The room's state and auth chain as `send_join` answers them, as stored PDUs.
pub struct JoinedState {
    /// The state before the join.
    pub state: Vec<Box<RawJsonValue>>,
    /// Every auth event of those, transitively.
    pub auth_chain: Vec<Box<RawJsonValue>>,
    /// The join as stored.
    pub event: Box<RawJsonValue>,
    /// The servers with joined members.
    pub servers: Vec<String>,
}

fn raw(json: String) -> Result<Box<RawJsonValue>> {
    RawJsonValue::from_string(json).map_err(|e| Error::Internal(e.into()))
}

impl Services {
    /// # `make_join`: the template for `user_id` joining `room_id`, asked by `origin`.
    pub async fn make_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        versions: &[String],
    ) -> Result<(String, CanonicalJsonValue)> {
        self.make_membership(origin, room_id, user_id, "join", Some(versions))
            .await
    }

    /// # `send_join`: appends `origin`'s signed join `event_id` to `room_id`.
    pub async fn send_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawJsonValue,
    ) -> Result<JoinedState> {
        let countersigned = self.countersign_restricted_join(room_id, pdu).await?;
        let pdu = countersigned.as_deref().unwrap_or(pdu);
        let (checked, sender) = self
            .own_member_event(origin, room_id, event_id, pdu, "join")
            .await?;
        self.append_remote(room_id, event_id, &checked.json).await?;
        // The joining server learns the room from this answer; the room's other servers
        // learn of the join from this one, as its resident server.
        self.queue_for_federation(room_id, event_id.as_str(), &sender, None)
            .await?;
        self.joined_state(room_id, event_id).await
    }

    /// A join to a restricted room vouched for by one of this server's users, signed here
    /// too when the joining user is in one of the rooms the join rules allow (as this server
    /// knows); `None` for any other join. The rules then check the vouching user's power.
    async fn countersign_restricted_join(
        &self,
        room_id: &RoomId,
        pdu: &RawJsonValue,
    ) -> Result<Option<Box<RawJsonValue>>> {
        let mut event: CanonicalJsonObject = serde_json::from_str(pdu.get())
            .map_err(|e| Error::bad_json(format!("The join is not canonical JSON: {e}")))?;
        let text = |value: Option<&CanonicalJsonValue>| match value {
            Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
            _ => None,
        };
        let via = match event.get("content") {
            Some(CanonicalJsonValue::Object(content)) => {
                text(content.get("join_authorised_via_users_server"))
            }
            _ => None,
        };
        let Some(via) = via.and_then(|v| UserId::parse(v).ok()) else {
            return Ok(None);
        };
        let Some(sender) = text(event.get("sender")).and_then(|s| UserId::parse(s).ok()) else {
            return Ok(None);
        };
        if via.server_name() != self.config.server_name
            || self
                .restricted_join_authoriser(room_id, &sender)
                .await?
                .is_none()
        {
            return Ok(None);
        }
        let room = self
            .store
            .room(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("No room {room_id} here")))?;
        let (_, rules) = crate::service::rooms::version_rules(&room.version)?;
        event.remove("unsigned");
        ruma::signatures::hash_and_sign_event(
            self.config.server_name.as_str(),
            &self.signing_key,
            &mut event,
            &rules.redaction,
        )
        .map_err(|e| Error::bad_json(format!("The join cannot be signed: {e}")))?;
        let json = serde_json::to_string(&event).map_err(|e| Error::Internal(e.into()))?;
        RawJsonValue::from_string(json)
            .map(Some)
            .map_err(|e| Error::Internal(e.into()))
    }

    /// The room's state before `join` (which holds what let it in: an invite, say), and its
    /// auth chain.
    async fn joined_state(&self, room_id: &RoomId, join: &EventId) -> Result<JoinedState> {
        let event =
            self.store.event(join.as_str()).await?.ok_or_else(|| {
                Error::Internal(anyhow::anyhow!("the join just appended is gone"))
            })?;
        let state_ids: Vec<String> = self
            .store
            .state_of_group(event.state_before)
            .await?
            .into_values()
            .collect();
        let state = self.store.events(&state_ids).await?;
        let chain = self.auth_chain(room_id, &state).await?;
        let mut servers: Vec<String> = self
            .store
            .room_members(room_id.as_str(), "join")
            .await?
            .iter()
            .filter_map(|u| UserId::parse(u.as_str()).ok())
            .map(|u| u.server_name().to_string())
            .collect();
        servers.sort();
        servers.dedup();
        Ok(JoinedState {
            state: state
                .into_iter()
                .map(|e| raw(e.json))
                .collect::<Result<_>>()?,
            auth_chain: chain
                .into_iter()
                .map(|e| raw(e.json))
                .collect::<Result<_>>()?,
            event: raw(event.json)?,
            servers,
        })
    }

    /// Every auth event of `events`, transitively (at most [`MAX_AUTH_CHAIN`]), in `room_id`.
    pub(crate) async fn auth_chain(
        &self,
        room_id: &RoomId,
        events: &[crate::store::StoredEvent],
    ) -> Result<Vec<crate::store::StoredEvent>> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut chain = Vec::new();
        let mut next: Vec<String> = events
            .iter()
            .flat_map(|e| auth_events_of(&e.json))
            .collect();
        while !next.is_empty() && chain.len() < MAX_AUTH_CHAIN {
            next.retain(|id| seen.insert(id.clone()));
            let found = self.store.events(&next).await?;
            next = found.iter().flat_map(|e| auth_events_of(&e.json)).collect();
            chain.extend(found.into_iter().filter(|e| e.room_id == room_id.as_str()));
        }
        Ok(chain)
    }

    /// The other servers with members joined to `room_id` (who must get its new events).
    pub async fn servers_in_room(&self, room_id: &RoomId) -> Result<Vec<OwnedServerName>> {
        let mut servers: Vec<OwnedServerName> = self
            .store
            .room_members(room_id.as_str(), "join")
            .await?
            .iter()
            .filter_map(|u| UserId::parse(u.as_str()).ok())
            .map(|u| u.server_name().to_owned())
            .filter(|s| *s != self.config.server_name)
            .collect();
        servers.sort();
        servers.dedup();
        Ok(servers)
    }
}

/// The `auth_events` a stored PDU names.
fn auth_events_of(json: &str) -> Vec<String> {
    crate::service::rooms::pdu::referenced_ids(json, "auth_events")
}

/// Most state and auth-chain events a remote join takes in (bigger rooms are refused).
const MAX_JOIN_EVENTS: usize = 20_000;

#[derive(serde::Deserialize)]
struct MakeJoin {
    room_version: Option<String>,
    event: CanonicalJsonObject,
}

#[derive(serde::Deserialize)]
struct SendJoin {
    #[serde(default)]
    state: Vec<Box<RawJsonValue>>,
    #[serde(default)]
    auth_chain: Vec<Box<RawJsonValue>>,
    /// The join as the resident server signed it too (restricted rooms).
    event: Option<Box<RawJsonValue>>,
}

impl Services {
    /// Joins `user_id` to a room this server is not in, through the first of `via` (and the
    /// room id's server) that lets it: `make_join`, the event signed here, `send_join`, then
    /// the room's state and auth chain checked and stored, and the join appended on top.
    pub async fn join_remote(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        custom: serde_json::Map<String, serde_json::Value>,
        via: &[OwnedServerName],
    ) -> Result<OwnedEventId> {
        let mut candidates: Vec<OwnedServerName> = via.to_vec();
        if let Some(server) = room_id.server_name() {
            candidates.push(server.to_owned());
        }
        candidates.retain(|s| *s != self.config.server_name);
        candidates.dedup();
        if candidates.is_empty() {
            return Err(Error::not_found(format!(
                "No room {room_id} here, and no server to join it through (add ?via=)"
            )));
        }
        let mut last = Error::not_found(format!("No server would let {user_id} join {room_id}"));
        for server in candidates.iter().take(5) {
            match self.join_through(server, room_id, user_id, &custom).await {
                Ok(event_id) => return Ok(event_id),
                Err(error) => {
                    tracing::info!(%room_id, %server, %error, "joining through a server failed");
                    last = error;
                }
            }
        }
        Err(last)
    }

    async fn join_through(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        custom: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<OwnedEventId> {
        let path = make_path("make_join", room_id, user_id);
        let timeout = self.federation.timeout;
        let answer = self
            .federation_json(server, http::Method::GET, &path, None, timeout)
            .await?;
        let made: MakeJoin = serde_json::from_value(answer)
            .map_err(|e| Error::bad_request(format!("{server}'s make_join answer: {e}")))?;
        let version = made.room_version.unwrap_or_else(|| "1".to_owned());
        let (_, rules) = crate::service::rooms::version_rules(&version)?;
        let mut event = made.event;
        // The template must be this user's join to this room.
        let text = |event: &CanonicalJsonObject, key: &str| match event.get(key) {
            Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
            _ => None,
        };
        if text(&event, "type").as_deref() != Some("m.room.member")
            || text(&event, "state_key").as_deref() != Some(user_id.as_str())
            || text(&event, "sender").as_deref() != Some(user_id.as_str())
            || text(&event, "room_id").is_some_and(|r| r != room_id.as_str())
        {
            return Err(Error::bad_request(format!(
                "{server} offered a join that is not {user_id}'s to {room_id}"
            )));
        }
        let mut content = serde_json::Value::Object(custom.clone());
        if let (Some(content), serde_json::Value::Object(own)) = (
            content.as_object_mut(),
            self.member_content(user_id, "join").await?,
        ) {
            content.extend(own);
        }
        if let Some(CanonicalJsonValue::Object(template)) = event.get("content")
            && let Some(via) = template.get("join_authorised_via_users_server")
            && let Some(object) = content.as_object_mut()
        {
            object.insert(
                "join_authorised_via_users_server".to_owned(),
                serde_json::to_value(via).unwrap_or_default(),
            );
        }
        event.insert(
            "content".to_owned(),
            serde_json::from_value(content).map_err(|e| Error::Internal(e.into()))?,
        );
        let event_id = self.sign_template(&mut event, &rules)?;
        let body = serde_json::to_value(&event).map_err(|e| Error::Internal(e.into()))?;
        let path = format!(
            "/_matrix/federation/v2/send_join/{}/{}",
            percent(room_id.as_str()),
            percent(event_id.as_str()),
        );
        let answer = self
            .federation_json(server, http::Method::PUT, &path, Some(&body), timeout)
            .await?;
        let joined: SendJoin = serde_json::from_value(answer)
            .map_err(|e| Error::bad_request(format!("{server}'s send_join answer: {e}")))?;
        if joined.state.len() + joined.auth_chain.len() > MAX_JOIN_EVENTS {
            return Err(Error::forbidden(format!(
                "{room_id} has more than {MAX_JOIN_EVENTS} state and auth events: too large to join here yet"
            )));
        }
        self.import_joined_room(room_id, &version, &joined).await?;
        let mut json = serde_json::to_string(&event).map_err(|e| Error::Internal(e.into()))?;
        // A restricted room's server countersigned the join: that copy is the one to keep.
        if let Some(countersigned) = &joined.event
            && let Ok(checked) = self.checked_pdu(&version, countersigned).await
            && checked.event_id == event_id
        {
            json = checked.json;
        }
        self.append_remote(room_id, &event_id, &json).await
    }

    /// Checks every event of a `send_join` answer and stores the room: auth chain first, then
    /// the state, each in depth order.
    async fn import_joined_room(
        &self,
        room_id: &RoomId,
        version: &str,
        joined: &SendJoin,
    ) -> Result<()> {
        let mut checked = Vec::new();
        let mut state_ids = HashSet::new();
        let mut seen = HashSet::new();
        for (is_state, raw) in joined
            .state
            .iter()
            .map(|r| (true, r))
            .chain(joined.auth_chain.iter().map(|r| (false, r)))
        {
            let pdu = self.checked_pdu(version, raw).await.map_err(|e| {
                Error::forbidden(format!("The room's state does not check out: {e}"))
            })?;
            if !seen.insert(pdu.event_id.clone()) {
                continue;
            }
            if is_state {
                state_ids.insert(pdu.event_id.clone());
            }
            let depth = match pdu.object.get("depth") {
                Some(CanonicalJsonValue::Integer(d)) => i64::from(*d),
                _ => 0,
            };
            checked.push((depth, pdu));
        }
        let create = checked
            .iter()
            .find(|(_, pdu)| matches!(pdu.object.get("type"), Some(CanonicalJsonValue::String(t)) if t == "m.room.create"))
            .ok_or_else(|| Error::forbidden("The room's state has no create event"))?;
        let creator = match create.1.object.get("sender") {
            Some(CanonicalJsonValue::String(s)) => s.clone(),
            _ => String::new(),
        };
        if self.store.room(room_id.as_str()).await?.is_none() {
            self.store
                .insert_room(room_id.as_str(), version, &creator, self.now_ms())
                .await?;
        } else {
            // A room known only from an invite took the inviter's word for its version; the
            // server it is joined through has the room.
            self.store
                .set_room_version(room_id.as_str(), version)
                .await?;
        }
        // Superseded auth events first, the current state last, so that it ends up current.
        checked.sort_by_key(|(depth, pdu)| (state_ids.contains(&pdu.event_id), *depth));
        for (_, pdu) in &checked {
            self.import_remote_event(room_id, &pdu.event_id, &pdu.json)
                .await?;
        }
        Ok(())
    }
}

impl Services {
    /// Finishes a `make_join`/`make_leave` template as this server's event: timestamped now,
    /// hashed and signed here; its id.
    pub(super) fn sign_template(
        &self,
        event: &mut CanonicalJsonObject,
        rules: &ruma::room_version_rules::RoomVersionRules,
    ) -> Result<OwnedEventId> {
        let internal = |e: ruma::signatures::JsonError| Error::Internal(e.into());
        event.insert(
            "origin_server_ts".to_owned(),
            CanonicalJsonValue::Integer(
                ruma::Int::try_from(self.now_ms()).map_err(|e| Error::Internal(e.into()))?,
            ),
        );
        for key in ["event_id", "hashes", "signatures", "unsigned"] {
            event.remove(key);
        }
        // Room versions 1 and 2 name events `$opaque:server`, inside the signed event.
        let opaque = (rules.event_id_format == ruma::room_version_rules::EventIdFormatVersion::V1)
            .then(|| {
                format!(
                    "${}:{}",
                    crate::service::secrets::random_alphanumeric(18),
                    self.config.server_name
                )
            });
        if let Some(id) = &opaque {
            event.insert(
                "event_id".to_owned(),
                CanonicalJsonValue::String(id.clone()),
            );
        }
        ruma::signatures::hash_and_sign_event(
            self.config.server_name.as_str(),
            &self.signing_key,
            event,
            &rules.redaction,
        )
        .map_err(internal)?;
        if let Some(id) = opaque {
            return EventId::parse(id).map_err(|e| Error::Internal(e.into()));
        }
        let reference = ruma::signatures::reference_hash(event, rules).map_err(internal)?;
        EventId::parse(format!("${reference}")).map_err(|e| Error::Internal(e.into()))
    }
}

/// `/_matrix/federation/v1/{kind}/{roomId}/{userId}` offering every room version this
/// server speaks (`make_join`, `make_knock`).
pub(super) fn make_path(kind: &str, room_id: &RoomId, user_id: &UserId) -> String {
    let versions: String = crate::service::rooms::SUPPORTED_ROOM_VERSIONS
        .iter()
        .map(|v| format!("ver={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "/_matrix/federation/v1/{kind}/{}/{}?{versions}",
        percent(room_id.as_str()),
        percent(user_id.as_str()),
    )
}

/// A path segment, percent-encoded.
pub(super) fn percent(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
