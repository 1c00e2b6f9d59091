//! History visibility: which of a room's events a user may read (spec, "History
//! visibility"), decided per event by the visibility and the user's membership at it.

use ruma::{EventId, RoomId, UserId};

use super::Pdu;
use crate::{
    http::error::{Error, Result},
    service::Services,
    store::{MembershipRow, StoredEvent},
};

const HISTORY_VISIBILITY: &str = "m.room.history_visibility";

/// How far a value lets users read, most open last (the order Synapse and the spec use
/// when an event changes the visibility: the more open of before and after applies to it).
fn openness(visibility: &str) -> u8 {
    match visibility {
        "joined" => 0,
        "invited" => 1,
        "shared" => 2,
        "world_readable" => 3,
        // Unknown values are read as `shared`, the spec's default.
        _ => 2,
    }
}

/// Most changes of one piece of state read back when deciding visibility; anything older
/// counts as unknown (and so as hidden).
const HISTORY_LIMIT: i64 = 1000;

/// What a user's reading of a room rests on: the visibility settings and their memberships
/// over time, by stream position. A room's history is one line on this server, so the
/// state in force at an event is the last change before it (federation will need the
/// state at each event instead).
struct History {
    /// `(position, history_visibility)`, oldest first.
    visibility: Vec<(i64, String)>,
    /// Whether older settings were left out.
    visibility_cut: bool,
    /// `(position, membership)` of the user, oldest first.
    memberships: Vec<(i64, String)>,
}

/// The value in force just before `at`.
fn before(changes: &[(i64, String)], at: i64) -> Option<&str> {
    let index = changes.partition_point(|(position, _)| *position < at);
    index.checked_sub(1).map(|i| changes[i].1.as_str())
}

impl History {
    /// Where the user's last stretch of being joined ended (`i64::MAX` while it lasts); `None`
    /// when they were never joined.
    fn joined_until(&self) -> Option<i64> {
        let last_join = self.memberships.iter().rposition(|(_, m)| m == "join")?;
        Some(
            self.memberships
                .get(last_join + 1)
                .map_or(i64::MAX, |(ended, _)| *ended),
        )
    }

    /// The spec's rules for one event. `own` is the content the event sets when it is one
    /// of the pieces of state read here (`visibility` or `membership`).
    fn may_see(&self, event_at: i64, own: Option<(&str, &str)>) -> bool {
        let mut visibility = before(&self.visibility, event_at).unwrap_or(if self.visibility_cut {
            "joined"
        } else {
            "shared"
        });
        let mut membership = before(&self.memberships, event_at).unwrap_or_default();
        match own {
            // The event changing the visibility is read with the more open of the two.
            Some(("visibility", after)) if openness(after) > openness(visibility) => {
                visibility = after;
            }
            // One's own membership event is seen by who they were on either side of it
            // (so a kick or a leave is seen by the member it removed).
            Some(("membership", after)) => {
                membership = if after == "join" || membership == "join" {
                    "join"
                } else if after == "invite" || membership == "invite" {
                    "invite"
                } else {
                    after
                };
            }
            _ => {}
        }
        if visibility == "world_readable" || membership == "join" {
            return true;
        }
        match visibility {
            "joined" => false,
            "invited" => membership == "invite",
            // Shared: visible to anyone who was joined at it or joined after it.
            _ => self.joined_until().is_some_and(|until| event_at <= until),
        }
    }
}

fn content_str(event: &StoredEvent, field: &str) -> Option<String> {
    Pdu::from_stored(event)
        .ok()?
        .content_object()
        .get(field)?
        .as_str()
        .map(str::to_owned)
}

/// One user's reading of one room, read from the store once and reused for every batch of
/// events a request looks at (a page of `/messages` may look at twenty).
pub struct Reader<'a> {
    services: &'a Services,
    room_id: &'a RoomId,
    user_id: &'a UserId,
    row: Option<MembershipRow>,
    /// Read on first need: a member reading what came after their join never needs it.
    history: Option<History>,
}

impl Services {
    /// What `user_id`'s reading of `room_id` rests on, for [`Reader::upto`] and
    /// [`Reader::visible`].
    pub async fn reader<'a>(
        &'a self,
        room_id: &'a RoomId,
        user_id: &'a UserId,
    ) -> Result<Reader<'a>> {
        let row = self
            .store
            .membership_row(room_id.as_str(), user_id.as_str())
            .await?;
        Ok(Reader {
            services: self,
            room_id,
            user_id,
            row,
            history: None,
        })
    }

    /// [`Reader::upto`] for one question.
    pub async fn visible_upto(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<i64>> {
        self.reader(room_id, user_id).await?.upto().await
    }

    /// [`Reader::visible`] for one question.
    pub async fn visible_events(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        events: Vec<StoredEvent>,
    ) -> Result<Vec<StoredEvent>> {
        if events.is_empty() {
            return Ok(events);
        }
        self.reader(room_id, user_id).await?.visible(events).await
    }

    /// The room's history visibility now.
    pub(crate) async fn current_visibility(&self, room_id: &RoomId) -> Result<String> {
        Ok(self
            .state_content(room_id, HISTORY_VISIBILITY, "")
            .await?
            .and_then(|c| c.get("history_visibility")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "shared".to_owned()))
    }

    async fn reading_history(&self, room_id: &RoomId, user_id: &UserId) -> Result<History> {
        let read = |key: (&'static str, String), field: &'static str| async move {
            let events = self
                .store
                .state_history(room_id.as_str(), (key.0, &key.1), HISTORY_LIMIT)
                .await?;
            let cut = events.len() as i64 == HISTORY_LIMIT;
            let changes = events
                .iter()
                .map(|e| {
                    let value = content_str(e, field).unwrap_or_default();
                    (e.stream_ordering, value)
                })
                .collect::<Vec<_>>();
            Ok::<_, Error>((changes, cut))
        };
        let (visibility, visibility_cut) =
            read((HISTORY_VISIBILITY, String::new()), "history_visibility").await?;
        let (memberships, _) = read(("m.room.member", user_id.to_string()), "membership").await?;
        Ok(History {
            visibility,
            visibility_cut,
            memberships,
        })
    }
}

impl Reader<'_> {
    /// The highest stream position a user may read in a room: everything while joined, up
    /// to the end of their last membership afterwards, everything in a `world_readable`
    /// room; `None` when they may read nothing. Which events below it they see is decided
    /// per event by [`Reader::visible`].
    pub async fn upto(&mut self) -> Result<Option<i64>> {
        if let Some(row) = &self.row {
            if row.membership == "join" {
                return Ok(Some(i64::MAX));
            }
            if row.ever_joined
                && let Some(until) = self.history().await?.joined_until()
            {
                return Ok(Some(until));
            }
        }
        let visibility = self.services.current_visibility(self.room_id).await?;
        Ok((visibility == "world_readable").then_some(i64::MAX))
    }

    /// The events (all of the room) that the user may see, in their order.
    pub async fn visible(&mut self, mut events: Vec<StoredEvent>) -> Result<Vec<StoredEvent>> {
        if events.is_empty() {
            return Ok(events);
        }
        // Joined now and every event at or after the join: all visible, nothing to look up
        // (the usual case of a member reading new messages).
        if let Some(row) = &self.row
            && row.membership == "join"
            && events.iter().all(|e| e.stream_ordering >= row.since)
        {
            return Ok(events);
        }
        let user_id = self.user_id;
        let history = self.history().await?;
        events.retain(|event| {
            let own_key = |kind: &str, key: &str| {
                event.kind == kind && event.state_key.as_deref() == Some(key)
            };
            let own = if own_key(HISTORY_VISIBILITY, "") {
                Some(("visibility", "history_visibility"))
            } else if own_key("m.room.member", user_id.as_str()) {
                Some(("membership", "membership"))
            } else {
                None
            };
            let value = own.map(|(_, field)| content_str(event, field).unwrap_or_default());
            history.may_see(
                event.stream_ordering,
                own.zip(value.as_deref()).map(|((which, _), v)| (which, v)),
            )
        });
        self.erase_for_latecomers(&mut events).await?;
        Ok(events)
    }

    /// Events of erased accounts (deactivated with `erase: true`) are redacted for a user
    /// who was not joined when they were sent, as Synapse does.
    async fn erase_for_latecomers(&mut self, events: &mut [StoredEvent]) -> Result<()> {
        let mut senders: Vec<&str> = events.iter().map(|e| e.sender.as_str()).collect();
        senders.sort_unstable();
        senders.dedup();
        let erased = self.services.store.erased_among(&senders).await?;
        if erased.is_empty() {
            return Ok(());
        }
        let Some(room) = self.services.store.room(self.room_id.as_str()).await? else {
            return Ok(());
        };
        let (_, rules) = super::version_rules(&room.version)?;
        let history = self.history().await?;
        for event in events.iter_mut() {
            if !erased.contains(&event.sender)
                || before(&history.memberships, event.stream_ordering) == Some("join")
            {
                continue;
            }
            let Ok(object) = serde_json::from_str::<ruma::CanonicalJsonObject>(&event.json) else {
                continue;
            };
            if let Ok(pruned) = ruma::canonical_json::redact(object, &rules.redaction, None) {
                event.json =
                    serde_json::to_string(&pruned).map_err(|e| Error::Internal(e.into()))?;
            }
        }
        Ok(())
    }

    /// An event of the room that the user may see, and the position they may read up to;
    /// 404 `M_NOT_FOUND` otherwise (as if it did not exist).
    pub async fn event(&mut self, event_id: &EventId) -> Result<(StoredEvent, i64)> {
        let not_found = || Error::not_found("No such event in this room");
        let upto = self.upto().await?.ok_or_else(not_found)?;
        let stored = self
            .services
            .store
            .event(event_id.as_str())
            .await?
            .filter(|e| e.room_id == self.room_id.as_str() && e.stream_ordering <= upto)
            .ok_or_else(not_found)?;
        let stored = self
            .visible(vec![stored])
            .await?
            .pop()
            .ok_or_else(not_found)?;
        Ok((stored, upto))
    }

    async fn history(&mut self) -> Result<&History> {
        let history = match self.history.take() {
            Some(history) => history,
            None => {
                self.services
                    .reading_history(self.room_id, self.user_id)
                    .await?
            }
        };
        Ok(self.history.insert(history))
    }
}

impl Services {
    /// An event of the room that the user may see, and the position they may read up to;
    /// 404 `M_NOT_FOUND` otherwise (as if it did not exist).
    pub async fn visible_event(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        event_id: &EventId,
    ) -> Result<(StoredEvent, i64)> {
        self.reader(room_id, user_id).await?.event(event_id).await
    }

    /// 403 unless the user may see the room as it was at stream `position` — the last event
    /// up to it — as Synapse decides for `/members?at=`.
    pub async fn ensure_visible_at(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        position: i64,
    ) -> Result<()> {
        let last = self
            .store
            .room_events(
                room_id.as_str(),
                i64::MIN,
                position.saturating_add(1),
                false,
                1,
            )
            .await?;
        if last.is_empty()
            || !self
                .visible_events(room_id, user_id, last)
                .await?
                .is_empty()
        {
            return Ok(());
        }
        Err(Error::forbidden(format!(
            "You may not see {room_id} as it was at that point"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::History;

    fn history(visibility: &[(i64, &str)], memberships: &[(i64, &str)]) -> History {
        let own = |list: &[(i64, &str)]| list.iter().map(|(p, v)| (*p, (*v).to_owned())).collect();
        History {
            visibility: own(visibility),
            visibility_cut: false,
            memberships: own(memberships),
        }
    }

    #[test]
    fn the_spec_rules_per_visibility() {
        // Shared: the member who joined at 10 sees what came before, and everything since.
        let joined = history(&[(1, "shared")], &[(10, "join")]);
        assert!(joined.may_see(5, None) && joined.may_see(50, None));
        // Left at 20, then banned at 30: the history ends at the leave, not at the ban.
        let left = history(
            &[(1, "shared")],
            &[(10, "join"), (20, "leave"), (30, "ban")],
        );
        assert!(left.may_see(5, None) && left.may_see(20, Some(("membership", "leave"))));
        assert!(!left.may_see(25, None));
        assert!(
            !left.may_see(30, Some(("membership", "ban"))),
            "not joined on either side"
        );
        // Joined: only while joined, but one's own leave is seen.
        let strict = history(&[(1, "joined")], &[(10, "join"), (20, "leave")]);
        assert!(!strict.may_see(5, None) && strict.may_see(15, None));
        assert!(strict.may_see(20, Some(("membership", "leave"))));
        // Invited: from the invite on.
        let invited = history(&[(1, "invited")], &[(10, "invite"), (20, "join")]);
        assert!(!invited.may_see(5, None) && invited.may_see(15, None));
        // The change of visibility is read with the more open value.
        let opened = history(&[(1, "joined"), (8, "world_readable")], &[]);
        assert!(opened.may_see(8, Some(("visibility", "world_readable"))));
        assert!(!opened.may_see(5, None) && opened.may_see(9, None));
        // Unknown older settings count as the strictest.
        let mut cut = history(&[(100, "shared")], &[(150, "join")]);
        cut.visibility_cut = true;
        assert!(!cut.may_see(50, None) && cut.may_see(120, None));
    }
}
