//! The Client-Server API, one module per section of the spec.

mod account;
mod backup;
mod device;
pub(crate) mod directory;
mod discovery;
mod ephemeral;
mod keys;
mod legacy;
mod membership;
mod message;
mod profile;
mod push;
mod push_rules;
mod relations;
mod rendezvous;
mod report;
mod rooms;
mod search;
mod session;
mod sliding_sync;
mod space;
mod sync;
mod threepid;
mod voip;

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

/// Every Client-Server route.
pub fn routes() -> Router<Arc<Services>> {
    let router = Router::new();
    let router = discovery::routes(router);
    let router = session::routes(router);
    let router = account::routes(router);
    let router = membership::routes(router);
    let router = message::routes(router);
    let router = rooms::routes(router);
    let router = sync::routes(router);
    let router = sliding_sync::routes(router);
    let router = profile::routes(router);
    let router = ephemeral::routes(router);
    let router = relations::routes(router);
    let router = directory::routes(router);
    let router = search::routes(router);
    let router = keys::routes(router);
    let router = backup::routes(router);
    let router = voip::routes(router);
    let router = push::routes(router);
    let router = push_rules::routes(router);
    let router = legacy::routes(router);
    let router = threepid::routes(router);
    let router = rendezvous::routes(router);
    let router = report::routes(router);
    let router = space::routes(router);
    device::routes(router)
}

/// 403 unless the user named in the path is the caller: profiles, account data, tags and
/// filters are one's own.
fn ensure_self(auth: &ruma::UserId, path: &ruma::UserId) -> crate::http::error::Result<()> {
    if auth != path {
        return Err(crate::http::error::Error::forbidden(format!(
            "You are {auth}: you can only change or read your own data here, not {path}'s"
        )));
    }
    Ok(())
}

/// A room id from a hand-routed path: 400 `M_INVALID_PARAM` when it is not one.
fn path_room_id(raw: &str) -> crate::http::error::Result<ruma::OwnedRoomId> {
    ruma::RoomId::parse(raw)
        .map_err(|e| crate::http::error::Error::invalid_param(format!("Invalid room id: {e}")))
}

/// The room a room id or alias names: 404 for an alias nobody holds.
async fn resolve_room(
    services: &Services,
    room: &ruma::RoomOrAliasId,
) -> crate::http::error::Result<ruma::OwnedRoomId> {
    match <&ruma::RoomId>::try_from(room) {
        Ok(room_id) => Ok(room_id.to_owned()),
        Err(alias) => services.resolve_alias(alias).await?.ok_or_else(|| {
            crate::http::error::Error::not_found(format!("No room has the alias {alias}"))
        }),
    }
}

/// A room id, or the room an alias names here or on its own server (asked over federation),
/// with the servers that said they are in it.
async fn resolve_room_and_servers(
    services: &Services,
    room: &ruma::RoomOrAliasId,
) -> crate::http::error::Result<(ruma::OwnedRoomId, Vec<ruma::OwnedServerName>)> {
    let alias = match <&ruma::RoomId>::try_from(room) {
        Ok(room_id) => return Ok((room_id.to_owned(), Vec::new())),
        Err(alias) => alias,
    };
    if alias.server_name() == services.config.server_name || !services.config.federation.enabled {
        return resolve_room(services, room)
            .await
            .map(|id| (id, Vec::new()));
    }
    let request =
        ruma::api::federation::query::get_room_information::v1::Request::new(alias.to_owned());
    let answer = services
        .send_federation(alias.server_name(), request)
        .await?;
    Ok((answer.room_id, answer.servers))
}

/// A user id from a hand-routed path: 400 `M_INVALID_PARAM` when it is not one.
fn path_user_id(raw: &str) -> crate::http::error::Result<ruma::OwnedUserId> {
    ruma::UserId::parse(raw)
        .map_err(|e| crate::http::error::Error::invalid_param(format!("Invalid user id: {e}")))
}
