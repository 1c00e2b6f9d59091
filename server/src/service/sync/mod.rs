//! `/sync`: what changed for a user since a token, waiting for something to change when
//! nothing has. A waiting sync holds a bus subscription only — no connection, no thread.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::Duration,
};

use ruma::{
    OwnedRoomId, RoomId, UInt, UserId,
    api::client::sync::sync_events::v3::{
        InviteState, InvitedRoom, JoinedRoom, KnockState, KnockedRoom, LeftRoom, Response, State,
        StateEvents, Timeline,
    },
    serde::Raw,
};
use serde_json::Value;

mod counts;
mod glob;
mod recent;
mod sliding;
mod woken;

pub use counts::CountBatches;
use glob::type_matches;
pub use glob::validate_filter;
pub use recent::RecentEvents;
use woken::Waited;

use super::{Services, rooms::Pdu};
use crate::{
    http::{
        error::{Error, Result},
        ruma::to_raw,
    },
    store::{StateMap, StoredEvent},
};

/// Stream positions a sync token carries:
/// `s<events>_<account data>_<receipts>_<typing>_<presence>_<to-device>_<device lists>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncToken {
    /// Last event stream position the client has.
    pub events: i64,
    /// Last account-data position.
    pub account_data: i64,
    /// Last receipt position.
    pub receipts: i64,
    /// Last typing serial (per instance, in memory).
    pub typing: i64,
    /// Last presence serial (per instance, in memory).
    pub presence: i64,
    /// Last to-device message delivered (and, by the next sync, acknowledged).
    pub to_device: i64,
    /// Last device-list change position.
    pub device_lists: i64,
}

impl SyncToken {
    /// Reads a token this server issued: 400 `M_INVALID_PARAM` otherwise.
    pub fn parse(token: &str) -> Result<Self> {
        let invalid =
            || Error::invalid_param(format!("{token} is not a sync token of this server"));
        let rest = token.strip_prefix('s').ok_or_else(invalid)?;
        let mut parts = rest.split('_');
        let mut next = || -> Result<i64> {
            parts
                .next()
                .and_then(|p| p.parse::<i64>().ok())
                .filter(|p| *p >= 0)
                .ok_or_else(invalid)
        };
        let events = next()?;
        let account_data = next()?;
        // Later parts were added over time; tokens without them start those streams at 0.
        Ok(Self {
            events,
            account_data,
            receipts: next().unwrap_or(0),
            typing: next().unwrap_or(0),
            presence: next().unwrap_or(0),
            to_device: next().unwrap_or(0),
            device_lists: next().unwrap_or(0),
        })
    }
}

impl std::fmt::Display for SyncToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "s{}_{}_{}_{}_{}_{}_{}",
            self.events,
            self.account_data,
            self.receipts,
            self.typing,
            self.presence,
            self.to_device,
            self.device_lists
        )
    }
}

/// Which member events each device was sent for each room under lazy loading, so that
/// later syncs send the ones it lacks (spec: servers track this). A record is trusted only by
/// the sync that continues from the very response it was made for: a lost response, a sync
/// served by another instance, or a restart simply sends those members again.
#[derive(Default)]
pub struct LazyMembers(Mutex<HashMap<String, SentMembers>>);

/// The position of the response a record was made for, and member → event id sent.
type SentMembers = (i64, HashMap<String, String>);

/// Most (user, device, room) entries remembered before starting afresh.
const LAZY_MEMBERS_CAPACITY: usize = 100_000;
/// Most members remembered for one entry.
const LAZY_MEMBERS_PER_ROOM: usize = 1_000;

impl LazyMembers {
    /// Member → event id sent for `key` (user|device|room) by the response whose position
    /// was `from`; nothing when the last response recorded was another one.
    fn sent(&self, key: &str, from: i64) -> HashMap<String, String> {
        self.0
            .lock()
            .ok()
            .and_then(|map| {
                map.get(key)
                    .filter(|(upto, _)| *upto == from)
                    .map(|(_, sent)| sent.clone())
            })
            .unwrap_or_default()
    }

    /// Remembers what the response up to `upto` sent: added to the record when the sync
    /// continued (`from`) from the response recorded last, else in place of it.
    fn record(
        &self,
        key: &str,
        delivered: impl Iterator<Item = (String, String)>,
        from: Option<i64>,
        upto: i64,
    ) {
        let Ok(mut map) = self.0.lock() else { return };
        if map.len() >= LAZY_MEMBERS_CAPACITY && !map.contains_key(key) {
            map.clear();
        }
        let entry = map.entry(key.to_owned()).or_default();
        if from != Some(entry.0) || entry.1.len() >= LAZY_MEMBERS_PER_ROOM {
            entry.1.clear();
        }
        entry.1.extend(delivered);
        entry.0 = upto;
    }
}

/// What the client asked for, from the request and its filter.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Where the client is.
    pub since: Option<SyncToken>,
    /// How long to wait for news.
    pub timeout: Duration,
    /// Send full state even on incremental syncs.
    pub full_state: bool,
    /// `state_after` (MSC4222) instead of `state`.
    pub state_after: bool,
    /// Timeline events as PDUs (`event_format: federation`).
    pub federation_format: bool,
    /// Most timeline events per room.
    pub timeline_limit: usize,
    /// Only the members the timeline needs.
    pub lazy_load_members: bool,
    /// With lazy loading: send those members even when this device already has them.
    pub include_redundant_members: bool,
    /// Only these rooms, when set.
    pub rooms: Option<HashSet<OwnedRoomId>>,
    /// Never these rooms.
    pub not_rooms: HashSet<OwnedRoomId>,
    /// Include rooms the user left before `since` on an initial sync.
    pub include_leave: bool,
    /// Which events a room's timeline shows.
    pub timeline_filter: EventFilter,
    /// Which state events a room's state section shows.
    pub state_filter: EventFilter,
    /// Which ephemeral events (typing, receipts) a room shows.
    pub ephemeral_filter: EventFilter,
    /// Which room account data a room shows.
    pub room_account_data_filter: EventFilter,
    /// Which global account data the sync shows.
    pub account_data_filter: EventFilter,
    /// Which presence events the sync shows.
    pub presence_filter: EventFilter,
    /// Invites from these users are not shown (the user ignores them).
    pub ignored_inviters: HashSet<String>,
}

/// Event types and senders to show or leave out (`*` in a type matches any run of
/// characters), as a filter's `room.timeline` gives them.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only these types, when set.
    pub types: Option<Vec<String>>,
    /// Never these types.
    pub not_types: Vec<String>,
    /// Only these senders, when set.
    pub senders: Option<HashSet<String>>,
    /// Never these senders.
    pub not_senders: HashSet<String>,
}

/// Most events a filtered timeline reads looking for matches.
const MAX_FILTER_SCAN: usize = 2000;

impl EventFilter {
    /// Whether the filter shows everything.
    pub fn is_empty(&self) -> bool {
        self.types.is_none()
            && self.not_types.is_empty()
            && self.senders.is_none()
            && self.not_senders.is_empty()
    }

    /// Whether `event` passes.
    pub fn allows(&self, event: &StoredEvent) -> bool {
        self.allows_kind(&event.kind, Some(&event.sender))
    }

    /// Whether an event of `kind` from `sender` passes (events without a sender, such as
    /// typing, are judged by their type alone).
    pub fn allows_kind(&self, kind: &str, sender: Option<&str>) -> bool {
        let typed = |patterns: &[String]| patterns.iter().any(|p| type_matches(p, kind));
        self.types.as_deref().is_none_or(typed)
            && !typed(&self.not_types)
            && sender.is_none_or(|sender| {
                self.senders.as_ref().is_none_or(|s| s.contains(sender))
                    && !self.not_senders.contains(sender)
            })
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            since: None,
            timeout: Duration::ZERO,
            full_state: false,
            state_after: false,
            federation_format: false,
            timeline_limit: 10,
            lazy_load_members: false,
            include_redundant_members: false,
            rooms: None,
            not_rooms: HashSet::new(),
            include_leave: false,
            timeline_filter: EventFilter::default(),
            state_filter: EventFilter::default(),
            ephemeral_filter: EventFilter::default(),
            room_account_data_filter: EventFilter::default(),
            account_data_filter: EventFilter::default(),
            presence_filter: EventFilter::default(),
            ignored_inviters: HashSet::new(),
        }
    }
}

/// A device's one-time-key counts, unused fallback key types, and the device-list changes
/// since its last sync.
#[derive(Default)]
struct EncryptionState {
    one_time_keys: std::collections::BTreeMap<ruma::OneTimeKeyAlgorithm, UInt>,
    fallback_keys: Vec<ruma::OneTimeKeyAlgorithm>,
    device_lists: ruma::api::client::sync::sync_events::DeviceLists,
}

/// Counts a sync as waiting while it lives (a dropped request included).
struct Parked<'a>(&'a prometheus::IntGauge);

impl<'a> Parked<'a> {
    fn new(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Most to-device messages one sync delivers; the rest come with the next.
const TO_DEVICE_PER_SYNC: i64 = 100;

/// Most that `timeout` can make a sync wait.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

impl Services {
    /// Answers a sync, waiting up to `timeout` for news when an incremental sync has none.
    pub async fn sync(
        &self,
        user_id: &UserId,
        device_id: &str,
        options: SyncOptions,
    ) -> Result<Response> {
        // Events and invites from ignored users are left out (`m.ignored_user_list`).
        let mut options = options;
        let ignored = Box::pin(self.ignored_users(user_id)).await?;
        options
            .timeline_filter
            .not_senders
            .extend(ignored.iter().cloned());
        options.ignored_inviters = ignored;
        // The client got the to-device messages up to its token: acknowledged once per
        // request, not on every wake-up of a long poll.
        if let Some(acknowledged) = options.since.map(|s| s.to_device).filter(|&p| p > 0) {
            // Boxed, as every step below: the future of a waiting sync is kept while it
            // waits, and would otherwise be as large as its largest step.
            Box::pin(
                self.store
                    .ack_to_device(user_id.as_str(), device_id, acknowledged),
            )
            .await?;
        }
        let subscription = self.bus.subscribe(user_id);
        let deadline = tokio::time::Instant::now() + options.timeout.min(MAX_TIMEOUT);
        // The empty answer this sync waits on, once it waits.
        let mut waited: Option<Waited> = None;
        loop {
            let notified = subscription.waiter.notify.notified();
            tokio::pin!(notified);
            // Registered before reading, so a change committed meanwhile still wakes us.
            notified.as_mut().enable();
            // Woken by room events alone: answered from the shared log when it can be.
            let woken = match &waited {
                Some(waited) if waited.changes == subscription.changes() => {
                    Box::pin(self.woken_sync(user_id, device_id, &options, waited)).await?
                }
                _ => None,
            };
            if waited.is_some() {
                let answer = if woken.is_some() { "log" } else { "full" };
                self.metrics.sync_woken.with_label_values(&[answer]).inc();
            }
            let response = match woken {
                Some(response) => response,
                None => {
                    let changes = subscription.changes();
                    let (response, base) =
                        Box::pin(self.sync_once(user_id, device_id, &options)).await?;
                    waited = Some(Waited { changes, ..base });
                    response
                }
            };
            let has_news = !response.rooms.is_empty()
                || !response.account_data.is_empty()
                || !response.presence.is_empty()
                || !response.to_device.is_empty()
                || !response.device_lists.is_empty();
            if options.since.is_none() || has_news {
                return Ok(response);
            }
            // A wake-up for something this sync does not show (say, another room's typing
            // on a filtered sync) waits again, until the deadline.
            // The empty answer is not kept while waiting: the timeout rebuilds it.
            drop(response);
            let _parked = Parked::new(&self.metrics.sync_waiting);
            let woken = tokio::select! {
                woken = tokio::time::timeout_at(deadline, notified) => woken.is_ok(),
                // Stopping: the client gets its empty answer now and syncs again elsewhere.
                () = self.bus.closing() => false,
            };
            if !woken {
                return Ok(waited
                    .as_ref()
                    .map(Waited::empty_answer)
                    .unwrap_or_else(|| {
                        Response::new(options.since.unwrap_or_default().to_string())
                    }));
            }
        }
    }

    /// One pass over everything; with the position it reached and the joined rooms it
    /// looked at, for answering a later wake-up from the log.
    async fn sync_once(
        &self,
        user_id: &UserId,
        device_id: &str,
        options: &SyncOptions,
    ) -> Result<(Response, Waited)> {
        let typing = self.typing.serial();
        let presence = self.presence.serial();
        // Memberships and the stream position are read as one snapshot: a membership that
        // changed between the two reads would otherwise be missed for good.
        let mut attempts = 0;
        let (upto, rooms) = loop {
            let since_events = options.since.map(|s| s.events);
            let before = self
                .store
                .sync_rooms(user_id.as_str(), since_events)
                .await?;
            let upto = self.store.max_stream_ordering().await?;
            let after = self
                .store
                .sync_rooms(user_id.as_str(), since_events)
                .await?;
            attempts += 1;
            if before == after {
                break (upto, after);
            }
            if attempts == 5 {
                // Memberships keep changing under us (someone is flooding invites, say):
                // refuse rather than spin; the client's retry will find a quiet moment.
                return Err(Error::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    ruma::api::error::ErrorKind::Unknown,
                    "Your rooms are changing too fast to sync; try again",
                ));
            }
        };
        let account_data_upto = self.store.max_account_data_stream().await?;
        let receipts = self.store.max_receipt_stream().await?;
        let device_lists = self.store.max_device_list_stream().await?;
        let since = options.since;
        let (to_device_events, to_device) = self
            .to_device_section(
                user_id,
                device_id,
                since.map_or(0, |s| s.to_device),
                TO_DEVICE_PER_SYNC,
            )
            .await?;
        let next = SyncToken {
            events: upto,
            account_data: account_data_upto,
            receipts,
            typing,
            presence,
            to_device,
            device_lists,
        };
        let mut response = Response::new(next.to_string());
        response.to_device.events = to_device_events;
        self.encryption_section(&mut response, user_id, device_id, since, next)
            .await?;
        let mut joined_rooms = HashSet::new();

        for (room, membership, member_stream) in rooms {
            let Ok(room_id) = RoomId::parse(room.as_str()) else {
                continue;
            };
            if membership == "join" && member_stream <= upto {
                // Filtered out or not, its membership changes matter (device lists).
                joined_rooms.insert(room_id.clone());
            }
            if options.not_rooms.contains(&room_id)
                || options
                    .rooms
                    .as_ref()
                    .is_some_and(|r| !r.contains(&room_id))
                || member_stream > upto
            {
                continue;
            }
            let changed_since = since.is_none_or(|s| member_stream > s.events);
            match membership.as_str() {
                "join" => {
                    // Newly joined rooms are sent whole, as on an initial sync.
                    let from = if changed_since {
                        None
                    } else {
                        since.map(|s| s.events)
                    };
                    if let Some(mut joined) = self
                        .joined_room(&room_id, user_id, device_id, from, next, options)
                        .await?
                    {
                        // As Synapse: a room joined since the last sync says its timeline
                        // is limited, so clients do not take it for the room's whole history.
                        if since.is_some() && changed_since {
                            joined.timeline.limited = true;
                        }
                        response.rooms.join.insert(room_id, joined);
                    }
                }
                "invite" if changed_since => {
                    if !options.ignored_inviters.is_empty()
                        && self
                            .store
                            .current_state_event(
                                room_id.as_str(),
                                "m.room.member",
                                user_id.as_str(),
                            )
                            .await?
                            .is_some_and(|invite| options.ignored_inviters.contains(&invite.sender))
                    {
                        continue;
                    }
                    let mut invited = InvitedRoom::new();
                    invited.invite_state =
                        InviteState::from(self.stripped_state(&room_id, user_id).await?);
                    response.rooms.invite.insert(room_id, invited);
                }
                "knock" if changed_since => {
                    let mut knocked = KnockedRoom::new();
                    knocked.knock_state = KnockState::new();
                    knocked.knock_state.events = self.stripped_state(&room_id, user_id).await?;
                    response.rooms.knock.insert(room_id, knocked);
                }
                "leave" | "ban"
                    if since.is_some() && changed_since
                        || since.is_none() && options.include_leave =>
                {
                    let left = if self.visible_upto(&room_id, user_id).await?.is_some() {
                        // Someone who joined and left since the last sync never had the
                        // room's state: they get all of it, as of their leaving.
                        let from = match since {
                            Some(s) if self.joined_at(&room_id, user_id, s.events).await? => {
                                Some(s.events)
                            }
                            _ => None,
                        };
                        self.left_room(&room_id, user_id, device_id, from, member_stream, options)
                            .await?
                    } else {
                        // A declined invite or a withdrawn knock: the leave event, nothing more.
                        self.own_leave(&room_id, user_id, device_id).await?
                    };
                    response.rooms.leave.insert(room_id, left);
                }
                _ => {}
            }
        }

        let since_account_data = since.map_or(0, |s| s.account_data);
        for (room, kind, content) in self
            .store
            .account_data_since(user_id.as_str(), since_account_data, account_data_upto)
            .await?
        {
            let room_id = RoomId::parse(room.as_str()).ok();
            let filter = match room_id {
                None => &options.account_data_filter,
                Some(_) => &options.room_account_data_filter,
            };
            if !filter.allows_kind(&kind, None) {
                continue;
            }
            let event = serde_json::json!({"type": kind, "content": content});
            match room_id {
                None => response.account_data.events.push(to_raw(&event)?),
                Some(room_id) => {
                    if let Some(joined) = response.rooms.join.get_mut(&room_id) {
                        joined.account_data.events.push(to_raw(&event)?);
                    } else if self.membership(&room_id, user_id).await?.as_deref() == Some("join") {
                        let mut joined = JoinedRoom::new();
                        joined.account_data.events.push(to_raw(&event)?);
                        response.rooms.join.insert(room_id, joined);
                    }
                }
            }
        }
        // Clients expect their push rules in the first sync, changed or not.
        if since.is_none()
            && options
                .account_data_filter
                .allows_kind(super::push::PUSH_RULES_TYPE, None)
            && !response.account_data.events.iter().any(|e| {
                e.get_field::<String>("type").ok().flatten().as_deref()
                    == Some(super::push::PUSH_RULES_TYPE)
            })
        {
            let rules = self.push_rules(user_id).await?;
            response
                .account_data
                .events
                .push(to_raw(&serde_json::json!({
                    "type": super::push::PUSH_RULES_TYPE,
                    "content": {"global": rules},
                }))?);
        }
        let since_presence = since.map_or(0, |s| s.presence);
        // Whoever joined one of the user's rooms since the last sync (everyone, in a room the
        // user joined) is heard of once, changed or not, as on Synapse.
        let arrivals: HashSet<String> = match since {
            // Only a sync that shows joined rooms can have new room mates, and only one that
            // shows presence needs them: the query is skipped otherwise.
            Some(since)
                if presence > 0
                    && !response.rooms.join.is_empty()
                    && options.presence_filter.allows_kind("m.presence", None) =>
            {
                self.store
                    .arrivals_since(user_id.as_str(), since.events, upto)
                    .await?
                    .into_iter()
                    .collect()
            }
            _ => HashSet::new(),
        };
        if presence > since_presence || !arrivals.is_empty() {
            let now = self.now_ms();
            for peer in self.room_peers(user_id).await? {
                let Some(state) = self.presence.get(&peer) else {
                    continue;
                };
                let news = state.serial > since_presence || arrivals.contains(peer.as_str());
                if !news
                    || state.serial > presence
                    || !options
                        .presence_filter
                        .allows_kind("m.presence", Some(peer.as_str()))
                {
                    continue;
                }
                response
                    .presence
                    .events
                    .push(to_raw(&super::presence::presence_event(
                        &peer, &state, now,
                    ))?);
            }
        }
        let base = Waited {
            token: next,
            joined: joined_rooms,
            one_time_keys: response.device_one_time_keys_count.clone(),
            fallback_keys: response.device_unused_fallback_key_types.clone(),
            changes: 0,
        };
        Ok((response, base))
    }

    /// At most `limit` to-device messages after `acknowledged` (those before were
    /// acknowledged), with the position reached.
    async fn to_device_section(
        &self,
        user_id: &UserId,
        device_id: &str,
        acknowledged: i64,
        limit: i64,
    ) -> Result<(Vec<Raw<ruma::events::AnyToDeviceEvent>>, i64)> {
        let rows = self
            .store
            .to_device_after(user_id.as_str(), device_id, acknowledged, limit)
            .await?;
        let reached = rows.last().map_or(acknowledged, |r| r.stream_id);
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let content: Value = serde_json::from_str(&row.content).unwrap_or_default();
            events.push(to_raw(&serde_json::json!({
                "type": row.kind, "sender": row.sender, "content": content,
            }))?);
        }
        Ok((events, reached))
    }

    /// Key counts of this device and, on incremental syncs, device-list changes.
    async fn encryption_section(
        &self,
        response: &mut Response,
        user_id: &UserId,
        device_id: &str,
        since: Option<SyncToken>,
        next: SyncToken,
    ) -> Result<()> {
        let keys = self
            .encryption_state(user_id, device_id, since, next)
            .await?;
        response.device_one_time_keys_count = keys.one_time_keys;
        response.device_unused_fallback_key_types = Some(keys.fallback_keys);
        response.device_lists = keys.device_lists;
        Ok(())
    }

    /// What `/sync` and sliding sync's `e2ee` extension tell a device about keys.
    async fn encryption_state(
        &self,
        user_id: &UserId,
        device_id: &str,
        since: Option<SyncToken>,
        next: SyncToken,
    ) -> Result<EncryptionState> {
        let mut state = EncryptionState::default();
        for (algorithm, count) in self.one_time_key_counts(user_id, device_id).await? {
            state.one_time_keys.insert(
                algorithm.as_str().into(),
                UInt::try_from(count).unwrap_or_default(),
            );
        }
        state.fallback_keys = self
            .store
            .unused_fallback_key_types(user_id.as_str(), device_id)
            .await?
            .iter()
            .map(|a| a.as_str().into())
            .collect();
        if let Some(since) = since {
            let delta = self
                .device_list_delta(
                    user_id,
                    (since.events, next.events),
                    (since.device_lists, next.device_lists),
                )
                .await?;
            state.device_lists.changed = delta.changed.into_iter().collect();
            state.device_lists.left = delta.left.into_iter().collect();
        }
        Ok(state)
    }

    /// One joined room: the timeline after `from` (or its latest events), the state the
    /// client lacks, and the summary; `None` when nothing changed since `from`.
    async fn joined_room(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        device_id: &str,
        from: Option<i64>,
        next: SyncToken,
        options: &SyncOptions,
    ) -> Result<Option<JoinedRoom>> {
        let upto = next.events;
        let since = options.since.filter(|_| from.is_some()).unwrap_or_default();
        let window = (options.timeline_limit, &options.timeline_filter);
        let (mut events, mut limited) = self
            .timeline_window(room_id, from.unwrap_or(0), upto, window)
            .await?;
        // An incremental timeline of a room joined before `from` is all visible; a whole
        // room may reach back before the join, where the history visibility decides. What
        // it hides is made up from earlier pages, a few at most (as Synapse), so that a
        // rejoin after a busy absence still shows the state changes of that time.
        if from.is_none() {
            // Events of the room's current state stay, whatever the history visibility
            // (as Synapse): a member may read the current state anyway, and a timeline
            // without a join the state shows confuses clients.
            let current: HashSet<String> = self
                .store
                .current_state(room_id.as_str())
                .await?
                .into_values()
                .collect();
            let mut kept = self
                .visible_or_current(room_id, user_id, events.clone(), &current)
                .await?;
            let mut pages = 0;
            let page_size = options.timeline_limit.saturating_mul(2).max(10);
            while limited && kept.len() < options.timeline_limit && pages < 5 {
                let Some(oldest) = events.first().map(|e| e.stream_ordering) else {
                    break;
                };
                let (page, more) = self
                    .timeline_window(
                        room_id,
                        0,
                        oldest.saturating_sub(1),
                        (page_size, &options.timeline_filter),
                    )
                    .await?;
                if page.is_empty() {
                    limited = false;
                    break;
                }
                let mut earlier = self
                    .visible_or_current(room_id, user_id, page.clone(), &current)
                    .await?;
                earlier.append(&mut kept);
                kept = earlier;
                events = page;
                limited = more;
                pages += 1;
            }
            if kept.len() > options.timeline_limit {
                kept.drain(..kept.len() - options.timeline_limit);
                limited = true;
            }
            events = kept;
        }
        let mut ephemeral = Vec::new();
        let (typing_serial, typing) = self.typing.in_room(room_id, self.now_ms());
        let ephemeral_filter = &options.ephemeral_filter;
        if typing_serial > since.typing
            && typing_serial <= next.typing
            && ephemeral_filter.allows_kind("m.typing", None)
        {
            ephemeral.push(to_raw(&serde_json::json!({
                "type": "m.typing",
                "content": {"user_ids": typing},
            }))?);
        }
        if ephemeral_filter.allows_kind("m.receipt", None)
            && let Some(receipts) = self
                .receipt_event(room_id, user_id, since.receipts, next.receipts)
                .await?
        {
            ephemeral.push(to_raw(&receipts)?);
        }
        if from.is_some()
            && events.is_empty()
            && !limited
            && ephemeral.is_empty()
            && !options.full_state
        {
            return Ok(None);
        }
        let mut joined = JoinedRoom::new();
        joined.ephemeral.events = ephemeral;
        let (unread, highlights) = self
            .store
            .notification_counts(room_id.as_str(), &[user_id.as_str()])
            .await?
            .remove(user_id.as_str())
            .unwrap_or_default();
        joined.unread_notifications.notification_count = UInt::new(unread.max(0) as u64);
        joined.unread_notifications.highlight_count = UInt::new(highlights.max(0) as u64);
        joined.timeline = self
            .timeline(&events, limited, (user_id, device_id), options)
            .await?;
        if from.is_none() && !limited && !events.is_empty() {
            // A whole room that fits: Synapse hands out the sync's own position, so paging
            // back returns the timeline again rather than nothing (SyTest and clients written
            // against Synapse expect a page there).
            joined.timeline.prev_batch = Some(format!("t{}", upto.saturating_add(1)));
        }
        joined.state = self
            .state_section(
                room_id,
                user_id,
                device_id,
                from,
                upto,
                (&events, limited),
                options,
            )
            .await?;
        let members_changed = events.iter().any(|e| e.kind == "m.room.member");
        if from.is_some() && !limited && !members_changed {
            // The summary only changes with membership: the client has it already.
            return Ok(Some(joined));
        }
        let joined_count = self.store.room_members(room_id.as_str(), "join").await?;
        let invited_count = self.store.room_members(room_id.as_str(), "invite").await?;
        joined.summary.joined_member_count = UInt::new(joined_count.len() as u64);
        joined.summary.invited_member_count = UInt::new(invited_count.len() as u64);
        // Heroes name rooms that have no name of their own (Synapse sends none otherwise).
        let has_name = |key: &'static str| async move {
            let kind = if key == "name" {
                "m.room.name"
            } else {
                "m.room.canonical_alias"
            };
            Ok::<_, Error>(
                self.state_content(room_id, kind, "")
                    .await?
                    .is_some_and(|c| {
                        c.get(key)
                            .and_then(Value::as_str)
                            .is_some_and(|v| !v.is_empty())
                    }),
            )
        };
        if has_name("name").await? || has_name("alias").await? {
            return Ok(Some(joined));
        }
        joined.summary.heroes = joined_count
            .iter()
            .chain(invited_count.iter())
            .filter(|u| u.as_str() != user_id.as_str())
            .take(5)
            .filter_map(|u| UserId::parse(u.as_str()).ok())
            .collect();
        Ok(Some(joined))
    }

    /// The events of `events` the user may see, or that are part of the room's `current`
    /// state.
    async fn visible_or_current(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        events: Vec<StoredEvent>,
        current: &HashSet<String>,
    ) -> Result<Vec<StoredEvent>> {
        // As the visibility check returns them (an erased sender's redacted for a latecomer).
        let mut kept: HashMap<String, StoredEvent> = self
            .visible_events(room_id, user_id, events.clone())
            .await?
            .into_iter()
            .map(|e| (e.event_id.clone(), e))
            .collect();
        Ok(events
            .into_iter()
            .filter_map(|e| match kept.remove(&e.event_id) {
                Some(visible) => Some(visible),
                None => current.contains(&e.event_id).then_some(e),
            })
            .collect())
    }

    /// A room the user left or was removed from: its events up to the leave.
    async fn left_room(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        device_id: &str,
        from: Option<i64>,
        left_at: i64,
        options: &SyncOptions,
    ) -> Result<LeftRoom> {
        let (events, limited) = self
            .timeline_window(
                room_id,
                from.unwrap_or(0),
                left_at,
                (options.timeline_limit, &options.timeline_filter),
            )
            .await?;
        let events = self.visible_events(room_id, user_id, events).await?;
        let mut left = LeftRoom::new();
        left.timeline = self
            .timeline(&events, limited, (user_id, device_id), options)
            .await?;
        left.state = self
            .state_section(
                room_id,
                user_id,
                device_id,
                from,
                left_at,
                (&events, limited),
                options,
            )
            .await?;
        Ok(left)
    }

    /// Whether the user was a joined member of the room at stream position `at`.
    async fn joined_at(&self, room_id: &RoomId, user_id: &UserId, at: i64) -> Result<bool> {
        let state = self.state_at(room_id, at).await?;
        let Some(event_id) = state.get(&("m.room.member".to_owned(), user_id.to_string())) else {
            return Ok(false);
        };
        let events = self.store.events(std::slice::from_ref(event_id)).await?;
        Ok(events.first().is_some_and(|event| {
            Pdu::from_stored(event).is_ok_and(|pdu| {
                pdu.content_object()
                    .get("membership")
                    .and_then(Value::as_str)
                    == Some("join")
            })
        }))
    }

    /// A left room the user never joined: only their own membership event.
    async fn own_leave(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        device_id: &str,
    ) -> Result<LeftRoom> {
        let mut left = LeftRoom::new();
        if let Some(row) = self
            .store
            .membership_row(room_id.as_str(), user_id.as_str())
            .await?
        {
            let events = self
                .store
                .events(std::slice::from_ref(&row.event_id))
                .await?;
            left.timeline = self
                .timeline(
                    &events,
                    false,
                    (user_id, device_id),
                    &SyncOptions::default(),
                )
                .await?;
        }
        Ok(left)
    }

    /// The last `limit` events of the room in `(after, upto]`, oldest first, and whether
    /// there were more.
    async fn timeline_window(
        &self,
        room_id: &RoomId,
        after: i64,
        upto: i64,
        (limit, filter): (usize, &EventFilter),
    ) -> Result<(Vec<StoredEvent>, bool)> {
        let wanted = i64::try_from(limit).unwrap_or(i64::MAX);
        if filter.is_empty() {
            let mut events = self
                .store
                .room_events(
                    room_id.as_str(),
                    after,
                    upto.saturating_add(1),
                    false,
                    wanted.saturating_add(1),
                )
                .await?;
            let limited = events.len() as i64 > wanted;
            events.truncate(limit);
            events.reverse();
            return Ok((events, limited));
        }
        // Filtered: read back page by page until enough events pass, within a bound.
        let mut matching = Vec::new();
        let mut before = upto.saturating_add(1);
        let mut scanned = 0;
        let limited = loop {
            let page = self
                .store
                .room_events(room_id.as_str(), after, before, false, 200)
                .await?;
            let Some(last) = page.last() else {
                break false;
            };
            before = last.stream_ordering;
            scanned += page.len();
            matching.extend(page.into_iter().filter(|e| filter.allows(e)));
            if matching.len() > limit {
                break true;
            }
            if scanned >= MAX_FILTER_SCAN {
                break true;
            }
        };
        matching.truncate(limit);
        matching.reverse();
        Ok((matching, limited))
    }

    async fn timeline(
        &self,
        events: &[StoredEvent],
        limited: bool,
        viewer: (&UserId, &str),
        options: &SyncOptions,
    ) -> Result<Timeline> {
        let mut timeline = Timeline::new();
        timeline.limited = limited;
        if let Some(first) = events.first() {
            // A /messages token: paginate backwards from just before the first event.
            timeline.prev_batch = Some(format!("t{}", first.stream_ordering));
        }
        let stored: HashMap<&str, &StoredEvent> =
            events.iter().map(|e| (e.event_id.as_str(), e)).collect();
        for event in self.client_events(events, Some(viewer), true).await? {
            let pdu = event
                .get("event_id")
                .and_then(Value::as_str)
                .and_then(|id| stored.get(id))
                .filter(|_| options.federation_format);
            let event = match pdu {
                Some(pdu) => federation_event(pdu, &event),
                None => event,
            };
            timeline.events.push(to_raw(&event)?);
        }
        Ok(timeline)
    }

    /// The state section: what changed between `from` and the timeline's start (or end, for
    /// `state_after`), everything on initial syncs; members trimmed when lazy-loading.
    #[allow(clippy::too_many_arguments)]
    async fn state_section(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        device_id: &str,
        from: Option<i64>,
        upto: i64,
        (timeline, limited): (&[StoredEvent], bool),
        options: &SyncOptions,
    ) -> Result<State> {
        // A complete incremental timeline carries every state change itself: nothing to
        // look up (the common case of a woken long-poll).
        let filtered = !options.timeline_filter.is_empty();
        if from.is_some()
            && !limited
            && !options.full_state
            && !options.lazy_load_members
            && !filtered
        {
            if !options.state_after {
                return Ok(State::Before(StateEvents::new()));
            }
            let mut latest: Vec<&StoredEvent> = Vec::new();
            for event in timeline
                .iter()
                .rev()
                .filter(|e| e.state_key.is_some() && options.state_filter.allows(e))
            {
                if !latest
                    .iter()
                    .any(|l| l.kind == event.kind && l.state_key == event.state_key)
                {
                    latest.push(event);
                }
            }
            let latest: Vec<StoredEvent> = latest.into_iter().rev().cloned().collect();
            let mut events = StateEvents::new();
            for event in self
                .client_events(&latest, Some((user_id, device_id)), true)
                .await?
            {
                events.events.push(to_raw(&event)?);
            }
            return Ok(State::After(events));
        }
        // A filtered timeline may leave state changes out: then the state section brings
        // the room up to the end of the window, whatever the timeline showed.
        let target = match (options.state_after, timeline.first(), timeline.last()) {
            _ if filtered => self.state_at(room_id, upto).await?,
            (false, Some(first), _) => {
                // An invite from another server is kept without the room's state; the state
                // the room had when this server joined it stands in for it.
                let group = if first.state_before.is_none() && first.kind != "m.room.create" {
                    timeline.iter().find_map(|e| e.state_before)
                } else {
                    first.state_before
                };
                self.store.state_of_group(group).await?
            }
            (true, _, Some(last)) => {
                let mut state = self.store.state_of_group(last.state_before).await?;
                if let Some(key) = &last.state_key {
                    state.insert((last.kind.clone(), key.clone()), last.event_id.clone());
                }
                state
            }
            _ => self.state_at(room_id, upto).await?,
        };
        let baseline = match from {
            Some(from) if !options.full_state => self.state_at(room_id, from).await?,
            _ => StateMap::new(),
        };
        // full_state starts afresh, like an initial sync.
        let continued = from.filter(|_| !options.full_state);
        // The timeline's senders, and on a fresh start the user (so it knows it is in the
        // room; later syncs need not repeat that, as Synapse).
        let needed_members: Option<HashSet<&str>> = options.lazy_load_members.then(|| {
            timeline
                .iter()
                .map(|e| e.sender.as_str())
                .chain(continued.is_none().then_some(user_id.as_str()))
                .collect()
        });
        let in_timeline: HashSet<&str> = if options.state_after {
            HashSet::new()
        } else {
            timeline.iter().map(|e| e.event_id.as_str()).collect()
        };
        // Lazy loading: the timeline's senders' member events this device has not been sent
        // yet (all of them on an initial sync or with include_redundant_members), whether or
        // not they changed since `from`.
        let lazy_key = format!("{user_id}|{device_id}|{room_id}");
        let sent = match (&needed_members, continued) {
            (Some(_), Some(from)) if !options.include_redundant_members => {
                self.lazy_members.sent(&lazy_key, from)
            }
            _ => HashMap::new(),
        };
        let is_needed_member = |kind: &str, state_key: &str| {
            kind == "m.room.member"
                && needed_members
                    .as_ref()
                    .is_some_and(|m| m.contains(state_key))
        };
        // A gap hides membership changes the client cannot infer from the timeline: in a
        // gapped incremental sync every change since `from` is sent, members included (as
        // Synapse: lazy loading applies to the rest only).
        let gapped = continued.is_some() && limited;
        let changed = |kind: &String, state_key: &String, id: &String| {
            baseline.get(&(kind.clone(), state_key.clone())) != Some(id)
        };
        let wanted: Vec<String> = target
            .iter()
            .filter(|((kind, state_key), id)| {
                if is_needed_member(kind, state_key) {
                    sent.get(state_key.as_str()) != Some(*id)
                } else {
                    changed(kind, state_key, id)
                }
            })
            .filter(|(_, id)| !in_timeline.contains(id.as_str()))
            .filter(|((kind, state_key), id)| {
                kind != "m.room.member"
                    || needed_members
                        .as_ref()
                        .is_none_or(|m| m.contains(state_key.as_str()))
                    || (gapped && changed(kind, state_key, id))
            })
            .map(|(_, id)| id.clone())
            .collect();
        if needed_members.is_some() {
            let delivered = target
                .iter()
                .filter(|((kind, state_key), id)| {
                    is_needed_member(kind, state_key)
                        || (kind == "m.room.member" && gapped && changed(kind, state_key, id))
                })
                .map(|((_, state_key), id)| (state_key.clone(), id.clone()));
            self.lazy_members
                .record(&lazy_key, delivered, continued, upto);
        }
        let mut stored = self.store.events(&wanted).await?;
        stored.retain(|e| options.state_filter.allows(e));
        let mut events = StateEvents::new();
        for event in self
            .client_events(&stored, Some((user_id, device_id)), true)
            .await?
        {
            events.events.push(to_raw(&event)?);
        }
        Ok(if options.state_after {
            State::After(events)
        } else {
            State::Before(events)
        })
    }

    /// The users `user_id` ignores (`m.ignored_user_list` account data).
    async fn ignored_users(&self, user_id: &UserId) -> Result<HashSet<String>> {
        let content = self
            .global_account_data(user_id, "m.ignored_user_list")
            .await?;
        Ok(content
            .get("ignored_users")
            .and_then(Value::as_object)
            .map(|users| users.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// The room's state after stream position `at`.
    pub async fn state_at(&self, room_id: &RoomId, at: i64) -> Result<StateMap> {
        // The first event after `at` knows the state before it; without one, it is current.
        let next = self
            .store
            .room_events(room_id.as_str(), at, i64::MAX, true, 1)
            .await?;
        match next.first() {
            Some(event) => Ok(self.store.state_of_group(event.state_before).await?),
            None => Ok(self.store.current_state(room_id.as_str()).await?),
        }
    }

    /// What an invited or knocking user may see: a few state events, stripped, their own
    /// membership event and the inviter's (as Synapse: clients show who invited from it, and
    /// matrix-sdk imports the inviter's shared room keys, MSC4268, only when it is there).
    pub(crate) async fn stripped_state<T>(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Vec<Raw<T>>> {
        let mut events = Vec::new();
        // A room this server is not in: what the inviting server showed, and the invite.
        if let Some((shown, _)) = self
            .store
            .remote_invite_state(room_id.as_str(), user_id.as_str())
            .await?
            && self
                .store
                .current_state_event(room_id.as_str(), "m.room.create", "")
                .await?
                .is_none()
        {
            let shown: Vec<Value> = serde_json::from_str(&shown).unwrap_or_default();
            for event in shown {
                events.push(to_raw(&event)?);
            }
            if let Some(stored) = self
                .store
                .current_state_event(room_id.as_str(), "m.room.member", user_id.as_str())
                .await?
            {
                let pdu = Pdu::from_stored(&stored).map_err(Error::Internal)?;
                events.push(to_raw(&pdu.to_stripped())?);
            }
            return Ok(events);
        }
        let mut inviter = None;
        for (kind, key) in [
            ("m.room.create", ""),
            ("m.room.join_rules", ""),
            ("m.room.name", ""),
            ("m.room.avatar", ""),
            ("m.room.topic", ""),
            ("m.room.canonical_alias", ""),
            ("m.room.encryption", ""),
            ("m.room.member", user_id.as_str()),
        ] {
            if let Some(stored) = self
                .store
                .current_state_event(room_id.as_str(), kind, key)
                .await?
            {
                if kind == "m.room.member" && stored.sender != user_id.as_str() {
                    inviter = Some(stored.sender.clone());
                }
                let pdu = Pdu::from_stored(&stored).map_err(Error::Internal)?;
                events.push(to_raw(&pdu.to_stripped())?);
            }
        }
        if let Some(inviter) = inviter
            && let Some(stored) = self
                .store
                .current_state_event(room_id.as_str(), "m.room.member", &inviter)
                .await?
        {
            let pdu = Pdu::from_stored(&stored).map_err(Error::Internal)?;
            events.push(to_raw(&pdu.to_stripped())?);
        }
        Ok(events)
    }
}

/// An event as servers exchange it (`event_format: federation`): the PDU as stored, with the
/// ids and `unsigned` a client reads beside it.
fn federation_event(stored: &StoredEvent, client: &Value) -> Value {
    let Ok(Value::Object(mut pdu)) = serde_json::from_str::<Value>(&stored.json) else {
        return client.clone();
    };
    pdu.insert("event_id".to_owned(), Value::from(stored.event_id.as_str()));
    pdu.entry("room_id")
        .or_insert_with(|| Value::from(stored.room_id.as_str()));
    if let Some(unsigned) = client.get("unsigned") {
        pdu.insert("unsigned".to_owned(), unsigned.clone());
    }
    Value::Object(pdu)
}
