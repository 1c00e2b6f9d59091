//! A space's hierarchy (`GET /rooms/{roomId}/hierarchy`, spec v1.2, with v1.15's
//! `allowed_room_ids`, `encryption` and `room_version`): the space and the rooms below it
//! that the asker may preview, depth first in the spaces' `order`, with each room's
//! `m.space.child` events. Rooms this server is not in are asked of the servers their
//! parent's `m.space.child` event names (`/_matrix/federation/v1/hierarchy`).

use std::collections::{HashMap, HashSet};

use ruma::{
    OwnedRoomId, OwnedServerName, RoomId, ServerName, UserId,
    api::client::space::SpaceHierarchyRoomsChunk,
    room::{JoinRuleSummary, RoomSummary, RoomType},
};
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
    /// Servers to ask about it.
    pub via: Vec<OwnedServerName>,
    /// The `m.space.child` event, stripped.
    pub event: Value,
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
        // Rooms other servers' answers described, so they need not be asked about again.
        let mut described: HashMap<OwnedRoomId, RoomSummary> = HashMap::new();
        let mut stack: Vec<(OwnedRoomId, usize, Vec<OwnedServerName>)> =
            vec![(root.to_owned(), 0, Vec::new())];
        let mut walked = 0;
        while let Some((room_id, depth, via)) = stack.pop() {
            if walked >= MAX_WALKED || rooms.len() > skip + limit {
                break;
            }
            if !seen.insert(room_id.clone()) {
                continue;
            }
            // A room the asker may not preview is left out, and so is what is below it; one
            // this server is not in is asked of the servers its parent names.
            let local = match root_summary.take() {
                Some(summary) => Some(summary),
                None => self
                    .room_summary(&room_id, Some(user_id))
                    .await
                    .ok()
                    .map(|(summary, _)| summary),
            };
            let (summary, children) = match local {
                Some(summary) => (
                    summary,
                    self.space_children_of(&room_id, request.suggested_only)
                        .await?,
                ),
                None => match self
                    .remote_space_entry(
                        user_id,
                        (&room_id, &via),
                        request.suggested_only,
                        &mut described,
                    )
                    .await?
                {
                    Some(entry) => entry,
                    None => continue,
                },
            };
            walked += 1;
            if depth < max_depth {
                for child in children.iter().rev() {
                    if !seen.contains(&child.room_id) {
                        stack.push((child.room_id.clone(), depth + 1, child.via.clone()));
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

    /// A room this server is not in, as the servers `via` describe it, when the asker may
    /// preview it: its summary and children.
    async fn remote_space_entry(
        &self,
        user_id: &UserId,
        (room_id, via): (&RoomId, &[OwnedServerName]),
        suggested_only: bool,
        described: &mut HashMap<OwnedRoomId, RoomSummary>,
    ) -> Result<Option<(RoomSummary, Vec<Child>)>> {
        if !self.config.federation.enabled || self.store.room(room_id.as_str()).await?.is_some() {
            return Ok(None);
        }
        // A room an earlier answer described that is no space: nothing below it to ask for.
        if let Some(summary) = described.remove(room_id)
            && summary.room_type != Some(RoomType::Space)
        {
            let previewable = self.may_preview_remote(user_id, &summary).await?;
            return Ok(previewable.then_some((summary, Vec::new())));
        }
        let Some(space) = self.remote_hierarchy(via, room_id, suggested_only).await else {
            return Ok(None);
        };
        for child in space.children {
            described.insert(child.room_id.clone(), child);
        }
        if !self.may_preview_remote(user_id, &space.summary).await? {
            return Ok(None);
        }
        let mut children: Vec<Child> = space
            .children_state
            .iter()
            .filter_map(|event| child_from(event, suggested_only))
            .collect();
        sort_children(&mut children);
        Ok(Some((space.summary, children)))
    }

    /// Whether a user may preview a room of another server from its summary: open to join
    /// or knock, world-readable, or restricted to a room the user is joined to.
    async fn may_preview_remote(&self, user_id: &UserId, summary: &RoomSummary) -> Result<bool> {
        Ok(match &summary.join_rule {
            _ if summary.world_readable => true,
            JoinRuleSummary::Public
            | JoinRuleSummary::Knock
            | JoinRuleSummary::KnockRestricted(_) => true,
            JoinRuleSummary::Restricted(restricted) => {
                self.joined_any(user_id, &restricted.allowed_room_ids)
                    .await?
            }
            _ => false,
        })
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
            let Ok(parsed) = serde_json::from_str::<Value>(&event.json) else {
                continue;
            };
            let stripped = json!({
                "type": "m.space.child",
                "state_key": event.state_key,
                "content": parsed.get("content").cloned().unwrap_or(Value::Null),
                "sender": event.sender,
                "origin_server_ts": event.origin_server_ts,
            });
            children.extend(child_from(&stripped, suggested_only));
        }
        sort_children(&mut children);
        Ok(children)
    }
}

/// A child from an `m.space.child` event in its stripped form, when it counts: it names a
/// room, has a `via`, and is suggested if only suggested ones are asked for.
pub(crate) fn child_from(event: &Value, suggested_only: bool) -> Option<Child> {
    let key = event["state_key"].as_str()?;
    let room_id = RoomId::parse(key).ok()?;
    let content = event.get("content").cloned().unwrap_or(Value::Null);
    let via: Vec<OwnedServerName> = content
        .get("via")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().and_then(|v| ServerName::parse(v).ok()))
        .collect();
    let suggested = content.get("suggested").and_then(Value::as_bool) == Some(true);
    if via.is_empty() || (suggested_only && !suggested) {
        return None;
    }
    let order = content
        .get("order")
        .and_then(Value::as_str)
        .filter(|o| o.len() <= 50 && o.bytes().all(|b| (0x20..=0x7e).contains(&b)))
        .map(str::to_owned);
    let ts = event["origin_server_ts"].as_i64().unwrap_or(0);
    Some(Child {
        room_id,
        order,
        ts,
        via,
        event: json!({
            "type": "m.space.child",
            "state_key": key,
            "content": content,
            "sender": event["sender"],
            "origin_server_ts": ts,
        }),
    })
}

/// Children with an order first, in its order, then by when they were added, then by id.
pub(crate) fn sort_children(children: &mut [Child]) {
    children.sort_by(|a, b| {
        (a.order.is_none(), &a.order, a.ts, &a.room_id).cmp(&(
            b.order.is_none(),
            &b.order,
            b.ts,
            &b.room_id,
        ))
    });
}
