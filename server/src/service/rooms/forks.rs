//! Forks of a room's history: an event another server made on what it had (not on this
//! server's latest) is checked against the state before it, resolved from the states after
//! its `prev_events`, and the room's state afterwards is resolved from the current state
//! and the state after it. State resolution v2 (v2.1 for room version 12) is ruma's.

use std::collections::{HashMap, HashSet};

use ruma::{
    EventId, OwnedEventId, RoomId, events::StateEventType, room_version_rules::RoomVersionRules,
    state_res,
};

use super::pdu::Pdu;
use crate::{
    http::error::{Error, Result},
    service::Services,
    store::{StateMap, StoredEvent},
};

/// The state after a stored event: the state before it, and it when it is state.
fn state_after(event: &StoredEvent, before: &StateMap) -> StateMap {
    let mut state = before.clone();
    if let Some(key) = &event.state_key {
        state.insert((event.kind.clone(), key.clone()), event.event_id.clone());
    }
    state
}

/// Whether the state recorded before an event is the state the room's history gives it:
/// not for outliers (a join's state, an invite's), nor for history fetched by backfill,
/// which carry the state this server had when it stored them.
fn state_is_known(event: &StoredEvent) -> bool {
    !event.outlier
        && event.stream_ordering > 0
        && (event.state_before.is_some() || event.kind == "m.room.create")
}

/// Events on auth paths between conflicted events (MSC4297, room version 12's state
/// resolution): ancestors of a conflicted event that have a conflicted event among their
/// own ancestors.
fn conflicted_subgraph(
    events: &HashMap<OwnedEventId, Pdu>,
    conflicted: &state_res::StateMap<Vec<OwnedEventId>>,
) -> HashSet<OwnedEventId> {
    let starts: HashSet<&OwnedEventId> = conflicted.values().flatten().collect();
    // Everything reached from a conflicted event through auth events.
    let mut ancestors: HashSet<&OwnedEventId> = HashSet::new();
    let mut next: Vec<&OwnedEventId> = starts.iter().copied().collect();
    while let Some(id) = next.pop() {
        if let Some(event) = events.get(id) {
            for auth in &event.auth_events {
                if ancestors.insert(auth) {
                    next.push(auth);
                }
            }
        }
    }
    // Of those, the ones that reach a conflicted event (until nothing changes).
    let mut reaching: HashSet<&OwnedEventId> = starts.clone();
    loop {
        let before = reaching.len();
        for id in &ancestors {
            if !reaching.contains(id)
                && events
                    .get(*id)
                    .is_some_and(|e| e.auth_events.iter().any(|a| reaching.contains(a)))
            {
                reaching.insert(id);
            }
        }
        if reaching.len() == before {
            break;
        }
    }
    ancestors
        .into_iter()
        .chain(starts)
        .filter(|id| reaching.contains(id))
        .cloned()
        .collect()
}

impl Services {
    /// The state before an event with these `prev_events`: the state after the one known
    /// here, or resolved from the states after each; `None` when the state after none of
    /// them is known.
    pub(super) async fn state_before_prevs(
        &self,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        prev_events: &[OwnedEventId],
    ) -> Result<Option<StateMap>> {
        let ids: Vec<String> = prev_events.iter().map(ToString::to_string).collect();
        let mut states = Vec::new();
        for event in self.store.events(&ids).await? {
            if event.room_id == room_id.as_str() && state_is_known(&event) {
                let before = self.store.shared_state_group(event.state_before).await?;
                states.push(state_after(&event, &before));
            }
        }
        match states.len() {
            0 => Ok(None),
            1 => Ok(states.pop()),
            _ => self.resolve_states(room_id, rules, states).await.map(Some),
        }
    }

    /// State resolution of `states` (identical ones need none).
    pub(super) async fn resolve_states(
        &self,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        mut states: Vec<StateMap>,
    ) -> Result<StateMap> {
        states.dedup();
        if states.len() <= 1 {
            return Ok(states.pop().unwrap_or_default());
        }
        let mut events: HashMap<OwnedEventId, Pdu> = HashMap::new();
        let mut chains = Vec::new();
        for state in &states {
            let ids: Vec<String> = state.values().cloned().collect();
            let stored = self.store.events(&ids).await?;
            let chain = self.auth_chain(room_id, &stored).await?;
            chains.push(
                chain
                    .iter()
                    .filter_map(|e| EventId::parse(&e.event_id).ok())
                    .collect::<state_res::utils::event_id_set::EventIdSet<OwnedEventId>>(),
            );
            for event in stored.iter().chain(&chain) {
                if let Ok(id) = EventId::parse(&event.event_id)
                    && !events.contains_key(&id)
                {
                    events.insert(id, Pdu::from_stored(event).map_err(Error::Internal)?);
                }
            }
        }
        let maps: Vec<state_res::StateMap<OwnedEventId>> = states
            .iter()
            .map(|state| {
                state
                    .iter()
                    .filter_map(|((kind, key), id)| {
                        Some((
                            (StateEventType::from(kind.as_str()), key.clone()),
                            EventId::parse(id).ok()?,
                        ))
                    })
                    .collect()
            })
            .collect();
        let rules = rules.clone();
        // CPU-bound, and as large as the rooms' conflicts: off the runtime's threads.
        let resolved = tokio::task::spawn_blocking(move || {
            let v2 = rules
                .state_res
                .v2_rules()
                .ok_or_else(|| "the room version resolves state with v1".to_owned())?;
            state_res::resolve(
                &rules.authorization,
                v2,
                maps.iter(),
                chains,
                |id| events.get(id),
                |conflicted| {
                    Some(
                        conflicted_subgraph(&events, conflicted)
                            .into_iter()
                            .collect(),
                    )
                },
            )
            .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| Error::Internal(e.into()))?
        .map_err(|why| Error::forbidden(format!("The room's state does not resolve: {why}")))?;
        Ok(resolved
            .into_iter()
            .map(|((kind, key), id)| ((kind.to_string(), key), id.to_string()))
            .collect())
    }

    /// `(user, membership, event id)` for each member entry that differs between two states.
    pub(super) async fn membership_changes(
        &self,
        previous: &StateMap,
        current: &StateMap,
    ) -> Result<Vec<(String, String, String)>> {
        let changed: Vec<String> = current
            .iter()
            .filter(|((kind, key), id)| {
                kind == "m.room.member" && previous.get(&(kind.clone(), key.clone())) != Some(*id)
            })
            .map(|(_, id)| id.clone())
            .collect();
        let mut changes = Vec::new();
        for event in self.store.events(&changed).await? {
            let pdu = Pdu::from_stored(&event).map_err(Error::Internal)?;
            let membership = pdu
                .content_object()
                .get("membership")
                .and_then(|m| m.as_str().map(str::to_owned));
            if let (Some(user), Some(membership)) = (event.state_key, membership) {
                changes.push((user, membership, event.event_id));
            }
        }
        Ok(changes)
    }
}
