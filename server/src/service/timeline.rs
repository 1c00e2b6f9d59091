//! Reading and writing a room's timeline for clients: sends with transaction ids, state,
//! `/messages` pages, single events and their context, within what the user may see.

use ruma::{DeviceId, EventId, OwnedEventId, RoomId, UserId};
use serde_json::Value;

use super::{
    Services,
    rooms::EventDraft,
    sync::{EventFilter, SyncToken},
};
use crate::{
    http::error::{Error, Result},
    store::StoredEvent,
};

/// Events read per step of a `/messages` page (more than asked, as some may be hidden).
pub(crate) const PAGINATION_BATCH: usize = 50;
/// Most events one `/messages` request reads looking for ones the user may see.
pub(crate) const MAX_PAGINATION_SCAN: usize = 1000;

/// One page of `/messages`.
#[derive(Debug)]
pub struct Page {
    /// The token the page starts at.
    pub start: String,
    /// Where the next page starts; `None` when there is nothing more.
    pub end: Option<String>,
    /// Events in the requested direction's order.
    pub events: Vec<Value>,
    /// State the client needs for the events (none without lazy loading).
    pub state: Vec<Value>,
}

/// What a client asks `/messages` for.
#[derive(Clone, Copy, Debug)]
pub struct PageQuery<'a> {
    /// The token to start at; the end of the room (backwards) or its start when `None`.
    pub from: Option<&'a str>,
    /// The token to stop at.
    pub to: Option<&'a str>,
    /// Newest first.
    pub backward: bool,
    /// Most events returned.
    pub limit: u64,
    /// Which events to return (`types`, `senders` and their negations).
    pub filter: &'a EventFilter,
    /// Whether to add the senders' member events (`lazy_load_members`).
    pub lazy_members: bool,
}

/// An event with the events around it.
#[derive(Debug)]
pub struct Context {
    /// The event.
    pub event: Value,
    /// Events before it, newest first.
    pub before: Vec<Value>,
    /// Events after it, oldest first.
    pub after: Vec<Value>,
    /// Token to paginate backwards from the earliest event returned.
    pub start: String,
    /// Token to paginate forwards from the latest event returned.
    pub end: String,
    /// The room's state at the event.
    pub state: Vec<Value>,
}

/// Below every stream position: history fetched from other servers sits at negative ones.
const HISTORY_START: i64 = i64::MIN / 2;

/// Times one `/messages` page asks other servers for earlier history.
const BACKFILLS_PER_PAGE: usize = 2;

/// A pagination token for the position just before stream position `stream`.
fn token(stream: i64) -> String {
    format!("t{stream}")
}

impl Services {
    /// A stream position from a `/messages` (`t<N>`) or `/sync` (`s…`) token: events
    /// before the position have stream orderings below it.
    pub fn parse_position(&self, token: &str) -> Result<i64> {
        if let Some(n) = token.strip_prefix('t') {
            return n
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= HISTORY_START)
                .ok_or_else(|| Error::invalid_param(format!("{token} is not a pagination token")));
        }
        Ok(SyncToken::parse(token)?.events.saturating_add(1))
    }

    /// Sends a message-like event or redaction once per `(device, room, txn_id)`: a repeat gets
    /// the first event's id.
    pub async fn send_with_txn(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        device_id: &DeviceId,
        txn_id: &str,
        draft: EventDraft,
    ) -> Result<OwnedEventId> {
        if let Some(target) = &draft.redacts
            && self
                .store
                .txn_event(
                    user_id.as_str(),
                    device_id.as_str(),
                    room_id.as_str(),
                    txn_id,
                )
                .await?
                .is_none()
        {
            self.ensure_may_redact(room_id, user_id, target).await?;
        }
        self.append(room_id, user_id, draft, Some((device_id, txn_id)))
            .await
    }

    /// Sets a piece of state (the authorization rules decide who may).
    pub async fn send_state(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        kind: &str,
        state_key: &str,
        content: Value,
    ) -> Result<OwnedEventId> {
        if kind == "m.room.create" {
            return Err(Error::forbidden("A room's create event cannot be replaced"));
        }
        if kind == "m.room.canonical_alias" {
            self.check_canonical_alias(room_id, &content).await?;
        }
        let mut content = content;
        if kind == "m.room.member"
            && let Some(map) = content.as_object_mut()
        {
            // Only this server vouches for restricted joins, never the client's say-so.
            map.remove("join_authorised_via_users_server");
            let joining = map.get("membership").and_then(Value::as_str) == Some("join")
                && state_key == user_id.as_str();
            if joining {
                self.ensure_guest_may_join(room_id, user_id).await?;
            }
            if joining && let Some(via) = self.restricted_join_authoriser(room_id, user_id).await? {
                map.insert(
                    "join_authorised_via_users_server".to_owned(),
                    Value::from(via),
                );
            }
        }
        let revokes_guests = kind == "m.room.guest_access"
            && content.get("guest_access").and_then(Value::as_str) != Some("can_join");
        let event_id = self
            .append(
                room_id,
                user_id,
                EventDraft::state(kind, state_key, content),
                None,
            )
            .await?;
        if revokes_guests {
            self.remove_guests(room_id, user_id).await?;
        }
        Ok(event_id)
    }

    /// Aliases in `m.room.canonical_alias` must exist and point at this room.
    pub(crate) async fn check_canonical_alias(
        &self,
        room_id: &RoomId,
        content: &Value,
    ) -> Result<()> {
        let alt = content
            .get("alt_aliases")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let aliases = content.get("alias").into_iter().chain(alt.iter());
        for alias in aliases {
            let Some(alias) = alias.as_str() else {
                return Err(Error::bad_json("Aliases must be strings"));
            };
            if ruma::RoomAliasId::parse(alias).is_err() {
                return Err(Error::invalid_param(format!("{alias} is not a room alias")));
            }
            let points_here =
                self.store.alias_room(alias).await?.as_deref() == Some(room_id.as_str());
            if !points_here {
                return Err(Error::new(
                    http::StatusCode::BAD_REQUEST,
                    ruma::api::error::ErrorKind::BadAlias,
                    format!("{alias} does not point to this room"),
                ));
            }
        }
        Ok(())
    }

    /// The room's state as the user may see it: current while joined, as of their leaving
    /// afterwards; 403 for rooms they were never in.
    pub async fn readable_state(&self, room_id: &RoomId, user_id: &UserId) -> Result<Vec<Value>> {
        let state = match self.visible_upto(room_id, user_id).await? {
            Some(i64::MAX) => self.store.current_state(room_id.as_str()).await?,
            Some(left_at) => self.state_at(room_id, left_at).await?,
            None => {
                return Err(Error::forbidden(format!(
                    "You are not a member of {room_id}"
                )));
            }
        };
        let ids: Vec<String> = state.into_values().collect();
        let events = self.store.events(&ids).await?;
        self.client_events(&events, None, false).await
    }

    /// One piece of readable state, in the client format.
    pub async fn readable_state_event(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<Value>> {
        let state = match self.visible_upto(room_id, user_id).await? {
            Some(i64::MAX) => self.store.current_state(room_id.as_str()).await?,
            Some(left_at) => self.state_at(room_id, left_at).await?,
            None => {
                return Err(Error::forbidden(format!(
                    "You are not a member of {room_id}"
                )));
            }
        };
        let Some(id) = state.get(&(kind.to_owned(), state_key.to_owned())) else {
            return Ok(None);
        };
        let events = self.store.events(std::slice::from_ref(id)).await?;
        Ok(self.client_events(&events, None, false).await?.pop())
    }

    /// A page of the room's events from a token, backwards or forwards.
    #[allow(clippy::too_many_arguments)]
    pub async fn messages(
        &self,
        room_id: &RoomId,
        (user_id, device_id): (&UserId, &DeviceId),
        query: &PageQuery<'_>,
    ) -> Result<Page> {
        let PageQuery {
            from,
            to,
            backward,
            limit,
            filter,
            lazy_members,
        } = *query;
        let mut reader = self.reader(room_id, user_id).await?;
        let Some(upto) = reader.upto().await? else {
            return Err(Error::forbidden(format!(
                "You are not a member of {room_id}"
            )));
        };
        let from = match from {
            Some(token) => self.parse_position(token)?,
            None if backward => self.store.max_stream_ordering().await?.saturating_add(1),
            None => HISTORY_START,
        };
        let to = to.map(|t| self.parse_position(t)).transpose()?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        // Read page by page until `limit` events the user may see, or the history (or the
        // scan bound) ends; the cursor is exclusive backwards, inclusive forwards.
        let mut cursor = if backward {
            from.min(upto.saturating_add(1))
        } else {
            from
        };
        let mut events: Vec<StoredEvent> = Vec::new();
        let mut more = true;
        let mut scanned = 0;
        let mut backfills = 0;
        loop {
            if !more && backward && to.is_none() && events.len() < limit {
                // The start of the history here: a room joined through another server has
                // more on the servers in it.
                if backfills == BACKFILLS_PER_PAGE {
                    break;
                }
                backfills += 1;
                match self.backfill(room_id).await {
                    Ok(0) => break,
                    Ok(_) => more = true,
                    Err(error) => {
                        tracing::info!(%room_id, %error, "no history from other servers");
                        break;
                    }
                }
            }
            if !(more && events.len() < limit && scanned < MAX_PAGINATION_SCAN) {
                break;
            }
            let want = limit - events.len();
            let batch = i64::try_from(want.max(PAGINATION_BATCH)).unwrap_or(i64::MAX);
            let page = if backward {
                let after = to.map_or(HISTORY_START, |t| t.saturating_sub(1));
                self.store
                    .room_events(room_id.as_str(), after, cursor, false, batch)
                    .await?
            } else {
                let last = to.map_or(upto, |t| t.saturating_sub(1).min(upto));
                self.store
                    .room_events(
                        room_id.as_str(),
                        cursor.saturating_sub(1),
                        last,
                        true,
                        batch,
                    )
                    .await?
            };
            more = page.len() as i64 == batch;
            scanned += page.len();
            let next_cursor = |event: &StoredEvent| {
                if backward {
                    event.stream_ordering
                } else {
                    event.stream_ordering.saturating_add(1)
                }
            };
            if let Some(last) = page.last() {
                cursor = next_cursor(last);
            }
            let mut visible = reader.visible(page).await?;
            visible.retain(|e| filter.allows(e));
            if visible.len() > want {
                // The page holds more than the client asked for: continue after the last one
                // returned.
                visible.truncate(want);
                if let Some(last) = visible.last() {
                    cursor = next_cursor(last);
                }
                more = true;
            }
            events.extend(visible);
        }
        // As Synapse: a page with events always says where the next one starts (clients
        // that follow the newest events need it); only an empty page ends the history.
        let end = (more || !events.is_empty()).then(|| token(cursor));
        let state = match (lazy_members, events.first()) {
            (true, Some(first)) => self.senders_members(&events, first.state_before).await?,
            _ => Vec::new(),
        };
        Ok(Page {
            start: token(from),
            end,
            events: self
                .client_events(&events, Some((user_id, device_id.as_str())), false)
                .await?,
            state: self
                .client_events(&state, Some((user_id, device_id.as_str())), false)
                .await?,
        })
    }

    /// Lazy loading for a page: the member events of its events' senders, as the state
    /// before its first event has them (as Synapse).
    async fn senders_members(
        &self,
        events: &[StoredEvent],
        state_group: Option<i64>,
    ) -> Result<Vec<StoredEvent>> {
        let state = self.store.state_of_group(state_group).await?;
        let senders: std::collections::BTreeSet<&str> =
            events.iter().map(|e| e.sender.as_str()).collect();
        let ids: Vec<String> = senders
            .into_iter()
            .filter_map(|sender| state.get(&("m.room.member".to_owned(), sender.to_owned())))
            .cloned()
            .collect();
        Ok(self.store.events(&ids).await?)
    }

    /// One event, if the user may see it; 404 otherwise (as if it did not exist).
    pub async fn readable_event(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        device_id: &DeviceId,
        event_id: &EventId,
    ) -> Result<Value> {
        let (stored, _) = self.visible_event(room_id, user_id, event_id).await?;
        self.client_events(&[stored], Some((user_id, device_id.as_str())), false)
            .await?
            .pop()
            .ok_or_else(|| Error::not_found("No such event in this room"))
    }

    /// An event with up to `limit` events around it, split evenly, and the state at it.
    pub async fn context(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        device_id: &DeviceId,
        event_id: &EventId,
        limit: u64,
    ) -> Result<Context> {
        let mut reader = self.reader(room_id, user_id).await?;
        // A room the user may not read at all is 403, as Synapse answers; an event they may
        // not see in a room they read is 404.
        if reader.upto().await?.is_none() {
            return Err(Error::forbidden(format!("You may not read {room_id}")));
        }
        let (stored, upto) = reader.event(event_id).await?;
        let half = i64::try_from(limit / 2).unwrap_or(0);
        let before_events = self
            .store
            .room_events(
                room_id.as_str(),
                HISTORY_START,
                stored.stream_ordering,
                false,
                half,
            )
            .await?;
        let after_events = self
            .store
            .room_events(
                room_id.as_str(),
                stored.stream_ordering,
                upto,
                true,
                i64::try_from(limit).unwrap_or(0).saturating_sub(half),
            )
            .await?;
        let before_events = reader.visible(before_events).await?;
        let after_events = reader.visible(after_events).await?;
        let start = token(
            before_events
                .last()
                .map_or(stored.stream_ordering, |e| e.stream_ordering),
        );
        let end = token(
            after_events
                .last()
                .map_or(stored.stream_ordering, |e| e.stream_ordering)
                .saturating_add(1),
        );
        let state_map = self.store.state_of_group(stored.state_before).await?;
        let ids: Vec<String> = state_map.into_values().collect();
        let state_events = self.store.events(&ids).await?;
        let device = Some((user_id, device_id.as_str()));
        Ok(Context {
            event: self
                .client_events(std::slice::from_ref(&stored), device, false)
                .await?
                .pop()
                .ok_or_else(|| Error::not_found("No such event in this room"))?,
            before: self.client_events(&before_events, device, false).await?,
            after: self.client_events(&after_events, device, false).await?,
            start,
            end,
            state: self.client_events(&state_events, None, false).await?,
        })
    }
}

impl Services {
    /// The event closest to `ts` in the given direction that the user may see:
    /// `(event id, origin_server_ts)`; 404 `M_NOT_FOUND` when there is none.
    pub async fn event_near_ts(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        ts: i64,
        forward: bool,
    ) -> Result<(String, i64)> {
        let mut reader = self.reader(room_id, user_id).await?;
        let upto = reader
            .upto()
            .await?
            .ok_or_else(|| Error::forbidden(format!("You are not a member of {room_id}")))?;
        // The nearest events may be ones the user cannot see: the nearest they can, within
        // the same bound on the scan as a page of /messages.
        let mut scanned = 0;
        while scanned < MAX_PAGINATION_SCAN {
            let batch = self
                .store
                .events_near_ts(
                    room_id.as_str(),
                    ts,
                    forward,
                    upto,
                    (scanned as i64, PAGINATION_BATCH as i64),
                )
                .await?;
            let fetched = batch.len();
            if let Some(event) = reader.visible(batch).await?.into_iter().next() {
                return Ok((event.event_id, event.origin_server_ts));
            }
            if fetched < PAGINATION_BATCH {
                break;
            }
            scanned += fetched;
        }
        Err(Error::not_found(
            "No event you may see in that direction from that time",
        ))
    }
}
