//! Spaces across servers: this server's rooms described for other servers walking a
//! space (`/_matrix/federation/v1/hierarchy`), and other servers asked about the rooms of a
//! space this server is not in.

use ruma::{
    OwnedRoomId, OwnedServerName, RoomId, ServerName,
    api::federation::space::SpaceHierarchyParentSummary, room::RoomSummary,
};
use serde_json::Value;

use super::joins::percent;
use crate::{
    http::{
        error::{Error, Result},
        ruma::to_raw,
    },
    service::Services,
};

/// Servers asked about one room.
const SERVERS_ASKED: usize = 3;
/// Most children taken from one answer.
const MAX_CHILDREN: usize = 1000;

/// Another server's description of a room and what is below it.
pub struct RemoteSpace {
    /// The room.
    pub summary: RoomSummary,
    /// Its `m.space.child` events, stripped.
    pub children_state: Vec<Value>,
    /// The children that server could describe.
    pub children: Vec<RoomSummary>,
}

/// What this server tells another about a room of a space: the room with its children's
/// events, the children it may describe, and those it may not.
pub type HierarchyAnswer = (
    SpaceHierarchyParentSummary,
    Vec<RoomSummary>,
    Vec<OwnedRoomId>,
);

impl Services {
    /// `room_id` and its children as another server may see them: rooms anyone may
    /// preview (open to join or knock, or world-readable); 404 for any other room.
    pub async fn hierarchy_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        suggested_only: bool,
    ) -> Result<HierarchyAnswer> {
        self.ensure_acl_allows(origin, room_id).await?;
        let (summary, _) = self.room_summary(room_id, None).await?;
        let children = self.space_children_of(room_id, suggested_only).await?;
        let state = children
            .iter()
            .map(|c| to_raw(&c.event))
            .collect::<Result<_>>()?;
        let mut described = Vec::new();
        let mut inaccessible = Vec::new();
        for child in &children {
            match self.room_summary(&child.room_id, None).await {
                Ok((summary, _)) => described.push(summary),
                Err(_) if self.store.room(child.room_id.as_str()).await?.is_some() => {
                    inaccessible.push(child.room_id.clone());
                }
                Err(_) => {}
            }
        }
        Ok((
            SpaceHierarchyParentSummary::new(summary, state),
            described,
            inaccessible,
        ))
    }

    /// `room_id` as the first of `via` that answers describes it.
    pub async fn remote_hierarchy(
        &self,
        via: &[OwnedServerName],
        room_id: &RoomId,
        suggested_only: bool,
    ) -> Option<RemoteSpace> {
        let path = format!(
            "/_matrix/federation/v1/hierarchy/{}?suggested_only={suggested_only}",
            percent(room_id.as_str())
        );
        for server in via
            .iter()
            .filter(|s| **s != self.config.server_name)
            .take(SERVERS_ASKED)
        {
            let answer = match self
                .federation_json(
                    server,
                    http::Method::GET,
                    &path,
                    None,
                    self.federation.timeout,
                )
                .await
            {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::info!(%room_id, %server, %error, "no hierarchy from a server");
                    continue;
                }
            };
            match read_answer(room_id, &answer) {
                Ok(space) => return Some(space),
                Err(error) => tracing::info!(%room_id, %server, %error, "a bad hierarchy"),
            }
        }
        None
    }
}

/// Another server's `/hierarchy` answer about `room_id`, checked to be about it.
fn read_answer(room_id: &RoomId, answer: &Value) -> Result<RemoteSpace> {
    let summary: RoomSummary = serde_json::from_value(answer["room"].clone())
        .map_err(|e| Error::bad_request(format!("its room: {e}")))?;
    if summary.room_id != room_id {
        return Err(Error::bad_request("it describes another room"));
    }
    let list = |key: &str| -> Vec<Value> {
        answer
            .pointer(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .take(MAX_CHILDREN)
            .cloned()
            .collect()
    };
    Ok(RemoteSpace {
        summary,
        children_state: list("/room/children_state"),
        children: list("/children")
            .into_iter()
            .filter_map(|c| serde_json::from_value(c).ok())
            .collect(),
    })
}
