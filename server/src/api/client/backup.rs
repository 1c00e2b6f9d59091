//! Server-side key backup (`/room_keys/...`).

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    OwnedRoomId, UInt,
    api::client::backup::{
        KeyBackupData, RoomKeyBackup, add_backup_keys, add_backup_keys_for_room,
        add_backup_keys_for_session, create_backup_version, delete_backup_keys,
        delete_backup_keys_for_room, delete_backup_keys_for_session, delete_backup_version,
        get_backup_info, get_backup_keys, get_backup_keys_for_room, get_backup_keys_for_session,
        get_latest_backup_info, update_backup_version,
    },
    serde::Raw,
};
use serde_json::Value;

use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::Services,
    store::{BackupKeyRow, BackupVersionRow},
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(create_version)
        .ruma(latest_version)
        .ruma(get_version)
        .ruma(update_version)
        .ruma(delete_version)
        .ruma(put_keys)
        .ruma(put_room_keys)
        .ruma(put_session_key)
        .ruma(get_keys)
        .ruma(get_room_keys)
        .ruma(get_session_key)
        .ruma(delete_keys)
        .ruma(delete_room_keys)
        .ruma(delete_session_key)
}

/// A key as stored, from the client's `KeyBackupData`.
fn to_row(room_id: &str, session_id: &str, data: &Raw<KeyBackupData>) -> Result<BackupKeyRow> {
    let value: Value = serde_json::from_str(data.json().get()).map_err(|_| Error::not_json())?;
    let number = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_u64)
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| Error::bad_json(format!("`{name}` must be a non-negative integer")))
    };
    // Opaque to the server (encrypted by the client): kept as sent, as Synapse keeps it.
    let session_data = value
        .get("session_data")
        .filter(|d| !d.is_null())
        .ok_or_else(|| Error::bad_json("`session_data` is required"))?;
    Ok(BackupKeyRow {
        room_id: room_id.to_owned(),
        session_id: session_id.to_owned(),
        first_message_index: number("first_message_index")?,
        forwarded_count: number("forwarded_count")?,
        is_verified: value
            .get("is_verified")
            .and_then(Value::as_bool)
            .ok_or_else(|| Error::bad_json("`is_verified` must be a boolean"))?,
        session_data: session_data.to_string(),
    })
}

/// The client's `KeyBackupData` of a stored key.
fn to_data(row: &BackupKeyRow) -> Result<Raw<KeyBackupData>> {
    let session_data: Value = serde_json::from_str(&row.session_data).unwrap_or_default();
    crate::http::ruma::to_raw(&serde_json::json!({
        "first_message_index": row.first_message_index,
        "forwarded_count": row.forwarded_count,
        "is_verified": row.is_verified,
        "session_data": session_data,
    }))
}

fn rooms_of(rows: &[BackupKeyRow]) -> Result<BTreeMap<OwnedRoomId, RoomKeyBackup>> {
    let mut rooms: BTreeMap<OwnedRoomId, RoomKeyBackup> = BTreeMap::new();
    for row in rows {
        let Ok(room_id) = OwnedRoomId::try_from(row.room_id.as_str()) else {
            continue;
        };
        rooms
            .entry(room_id)
            .or_insert_with(|| RoomKeyBackup::new(BTreeMap::new()))
            .sessions
            .insert(row.session_id.clone(), to_data(row)?);
    }
    Ok(rooms)
}

fn count(n: u64) -> UInt {
    UInt::try_from(n).unwrap_or_default()
}

/// `(algorithm with auth_data, count, etag, version)` of a stored version.
fn describe(
    row: &BackupVersionRow,
) -> Result<(
    Raw<ruma::api::client::backup::BackupAlgorithm>,
    UInt,
    String,
    String,
)> {
    let auth_data: Value = serde_json::from_str(&row.auth_data).unwrap_or_default();
    let algorithm = crate::http::ruma::to_raw(&serde_json::json!({
        "algorithm": row.algorithm, "auth_data": auth_data,
    }))?;
    Ok((
        algorithm,
        count(u64::try_from(row.count).unwrap_or_default()),
        row.etag.to_string(),
        row.version.to_string(),
    ))
}

/// # `POST /_matrix/client/v3/room_keys/version`
async fn create_version(
    services: Arc<Services>,
    req: Ruma<create_backup_version::v3::Request>,
) -> Result<create_backup_version::v3::Response> {
    let version = services
        .backup_create(&req.auth.user_id, req.body.algorithm.json().get())
        .await?;
    Ok(create_backup_version::v3::Response::new(version))
}

/// # `GET /_matrix/client/v3/room_keys/version`
async fn latest_version(
    services: Arc<Services>,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<get_latest_backup_info::v3::Response> {
    let row = services.backup_info(&req.auth.user_id, None).await?;
    let (algorithm, count, etag, version) = describe(&row)?;
    Ok(get_latest_backup_info::v3::Response::new(
        algorithm, count, etag, version,
    ))
}

/// # `GET /_matrix/client/v3/room_keys/version/{version}`
async fn get_version(
    services: Arc<Services>,
    req: Ruma<get_backup_info::v3::Request>,
) -> Result<get_backup_info::v3::Response> {
    let row = services
        .backup_info(&req.auth.user_id, Some(&req.body.version))
        .await?;
    let (algorithm, count, etag, version) = describe(&row)?;
    Ok(get_backup_info::v3::Response::new(
        algorithm, count, etag, version,
    ))
}

/// # `PUT /_matrix/client/v3/room_keys/version/{version}`
async fn update_version(
    services: Arc<Services>,
    req: Ruma<update_backup_version::v3::Request>,
) -> Result<update_backup_version::v3::Response> {
    services
        .backup_update(
            &req.auth.user_id,
            &req.body.version,
            req.body.algorithm.json().get(),
        )
        .await?;
    Ok(update_backup_version::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/room_keys/version/{version}`
async fn delete_version(
    services: Arc<Services>,
    req: Ruma<delete_backup_version::v3::Request>,
) -> Result<delete_backup_version::v3::Response> {
    services
        .backup_delete(&req.auth.user_id, &req.body.version)
        .await?;
    Ok(delete_backup_version::v3::Response::new())
}

/// # `PUT /_matrix/client/v3/room_keys/keys`
async fn put_keys(
    services: Arc<Services>,
    req: Ruma<add_backup_keys::v3::Request>,
) -> Result<add_backup_keys::v3::Response> {
    let mut rows = Vec::new();
    for (room_id, backup) in &req.body.rooms {
        for (session_id, data) in &backup.sessions {
            rows.push(to_row(room_id.as_str(), session_id, data)?);
        }
    }
    let (etag, n) = services
        .backup_put(&req.auth.user_id, &req.body.version, rows)
        .await?;
    Ok(add_backup_keys::v3::Response::new(etag, count(n)))
}

/// # `PUT /_matrix/client/v3/room_keys/keys/{roomId}`
async fn put_room_keys(
    services: Arc<Services>,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<add_backup_keys_for_room::v3::Response> {
    let rows = req
        .body
        .sessions
        .iter()
        .map(|(session_id, data)| to_row(req.body.room_id.as_str(), session_id, data))
        .collect::<Result<Vec<_>>>()?;
    let (etag, n) = services
        .backup_put(&req.auth.user_id, &req.body.version, rows)
        .await?;
    Ok(add_backup_keys_for_room::v3::Response::new(etag, count(n)))
}

/// # `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn put_session_key(
    services: Arc<Services>,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<add_backup_keys_for_session::v3::Response> {
    let row = to_row(
        req.body.room_id.as_str(),
        &req.body.session_id,
        &req.body.session_data,
    )?;
    let (etag, n) = services
        .backup_put(&req.auth.user_id, &req.body.version, vec![row])
        .await?;
    Ok(add_backup_keys_for_session::v3::Response::new(
        etag,
        count(n),
    ))
}

/// # `GET /_matrix/client/v3/room_keys/keys`
async fn get_keys(
    services: Arc<Services>,
    req: Ruma<get_backup_keys::v3::Request>,
) -> Result<get_backup_keys::v3::Response> {
    let rows = services
        .backup_get(&req.auth.user_id, &req.body.version, None, None)
        .await?;
    Ok(get_backup_keys::v3::Response::new(rooms_of(&rows)?))
}

/// # `GET /_matrix/client/v3/room_keys/keys/{roomId}`
async fn get_room_keys(
    services: Arc<Services>,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<get_backup_keys_for_room::v3::Response> {
    let rows = services
        .backup_get(
            &req.auth.user_id,
            &req.body.version,
            Some(req.body.room_id.as_str()),
            None,
        )
        .await?;
    let sessions = rows
        .iter()
        .map(|row| Ok((row.session_id.clone(), to_data(row)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    Ok(get_backup_keys_for_room::v3::Response::new(sessions))
}

/// # `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn get_session_key(
    services: Arc<Services>,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<get_backup_keys_for_session::v3::Response> {
    let rows = services
        .backup_get(
            &req.auth.user_id,
            &req.body.version,
            Some(req.body.room_id.as_str()),
            Some(&req.body.session_id),
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| Error::not_found("No key backed up for this session"))?;
    Ok(get_backup_keys_for_session::v3::Response::new(to_data(
        row,
    )?))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys`
async fn delete_keys(
    services: Arc<Services>,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> Result<delete_backup_keys::v3::Response> {
    let (etag, n) = services
        .backup_delete_keys(&req.auth.user_id, &req.body.version, None, None)
        .await?;
    Ok(delete_backup_keys::v3::Response::new(etag, count(n)))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys/{roomId}`
async fn delete_room_keys(
    services: Arc<Services>,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<delete_backup_keys_for_room::v3::Response> {
    let (etag, n) = services
        .backup_delete_keys(
            &req.auth.user_id,
            &req.body.version,
            Some(req.body.room_id.as_str()),
            None,
        )
        .await?;
    Ok(delete_backup_keys_for_room::v3::Response::new(
        etag,
        count(n),
    ))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
async fn delete_session_key(
    services: Arc<Services>,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<delete_backup_keys_for_session::v3::Response> {
    let (etag, n) = services
        .backup_delete_keys(
            &req.auth.user_id,
            &req.body.version,
            Some(req.body.room_id.as_str()),
            Some(&req.body.session_id),
        )
        .await?;
    Ok(delete_backup_keys_for_session::v3::Response::new(
        etag,
        count(n),
    ))
}
