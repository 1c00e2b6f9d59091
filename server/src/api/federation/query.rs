//! What other servers ask about this server's users and rooms: version, profiles, aliases,
//! devices and end-to-end keys.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    OwnedServerName,
    api::federation::{
        device::get_devices,
        discovery::get_server_version,
        keys::{claim_keys, get_keys},
        query::{get_profile_information, get_room_information},
    },
};
use serde_json::Value;

use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma, to_raw},
    },
    service::Services,
};

/// Most users one key query or claim may name.
const MAX_KEY_USERS: usize = 1_000;

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma::<get_server_version::v1::Request, _, _>(version)
        .ruma::<get_profile_information::v1::Request, _, _>(profile)
        .ruma::<get_room_information::v1::Request, _, _>(directory)
        .ruma::<get_devices::v1::Request, _, _>(devices)
        .ruma::<get_keys::v1::Request, _, _>(query_keys)
        .ruma::<claim_keys::v1::Request, _, _>(claim)
}

/// 404 unless `user_id` is one of this server's users (another server may ask only about
/// those).
fn ensure_local(services: &Services, user_id: &ruma::UserId) -> Result<()> {
    if user_id.server_name() != services.config.server_name {
        return Err(Error::not_found(format!(
            "{user_id} is not a user of this server"
        )));
    }
    Ok(())
}

/// # `GET /_matrix/federation/v1/version`
async fn version(
    _: Arc<Services>,
    _: Ruma<get_server_version::v1::Request>,
) -> Result<get_server_version::v1::Response> {
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("Matrixon".to_owned());
    server.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut response = get_server_version::v1::Response::new();
    response.server = Some(server);
    Ok(response)
}

/// # `GET /_matrix/federation/v1/query/profile`
async fn profile(
    services: Arc<Services>,
    req: Ruma<get_profile_information::v1::Request>,
) -> Result<get_profile_information::v1::Response> {
    ensure_local(&services, &req.body.user_id)?;
    let (displayname, avatar_url) = services.local_profile(&req.body.user_id).await?;
    let field = req.body.field.as_ref().map(|f| f.as_str().to_owned());
    let wanted = |name: &str| field.as_deref().is_none_or(|f| f == name);
    let mut response = get_profile_information::v1::Response::new();
    if let Some(name) = displayname.filter(|_| wanted("displayname")) {
        response.set("displayname".to_owned(), Value::from(name));
    }
    if let Some(url) = avatar_url.filter(|_| wanted("avatar_url")) {
        response.set("avatar_url".to_owned(), Value::from(url));
    }
    Ok(response)
}

/// # `GET /_matrix/federation/v1/query/directory`
async fn directory(
    services: Arc<Services>,
    req: Ruma<get_room_information::v1::Request>,
) -> Result<get_room_information::v1::Response> {
    let alias = &req.body.room_alias;
    if alias.server_name() != services.config.server_name {
        return Err(Error::not_found(format!(
            "{alias} is not an alias of this server"
        )));
    }
    let room_id = services
        .resolve_alias(alias)
        .await?
        .ok_or_else(|| Error::not_found(format!("No room has the alias {alias}")))?;
    let servers: Vec<OwnedServerName> = vec![services.config.server_name.clone()];
    Ok(get_room_information::v1::Response::new(room_id, servers))
}

/// # `GET /_matrix/federation/v1/user/devices/{userId}`
async fn devices(
    services: Arc<Services>,
    req: Ruma<get_devices::v1::Request>,
) -> Result<get_devices::v1::Response> {
    let user_id = &req.body.user_id;
    ensure_local(&services, user_id)?;
    let wanted = BTreeMap::from([(user_id.clone(), Vec::new())]);
    let keys = services.query_keys(None, &wanted).await?;
    let device_keys = keys["device_keys"][user_id.as_str()]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut devices = Vec::new();
    for row in services.store.devices(user_id).await? {
        let Some(device_keys) = device_keys.get(row.device_id.as_str()) else {
            continue;
        };
        let device_id: ruma::OwnedDeviceId = row.device_id.as_str().into();
        let mut device = get_devices::v1::UserDevice::new(device_id, to_raw(device_keys)?);
        device.device_display_name = row.display_name.clone();
        devices.push(device);
    }
    let stream_id = services
        .store
        .device_list_stream_id(user_id.as_str())
        .await?;
    let mut response = get_devices::v1::Response::new(
        user_id.clone(),
        ruma::UInt::try_from(stream_id.max(0)).unwrap_or_default(),
    );
    response.devices = devices;
    let key = |kind: &str| -> Result<_> {
        match keys[kind].get(user_id.as_str()) {
            Some(value) => Ok(Some(to_raw(value)?)),
            None => Ok(None),
        }
    };
    response.master_key = key("master_keys")?;
    response.self_signing_key = key("self_signing_keys")?;
    Ok(response)
}

/// # `POST /_matrix/federation/v1/user/keys/query`
async fn query_keys(
    services: Arc<Services>,
    req: Ruma<get_keys::v1::Request>,
) -> Result<get_keys::v1::Response> {
    if req.body.device_keys.len() > MAX_KEY_USERS {
        return Err(Error::bad_request(format!(
            "At most {MAX_KEY_USERS} users per query"
        )));
    }
    let wanted = crate::service::keys::wanted_devices(&req.body.device_keys);
    let answer = services.query_keys(None, &wanted).await?;
    fn field<T: serde::de::DeserializeOwned>(answer: &Value, name: &str) -> Result<T> {
        serde_json::from_value(answer[name].clone()).map_err(|e| Error::Internal(e.into()))
    }
    let mut response = get_keys::v1::Response::new(field(&answer, "device_keys")?);
    response.master_keys = field(&answer, "master_keys")?;
    response.self_signing_keys = field(&answer, "self_signing_keys")?;
    Ok(response)
}

/// # `POST /_matrix/federation/v1/user/keys/claim`
async fn claim(
    services: Arc<Services>,
    req: Ruma<claim_keys::v1::Request>,
) -> Result<claim_keys::v1::Response> {
    if req.body.one_time_keys.len() > MAX_KEY_USERS {
        return Err(Error::bad_request(format!(
            "At most {MAX_KEY_USERS} users per claim"
        )));
    }
    let wanted = crate::service::keys::wanted_claims(&req.body.one_time_keys);
    let answer = services.claim_keys(&wanted, false).await?;
    let one_time_keys = serde_json::from_value(answer["one_time_keys"].clone())
        .map_err(|e| Error::Internal(e.into()))?;
    Ok(claim_keys::v1::Response::new(one_time_keys))
}
