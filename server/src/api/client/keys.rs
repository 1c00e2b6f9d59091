//! End-to-end encryption: key upload, query and claim, cross-signing, device-list changes
//! and to-device messages.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    UInt,
    api::client::{
        keys::{
            claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures,
            upload_signing_keys,
        },
        to_device::send_event_to_device,
    },
    to_device::DeviceIdOrAllDevices,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::{Services, keys::UploadedKey, sync::SyncToken},
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(upload_keys)
        .ruma(query_keys)
        .ruma(claim_keys)
        .ruma(key_changes)
        .ruma(upload_signing_keys)
        .ruma(upload_signatures)
        .ruma(send_to_device)
}

/// A part of a JSON answer built by a service, as the typed response field.
fn field<T: DeserializeOwned + Default>(value: &Value, name: &str) -> Result<T> {
    match value.get(name) {
        None => Ok(T::default()),
        Some(part) => serde_json::from_value(part.clone())
            .map_err(|e| Error::Internal(anyhow::anyhow!("building the {name} answer: {e}"))),
    }
}

/// # `POST /_matrix/client/v3/keys/upload`
async fn upload_keys(
    services: Arc<Services>,
    req: Ruma<upload_keys::v3::Request>,
) -> Result<upload_keys::v3::Response> {
    let collect = |keys: &BTreeMap<ruma::OwnedOneTimeKeyId, ruma::serde::Raw<_>>| {
        keys.iter()
            .map(|(id, raw)| UploadedKey {
                key_id: id.to_string(),
                json: raw.json().get().to_owned(),
            })
            .collect::<Vec<_>>()
    };
    let counts = services
        .upload_keys(
            &req.auth.user_id,
            req.auth.device_id.as_str(),
            req.body.device_keys.as_ref().map(|k| k.json().get()),
            collect(&req.body.one_time_keys),
            collect(&req.body.fallback_keys),
        )
        .await?;
    Ok(upload_keys::v3::Response::new(
        counts
            .into_iter()
            .map(|(algorithm, n)| {
                (
                    algorithm.as_str().into(),
                    UInt::try_from(n).unwrap_or_default(),
                )
            })
            .collect(),
    ))
}

/// # `POST /_matrix/client/v3/keys/query`
async fn query_keys(
    services: Arc<Services>,
    req: Ruma<get_keys::v3::Request>,
) -> Result<get_keys::v3::Response> {
    let wanted = crate::service::keys::wanted_devices(&req.body.device_keys);
    let answer = services
        .query_keys(Some(&req.auth.user_id), &wanted)
        .await?;
    let mut response = get_keys::v3::Response::new();
    response.failures = field(&answer, "failures")?;
    response.device_keys = field(&answer, "device_keys")?;
    response.master_keys = field(&answer, "master_keys")?;
    response.self_signing_keys = field(&answer, "self_signing_keys")?;
    response.user_signing_keys = field(&answer, "user_signing_keys")?;
    Ok(response)
}

/// # `POST /_matrix/client/v3/keys/claim`
async fn claim_keys(
    services: Arc<Services>,
    req: Ruma<claim_keys::v3::Request>,
) -> Result<claim_keys::v3::Response> {
    let wanted = crate::service::keys::wanted_claims(&req.body.one_time_keys);
    let answer = services.claim_keys(&wanted, true).await?;
    let mut response = claim_keys::v3::Response::new(field(&answer, "one_time_keys")?);
    response.failures = field(&answer, "failures")?;
    Ok(response)
}

/// # `GET /_matrix/client/v3/keys/changes`
async fn key_changes(
    services: Arc<Services>,
    req: Ruma<get_key_changes::v3::Request>,
) -> Result<get_key_changes::v3::Response> {
    let from = SyncToken::parse(&req.body.from)?;
    let to = SyncToken::parse(&req.body.to)?;
    let delta = services
        .device_list_delta(
            &req.auth.user_id,
            (from.events, to.events.max(from.events)),
            (from.device_lists, to.device_lists.max(from.device_lists)),
        )
        .await?;
    Ok(get_key_changes::v3::Response::new(
        delta.changed.into_iter().collect(),
        delta.left.into_iter().collect(),
    ))
}

/// # `POST /_matrix/client/v3/keys/device_signing/upload`
async fn upload_signing_keys(
    services: Arc<Services>,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> Result<upload_signing_keys::v3::Response> {
    let b = &req.body;
    services
        .upload_cross_signing_keys(
            &req.auth.user_id,
            [
                b.master_key.as_ref().map(|k| k.json().get()),
                b.self_signing_key.as_ref().map(|k| k.json().get()),
                b.user_signing_key.as_ref().map(|k| k.json().get()),
            ],
            b.auth.as_ref(),
        )
        .await?;
    Ok(upload_signing_keys::v3::Response::new())
}

/// # `POST /_matrix/client/v3/keys/signatures/upload`
async fn upload_signatures(
    services: Arc<Services>,
    req: Ruma<upload_signatures::v3::Request>,
) -> Result<upload_signatures::v3::Response> {
    let signed = req
        .body
        .signed_keys
        .iter()
        .flat_map(|(user, keys)| {
            keys.iter()
                .map(|(key_id, json)| (user.clone(), key_id.to_owned(), json.get().to_owned()))
        })
        .collect();
    let answer = services
        .upload_signatures(&req.auth.user_id, signed)
        .await?;
    let mut response = upload_signatures::v3::Response::new();
    response.failures = field(&answer, "failures")?;
    Ok(response)
}

/// # `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
async fn send_to_device(
    services: Arc<Services>,
    req: Ruma<send_event_to_device::v3::Request>,
) -> Result<send_event_to_device::v3::Response> {
    let messages = req
        .body
        .messages
        .iter()
        .flat_map(|(user, devices)| {
            devices.iter().map(move |(device, content)| {
                let device = match device {
                    DeviceIdOrAllDevices::AllDevices => "*".to_owned(),
                    DeviceIdOrAllDevices::DeviceId(d) => d.to_string(),
                };
                (user.to_string(), device, content.json().get().to_owned())
            })
        })
        .collect();
    services
        .send_to_device(
            (
                &req.auth.user_id,
                req.auth.device_id.as_str(),
                req.body.txn_id.as_str(),
            ),
            &req.body.event_type.to_string(),
            messages,
        )
        .await?;
    Ok(send_event_to_device::v3::Response::new())
}
