//! History visibility: which of a room's events a user may read (spec, "History
//! visibility"), decided per event by the visibility and the user's membership at it.

use std::collections::{HashMap, HashSet};

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

/// What one user's read access rests on: their membership row in the room.
struct Reader {
    joined_now: bool,
    /// Where they left or were banned, when they were joined at some point before.
    left_at: Option<i64>,
}

impl Reader {
    fn new(row: Option<&MembershipRow>) -> Self {
        Self {
            joined_now: row.is_some_and(|r| r.membership == "join"),
            left_at: row
                .filter(|r| r.ever_joined && matches!(r.membership.as_str(), "leave" | "ban"))
                .map(|r| r.stream_ordering),
        }
    }

    /// The spec's rules for one event, given the visibility and membership at it.
    fn may_see(&self, event_at: i64, visibility: &str, membership: &str) -> bool {
        if visibility == "world_readable" || membership == "join" {
            return true;
        }
        match visibility {
            "joined" => false,
            "invited" => membership == "invite",
            // Shared: visible to anyone who joined after it — everyone joined now, and those
            // who left later than it (they had joined before leaving).
            _ => self.joined_now || self.left_at.is_some_and(|left| event_at <= left),
        }
    }
}

fn content_str(pdu: Option<&Pdu>, field: &str) -> Option<String> {
    pdu.and_then(|p| {
        p.content_object()
            .get(field)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    })
}

impl Services {
    /// The highest stream position a user may read in a room: everything while joined, up
    /// to their leaving afterwards, everything in a `world_readable` room; `None` when they
    /// may read nothing (never joined, not world-readable). Which events below it they see
    /// is then decided per event by [`Services::visible_events`].
    pub async fn visible_upto(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<i64>> {
        let row = self
            .store
            .membership_row(room_id.as_str(), user_id.as_str())
            .await?;
        Ok(match row {
            Some(row) if row.membership == "join" => Some(i64::MAX),
            Some(row) if row.ever_joined && matches!(row.membership.as_str(), "leave" | "ban") => {
                Some(row.stream_ordering)
            }
            _ if self.current_visibility(room_id).await? == "world_readable" => Some(i64::MAX),
            _ => None,
        })
    }

    /// The room's history visibility now.
    async fn current_visibility(&self, room_id: &RoomId) -> Result<String> {
        Ok(self
            .state_content(room_id, HISTORY_VISIBILITY, "")
            .await?
            .and_then(|c| c.get("history_visibility")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "shared".to_owned()))
    }

    /// The events (all of `room_id`) that `user_id` may see, in their order.
    pub async fn visible_events(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        events: Vec<StoredEvent>,
    ) -> Result<Vec<StoredEvent>> {
        if events.is_empty() {
            return Ok(events);
        }
        let row = self
            .store
            .membership_row(room_id.as_str(), user_id.as_str())
            .await?;
        // Joined now and every event at or after the join: all visible, nothing to look up
        // (the usual case of a member reading new messages).
        if let Some(row) = &row
            && row.membership == "join"
            && events.iter().all(|e| e.stream_ordering >= row.since)
        {
            return Ok(events);
        }
        let reader = Reader::new(row.as_ref());
        // The visibility and the user's member event before each event, by state group.
        let member_key = ("m.room.member".to_owned(), user_id.as_str().to_owned());
        let visibility_key = (HISTORY_VISIBILITY.to_owned(), String::new());
        let mut by_group: HashMap<Option<i64>, (Option<String>, Option<String>)> = HashMap::new();
        for event in &events {
            if by_group.contains_key(&event.state_before) {
                continue;
            }
            let state = self.store.shared_state_group(event.state_before).await?;
            by_group.insert(
                event.state_before,
                (
                    state.get(&visibility_key).cloned(),
                    state.get(&member_key).cloned(),
                ),
            );
        }
        let wanted: Vec<String> = by_group
            .values()
            .flat_map(|(v, m)| v.iter().chain(m.iter()).cloned())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let state_events: HashMap<String, Pdu> = self
            .store
            .events(&wanted)
            .await?
            .iter()
            .filter_map(|stored| Some((stored.event_id.clone(), Pdu::from_stored(stored).ok()?)))
            .collect();
        let mut visible = Vec::with_capacity(events.len());
        for event in events {
            let (visibility_id, member_id) = by_group
                .get(&event.state_before)
                .cloned()
                .unwrap_or_default();
            let before = |id: &Option<String>, field: &str| {
                content_str(id.as_ref().and_then(|i| state_events.get(i)), field)
            };
            let mut visibility =
                before(&visibility_id, "history_visibility").unwrap_or_else(|| "shared".to_owned());
            let mut membership = before(&member_id, "membership").unwrap_or_default();
            let own = |kind: &str, key: &str| {
                event.kind == kind && event.state_key.as_deref() == Some(key)
            };
            if own(HISTORY_VISIBILITY, "") || own("m.room.member", user_id.as_str()) {
                let pdu = Pdu::from_stored(&event).map_err(Error::Internal)?;
                if own(HISTORY_VISIBILITY, "") {
                    let after = content_str(Some(&pdu), "history_visibility")
                        .unwrap_or_else(|| "shared".to_owned());
                    if openness(&after) > openness(&visibility) {
                        visibility = after;
                    }
                } else {
                    // One's own membership event shows the membership it makes.
                    membership = content_str(Some(&pdu), "membership").unwrap_or_default();
                }
            }
            if reader.may_see(event.stream_ordering, &visibility, &membership) {
                visible.push(event);
            }
        }
        Ok(visible)
    }

    /// An event of the room that the user may see, and the position they may read up to;
    /// 404 `M_NOT_FOUND` otherwise (as if it did not exist).
    pub async fn visible_event(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        event_id: &EventId,
    ) -> Result<(StoredEvent, i64)> {
        let not_found = || Error::not_found("No such event in this room");
        let upto = self
            .visible_upto(room_id, user_id)
            .await?
            .ok_or_else(not_found)?;
        let stored = self
            .store
            .event(event_id.as_str())
            .await?
            .filter(|e| e.room_id == room_id.as_str() && e.stream_ordering <= upto)
            .ok_or_else(not_found)?;
        let stored = self
            .visible_events(room_id, user_id, vec![stored])
            .await?
            .pop()
            .ok_or_else(not_found)?;
        Ok((stored, upto))
    }
}

#[cfg(test)]
mod tests {
    use super::Reader;

    #[test]
    fn the_spec_rules_per_visibility() {
        let joined = Reader {
            joined_now: true,
            left_at: None,
        };
        let left = Reader {
            joined_now: false,
            left_at: Some(10),
        };
        // Shared: all history for members, up to the leave for those who left.
        assert!(joined.may_see(5, "shared", "leave"));
        assert!(left.may_see(5, "shared", ""));
        assert!(!left.may_see(11, "shared", "leave"));
        // Joined: only while joined; invited: from the invite.
        assert!(!joined.may_see(5, "joined", "invite"));
        assert!(joined.may_see(5, "joined", "join"));
        assert!(joined.may_see(5, "invited", "invite"));
        assert!(!joined.may_see(5, "invited", ""));
        // World-readable: anyone.
        let stranger = Reader {
            joined_now: false,
            left_at: None,
        };
        assert!(stranger.may_see(5, "world_readable", ""));
        assert!(!stranger.may_see(5, "shared", ""));
    }
}
