//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`: simplified sliding
//! sync (MSC4186), the only sync Element X speaks.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{OwnedRoomId, RoomId, api::client::sync::sync_events::v5};
use serde_json::Value;

use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::Services,
};

/// Most spaces one list's filter may name.
const MAX_SPACES: usize = 100;

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(sliding_sync)
}

/// # `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`
async fn sliding_sync(services: Arc<Services>, req: Ruma<v5::Request>) -> Result<v5::Response> {
    let spaces = list_spaces(&req.raw_body)?;
    let Ruma { auth, body, .. } = req;
    // Boxed: the wait happens in here, and this future is kept for as long as it lasts.
    Box::pin(services.sliding_sync(&auth.user_id, auth.device_id.as_str(), body, spaces)).await
}

/// Each list's `filters.spaces` (MSC4186; ruma's types leave it out): the spaces whose
/// children the list is limited to.
fn list_spaces(raw_body: &[u8]) -> Result<BTreeMap<String, Vec<OwnedRoomId>>> {
    let mut spaces = BTreeMap::new();
    let Ok(body) = serde_json::from_slice::<Value>(raw_body) else {
        return Ok(spaces);
    };
    let Some(lists) = body.get("lists").and_then(Value::as_object) else {
        return Ok(spaces);
    };
    for (name, list) in lists {
        let Some(ids) = list.pointer("/filters/spaces") else {
            continue;
        };
        let invalid = || Error::bad_json("filters.spaces must be a list of room IDs");
        let ids = ids.as_array().ok_or_else(invalid)?;
        if ids.len() > MAX_SPACES {
            return Err(Error::bad_json(format!(
                "filters.spaces names more than {MAX_SPACES} spaces"
            )));
        }
        let ids = ids
            .iter()
            .map(|id| {
                id.as_str()
                    .and_then(|id| RoomId::parse(id).ok())
                    .ok_or_else(invalid)
            })
            .collect::<Result<Vec<_>>>()?;
        spaces.insert(name.clone(), ids);
    }
    Ok(spaces)
}
