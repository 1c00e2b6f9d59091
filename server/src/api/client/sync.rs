//! `GET /sync`.

use std::{collections::HashSet, sync::Arc, time::Duration};

use axum::Router;
use ruma::api::client::{
    filter::{FilterDefinition, LazyLoadOptions},
    sync::sync_events::{self, v3::Filter},
};

use crate::{
    http::{
        error::Result,
        ruma::{RouterExt, Ruma},
    },
    service::{
        Services,
        sync::{SyncOptions, SyncToken},
    },
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(sync)
}

/// # `GET /_matrix/client/v3/sync`
async fn sync(
    services: Arc<Services>,
    req: Ruma<sync_events::v3::Request>,
) -> Result<sync_events::v3::Response> {
    let b = &req.body;
    let filter = match &b.filter {
        Some(Filter::FilterDefinition(definition)) => definition.clone(),
        Some(Filter::FilterId(id)) => services.stored_filter(&req.auth.user_id, id).await?,
        _ => FilterDefinition::default(),
    };
    let mut options = SyncOptions {
        since: b.since.as_deref().map(SyncToken::parse).transpose()?,
        timeout: b.timeout.unwrap_or(Duration::ZERO),
        full_state: b.full_state,
        state_after: b.use_state_after,
        ..SyncOptions::default()
    };
    let room = &filter.room;
    if let Some(limit) = room.timeline.limit {
        options.timeline_limit = usize::try_from(u64::from(limit))
            .unwrap_or(usize::MAX)
            .clamp(1, 100);
    }
    options.lazy_load_members = matches!(
        room.state.lazy_load_options,
        LazyLoadOptions::Enabled { .. }
    );
    options.rooms = room.rooms.as_ref().map(|r| r.iter().cloned().collect());
    options.not_rooms = room.not_rooms.iter().cloned().collect::<HashSet<_>>();
    options.include_leave = room.include_leave;
    services
        .sync(&req.auth.user_id, req.auth.device_id.as_str(), options)
        .await
}
