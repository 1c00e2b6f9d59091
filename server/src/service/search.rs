//! Message search over the rooms a user is in (a scan with a substring match: fine for a
//! small server; a full-text index is the next step for large ones).

use ruma::{OwnedRoomId, UserId};
use serde_json::Value;

use super::Services;
use crate::http::error::{Error, Result};

/// One page of search results.
#[derive(Debug)]
pub struct SearchPage {
    /// Matching events, newest first.
    pub results: Vec<Value>,
    /// Token for the next page.
    pub next_batch: Option<String>,
    /// How many matched on this page (the spec's estimate).
    pub count: usize,
}

/// Messages read per page before matching bodies.
const CANDIDATES: i64 = 500;

/// Longest search term accepted.
const MAX_TERM: usize = 256;

impl Services {
    /// Messages whose body contains `term` (case-insensitive) in the user's joined rooms
    /// (or only `rooms`), newest first.
    pub async fn search_messages(
        &self,
        user_id: &UserId,
        device_id: &str,
        term: &str,
        rooms: Option<&[OwnedRoomId]>,
        next_batch: Option<&str>,
        limit: usize,
    ) -> Result<SearchPage> {
        let term = term.trim().to_lowercase();
        if term.is_empty() || term.len() > MAX_TERM {
            return Err(Error::bad_json(format!(
                "search_term needs 1 to {MAX_TERM} bytes"
            )));
        }
        let mut room_ids: Vec<String> = self
            .joined_rooms(user_id)
            .await?
            .iter()
            .map(ToString::to_string)
            .collect();
        if let Some(rooms) = rooms {
            room_ids.retain(|r| rooms.iter().any(|wanted| wanted.as_str() == r));
        }
        let before = match next_batch {
            Some(token) => self.parse_position(token)?,
            None => i64::MAX,
        };
        let candidates = self
            .store
            .message_candidates(&room_ids, &term, before, CANDIDATES)
            .await?;
        let scanned_all = candidates.len() < CANDIDATES as usize;
        let mut found = Vec::new();
        let mut last_scanned = None;
        for event in candidates {
            last_scanned = Some(event.stream_ordering);
            let pdu = super::rooms::Pdu::from_stored(&event).map_err(Error::Internal)?;
            let body = pdu
                .content_object()
                .get("body")
                .and_then(Value::as_str)
                .map(str::to_lowercase);
            if !body.is_some_and(|b| b.contains(&term)) {
                continue;
            }
            // Joined now, but the message may be from before, in a room that hides that.
            let Ok(room_id) = ruma::RoomId::parse(event.room_id.as_str()) else {
                continue;
            };
            if let Some(event) = self
                .visible_events(&room_id, user_id, vec![event])
                .await?
                .pop()
            {
                found.push(event);
                if found.len() == limit {
                    break;
                }
            }
        }
        // More may follow when the page filled up or the candidate batch did.
        let next_batch = match (found.len() == limit || !scanned_all, last_scanned) {
            (true, Some(last)) => Some(format!("t{last}")),
            _ => None,
        };
        let count = found.len();
        Ok(SearchPage {
            results: self
                .client_events(&found, Some((user_id, device_id)), false)
                .await?,
            next_batch,
            count,
        })
    }
}
