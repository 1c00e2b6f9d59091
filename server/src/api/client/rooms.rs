//! Creating rooms, aliases, account data and sync filters.

use std::sync::Arc;

use axum::Router;
use ruma::{
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        config::{
            get_global_account_data, get_room_account_data, set_global_account_data,
            set_room_account_data,
        },
        filter::{create_filter, get_filter},
        room::{aliases, create_room},
    },
    serde::Raw,
};
use serde_json::{Map, Value};

use super::ensure_self;
use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma, to_raw},
    },
    service::{Limit, Services, rooms::CreateRoom},
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(create)
        .ruma(set_alias)
        .ruma(get_alias)
        .ruma(remove_alias)
        .ruma(room_aliases)
        .ruma(set_global_data)
        .ruma(get_global_data)
        .ruma(set_room_data)
        .ruma(get_room_data)
        .ruma(upload_filter)
        .ruma(download_filter)
}

fn object<T>(raw: &Raw<T>, what: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(raw.json().get()) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Error::bad_json(format!("{what} must be a JSON object"))),
    }
}

/// # `POST /_matrix/client/v3/createRoom`
async fn create(
    services: Arc<Services>,
    req: Ruma<create_room::v3::Request>,
) -> Result<create_room::v3::Response> {
    let b = req.body;
    let mut initial_state = Vec::new();
    for event in &b.initial_state {
        let event = object(event, "initial_state events")?;
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::bad_json("initial_state events need a type"))?;
        let state_key = event.get("state_key").and_then(Value::as_str).unwrap_or("");
        let content = event
            .get("content")
            .filter(|c| c.is_object())
            .cloned()
            .ok_or_else(|| Error::bad_json("initial_state events need a content object"))?;
        initial_state.push((kind.to_owned(), state_key.to_owned(), content));
    }
    // Addresses are looked up before anything is created, so one that is not bound
    // changes nothing.
    let mut invite = b.invite.clone();
    for by_address in &b.invite_3pid {
        services.rate_limit(Limit::LookupsPerUser, req.auth.user_id.as_str())?;
        let invitee = services.third_party_invitee(by_address).await?;
        if !invite.contains(&invitee) {
            invite.push(invitee);
        }
    }
    let request = CreateRoom {
        preset: b.preset.as_ref().map(|p| p.as_str().to_owned()),
        public: b.visibility == ruma::api::client::room::Visibility::Public,
        alias_localpart: b.room_alias_name.clone(),
        name: b.name.clone(),
        topic: b.topic.clone(),
        invite,
        creation_content: match &b.creation_content {
            Some(raw) => object(raw, "creation_content")?,
            None => Map::new(),
        },
        initial_state,
        power_level_override: match &b.power_level_content_override {
            Some(raw) => object(raw, "power_level_content_override")?,
            None => Map::new(),
        },
        room_version: b.room_version.as_ref().map(ToString::to_string),
        is_direct: b.is_direct,
        room_id: None,
    };
    let room_id = services.create_room(&req.auth.user_id, request).await?;
    Ok(create_room::v3::Response::new(room_id))
}

/// # `PUT /_matrix/client/v3/directory/room/{roomAlias}`
async fn set_alias(
    services: Arc<Services>,
    req: Ruma<create_alias::v3::Request>,
) -> Result<create_alias::v3::Response> {
    services
        .create_alias(&req.body.room_alias, &req.body.room_id, &req.auth.user_id)
        .await?;
    Ok(create_alias::v3::Response::new())
}

/// # `GET /_matrix/client/v3/directory/room/{roomAlias}`
async fn get_alias(
    services: Arc<Services>,
    req: Ruma<get_alias::v3::Request>,
) -> Result<get_alias::v3::Response> {
    let alias = &req.body.room_alias;
    // Another server's alias is asked of that server.
    let (room_id, mut servers) =
        super::resolve_room_and_servers(&services, <&ruma::RoomOrAliasId>::from(&**alias)).await?;
    if servers.is_empty() {
        servers.push(services.config.server_name.clone());
    }
    Ok(get_alias::v3::Response::new(room_id, servers))
}

/// # `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
async fn remove_alias(
    services: Arc<Services>,
    req: Ruma<delete_alias::v3::Request>,
) -> Result<delete_alias::v3::Response> {
    services
        .delete_alias(&req.body.room_alias, &req.auth.user_id)
        .await?;
    Ok(delete_alias::v3::Response::new())
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/aliases`
async fn room_aliases(
    services: Arc<Services>,
    req: Ruma<aliases::v3::Request>,
) -> Result<aliases::v3::Response> {
    services
        .readable_state(&req.body.room_id, &req.auth.user_id)
        .await?;
    Ok(aliases::v3::Response::new(
        services.room_aliases(&req.body.room_id).await?,
    ))
}

/// # `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
async fn set_global_data(
    services: Arc<Services>,
    req: Ruma<set_global_account_data::v3::Request>,
) -> Result<set_global_account_data::v3::Response> {
    let b = &req.body;
    ensure_self(&req.auth.user_id, &b.user_id)?;
    let content = object(&b.data, "Account data")?;
    services
        .set_account_data(
            &b.user_id,
            None,
            &b.event_type.to_string(),
            Value::Object(content),
        )
        .await?;
    Ok(set_global_account_data::v3::Response::new())
}

/// # `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
async fn get_global_data(
    services: Arc<Services>,
    req: Ruma<get_global_account_data::v3::Request>,
) -> Result<get_global_account_data::v3::Response> {
    let b = &req.body;
    ensure_self(&req.auth.user_id, &b.user_id)?;
    let content = services
        .account_data(&b.user_id, None, &b.event_type.to_string())
        .await?;
    Ok(get_global_account_data::v3::Response::new(to_raw(
        &content,
    )?))
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
async fn set_room_data(
    services: Arc<Services>,
    req: Ruma<set_room_account_data::v3::Request>,
) -> Result<set_room_account_data::v3::Response> {
    let b = &req.body;
    ensure_self(&req.auth.user_id, &b.user_id)?;
    let content = object(&b.data, "Account data")?;
    services
        .set_account_data(
            &b.user_id,
            Some(&b.room_id),
            &b.event_type.to_string(),
            Value::Object(content),
        )
        .await?;
    Ok(set_room_account_data::v3::Response::new())
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
async fn get_room_data(
    services: Arc<Services>,
    req: Ruma<get_room_account_data::v3::Request>,
) -> Result<get_room_account_data::v3::Response> {
    let b = &req.body;
    ensure_self(&req.auth.user_id, &b.user_id)?;
    let content = services
        .account_data(&b.user_id, Some(&b.room_id), &b.event_type.to_string())
        .await?;
    Ok(get_room_account_data::v3::Response::new(to_raw(&content)?))
}

/// # `POST /_matrix/client/v3/user/{userId}/filter`
async fn upload_filter(
    services: Arc<Services>,
    req: Ruma<create_filter::v3::Request>,
) -> Result<create_filter::v3::Response> {
    ensure_self(&req.auth.user_id, &req.body.user_id)?;
    crate::service::sync::validate_filter(&req.body.filter)?;
    let json = serde_json::to_string(&req.body.filter).map_err(|e| Error::Internal(e.into()))?;
    let id = services
        .store
        .insert_filter(req.auth.user_id.as_str(), &json)
        .await?;
    Ok(create_filter::v3::Response::new(id.to_string()))
}

/// # `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
async fn download_filter(
    services: Arc<Services>,
    req: Ruma<get_filter::v3::Request>,
) -> Result<get_filter::v3::Response> {
    ensure_self(&req.auth.user_id, &req.body.user_id)?;
    let filter = services
        .stored_filter(&req.auth.user_id, &req.body.filter_id)
        .await?;
    Ok(get_filter::v3::Response::new(filter))
}
