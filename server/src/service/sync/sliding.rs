//! Simplified sliding sync (MSC4186, as Synapse serves it and Element X speaks it): room lists
//! sorted by activity and cut to the windows the client asks for, each room sent in full the
//! first time a connection sees it and by its changes afterwards. What a connection has sent
//! is kept in the database per position, so another instance or a restart continues it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ruma::{
    JsOption, OwnedMxcUri, OwnedRoomId, RoomId, UInt, UserId,
    api::client::sync::sync_events::v5::{self, request, response},
    directory::RoomTypeFilter,
    events::StateEventType,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EventFilter, MAX_TIMEOUT, Parked, SyncOptions, SyncToken, TO_DEVICE_PER_SYNC};
use crate::{
    http::{
        error::{Error, Result},
        ruma::to_raw,
    },
    service::{Services, secrets},
    store::{RoomStamp, StoredEvent},
};

/// Most rooms one answer sends (a growing list asks for more in later requests).
const MAX_ROOMS_PER_ANSWER: usize = 500;
/// Most timeline events per room.
const MAX_TIMELINE_LIMIT: usize = 100;
/// Most `required_state` entries a room config may have.
const MAX_REQUIRED_STATE: usize = 100;
/// Most lists in one request.
const MAX_LISTS: usize = 20;
/// Most connections (`conn_id`s) a device keeps; a new one beyond it is refused.
const MAX_CONNECTIONS: usize = 20;
/// Longest `conn_id` accepted.
const MAX_CONN_ID: usize = 64;
/// Most ranges one list may have.
const MAX_RANGES: usize = 10;
/// Most room subscriptions one request may have.
const MAX_SUBSCRIPTIONS: usize = 100;

/// What a connection has sent, as of one of its positions.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Connection {
    /// The streams' positions the answer reached (a `/sync` token).
    token: String,
    /// Per room: the stream position it was sent up to and the config it was sent under.
    rooms: BTreeMap<String, (i64, String)>,
    /// Each list's room count, so that a changed count is news.
    counts: BTreeMap<String, u64>,
}

/// How one room is to be sent: the widest of the configs of the lists and the subscription
/// that name it.
#[derive(Clone, Debug, Default)]
struct RoomConfig {
    timeline_limit: usize,
    required_state: BTreeSet<(String, String)>,
}

impl RoomConfig {
    fn widen(&mut self, timeline_limit: UInt, required_state: &[(StateEventType, String)]) {
        let limit = usize::try_from(u64::from(timeline_limit)).unwrap_or(usize::MAX);
        self.timeline_limit = self.timeline_limit.max(limit.min(MAX_TIMELINE_LIMIT));
        for (kind, key) in required_state.iter().take(MAX_REQUIRED_STATE) {
            self.required_state.insert((kind.to_string(), key.clone()));
        }
    }

    /// A room sent under another config is sent again in full.
    fn key(&self) -> String {
        let mut key = self.timeline_limit.to_string();
        for (kind, state_key) in &self.required_state {
            key.push('|');
            key.push_str(kind);
            key.push('\u{1f}');
            key.push_str(state_key);
        }
        key
    }

    /// Whether the room's state entry `(kind, key)` is asked for, `senders` being the
    /// timeline's senders (for `$LAZY` members).
    fn wants(&self, (kind, key): (&str, &str), me: &str, senders: &HashSet<&str>) -> bool {
        self.required_state.iter().any(|(k, s)| {
            (k == "*" || k == kind)
                && (s == "*"
                    || s == key
                    || (s == "$ME" && key == me)
                    || (s == "$LAZY" && kind == "m.room.member" && senders.contains(key)))
        })
    }
}

impl Services {
    /// Answers a sliding sync request, waiting up to its `timeout` when a continued
    /// connection has nothing new.
    pub async fn sliding_sync(
        &self,
        user_id: &UserId,
        device_id: &str,
        request: v5::Request,
        spaces: BTreeMap<String, Vec<OwnedRoomId>>,
    ) -> Result<v5::Response> {
        let conn_id = request.conn_id.clone().unwrap_or_default();
        if conn_id.len() > MAX_CONN_ID {
            return Err(Error::invalid_param(format!(
                "conn_id is longer than {MAX_CONN_ID} bytes"
            )));
        }
        if request.lists.len() > MAX_LISTS {
            return Err(Error::invalid_param(format!(
                "at most {MAX_LISTS} lists per request"
            )));
        }
        let key = (user_id.as_str(), device_id, conn_id.as_str());
        let previous = match &request.pos {
            None => None,
            Some(pos) => {
                let state = self
                    .store
                    .sliding_position(key, pos)
                    .await?
                    .ok_or_else(unknown_pos)?;
                Some(serde_json::from_str::<Connection>(&state).map_err(|_| unknown_pos())?)
            }
        };
        if previous.is_none() {
            let open = self.store.sliding_connections(key.0, key.1).await?;
            if open.len() >= MAX_CONNECTIONS && !open.contains(&conn_id) {
                return Err(Error::invalid_param(format!(
                    "a device keeps at most {MAX_CONNECTIONS} sliding sync connections"
                )));
            }
        }
        if request.set_presence == ruma::presence::PresenceState::Online {
            self.set_presence(user_id, "online", None).await?;
        }
        let to_device = &request.extensions.to_device;
        let to_device_since = match to_device.since.as_deref() {
            None => 0,
            Some(since) => since
                .parse::<i64>()
                .ok()
                .filter(|s| *s >= 0)
                .ok_or_else(|| Error::invalid_param("to_device.since is not a token of ours"))?,
        };
        if to_device.enabled == Some(true) && to_device_since > 0 {
            self.store
                .ack_to_device(user_id.as_str(), device_id, to_device_since)
                .await?;
        }
        let subscription = self.bus.subscribe(user_id);
        let timeout = request.timeout.unwrap_or(MAX_TIMEOUT).min(MAX_TIMEOUT);
        let deadline = tokio::time::Instant::now() + timeout;
        // What the last pass read, for the next one when only room events happen between.
        let mut snapshot: Option<Snapshot> = None;
        loop {
            let notified = subscription.waiter.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let woken = snapshot.is_some();
            let (mut response, state, news) = Box::pin(self.sliding_once(
                user_id,
                device_id,
                (&request, &spaces),
                (previous.as_ref(), to_device_since),
                (&mut snapshot, subscription.changes()),
            ))
            .await?;
            if woken {
                let answer = if snapshot.as_ref().is_some_and(|s| s.from_log) {
                    "log"
                } else {
                    "full"
                };
                self.metrics.sync_woken.with_label_values(&[answer]).inc();
            }
            response.txn_id = request.txn_id.clone();
            if news || previous.is_none() {
                let pos = secrets::random_alphanumeric(12);
                let state = serde_json::to_string(&state)
                    .map_err(|e| Error::Internal(anyhow::anyhow!("connection state: {e}")))?;
                self.store
                    .save_sliding_position(
                        key,
                        request.pos.as_deref(),
                        (&pos, &state),
                        self.now_ms(),
                    )
                    .await?;
                response.pos = pos;
                return Ok(response);
            }
            let _parked = Parked::new(&self.metrics.sync_waiting);
            let woken = tokio::select! {
                woken = tokio::time::timeout_at(deadline, notified) => woken.is_ok(),
                () = self.bus.closing() => false,
            };
            if !woken {
                // Nothing new: the client continues from where it was.
                response.pos = request.pos.clone().unwrap_or_default();
                return Ok(response);
            }
        }
    }

    /// One pass: the answer, what the connection will have been sent, and whether there is
    /// anything in it the client lacks.
    async fn sliding_once(
        &self,
        user_id: &UserId,
        device_id: &str,
        (request, spaces): (&v5::Request, &BTreeMap<String, Vec<OwnedRoomId>>),
        (previous, to_device_since): (Option<&Connection>, i64),
        (cache, changes): (&mut Option<Snapshot>, u64),
    ) -> Result<(v5::Response, Connection, bool)> {
        let since = previous
            .map(|c| SyncToken::parse(&c.token))
            .transpose()
            .map_err(|_| unknown_pos())?;
        let typing = self.typing.serial();
        let presence = self.presence.serial();
        // Woken by room events alone: the last pass's reads, moved on by the shared log.
        let advanced = match cache.take() {
            Some(last) if last.changes == changes => self.advanced(user_id, last).await?,
            _ => None,
        };
        let mut snapshot = match advanced {
            Some(snapshot) => snapshot,
            None => self.snapshot(user_id, since, changes).await?,
        };
        snapshot.next.typing = typing;
        snapshot.next.presence = presence;
        let next = snapshot.next;
        let upto = next.events;
        let direct = &snapshot.direct;
        let facts = &mut snapshot.facts;
        // The rooms lists may show: current ones, and those left since the last answer
        // (once, so the client hears of the leave).
        let rooms: Vec<&RoomStamp> = snapshot
            .stamps
            .iter()
            .filter(|s| s.member_stream <= upto)
            .filter(|s| match s.membership.as_str() {
                "join" | "invite" => true,
                "leave" | "ban" => since.is_some_and(|t| s.member_stream > t.events),
                _ => false,
            })
            .collect();
        let mut sorted: Vec<&RoomStamp> = rooms.clone();
        sorted.sort_by(|a, b| {
            bump_stamp(b)
                .cmp(&bump_stamp(a))
                .then_with(|| a.room_id.cmp(&b.room_id))
        });

        let mut response = v5::Response::new(String::new());
        let mut state = Connection {
            token: next.to_string(),
            ..Connection::default()
        };
        let mut news = false;
        let mut configs: BTreeMap<&str, RoomConfig> = BTreeMap::new();
        let mut in_list: HashMap<&str, Vec<&str>> = HashMap::new();
        for (name, list) in &request.lists {
            let mut matching = Vec::new();
            let children = match spaces.get(name) {
                // Only the spaces the user is in say which rooms are theirs.
                Some(spaces) => {
                    let joined: Vec<OwnedRoomId> = spaces
                        .iter()
                        .filter(|space| {
                            rooms
                                .iter()
                                .any(|r| r.room_id == space.as_str() && r.membership == "join")
                        })
                        .cloned()
                        .collect();
                    Some(self.space_children(&joined).await?)
                }
                None => None,
            };
            for stamp in &sorted {
                if children
                    .as_ref()
                    .is_none_or(|c| c.contains(stamp.room_id.as_str()))
                    && self
                        .passes(user_id, stamp, list.filters.as_ref(), direct, facts)
                        .await?
                {
                    matching.push(*stamp);
                }
            }
            let count = matching.len() as u64;
            if previous.is_none_or(|p| p.counts.get(name) != Some(&count)) {
                news = true;
            }
            state.counts.insert(name.clone(), count);
            response.lists.insert(
                name.clone(),
                list_count(UInt::new(count).unwrap_or_default()),
            );
            // Each room once per list, however the ranges overlap; at most MAX_RANGES ranges.
            let mut listed: HashSet<&str> = HashSet::new();
            for (start, end) in list.ranges.iter().take(MAX_RANGES) {
                let start = usize::try_from(u64::from(*start)).unwrap_or(usize::MAX);
                let end = usize::try_from(u64::from(*end)).unwrap_or(usize::MAX);
                for stamp in matching
                    .iter()
                    .skip(start)
                    .take(end.saturating_sub(start) + 1)
                {
                    if configs.len() >= MAX_ROOMS_PER_ANSWER
                        && !configs.contains_key(stamp.room_id.as_str())
                    {
                        break;
                    }
                    if !listed.insert(stamp.room_id.as_str()) {
                        continue;
                    }
                    configs.entry(&stamp.room_id).or_default().widen(
                        list.room_details.timeline_limit,
                        &list.room_details.required_state,
                    );
                    in_list.entry(&stamp.room_id).or_default().push(name);
                }
            }
        }
        let by_id: HashMap<&str, &RoomStamp> =
            rooms.iter().map(|s| (s.room_id.as_str(), *s)).collect();
        for (room_id, subscription) in request.room_subscriptions.iter().take(MAX_SUBSCRIPTIONS) {
            // Only rooms the user is in (or was, until this answer) can be subscribed to, and
            // they count against the rooms one answer sends.
            if let Some(stamp) = by_id.get(room_id.as_str())
                && (configs.len() < MAX_ROOMS_PER_ANSWER || configs.contains_key(room_id.as_str()))
            {
                configs
                    .entry(&stamp.room_id)
                    .or_default()
                    .widen(subscription.timeline_limit, &subscription.required_state);
            }
        }

        // Rooms sent before keep their record while the user is in them.
        if let Some(previous) = previous {
            for (room, sent) in &previous.rooms {
                if by_id.contains_key(room.as_str()) {
                    state.rooms.insert(room.clone(), sent.clone());
                }
            }
        }
        // Rooms the user read elsewhere since: their unread counts are news.
        let read: HashSet<String> = match since {
            Some(since) if since.receipts < next.receipts => self
                .store
                .rooms_read_by(user_id.as_str(), since.receipts, next.receipts)
                .await?
                .into_iter()
                .collect(),
            _ => HashSet::new(),
        };
        let timeline_filter = EventFilter {
            not_senders: snapshot.ignored.clone(),
            ..EventFilter::default()
        };
        for (room, config) in &configs {
            let Some(stamp) = by_id.get(room) else {
                continue;
            };
            let Ok(room_id) = RoomId::parse(room) else {
                continue;
            };
            let config_key = config.key();
            let sent = previous.and_then(|p| p.rooms.get(*room));
            // A room whose membership changed since it was sent (a rejoin, an accepted
            // invite) comes whole, through the history visibility rules: continuing it from
            // the old position would show what was sent while the user was not in it.
            let initial =
                sent.is_none_or(|(upto, key)| *key != config_key || stamp.member_stream > *upto);
            let reached = match stamp.membership.as_str() {
                "join" | "invite" => upto,
                _ => stamp.member_stream,
            };
            if let Some((sent_upto, _)) = sent.filter(|_| !initial)
                && stamp.latest.min(reached) <= *sent_upto
                && stamp.member_stream <= *sent_upto
                && !read.contains(*room)
            {
                continue;
            }
            let sent_upto = sent.filter(|_| !initial).map(|(upto, _)| *upto);
            let entry = RoomEntry {
                room_id: &room_id,
                stamp,
                config,
                from: sent_upto,
                reached,
                is_dm: direct.contains(*room),
                read: read.contains(*room),
            };
            let room_response =
                Box::pin(self.sliding_room(user_id, device_id, &entry, &timeline_filter)).await?;
            state
                .rooms
                .insert((*room).to_owned(), (reached, config_key));
            if let Some(room_response) = room_response {
                news = true;
                response.rooms.insert(room_id, room_response);
            }
        }

        // Extensions speak of joined rooms only (a room left is not theirs to watch).
        let sent_rooms: Vec<&str> = configs
            .keys()
            .copied()
            .filter(|r| by_id.get(r).is_some_and(|s| s.membership == "join"))
            .collect();
        let extensions = &request.extensions;
        let ext = &mut response.extensions;
        if extensions.to_device.enabled == Some(true) {
            let limit = extensions
                .to_device
                .limit
                .map_or(TO_DEVICE_PER_SYNC, |l| {
                    i64::try_from(u64::from(l)).unwrap_or(1)
                })
                .clamp(1, TO_DEVICE_PER_SYNC);
            let (events, reached) = self
                .to_device_section(user_id, device_id, to_device_since, limit)
                .await?;
            news |= !events.is_empty();
            let mut to_device = response::ToDevice::default();
            to_device.next_batch = reached.to_string();
            to_device.events = events;
            ext.to_device = Some(to_device);
        }
        if extensions.e2ee.enabled == Some(true) {
            let keys = self
                .encryption_state(user_id, device_id, since, next)
                .await?;
            news |= !keys.device_lists.changed.is_empty() || !keys.device_lists.left.is_empty();
            ext.e2ee.device_one_time_keys_count = keys.one_time_keys;
            ext.e2ee.device_unused_fallback_key_types = Some(keys.fallback_keys);
            ext.e2ee.device_lists = keys.device_lists;
        }
        if extensions.account_data.enabled == Some(true) {
            let rooms = scoped_rooms(
                &extensions.account_data.lists,
                &extensions.account_data.rooms,
                &in_list,
                &request.room_subscriptions,
                &sent_rooms,
            );
            let after = since.map_or(0, |s| s.account_data);
            for (room, kind, content) in self
                .store
                .account_data_since(user_id.as_str(), after, next.account_data)
                .await?
            {
                let event = serde_json::json!({"type": kind, "content": content});
                if room.is_empty() {
                    ext.account_data.global.push(to_raw(&event)?);
                } else if rooms.contains(room.as_str())
                    && let Ok(room_id) = RoomId::parse(&room)
                {
                    ext.account_data
                        .rooms
                        .entry(room_id)
                        .or_default()
                        .push(to_raw(&event)?);
                }
            }
            if since.is_none()
                && !ext.account_data.global.iter().any(|e| {
                    e.get_field::<String>("type").ok().flatten().as_deref()
                        == Some(super::super::push::PUSH_RULES_TYPE)
                })
            {
                let rules = self.push_rules(user_id).await?;
                ext.account_data.global.push(to_raw(&serde_json::json!({
                    "type": super::super::push::PUSH_RULES_TYPE,
                    "content": {"global": rules},
                }))?);
            }
            news |= !ext.account_data.global.is_empty() || !ext.account_data.rooms.is_empty();
        }
        if extensions.receipts.enabled == Some(true) {
            let rooms = scoped_rooms(
                &extensions.receipts.lists,
                &extensions.receipts.rooms,
                &in_list,
                &request.room_subscriptions,
                &sent_rooms,
            );
            for room in rooms {
                let Ok(room_id) = RoomId::parse(room) else {
                    continue;
                };
                // A room new to the connection gets its receipts whole; others their changes.
                let after = match previous.and_then(|p| p.rooms.get(room)) {
                    Some(_) => since.map_or(0, |s| s.receipts),
                    None => 0,
                };
                if after >= next.receipts {
                    continue;
                }
                if let Some(receipts) = self
                    .receipt_event(&room_id, user_id, after, next.receipts)
                    .await?
                {
                    news = true;
                    ext.receipts.rooms.insert(room_id, to_raw(&receipts)?);
                }
            }
        }
        if extensions.typing.enabled == Some(true) {
            let rooms = scoped_rooms(
                &extensions.typing.lists,
                &extensions.typing.rooms,
                &in_list,
                &request.room_subscriptions,
                &sent_rooms,
            );
            let now = self.now_ms();
            for room in rooms {
                let Ok(room_id) = RoomId::parse(room) else {
                    continue;
                };
                let (serial, users) = self.typing.in_room(&room_id, now);
                let new_here = previous.and_then(|p| p.rooms.get(room)).is_none();
                let changed = serial > since.map_or(0, |s| s.typing) && serial <= next.typing;
                if changed || (new_here && !users.is_empty()) {
                    news = true;
                    ext.typing.rooms.insert(
                        room_id,
                        to_raw(&serde_json::json!({
                            "type": "m.typing",
                            "content": {"user_ids": users},
                        }))?,
                    );
                }
            }
        }
        *cache = Some(snapshot);
        Ok((response, state, news))
    }

    /// Memberships and the stream position as one snapshot, as `/sync` reads them, with the
    /// rest a pass reads before it looks at rooms; `changes` is the user's change counter read
    /// before.
    async fn snapshot(
        &self,
        user_id: &UserId,
        since: Option<SyncToken>,
        changes: u64,
    ) -> Result<Snapshot> {
        let mut attempts = 0;
        let (upto, stamps) = loop {
            let after = since.map_or(0, |s| s.events);
            let stamps = self.store.room_stamps(user_id.as_str(), after).await?;
            let upto = self.store.max_stream_ordering().await?;
            // The memberships again (without the stamps, which only order the list).
            let again = self.store.sync_rooms(user_id.as_str(), Some(after)).await?;
            attempts += 1;
            if stamps
                .iter()
                .map(|s| (s.room_id.as_str(), s.membership.as_str(), s.member_stream))
                .eq(again.iter().map(|(r, m, s)| (r.as_str(), m.as_str(), *s)))
            {
                break (upto, stamps);
            }
            if attempts == 5 {
                return Err(Error::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    ruma::api::error::ErrorKind::Unknown,
                    "Your rooms are changing too fast to sync; try again",
                ));
            }
        };
        let next = SyncToken {
            events: upto,
            account_data: self.store.max_account_data_stream().await?,
            receipts: self.store.max_receipt_stream().await?,
            typing: 0,
            presence: 0,
            to_device: 0,
            device_lists: self.store.max_device_list_stream().await?,
        };
        let index = stamps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.room_id.clone(), i))
            .collect();
        Ok(Snapshot {
            changes,
            from_log: false,
            next,
            stamps,
            index,
            direct: self.direct_rooms(user_id).await?,
            ignored: self.ignored_users(user_id).await?,
            facts: RoomFacts::default(),
        })
    }

    /// The last pass's snapshot moved on to the newest events, when nothing but room events
    /// happened since and none of them changes the user's rooms or what the filters read:
    /// each room's latest and list-moving positions come from the shared log, as a woken
    /// `/sync` takes its events from it. `None` when the log cannot say (the whole read).
    async fn advanced(&self, user_id: &UserId, mut last: Snapshot) -> Result<Option<Snapshot>> {
        let window = self
            .recent
            .current(&self.store, self.bus.events_position())
            .await?;
        let Some(new) = window.after(last.next.events) else {
            return Ok(None);
        };
        for recent in new {
            let event = &recent.stored;
            let Some(&at) = last.index.get(&event.room_id) else {
                // A room the user has no membership in (an invite or a join would be a
                // member event of theirs, which comes with a change of its own below).
                if event.kind == "m.room.member"
                    && event.state_key.as_deref() == Some(user_id.as_str())
                {
                    return Ok(None);
                }
                continue;
            };
            let reshapes = event.state_key.is_some()
                && (event.state_key.as_deref() == Some(user_id.as_str())
                    || matches!(
                        event.kind.as_str(),
                        "m.room.create" | "m.room.encryption" | "m.space.child"
                    ));
            if reshapes {
                return Ok(None);
            }
            let Some(stamp) = last.stamps.get_mut(at) else {
                return Ok(None);
            };
            stamp.latest = stamp.latest.max(event.stream_ordering);
            if crate::store::is_bump_type(&event.kind) {
                stamp.bump = Some(event.stream_ordering);
            }
        }
        last.next.events = window.high;
        last.from_log = true;
        Ok(Some(last))
    }

    /// Whether a room passes a list's filters.
    async fn passes(
        &self,
        user_id: &UserId,
        stamp: &RoomStamp,
        filters: Option<&request::ListFilters>,
        direct: &HashSet<String>,
        facts: &mut RoomFacts,
    ) -> Result<bool> {
        let Some(filters) = filters else {
            return Ok(true);
        };
        if let Some(is_dm) = filters.is_dm
            && direct.contains(&stamp.room_id) != is_dm
        {
            return Ok(false);
        }
        if let Some(is_invite) = filters.is_invite
            && (stamp.membership == "invite") != is_invite
        {
            return Ok(false);
        }
        if let Some(is_encrypted) = filters.is_encrypted
            && facts
                .encrypted(self, user_id)
                .await?
                .contains(&stamp.room_id)
                != is_encrypted
        {
            return Ok(false);
        }
        if !filters.room_types.is_empty() || !filters.not_room_types.is_empty() {
            let room_type = facts.room_types(self, user_id).await?.get(&stamp.room_id);
            let matches = |filter: &RoomTypeFilter| match filter {
                RoomTypeFilter::Default => room_type.is_none(),
                other => room_type.map(String::as_str) == Some(other.as_str().unwrap_or_default()),
            };
            if !filters.room_types.is_empty() && !filters.room_types.iter().any(matches) {
                return Ok(false);
            }
            if filters.not_room_types.iter().any(matches) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The rooms the spaces name as their children (`m.space.child` with a `via`).
    async fn space_children(&self, spaces: &[OwnedRoomId]) -> Result<HashSet<String>> {
        let mut children = HashSet::new();
        for space in spaces {
            for child in self.space_children_of(space, false).await? {
                children.insert(child.room_id.to_string());
            }
        }
        Ok(children)
    }

    /// The rooms `m.direct` names.
    async fn direct_rooms(&self, user_id: &UserId) -> Result<HashSet<String>> {
        let content = self.global_account_data(user_id, "m.direct").await?;
        Ok(content
            .as_object()
            .into_iter()
            .flat_map(|users| users.values())
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect())
    }

    /// One room of the answer: whole when it is new to the connection (or its config
    /// changed), otherwise what happened since it was last sent; `None` when nothing did.
    async fn sliding_room(
        &self,
        user_id: &UserId,
        device_id: &str,
        entry: &RoomEntry<'_>,
        timeline_filter: &EventFilter,
    ) -> Result<Option<response::Room>> {
        let room_id = entry.room_id;
        let mut room = response::Room::new();
        room.bump_stamp = UInt::new(bump_stamp(entry.stamp).max(0) as u64);
        if entry.from.is_none() {
            room.initial = Some(true);
            room.is_dm = Some(entry.is_dm);
        }
        if entry.stamp.membership == "invite" {
            let stripped: Vec<ruma::serde::Raw<ruma::events::AnyStrippedStateEvent>> =
                self.stripped_state(room_id, user_id).await?;
            room.name = stripped
                .iter()
                .filter_map(|e| serde_json::from_str::<Value>(e.json().get()).ok())
                .find(|e| e["type"] == "m.room.name")
                .and_then(|e| e["content"]["name"].as_str().map(str::to_owned));
            room.invite_state = Some(stripped);
            return Ok(Some(room));
        }
        let (events, limited) = self
            .timeline_window(
                room_id,
                entry.from.unwrap_or(0),
                entry.reached,
                (entry.config.timeline_limit, timeline_filter),
            )
            .await?;
        let events = match entry.from {
            Some(_) if entry.stamp.membership == "join" => events,
            _ => self.visible_events(room_id, user_id, events).await?,
        };
        let timeline = self
            .timeline(
                &events,
                limited,
                (user_id, device_id),
                &SyncOptions::default(),
            )
            .await?;
        let senders: HashSet<&str> = events
            .iter()
            .map(|e| e.sender.as_str())
            .chain([user_id.as_str()])
            .collect();
        let state = if entry.stamp.membership == "join" {
            self.store.current_state(room_id.as_str()).await?
        } else {
            self.state_at(room_id, entry.reached).await?
        };
        // The state asked for, whether or not the timeline holds it too (as Synapse: clients
        // take the room's state from here).
        let mut wanted: Vec<String> = state
            .iter()
            .filter(|((kind, key), _)| {
                entry
                    .config
                    .wants((kind.as_str(), key.as_str()), user_id.as_str(), &senders)
            })
            .map(|(_, id)| id.clone())
            .collect();
        wanted.sort();
        let mut required: Vec<StoredEvent> = self.store.events(&wanted).await?;
        if let Some(from) = entry.from {
            // Continued: the state that changed since, and the members of the new timeline's
            // senders (the client may never have been sent them).
            let speakers: HashSet<&str> = events.iter().map(|e| e.sender.as_str()).collect();
            required.retain(|e| {
                e.stream_ordering > from
                    || (e.kind == "m.room.member"
                        && e.state_key.as_deref().is_some_and(|k| speakers.contains(k)))
            });
        }
        if entry.from.is_some() && events.is_empty() && required.is_empty() && !entry.read {
            return Ok(None);
        }
        for event in self
            .client_events(&required, Some((user_id, device_id)), true)
            .await?
        {
            room.required_state.push(to_raw(&event)?);
        }
        room.num_live = UInt::new(if entry.from.is_some() {
            events.len() as u64
        } else {
            0
        });
        room.limited = timeline.limited;
        room.prev_batch = timeline.prev_batch;
        room.timeline = timeline.events;
        if entry.stamp.membership == "join" {
            let (unread, highlights) = self
                .store
                .notification_counts(room_id.as_str(), &[user_id.as_str()])
                .await?
                .remove(user_id.as_str())
                .unwrap_or_default();
            room.unread_notifications.notification_count = UInt::new(unread.max(0) as u64);
            room.unread_notifications.highlight_count = UInt::new(highlights.max(0) as u64);
        }
        let state_changed =
            entry.from.is_none() || limited || events.iter().any(|e| e.state_key.is_some());
        if state_changed {
            self.describe_room(&mut room, room_id, user_id, &state)
                .await?;
            if entry.stamp.membership != "join" {
                // Who is in the room now is not for someone who left.
                room.joined_count = None;
                room.invited_count = None;
                room.heroes = None;
            }
        }
        Ok(Some(room))
    }

    /// Name, avatar, member counts and, for rooms without a name, heroes.
    async fn describe_room(
        &self,
        room: &mut response::Room,
        room_id: &RoomId,
        user_id: &UserId,
        state: &crate::store::StateMap,
    ) -> Result<()> {
        let content = |kind: &str| {
            let id = state.get(&(kind.to_owned(), String::new())).cloned();
            async move {
                Ok::<_, Error>(match id {
                    Some(id) => self
                        .store
                        .event(&id)
                        .await?
                        .and_then(|e| serde_json::from_str::<Value>(&e.json).ok())
                        .map(|pdu| pdu["content"].clone()),
                    None => None,
                })
            }
        };
        let name = content("m.room.name")
            .await?
            .and_then(|c| c["name"].as_str().map(str::to_owned))
            .filter(|n| !n.is_empty());
        let avatar = content("m.room.avatar")
            .await?
            .and_then(|c| c["url"].as_str().map(str::to_owned))
            .map(OwnedMxcUri::from)
            .filter(|u| u.is_valid());
        room.avatar = match avatar {
            Some(url) => JsOption::Some(url),
            None if room.initial == Some(true) => JsOption::Undefined,
            None => JsOption::Null,
        };
        let joined = self.store.room_members(room_id.as_str(), "join").await?;
        let invited = self.store.room_members(room_id.as_str(), "invite").await?;
        room.joined_count = UInt::new(joined.len() as u64);
        room.invited_count = UInt::new(invited.len() as u64);
        if name.is_none() {
            let mut heroes = Vec::new();
            for member in joined
                .iter()
                .chain(invited.iter())
                .filter(|u| u.as_str() != user_id.as_str())
                .take(5)
            {
                let Ok(member_id) = UserId::parse(member.as_str()) else {
                    continue;
                };
                let profile = self
                    .state_content(room_id, "m.room.member", member)
                    .await?
                    .unwrap_or_default();
                let mut hero = response::Hero::new(member_id);
                hero.name = profile["displayname"].as_str().map(str::to_owned);
                hero.avatar = profile["avatar_url"]
                    .as_str()
                    .map(OwnedMxcUri::from)
                    .filter(|u| u.is_valid());
                heroes.push(hero);
            }
            room.heroes = Some(heroes);
        }
        room.name = name;
        Ok(())
    }
}

/// What one room is to be sent with.
struct RoomEntry<'a> {
    room_id: &'a RoomId,
    stamp: &'a RoomStamp,
    config: &'a RoomConfig,
    /// The position it was last sent up to, for a room continued rather than sent whole.
    from: Option<i64>,
    /// How far it is sent: now, or the user's leave.
    reached: i64,
    is_dm: bool,
    /// The user's own receipts moved (its unread counts are sent even without events).
    read: bool,
}

/// Room facts that filters read: for all the user's rooms in one query each, the first time
/// a filter asks, then kept while only room events happen (an event that changes them sends
/// the next pass back to the database).
#[derive(Clone, Default)]
struct RoomFacts {
    encrypted: Option<HashSet<String>>,
    room_types: Option<HashMap<String, String>>,
}

impl RoomFacts {
    /// The user's encrypted rooms.
    async fn encrypted(
        &mut self,
        services: &Services,
        user_id: &UserId,
    ) -> Result<&HashSet<String>> {
        if self.encrypted.is_none() {
            self.encrypted = Some(services.store.encrypted_rooms_of(user_id.as_str()).await?);
        }
        Ok(self.encrypted.get_or_insert_default())
    }

    /// The user's rooms that have a type (`m.space`, …), with it.
    async fn room_types(
        &mut self,
        services: &Services,
        user_id: &UserId,
    ) -> Result<&HashMap<String, String>> {
        if self.room_types.is_none() {
            self.room_types = Some(services.store.room_types_of(user_id.as_str()).await?);
        }
        Ok(self.room_types.get_or_insert_default())
    }
}

/// What a pass read before it looked at rooms, kept for the next pass of the same request.
struct Snapshot {
    /// The user's change counter before it was read: a pass with the same count sees only
    /// room events since.
    changes: u64,
    /// Whether it was last moved on by the shared log rather than read.
    from_log: bool,
    /// The positions it reached (typing and presence are read afresh each pass).
    next: SyncToken,
    /// The user's rooms.
    stamps: Vec<RoomStamp>,
    /// Where each room is in `stamps`.
    index: HashMap<String, usize>,
    /// The rooms `m.direct` names.
    direct: HashSet<String>,
    /// The users the user ignores.
    ignored: HashSet<String>,
    facts: RoomFacts,
}

/// The room's place in lists: its latest message-like event or the user's joining,
/// whichever is later; an invite's arrival; for a room left, its last one before the leave.
fn bump_stamp(stamp: &RoomStamp) -> i64 {
    let bump = stamp.bump.unwrap_or(stamp.member_stream);
    match stamp.membership.as_str() {
        "join" => bump.max(stamp.member_stream),
        "invite" => stamp.member_stream,
        _ => bump.min(stamp.member_stream),
    }
}

fn list_count(count: UInt) -> response::List {
    let mut list = response::List::default();
    list.count = count;
    list
}

fn unknown_pos() -> Error {
    Error::Detailed {
        status: http::StatusCode::BAD_REQUEST,
        errcode: "M_UNKNOWN_POS",
        message: "Unknown or expired position: start a new connection".to_owned(),
        extra: serde_json::Map::new(),
    }
}

/// The rooms an extension applies to: those of the lists it names (all, unless it names
/// some) and the rooms it names (`*`: every subscription), among those in this answer.
fn scoped_rooms<'a>(
    lists: &Option<Vec<String>>,
    rooms: &'a Option<Vec<request::ExtensionRoomConfig>>,
    in_list: &HashMap<&'a str, Vec<&'a str>>,
    subscriptions: &'a BTreeMap<OwnedRoomId, request::RoomSubscription>,
    sent: &[&'a str],
) -> BTreeSet<&'a str> {
    let mut scoped = BTreeSet::new();
    for room in sent {
        let listed = in_list.get(room).is_some_and(|names| {
            lists.as_ref().is_none_or(|wanted| {
                names
                    .iter()
                    .any(|n| wanted.iter().any(|w| w == n || w == "*"))
            })
        });
        let subscribed = subscriptions.keys().any(|s| s.as_str() == *room)
            && rooms.as_ref().is_none_or(|wanted| {
                wanted.iter().any(|w| match w {
                    request::ExtensionRoomConfig::AllSubscribed => true,
                    request::ExtensionRoomConfig::Room(r) => r.as_str() == *room,
                    _ => false,
                })
            });
        if listed || subscribed {
            scoped.insert(*room);
        }
    }
    if let Some(rooms) = rooms {
        for room in rooms {
            if let request::ExtensionRoomConfig::Room(r) = room
                && sent.contains(&r.as_str())
            {
                scoped.insert(r.as_str());
            }
        }
    }
    scoped
}
