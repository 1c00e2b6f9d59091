//! Device management.

use std::sync::Arc;

use axum::Router;
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::client::device::{
        Device, delete_device, delete_devices, get_device, get_devices, update_device,
    },
};

use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::{Services, UiaOperation},
    store::DeviceRow,
};

/// Longest device name kept.
const MAX_DISPLAY_NAME_CHARS: usize = 100;

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(list_devices)
        .ruma(get_device)
        .ruma(update_device)
        .ruma(delete_device)
        .ruma(delete_devices)
}

fn to_device(row: DeviceRow) -> Device {
    let mut device = Device::new(row.device_id);
    device.display_name = row.display_name;
    device.last_seen_ip = row.last_seen_ip;
    device.last_seen_ts = row
        .last_seen_ms
        .and_then(|ms| UInt::try_from(ms).ok())
        .map(MilliSecondsSinceUnixEpoch);
    device
}

/// # `GET /_matrix/client/v3/devices`
async fn list_devices(
    services: Arc<Services>,
    req: Ruma<get_devices::v3::Request>,
) -> Result<get_devices::v3::Response> {
    let devices = services.store.devices(&req.auth.user_id).await?;
    Ok(get_devices::v3::Response::new(
        devices.into_iter().map(to_device).collect(),
    ))
}

/// # `GET /_matrix/client/v3/devices/{deviceId}`
async fn get_device(
    services: Arc<Services>,
    req: Ruma<get_device::v3::Request>,
) -> Result<get_device::v3::Response> {
    let row = services
        .store
        .device(&req.auth.user_id, &req.body.device_id)
        .await?
        .ok_or_else(|| Error::not_found("No such device"))?;
    Ok(get_device::v3::Response::new(to_device(row)))
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
        .reauthenticate(
            UiaOperation::DeleteDevices,
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
