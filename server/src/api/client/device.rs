//! Device management.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use ruma::api::client::device::{delete_device, delete_devices, update_device};
use serde_json::{Value, json};

use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::{Services, UiaOperation},
    store::DeviceRow,
};

/// Longest device name kept.
const MAX_DISPLAY_NAME_CHARS: usize = 100;

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = ["r0", "v3"].iter().fold(router, |router, version| {
        router
            .route(
                &format!("/_matrix/client/{version}/admin/whois/{{user_id}}"),
                get(whois),
            )
            .route(
                &format!("/_matrix/client/{version}/devices"),
                get(list_devices),
            )
            .route(
                &format!("/_matrix/client/{version}/devices/{{device_id}}"),
                get(get_device),
            )
    });
    router
        .ruma(update_device)
        .ruma(delete_device)
        .ruma(delete_devices)
}

/// A device as clients' schemas want it: every field present, `null` when unknown
/// (matrix-nio requires `last_seen_ts` even for a device not seen since it was made, and
/// Synapse sends it so).
fn device_json(row: DeviceRow) -> Value {
    json!({
        "device_id": row.device_id,
        "display_name": row.display_name,
        "last_seen_ip": row.last_seen_ip,
        "last_seen_ts": row.last_seen_ms,
    })
}

/// # `GET /_matrix/client/v3/devices`
async fn list_devices(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
) -> Result<Json<Value>> {
    let devices = services.store.devices(&session.user_id).await?;
    let devices: Vec<Value> = devices.into_iter().map(device_json).collect();
    Ok(Json(json!({ "devices": devices })))
}

/// # `GET /_matrix/client/v3/admin/whois/{userId}`
///
/// A user's devices and where they were last seen: for server administrators and the user.
async fn whois(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let user_id = super::path_user_id(&user_id)?;
    if user_id != session.user_id && !session.is_admin {
        return Err(Error::forbidden(
            "Only server administrators can look up other users",
        ));
    }
    let mut devices = serde_json::Map::new();
    for row in services.store.devices(&user_id).await? {
        let connections: Vec<Value> = row
            .last_seen_ms
            .map(|ts| json!({ "ip": row.last_seen_ip, "last_seen": ts, "user_agent": null }))
            .into_iter()
            .collect();
        devices.insert(
            row.device_id.to_string(),
            json!({ "sessions": [{ "connections": connections }] }),
        );
    }
    Ok(Json(json!({ "user_id": user_id, "devices": devices })))
}

/// # `GET /_matrix/client/v3/devices/{deviceId}`
async fn get_device(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Path(device_id): Path<String>,
) -> Result<Json<Value>> {
    let row = services
        .store
        .device(&session.user_id, device_id.as_str().into())
        .await?
        .ok_or_else(|| Error::not_found("No such device"))?;
    Ok(Json(device_json(row)))
}

/// # `PUT /_matrix/client/v3/devices/{deviceId}`
async fn update_device(
    services: Arc<Services>,
    req: Ruma<update_device::v3::Request>,
) -> Result<update_device::v3::Response> {
    let name = req.body.display_name.as_deref();
    if name.is_some_and(|n| n.chars().count() > MAX_DISPLAY_NAME_CHARS) {
        return Err(Error::invalid_param(format!(
            "Device names are limited to {MAX_DISPLAY_NAME_CHARS} characters"
        )));
    }
    if !services
        .store
        .set_device_display_name(&req.auth.user_id, &req.body.device_id, name)
        .await?
    {
        return Err(Error::not_found("No such device"));
    }
    // Other users' clients show device names: their lists need a refresh.
    services
        .store
        .device_list_changed(req.auth.user_id.as_str())
        .await?;
    services.wake_device_watchers(&req.auth.user_id).await?;
    Ok(update_device::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/devices/{deviceId}`
async fn delete_device(
    services: Arc<Services>,
    req: Ruma<delete_device::v3::Request>,
) -> Result<delete_device::v3::Response> {
    if services
        .store
        .device(&req.auth.user_id, &req.body.device_id)
        .await?
        .is_none()
    {
        return Err(Error::not_found("No such device"));
    }
    services
        .reauthenticate_for(
            UiaOperation::DeleteDevices,
            req.body.device_id.as_str(),
            &req.auth.user_id,
            req.body.auth.as_ref(),
        )
        .await?;
    services
        .store
        .delete_devices(&req.auth.user_id, &[req.body.device_id])
        .await?;
    services.wake_device_watchers(&req.auth.user_id).await?;
    Ok(delete_device::v3::Response::new())
}

/// # `POST /_matrix/client/v3/delete_devices`
async fn delete_devices(
    services: Arc<Services>,
    req: Ruma<delete_devices::v3::Request>,
) -> Result<delete_devices::v3::Response> {
    services
        .reauthenticate(
            UiaOperation::DeleteDevices,
            &req.auth.user_id,
            req.body.auth.as_ref(),
        )
        .await?;
    services
        .store
        .delete_devices(&req.auth.user_id, &req.body.devices)
        .await?;
    services.wake_device_watchers(&req.auth.user_id).await?;
    Ok(delete_devices::v3::Response::new())
}
