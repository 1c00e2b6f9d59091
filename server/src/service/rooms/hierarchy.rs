//! A space's hierarchy (`GET /rooms/{roomId}/hierarchy`, spec v1.2, with v1.15's
//! `allowed_room_ids`, `encryption` and `room_version`): the space and the rooms below it
//! that the asker may preview, depth first in the spaces' `order`, with each room's
//! `m.space.child` events. Rooms this server is not in are left out (asking their servers
//! over federation is not done yet).

use std::collections::HashSet;

use ruma::{OwnedRoomId, RoomId, UserId, api::client::space::SpaceHierarchyRoomsChunk};
use serde_json::{Value, json};

use crate::{
    http::{
        error::{Error, Result},
        ruma::to_raw,
    },
    service::Services,
};

/// Most rooms one request walks (the pages before it included): bounded work per request.
const MAX_WALKED: usize = 1000;
/// Most children read of one space.
const MAX_CHILDREN: i64 = 1000;
/// Rooms per page when the client does not say, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 100;
/// Deepest level walked (the space itself is 0).
const MAX_DEPTH: usize = 50;

/// How the client asked for a page.
pub struct HierarchyRequest<'a> {
    /// The `next_batch` of the page before, if any.
    pub from: Option<&'a str>,
    pub limit: Option<usize>,
    pub max_depth: Option<usize>,
    pub suggested_only: bool,
}

/// A child a space names, in the order the spec gives.
pub struct Child {
    /// The child room.
    pub room_id: OwnedRoomId,
    order: Option<String>,
    ts: i64,
    event: Value,
}

impl Services {
    /// One page of the hierarchy below `root`, and the token of the next page.
    pub async fn space_hierarchy(
        &self,
        user_id: &UserId,
        root: &RoomId,
        request: &HierarchyRequest<'_>,
    ) -> Result<(Vec<SpaceHierarchyRoomsChunk>, Option<String>)> {
        let skip = match request.from {
            None => 0,
            Some(token) => token
                .strip_prefix('h')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n < MAX_WALKED)
                .ok_or_else(|| Error::invalid_param("from is not a token of this hierarchy"))?,
        };
        let limit = request.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let max_depth = request.max_depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH);
        let Ok((root_summary, _)) = self.room_summary(root, Some(user_id)).await else {
            return Err(Error::forbidden(
                "You may not see this space: join it, or ask for one that is public",
            ));
        };
        let mut root_summary = Some(root_summary);
        let mut rooms = Vec::new();
        let mut seen: HashSet<OwnedRoomId> = HashSet::new();
        let mut stack: Vec<(OwnedRoomId, usize)> = vec![(root.to_owned(), 0)];
        let mut walked = 0;
        while let Some((room_id, depth)) = stack.pop() {
            if walked >= MAX_WALKED || rooms.len() > skip + limit {
                break;
            }
            if !seen.insert(room_id.clone()) {
                continue;
            }
            // A room the asker may not preview (or this server does not know) is left out,
            // and so is what is below it.
            let summary = match root_summary.take() {
                Some(summary) => summary,
                None => match self.room_summary(&room_id, Some(user_id)).await {
                    Ok((summary, _)) => summary,
                    Err(_) => continue,
                },
            };
            walked += 1;
            let children = self
                .space_children_of(&room_id, request.suggested_only)
                .await?;
            if depth < max_depth {
                for child in children.iter().rev() {
                    if !seen.contains(&child.room_id) {
                        stack.push((child.room_id.clone(), depth + 1));
                    }
                }
            }
            if rooms.len() < skip + limit + 1 {
                let state = children
                    .iter()
                    .map(|c| to_raw(&c.event))
                    .collect::<Result<_>>()?;
                rooms.push(SpaceHierarchyRoomsChunk::new(summary, state));
            }
        }
        let more = rooms.len() > skip + limit;
        let page: Vec<_> = rooms.into_iter().skip(skip).take(limit).collect();
        let next = (more && skip + limit < MAX_WALKED).then(|| format!("h{}", skip + limit));
        Ok((page, next))
    }

    /// The space's children with a `via` (the only ones that count), ordered as the spec
    /// says: by a valid `order`, then by when they were added, then by room ID.
    pub async fn space_children_of(
        &self,
        room_id: &RoomId,
        suggested_only: bool,
    ) -> Result<Vec<Child>> {
        let mut children = Vec::new();
        for event in self
            .store
            .current_state_of_type(room_id.as_str(), "m.space.child", MAX_CHILDREN)
            .await?
        {
            let Some(key) = event.state_key.as_deref() else {
                continue;
            };
            let Ok(child) = RoomId::parse(key) else {
                continue;
            };
            let Ok(parsed) = serde_json::from_str::<Value>(&event.json) else {
                continue;
            };
            let content = parsed.get("content").cloned().unwrap_or(Value::Null);
            let has_via = content
                .get("via")
                .and_then(Value::as_array)
                .is_some_and(|v| !v.is_empty());
            let suggested = content.get("suggested").and_then(Value::as_bool) == Some(true);
            if !has_via || (suggested_only && !suggested) {
                continue;
            }
            let order = content
                .get("order")
                .and_then(Value::as_str)
                .filter(|o| o.len() <= 50 && o.bytes().all(|b| (0x20..=0x7e).contains(&b)))
                .map(str::to_owned);
            children.push(Child {
                room_id: child,
                order,
                ts: event.origin_server_ts,
                event: json!({
                    "type": "m.space.child",
                    "state_key": key,
                    "content": content,
                    "sender": event.sender,
                    "origin_server_ts": event.origin_server_ts,
                }),
            });
        }
        // Children with an order come first, in its order.
        children.sort_by(|a, b| {
            (a.order.is_none(), &a.order, a.ts, &a.room_id).cmp(&(
                b.order.is_none(),
                &b.order,
                b.ts,
                &b.room_id,
            ))
        });
        Ok(children)
    }
}
