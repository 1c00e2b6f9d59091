//! Relations: bundled aggregations on events (edits, threads, references), `/relations`
//! pages and the `/threads` list.

use std::collections::HashMap;

use ruma::{EventId, RoomId, UserId};
use serde_json::{Value, json};

use super::Pdu;
use crate::{
    http::error::{Error, Result},
    service::{
        Services,
        timeline::{MAX_PAGINATION_SCAN, PAGINATION_BATCH},
    },
    store::StoredEvent,
};

/// One page of related events or thread roots.
#[derive(Debug)]
pub struct RelationsPage {
    /// Events, in the requested order.
    pub chunk: Vec<Value>,
    /// Token for the next page; `None` at the end.
    pub next_batch: Option<String>,
}

impl Services {
    /// Adds `unsigned["m.relations"]` to rendered events: the latest edit by the original
    /// sender, thread summaries (count, latest reply, whether the viewer took part) and
    /// references.
    pub(super) async fn bundle_aggregations(
        &self,
        rendered: &mut [Value],
        originals: &[StoredEvent],
        viewer: Option<&UserId>,
    ) -> Result<()> {
        let ids: Vec<String> = originals.iter().map(|e| e.event_id.clone()).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut related = self.store.relations_of(&ids).await?;
        if related.is_empty() {
            return Ok(());
        }
        if let Some(viewer) = viewer {
            // Only what the viewer may see goes into the bundle (a reply in a thread after
            // they left, say, does not).
            let mut by_room: HashMap<String, Vec<StoredEvent>> = HashMap::new();
            for event in related {
                by_room
                    .entry(event.room_id.clone())
                    .or_default()
                    .push(event);
            }
            related = Vec::new();
            for (room, events) in by_room {
                if let Ok(room_id) = RoomId::parse(room.as_str()) {
                    related.extend(self.visible_events(&room_id, viewer, events).await?);
                }
            }
            related.sort_by_key(|e| e.stream_ordering);
        }
        let mut by_target: HashMap<&str, Vec<&StoredEvent>> = HashMap::new();
        let rooms: HashMap<&str, &str> = originals
            .iter()
            .map(|o| (o.event_id.as_str(), o.room_id.as_str()))
            .collect();
        for event in &related {
            if let Some(target) = &event.relates_to
                && event.redacted_by.is_none()
                && rooms.get(target.as_str()) == Some(&event.room_id.as_str())
            {
                by_target.entry(target.as_str()).or_default().push(event);
            }
        }
        let now = self.now_ms();
        let render = |stored: &StoredEvent| -> Result<Value> {
            Ok(Pdu::from_stored(stored)
                .map_err(Error::Internal)?
                .to_client(now, None, false))
        };
        for (original, event) in originals.iter().zip(rendered.iter_mut()) {
            let Some(relations) = by_target.get(original.event_id.as_str()) else {
                continue;
            };
            let mut bundle = serde_json::Map::new();
            let edit = relations.iter().rev().find(|r| {
                r.rel_type.as_deref() == Some("m.replace")
                    && r.sender == original.sender
                    && r.kind == original.kind
            });
            if let Some(edit) = edit {
                bundle.insert("m.replace".to_owned(), render(edit)?);
            }
            let replies: Vec<&&StoredEvent> = relations
                .iter()
                .filter(|r| r.rel_type.as_deref() == Some("m.thread"))
                .collect();
            if let Some(latest) = replies.last() {
                let participated = viewer.is_some_and(|v| {
                    original.sender == v.as_str() || replies.iter().any(|r| r.sender == v.as_str())
                });
                bundle.insert(
                    "m.thread".to_owned(),
                    json!({
                        "latest_event": render(latest)?,
                        "count": replies.len(),
                        "current_user_participated": participated,
                    }),
                );
            }
            let references: Vec<Value> = relations
                .iter()
                .filter(|r| r.rel_type.as_deref() == Some("m.reference"))
                .map(|r| json!({ "event_id": r.event_id }))
                .collect();
            if !references.is_empty() {
                bundle.insert("m.reference".to_owned(), json!({ "chunk": references }));
            }
            if !bundle.is_empty()
                && let Some(unsigned) = event.get_mut("unsigned").and_then(Value::as_object_mut)
            {
                unsigned.insert("m.relations".to_owned(), Value::Object(bundle));
            }
        }
        Ok(())
    }

    /// Events relating to `event_id` (of one relation type and event type, when given),
    /// newest first (or oldest first when `forward`), a page at a time.
    #[allow(clippy::too_many_arguments)]
    pub async fn relations_page(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        device_id: &str,
        event_id: &EventId,
        rel_type: Option<&str>,
        event_type: Option<&str>,
        from: Option<&str>,
        forward: bool,
        limit: usize,
    ) -> Result<RelationsPage> {
        let (parent, upto) = self.visible_event(room_id, user_id, event_id).await?;
        let from = from.map(|t| self.parse_position(t)).transpose()?;
        let related: Vec<StoredEvent> = self
            .store
            .relations(parent.event_id.as_str(), rel_type)
            .await?
            .into_iter()
            .filter(|e| e.stream_ordering <= upto && e.room_id == room_id.as_str())
            .filter(|e| event_type.is_none_or(|t| e.kind == t))
            .filter(|e| match (from, forward) {
                (Some(from), true) => e.stream_ordering >= from,
                (Some(from), false) => e.stream_ordering < from,
                (None, _) => true,
            })
            .collect();
        let mut related = self.visible_events(room_id, user_id, related).await?;
        if !forward {
            related.reverse();
        }
        let more = related.len() > limit;
        related.truncate(limit);
        let next_batch = match related.last() {
            Some(last) if more => Some(if forward {
                format!("t{}", last.stream_ordering.saturating_add(1))
            } else {
                format!("t{}", last.stream_ordering)
            }),
            _ => None,
        };
        Ok(RelationsPage {
            chunk: self
                .client_events(&related, Some((user_id, device_id)), false)
                .await?,
            next_batch,
        })
    }

    /// Thread roots of a room, most recently active first; only those the user took part
    /// in when `participated`.
    pub async fn threads(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        device_id: &str,
        participated: bool,
        from: Option<&str>,
        limit: usize,
    ) -> Result<RelationsPage> {
        let mut reader = self.reader(room_id, user_id).await?;
        let upto = reader
            .upto()
            .await?
            .ok_or_else(|| Error::forbidden(format!("You are not a member of {room_id}")))?;
        let before = match from {
            Some(token) => self.parse_position(token)?,
            None => upto.saturating_add(1),
        };
        // Roots the user may not see (or, with `participated`, took no part in) are skipped;
        // the page fills from further back, within the same scan bound as /messages.
        let mut before = before.min(upto.saturating_add(1));
        let mut found: Vec<(StoredEvent, i64)> = Vec::new();
        let mut scanned = 0;
        let mut exhausted = false;
        while found.len() <= limit && scanned < MAX_PAGINATION_SCAN {
            let roots = self
                .store
                .thread_roots(room_id.as_str(), before, PAGINATION_BATCH as i64)
                .await?;
            exhausted = roots.len() < PAGINATION_BATCH;
            let Some((_, oldest)) = roots.last() else {
                break;
            };
            before = *oldest;
            scanned += roots.len();
            let ids: Vec<String> = roots.iter().map(|(id, _)| id.clone()).collect();
            let mut stored = self.store.events(&ids).await?;
            stored.retain(|root| root.room_id == room_id.as_str() && root.stream_ordering <= upto);
            let mut stored = reader.visible(stored).await?;
            if participated {
                let replies = self.store.relations_of(&ids).await?;
                stored.retain(|root| {
                    root.sender == user_id.as_str()
                        || replies.iter().any(|r| {
                            r.relates_to.as_deref() == Some(root.event_id.as_str())
                                && r.sender == user_id.as_str()
                        })
                });
            }
            let order: HashMap<&str, i64> =
                roots.iter().map(|(id, at)| (id.as_str(), *at)).collect();
            let mut page: Vec<(StoredEvent, i64)> = stored
                .into_iter()
                .filter_map(|root| {
                    let at = order.get(root.event_id.as_str()).copied()?;
                    Some((root, at))
                })
                .collect();
            page.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
            found.extend(page);
            if exhausted {
                break;
            }
        }
        let next_batch = if found.len() > limit {
            found.truncate(limit);
            found.last().map(|(_, at)| format!("t{at}"))
        } else if !exhausted && scanned > 0 {
            // The scan bound was reached first: the client goes on from where it stopped.
            Some(format!("t{before}"))
        } else {
            None
        };
        let stored: Vec<StoredEvent> = found.into_iter().map(|(root, _)| root).collect();
        Ok(RelationsPage {
            chunk: self
                .client_events(&stored, Some((user_id, device_id)), false)
                .await?,
            next_batch,
        })
    }
}
