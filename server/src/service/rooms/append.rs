//! Making an event: select its auth events, hash and sign it, check it against the
//! authorization rules at the room's current state, and append it.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
};

use http::StatusCode;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, DeviceId, EventId, OwnedEventId, RoomId,
    RoomVersionId, UserId,
    api::error::ErrorKind,
    events::{StateEventType, TimelineEventType},
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
    signatures, state_res,
};
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

use super::pdu::Pdu;
use crate::{
    http::error::{Error, Result},
    service::{
        Services,
        gate::{Door, GATE_EVENT_TYPE, ROLES_EVENT_TYPE},
        secrets,
    },
    store::{NewEvent, PushAction, Resolution, RoomRow},
};

/// Largest PDU the spec allows.
const MAX_PDU_BYTES: usize = 65_535;
/// Longest event type and state key the spec allows, in bytes.
const MAX_FIELD_BYTES: usize = 255;

/// How often an append is retried when another instance appended to the room meanwhile.
const MAX_APPEND_ATTEMPTS: usize = 8;
/// How often a join's gate is decided again when the gate changed while it was decided.
const MAX_GATE_DECISIONS: usize = 3;

/// How an append under the room lock ended.
enum Appended {
    /// The new event.
    Event(OwnedEventId),
    /// Other instances kept appending first.
    Busy,
    /// The room's gate is no longer the one the entry was decided against.
    GateChanged,
}

/// An event to make, before it has ids, hashes and signatures.
#[derive(Clone, Debug)]
pub struct EventDraft {
    /// Event type.
    pub kind: TimelineEventType,
    /// Content (a JSON object).
    pub content: Value,
    /// Present for state events.
    pub state_key: Option<String>,
    /// For redactions: the event to redact.
    pub redacts: Option<OwnedEventId>,
    /// Appended only while the user named by the state key still has one of these
    /// memberships, checked under the room lock (a kick must not land on a ban, a profile
    /// update must not re-join someone who was just removed).
    pub target_must_be: Option<&'static [&'static str]>,
    /// For a state event computed from the current one: appended only while the room's
    /// event at its type and state key is still this one (`Some(None)`: none), checked under
    /// the room lock; otherwise [`STATE_CHANGED`] (an edit made meanwhile is not overwritten).
    pub replaces: Option<Option<String>>,
}

/// The errcode of an append refused because the state it was computed from changed.
pub const STATE_CHANGED: &str = "IO.MATRIXON.STATE_CHANGED";

impl EventDraft {
    /// A state event.
    pub fn state(kind: impl Into<String>, state_key: impl Into<String>, content: Value) -> Self {
        Self {
            kind: TimelineEventType::from(kind.into()),
            content,
            state_key: Some(state_key.into()),
            redacts: None,
            target_must_be: None,
            replaces: None,
        }
    }
}

/// Per-room serialisation inside one process: a fixed set of locks, hashed by room id.
pub struct RoomLocks(Vec<Mutex<()>>);

impl Default for RoomLocks {
    fn default() -> Self {
        Self((0..256).map(|_| Mutex::new(())).collect())
    }
}

impl RoomLocks {
    /// Holds the lock of `room_id`'s shard.
    pub async fn lock(&self, room_id: &RoomId) -> MutexGuard<'_, ()> {
        let mut hasher = DefaultHasher::new();
        room_id.hash(&mut hasher);
        let shard = usize::try_from(hasher.finish() % self.0.len() as u64).unwrap_or(0);
        self.0[shard].lock().await
    }
}

/// The rules of a room version this server supports: every stable one ruma implements (old
/// rooms on the network still use 1–9).
pub fn version_rules(version: &str) -> Result<(RoomVersionId, RoomVersionRules)> {
    let id = RoomVersionId::try_from(version)
        .map_err(|_| Error::bad_json(format!("{version} is not a room version")))?;
    let rules = super::SUPPORTED_ROOM_VERSIONS
        .contains(&id.as_str())
        .then(|| id.rules())
        .flatten()
        .ok_or_else(|| {
            Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::UnsupportedRoomVersion,
                format!(
                    "Room version {version} is not supported here ({} are)",
                    super::SUPPORTED_ROOM_VERSIONS.join(", ")
                ),
            )
        })?;
    Ok((id, rules))
}

fn canonical(value: Value, what: &str) -> Result<CanonicalJsonValue> {
    CanonicalJsonValue::try_from(value)
        .map_err(|e| Error::bad_json(format!("{what} is not canonical JSON: {e}")))
}

fn int(value: i64) -> Result<CanonicalJsonValue> {
    ruma::Int::try_from(value)
        .map(CanonicalJsonValue::Integer)
        .map_err(|_| internal("integer out of the canonical JSON range"))
}

/// 413 `M_TOO_LARGE`.
fn too_large(message: &str) -> Error {
    Error::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::TooLarge, message)
}

/// Hashing and signing refuse an event over the size limit: the sender's fault, not ours.
fn signing_error(e: signatures::JsonError) -> Error {
    match e {
        signatures::JsonError::PduTooLarge => {
            too_large(&format!("The event is larger than {MAX_PDU_BYTES} bytes"))
        }
        other => internal(other),
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow::anyhow!("building an event: {e}"))
}

impl Services {
    /// Makes `draft` in `room_id` as `sender` and appends it; the new event's id. A `txn`
    /// records which device sent it with which transaction id.
    pub async fn append(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: EventDraft,
        txn: Option<(&DeviceId, &str)>,
    ) -> Result<OwnedEventId> {
        if let Some(existing) = self.same_state(room_id, sender, &draft).await? {
            return Ok(existing);
        }
        let mut draft = draft;
        for _ in 0..MAX_GATE_DECISIONS {
            // A token gate is decided before the room is locked (it may ask a chain), and the
            // event appended only on the gate event it was decided against.
            let door = self.gate_membership(room_id, sender, &draft).await?;
            if door == Door::ProfileUpdate {
                draft.target_must_be = Some(&["join"]);
            }
            let gate_event = match &door {
                Door::Entry { gate_event } => Some(gate_event.as_deref()),
                _ => None,
            };
            let _guard = self.room_locks.lock(room_id).await;
            // A retried request (same device, same transaction id) gets the event it made.
            if let Some((device, txn_id)) = txn
                && let Some(existing) = self
                    .store
                    .txn_event(sender.as_str(), device.as_str(), room_id.as_str(), txn_id)
                    .await?
            {
                return EventId::parse(existing).map_err(internal);
            }
            // Recorded with the event, so that the sync that shows it shows its unread counts;
            // decided once, before the room is read, so a retry is no slower than before.
            let push_actions = self.push_actions(room_id, sender, &draft).await;
            match self
                .append_locked(room_id, sender, &draft, txn, &push_actions, gate_event)
                .await?
            {
                Appended::Event(event_id) => return Ok(event_id),
                Appended::Busy => break,
                Appended::GateChanged => {
                    tracing::info!(%room_id, %sender, "the gate changed during a join: deciding again");
                }
            }
        }
        Err(Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unknown,
            "The room is too busy right now; try again",
        ))
    }

    /// The current state event that `draft` would repeat (same sender, same content): setting
    /// state, or joining, twice is idempotent, as on Synapse.
    async fn same_state(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: &EventDraft,
    ) -> Result<Option<OwnedEventId>> {
        let Some(state_key) = &draft.state_key else {
            return Ok(None);
        };
        let Some(current) = self
            .store
            .current_state_event(room_id.as_str(), &draft.kind.to_string(), state_key)
            .await?
        else {
            return Ok(None);
        };
        if current.sender != sender.as_str() {
            return Ok(None);
        }
        let pdu = Pdu::from_stored(&current).map_err(Error::Internal)?;
        Ok((Value::Object(pdu.content_object()) == draft.content).then_some(pdu.event_id))
    }

    /// The append, under the room lock: retried when another instance appended meanwhile.
    async fn append_locked(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: &EventDraft,
        txn: Option<(&DeviceId, &str)>,
        push_actions: &[PushAction],
        gate_event: Option<Option<&str>>,
    ) -> Result<Appended> {
        let gate_key = (GATE_EVENT_TYPE.to_owned(), String::new());
        for _ in 0..MAX_APPEND_ATTEMPTS {
            if let (Some(required), Some(target)) = (draft.target_must_be, &draft.state_key)
                && let Ok(target) = UserId::parse(target.as_str())
                && !self
                    .membership(room_id, &target)
                    .await?
                    .is_some_and(|m| required.contains(&m.as_str()))
            {
                return Err(Error::forbidden(format!(
                    "{target}'s membership in {room_id} changed meanwhile; nothing was changed"
                )));
            }
            let room = self
                .store
                .room(room_id.as_str())
                .await?
                .ok_or_else(|| Error::not_found("Unknown room"))?;
            let prepared = self.prepare(room_id, &room, sender, draft).await?;
            if let Some(decided) = gate_event
                && prepared.state.get(&gate_key).map(String::as_str) != decided
            {
                return Ok(Appended::GateChanged);
            }
            if let (Some(expected), Some(state_key)) = (&draft.replaces, &draft.state_key)
                && prepared
                    .state
                    .get(&(draft.kind.to_string(), state_key.clone()))
                    != expected.as_ref()
            {
                return Err(Error::Detailed {
                    status: StatusCode::CONFLICT,
                    errcode: STATE_CHANGED,
                    message: format!("{} changed meanwhile; nothing was changed", draft.kind),
                    extra: serde_json::Map::new(),
                });
            }
            prepared.authorize()?;
            if let Some(event_id) = self.commit(prepared, &room, txn, push_actions).await? {
                return Ok(Appended::Event(event_id));
            }
            // Another instance appended to this room meanwhile: build on its event instead.
        }
        Ok(Appended::Busy)
    }

    /// Selects auth events, then hashes and signs the event on top of `room`'s state.
    pub(crate) async fn prepare(
        &self,
        room_id: &RoomId,
        room: &RoomRow,
        sender: &UserId,
        draft: &EventDraft,
    ) -> Result<Prepared> {
        let (_, rules) = version_rules(&room.version)?;
        if !draft.content.is_object() {
            return Err(Error::bad_json("Event content must be a JSON object"));
        }
        // The spec's size limits for the fields other servers index by.
        let kind = draft.kind.to_string();
        if kind.len() > MAX_FIELD_BYTES {
            return Err(too_large(&format!(
                "An event type is at most {MAX_FIELD_BYTES} bytes"
            )));
        }
        if draft
            .state_key
            .as_ref()
            .is_some_and(|k| k.len() > MAX_FIELD_BYTES)
        {
            return Err(too_large(&format!(
                "A state key is at most {MAX_FIELD_BYTES} bytes"
            )));
        }
        if kind == GATE_EVENT_TYPE {
            self.validate_gate_event(draft.state_key.as_deref(), &draft.content)?;
        }
        if kind == ROLES_EVENT_TYPE {
            self.validate_roles_event(room_id, sender, draft.state_key.as_deref(), &draft.content)
                .await?;
        }
        let content_raw = serde_json::value::to_raw_value(&draft.content).map_err(internal)?;

        // The state the event is checked against, and its auth events.
        let state = self.store.state_of_group(room.state_group).await?;
        let auth_types = state_res::auth_types_for_event(
            &draft.kind,
            sender,
            draft.state_key.as_deref(),
            &content_raw,
            &rules.authorization,
        )
        .map_err(|e| Error::bad_json(format!("Invalid content: {e}")))?;
        let create_key = (StateEventType::RoomCreate.to_string(), String::new());
        let mut wanted: Vec<String> = auth_types
            .iter()
            .filter_map(|(kind, key)| state.get(&(kind.to_string(), key.clone())).cloned())
            .collect();
        if let Some(create) = state.get(&create_key)
            && !wanted.contains(create)
        {
            wanted.push(create.clone());
        }
        let loaded: HashMap<OwnedEventId, Pdu> = self
            .store
            .events(&wanted)
            .await?
            .iter()
            .map(|stored| Pdu::from_stored(stored).map(|pdu| (pdu.event_id.clone(), pdu)))
            .collect::<Result<_, _>>()
            .map_err(Error::Internal)?;
        let mut auth_events: Vec<OwnedEventId> = auth_types
            .iter()
            .filter_map(|(kind, key)| state.get(&(kind.to_string(), key.clone())))
            .filter_map(|id| EventId::parse(id).ok())
            .filter(|id| loaded.contains_key(id))
            .collect();
        if !rules.authorization.room_create_event_id_as_room_id
            && let Some(create) = state
                .get(&create_key)
                .and_then(|id| EventId::parse(id).ok())
            && loaded.contains_key(&create)
        {
            auth_events.push(create);
        }
        auth_events.sort();
        auth_events.dedup();

        let is_create = draft.kind == TimelineEventType::RoomCreate;
        let ids = |ids: &[OwnedEventId]| {
            CanonicalJsonValue::Array(
                ids.iter()
                    .map(|id| CanonicalJsonValue::String(id.to_string()))
                    .collect(),
            )
        };
        let mut object = CanonicalJsonObject::new();
        object.insert("auth_events".to_owned(), ids(&auth_events));
        let mut content = draft.content.clone();
        if let (Some(redacts), true) = (&draft.redacts, rules.redaction.content_field_redacts)
            && let Some(map) = content.as_object_mut()
        {
            map.insert("redacts".to_owned(), Value::from(redacts.as_str()));
        }
        object.insert("content".to_owned(), canonical(content, "content")?);
        let depth = room.depth.saturating_add(1);
        object.insert("depth".to_owned(), int(depth)?);
        let now = self.now_ms();
        object.insert("origin_server_ts".to_owned(), int(now)?);
        let prev: Vec<OwnedEventId> = room
            .extremities
            .iter()
            .map(EventId::parse)
            .collect::<Result<_, _>>()
            .map_err(internal)?;
        object.insert("prev_events".to_owned(), ids(&prev));
        if !(is_create && rules.authorization.room_create_event_id_as_room_id) {
            object.insert(
                "room_id".to_owned(),
                CanonicalJsonValue::String(room_id.to_string()),
            );
        }
        object.insert(
            "sender".to_owned(),
            CanonicalJsonValue::String(sender.to_string()),
        );
        object.insert(
            "type".to_owned(),
            CanonicalJsonValue::String(draft.kind.to_string()),
        );
        if let Some(state_key) = &draft.state_key {
            object.insert(
                "state_key".to_owned(),
                CanonicalJsonValue::String(state_key.clone()),
            );
        }
        if let (Some(redacts), false) = (&draft.redacts, rules.redaction.content_field_redacts) {
            object.insert(
                "redacts".to_owned(),
                CanonicalJsonValue::String(redacts.to_string()),
            );
        }
        // Room versions 1 and 2 name events `$opaque:server`, inside the signed event; later
        // ones by the event's reference hash.
        let opaque_id = (rules.event_id_format == EventIdFormatVersion::V1).then(|| {
            format!(
                "${}:{}",
                secrets::random_alphanumeric(18),
                self.config.server_name
            )
        });
        if let Some(id) = &opaque_id {
            object.insert(
                "event_id".to_owned(),
                CanonicalJsonValue::String(id.clone()),
            );
        }
        signatures::hash_and_sign_event(
            self.config.server_name.as_str(),
            &self.signing_key,
            &mut object,
            &rules.redaction,
        )
        .map_err(signing_error)?;
        let event_id = match opaque_id {
            Some(id) => id,
            None => format!(
                "${}",
                signatures::reference_hash(&object, &rules).map_err(signing_error)?
            ),
        };
        let event_id = EventId::parse(event_id).map_err(internal)?;
        let json = serde_json::to_string(&object).map_err(internal)?;
        if json.len() > MAX_PDU_BYTES {
            return Err(too_large(&format!(
                "The event is larger than {MAX_PDU_BYTES} bytes"
            )));
        }
        let pdu = Pdu::from_json(event_id, room_id, &json).map_err(internal)?;
        Ok(Prepared {
            pdu,
            json,
            rules,
            state,
            loaded,
            depth,
            now,
            redacts: draft.redacts.clone(),
            resolution: None,
        })
    }

    /// Appends a prepared, authorised event; `None` when the room moved on meanwhile.
    pub(super) async fn commit(
        &self,
        prepared: Prepared,
        room: &RoomRow,
        txn: Option<(&DeviceId, &str)>,
        push_actions: &[PushAction],
    ) -> Result<Option<OwnedEventId>> {
        let pdu = &prepared.pdu;
        // A redaction also prunes the stored target, per the room version's rules.
        let redacted_target = match &prepared.redacts {
            Some(target) => match self.store.event(target.as_str()).await? {
                Some(stored) if stored.room_id == pdu.room_id.as_str() => {
                    let object: CanonicalJsonObject =
                        serde_json::from_str(&stored.json).map_err(internal)?;
                    let pruned =
                        ruma::canonical_json::redact(object, &prepared.rules.redaction, None)
                            .map_err(internal)?;
                    Some((
                        target.to_string(),
                        serde_json::to_string(&pruned).map_err(internal)?,
                    ))
                }
                _ => None,
            },
            None => None,
        };
        let content = pdu.content_object();
        let membership = (pdu.kind == TimelineEventType::RoomMember)
            .then(|| content.get("membership").and_then(Value::as_str))
            .flatten();
        let mut relation = content
            .get("m.relates_to")
            .and_then(|r| Some((r.get("event_id")?.as_str()?, r.get("rel_type")?.as_str()?)));
        // A relation only counts within its room: one pointing elsewhere is plain content.
        if let Some((target, _)) = relation
            && self
                .store
                .event(target)
                .await?
                .is_none_or(|t| t.room_id != pdu.room_id.as_str())
        {
            relation = None;
        }
        let kind = pdu.kind.to_string();
        let appended = self
            .store
            .append_event(
                &NewEvent {
                    event_id: pdu.event_id.as_str(),
                    room_id: pdu.room_id.as_str(),
                    sender: pdu.sender.as_str(),
                    kind: &kind,
                    state_key: pdu.state_key.as_deref(),
                    depth: prepared.depth,
                    origin_server_ts: prepared.now,
                    json: &prepared.json,
                    membership,
                    relation,
                    redaction: redacted_target
                        .as_ref()
                        .map(|(target, json)| (target.as_str(), json.as_str())),
                    txn: txn.map(|(device, txn_id)| (device.as_str(), txn_id)),
                    state_before: room.state_group,
                    push_actions,
                    outlier: false,
                    resolution: prepared.resolution.as_ref(),
                },
                &room.extremities,
            )
            .await?;
        let Some(stream_ordering) = appended else {
            return Ok(None);
        };
        let target = membership.and(pdu.state_key.as_deref());
        self.wake_room_for_event(&pdu.room_id, target, stream_ordering)
            .await?;
        // Each server sends its own users' events; other servers' arrive from them.
        if pdu.sender.server_name() == self.config.server_name {
            self.queue_for_federation(&pdu.room_id, pdu.event_id.as_str(), &pdu.sender, target)
                .await?;
        }
        self.deliver_push(pdu, push_actions).await;
        if redacted_target.is_some() {
            // Redacting the gate event empties it: the room is no longer gated.
            self.gate_redacted(&pdu.room_id).await?;
        }
        if kind == GATE_EVENT_TYPE && pdu.state_key.as_deref() == Some("") {
            self.gate_event_appended(&pdu.room_id, &Value::Object(content.clone()))
                .await?;
        }
        if kind == ROLES_EVENT_TYPE && pdu.state_key.as_deref() == Some("") {
            self.roles_event_appended(&pdu.room_id, &Value::Object(content.clone()))
                .await?;
        }
        if membership == Some("join")
            && let Some(target) = target
            && UserId::parse(target).is_ok_and(|t| t.server_name() == self.config.server_name)
        {
            self.role_joins.note(pdu.room_id.as_str(), target);
        }
        Ok(Some(pdu.event_id.clone()))
    }
}

/// An event built and signed, not yet checked or stored.
pub struct Prepared {
    /// The event.
    pub pdu: Pdu,
    json: String,
    rules: RoomVersionRules,
    state: crate::store::StateMap,
    loaded: HashMap<OwnedEventId, Pdu>,
    depth: i64,
    now: i64,
    redacts: Option<OwnedEventId>,
    /// Set for a remote event on a fork of the room's history.
    resolution: Option<Resolution>,
}

impl Prepared {
    /// The authorization rules at the state the event was built on: 403 with the reason.
    pub fn authorize(&self) -> Result<()> {
        let forbidden = |why: String| Error::forbidden(format!("Not allowed: {why}"));
        let fetch_event = |id: &EventId| self.loaded.get(id);
        state_res::check_state_independent_auth_rules(
            &self.rules.authorization,
            &self.pdu,
            fetch_event,
        )
        .map_err(forbidden)?;
        let fetch_state = |kind: &StateEventType, key: &str| {
            self.state
                .get(&(kind.to_string(), key.to_owned()))
                .and_then(|id| EventId::parse(id).ok())
                .and_then(|id| self.loaded.get(&id))
        };
        state_res::check_state_dependent_auth_rules(
            &self.rules.authorization,
            &self.pdu,
            fetch_state,
        )
        .map_err(forbidden)
    }
}

impl Services {
    /// Appends an event another server made, already checked for its id, signatures and
    /// hashes, on top of the room's current state: it must pass the authorization rules both
    /// against its own auth events and against the current state (so that nothing a remote
    /// server claims lets it past what this server knows). The event's id.
    pub(crate) async fn append_remote(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        json: &str,
    ) -> Result<OwnedEventId> {
        if self.store.event(event_id.as_str()).await?.is_some() {
            return Ok(event_id.to_owned());
        }
        let pdu = Pdu::from_json(event_id.to_owned(), room_id, json)
            .map_err(|e| Error::bad_json(format!("The event is malformed: {e}")))?;
        let draft = EventDraft {
            kind: pdu.kind.clone(),
            content: Value::Object(pdu.content_object()),
            state_key: pdu.state_key.clone(),
            redacts: pdu.redacts.clone(),
            target_must_be: None,
            replaces: None,
        };
        let push_actions = self.push_actions(room_id, &pdu.sender, &draft).await;
        let _guard = self.room_locks.lock(room_id).await;
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let room = self
                .store
                .room(room_id.as_str())
                .await?
                .ok_or_else(|| Error::not_found("Unknown room"))?;
            let (_, rules) = version_rules(&room.version)?;
            let current = self.store.state_of_group(room.state_group).await?;
            // Room version 1 resolves state with the first algorithm, which is not here:
            // its events go on the current state as they come.
            let builds_on_latest = rules.state_res.v2_rules().is_none()
                || pdu.prev_events.len() == room.extremities.len()
                    && pdu
                        .prev_events
                        .iter()
                        .all(|p| room.extremities.iter().any(|e| e == p.as_str()));
            let branch = if builds_on_latest {
                None
            } else {
                self.state_before_prevs(room_id, &rules, &pdu.prev_events)
                    .await?
            };
            let prepared = match branch {
                None => {
                    let prepared = self
                        .remote_prepared(room_id, &room, &rules, (event_id, json), current)
                        .await?;
                    prepared.authorize()?;
                    prepared
                }
                Some(before) => {
                    self.prepared_on_fork(
                        room_id,
                        &room,
                        &rules,
                        (event_id, json),
                        (current, before),
                    )
                    .await?
                }
            };
            if let Some(event_id) = self.commit(prepared, &room, None, &push_actions).await? {
                return Ok(event_id);
            }
        }
        Err(Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unknown,
            "The room is too busy right now; try again",
        ))
    }

    /// A remote event on a fork: rejected unless the rules allow it at its branch's state,
    /// refused (soft-failed) unless they allow it at the room's state with that branch
    /// merged in; the room's state after it resolved from the current state and its own.
    async fn prepared_on_fork(
        &self,
        room_id: &RoomId,
        room: &RoomRow,
        rules: &RoomVersionRules,
        event: (&EventId, &str),
        (current, before): (crate::store::StateMap, crate::store::StateMap),
    ) -> Result<Prepared> {
        let at_branch = self
            .remote_prepared(room_id, room, rules, event, before.clone())
            .await?;
        at_branch.authorize()?;
        let merged = self
            .resolve_states(room_id, rules, vec![current.clone(), before.clone()])
            .await?;
        let mut prepared = self
            .remote_prepared(room_id, room, rules, event, merged)
            .await?;
        prepared.authorize()?;
        let pdu = &prepared.pdu;
        let mut after = before.clone();
        if let Some(key) = &pdu.state_key {
            after.insert(
                (pdu.kind.to_string(), key.clone()),
                pdu.event_id.to_string(),
            );
        }
        let resolved = self
            .resolve_states(room_id, rules, vec![current.clone(), after])
            .await?;
        let memberships = self.membership_changes(&current, &resolved).await?;
        let mut extremities: Vec<String> = room
            .extremities
            .iter()
            .filter(|e| !pdu.prev_events.iter().any(|p| p.as_str() == e.as_str()))
            .cloned()
            .collect();
        extremities.push(pdu.event_id.to_string());
        prepared.resolution = Some(Resolution {
            previous: current,
            state_before: before,
            current: resolved,
            extremities,
            memberships,
        });
        Ok(prepared)
    }

    /// A remote event ready to be checked against `state` (its auth events and those the
    /// rules would pick from `state` loaded).
    async fn remote_prepared(
        &self,
        room_id: &RoomId,
        room: &RoomRow,
        rules: &RoomVersionRules,
        (event_id, json): (&EventId, &str),
        state: crate::store::StateMap,
    ) -> Result<Prepared> {
        let pdu = Pdu::from_json(event_id.to_owned(), room_id, json).map_err(internal)?;
        let auth_types = state_res::auth_types_for_event(
            &pdu.kind,
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content,
            &rules.authorization,
        )
        .map_err(|e| Error::bad_json(format!("Invalid content: {e}")))?;
        let mut wanted: Vec<String> = pdu.auth_events.iter().map(ToString::to_string).collect();
        wanted.extend(
            auth_types
                .iter()
                .chain([&(StateEventType::RoomCreate, String::new())])
                .filter_map(|(kind, key)| state.get(&(kind.to_string(), key.clone())).cloned()),
        );
        let loaded: HashMap<OwnedEventId, Pdu> = self
            .store
            .events(&wanted)
            .await?
            .iter()
            .filter(|stored| stored.room_id == room_id.as_str())
            .map(|stored| Pdu::from_stored(stored).map(|pdu| (pdu.event_id.clone(), pdu)))
            .collect::<Result<_, _>>()
            .map_err(Error::Internal)?;
        if let Some(missing) = pdu.auth_events.iter().find(|id| !loaded.contains_key(*id)) {
            return Err(Error::forbidden(format!(
                "The event's auth event {missing} is not known here"
            )));
        }
        // Never below the events it follows (Synapse orders history by depth).
        let depth = room
            .depth
            .saturating_add(1)
            .max(i64::try_from(u64::from(pdu.depth)).unwrap_or(i64::MAX));
        let now = i64::from(pdu.origin_server_ts.get());
        Ok(Prepared {
            redacts: pdu.redacts.clone(),
            pdu,
            json: json.to_owned(),
            rules: rules.clone(),
            state,
            loaded,
            depth,
            now,
            resolution: None,
        })
    }
}

impl Services {
    /// A member event (`content`: a join, leave or knock) for `user_id` of another server,
    /// built on the room's current state and not signed: the template `make_join`,
    /// `make_leave` and `make_knock` hand out. 403 when the rules do not allow it.
    pub(crate) async fn membership_template(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        content: Value,
    ) -> Result<(String, CanonicalJsonObject)> {
        let room = self
            .store
            .room(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("No room {room_id} here")))?;
        let draft = EventDraft::state("m.room.member", user_id.as_str(), content);
        let prepared = self.prepare(room_id, &room, user_id, &draft).await?;
        prepared.authorize()?;
        let mut template: CanonicalJsonObject =
            serde_json::from_str(&prepared.json).map_err(internal)?;
        template.remove("hashes");
        template.remove("signatures");
        Ok((room.version, template))
    }
}

impl Services {
    /// Stores an event of a room joined through another server (its state or auth chain, as
    /// `send_join` answered, already checked for id and signatures) on top of what was
    /// imported before it, after the authorization rules that need only its auth events.
    pub(crate) async fn import_remote_event(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        json: &str,
    ) -> Result<()> {
        if self.store.event(event_id.as_str()).await?.is_some() {
            return Ok(());
        }
        let room = self
            .store
            .room(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let (_, rules) = version_rules(&room.version)?;
        let pdu = Pdu::from_json(event_id.to_owned(), room_id, json)
            .map_err(|e| Error::bad_json(format!("The event is malformed: {e}")))?;
        let wanted: Vec<String> = pdu.auth_events.iter().map(ToString::to_string).collect();
        let loaded = self.stored_auth_events(room_id, &rules, &wanted).await?;
        state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, |id| {
            loaded.get(id)
        })
        .map_err(|why| Error::forbidden(format!("{event_id} is not allowed: {why}")))?;
        self.append_outlier(room_id, &pdu, json, true)
            .await
            .map(drop)
    }

    /// The events of `room_id` among `ids` that are stored here, and in room version 12 the
    /// room's create event too (not among events' auth events there): what the rules that
    /// need only an event's auth events read.
    pub(crate) async fn stored_auth_events(
        &self,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        ids: &[String],
    ) -> Result<HashMap<OwnedEventId, Pdu>> {
        let mut loaded: HashMap<OwnedEventId, Pdu> = HashMap::new();
        for stored in self.store.events(ids).await? {
            if stored.room_id == room_id.as_str() {
                let auth = Pdu::from_stored(&stored).map_err(Error::Internal)?;
                loaded.insert(auth.event_id.clone(), auth);
            }
        }
        if rules.authorization.room_create_event_id_as_room_id
            && let Some(create) = self
                .store
                .current_state_event(room_id.as_str(), "m.room.create", "")
                .await?
        {
            let create = Pdu::from_stored(&create).map_err(Error::Internal)?;
            loaded.insert(create.event_id.clone(), create);
        }
        Ok(loaded)
    }

    /// Stores a remote event on top of the room's state without the checks against that
    /// state (its callers checked what can be checked), in the timeline or (`outlier`) not;
    /// its stream position.
    async fn append_outlier(
        &self,
        room_id: &RoomId,
        pdu: &Pdu,
        json: &str,
        outlier: bool,
    ) -> Result<i64> {
        let kind = pdu.kind.to_string();
        let content = pdu.content_object();
        let membership = (pdu.kind == TimelineEventType::RoomMember)
            .then(|| content.get("membership").and_then(Value::as_str))
            .flatten();
        let _guard = self.room_locks.lock(room_id).await;
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let room = self
                .store
                .room(room_id.as_str())
                .await?
                .ok_or_else(|| Error::not_found("Unknown room"))?;
            let appended = self
                .store
                .append_event(
                    &NewEvent {
                        event_id: pdu.event_id.as_str(),
                        room_id: room_id.as_str(),
                        sender: pdu.sender.as_str(),
                        kind: &kind,
                        state_key: pdu.state_key.as_deref(),
                        depth: room.depth.saturating_add(1),
                        origin_server_ts: i64::from(pdu.origin_server_ts.get()),
                        json,
                        membership,
                        relation: None,
                        redaction: None,
                        txn: None,
                        state_before: room.state_group,
                        push_actions: &[],
                        outlier,
                        resolution: None,
                    },
                    &room.extremities,
                )
                .await?;
            if let Some(position) = appended {
                return Ok(position);
            }
        }
        Err(Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unknown,
            "The room is too busy right now; try again",
        ))
    }
}

impl Services {
    /// An event made and signed here on the room's current state and checked against the
    /// authorization rules, not stored: `(room version, event id, JSON)`. For events another
    /// server must countersign before they are appended (invites of its users).
    pub(crate) async fn signed_unstored(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: &EventDraft,
    ) -> Result<(String, OwnedEventId, String)> {
        let room = self
            .store
            .room(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("No room {room_id} here")))?;
        let prepared = self.prepare(room_id, &room, sender, draft).await?;
        prepared.authorize()?;
        Ok((room.version, prepared.pdu.event_id.clone(), prepared.json))
    }
}

impl Services {
    /// Keeps an invite (or the leave that rejects it) to a room this server is not in, with
    /// none of the room's other events: the room row is made when missing, and the member
    /// event stored as the room's only state, so that sync shows it to the invitee.
    pub(crate) async fn store_invite_outlier(
        &self,
        room_id: &RoomId,
        room_version: &str,
        event_id: &EventId,
        sender: &UserId,
        target: &UserId,
        json: &str,
    ) -> Result<()> {
        if self.store.event(event_id.as_str()).await?.is_some() {
            return Ok(());
        }
        if self.store.room(room_id.as_str()).await?.is_none() {
            self.store
                .insert_room(
                    room_id.as_str(),
                    room_version,
                    sender.as_str(),
                    self.now_ms(),
                )
                .await?;
        }
        let pdu = Pdu::from_json(event_id.to_owned(), room_id, json).map_err(internal)?;
        if pdu.kind != TimelineEventType::RoomMember
            || pdu.sender != sender
            || pdu.state_key.as_deref() != Some(target.as_str())
        {
            return Err(Error::bad_request(
                "Only a member event is kept without its room",
            ));
        }
        let position = self.append_outlier(room_id, &pdu, json, false).await?;
        self.wake_room_for_event(room_id, Some(target.as_str()), position)
            .await
    }
}
