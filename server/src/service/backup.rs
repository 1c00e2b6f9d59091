//! Server-side key backup: versions with their auth data, and encrypted room keys that
//! replace a stored one only when they are better.

use ruma::UserId;
use serde_json::Value;

use super::Services;
use crate::{
    http::error::{Error, Result},
    store::{BackupKeyRow, BackupVersionRow},
};

/// Most session keys one upload may carry.
const MAX_KEYS_PER_UPLOAD: usize = 10_000;

fn parse_version(version: &str) -> Result<i64> {
    version
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| Error::not_found(format!("Unknown backup version {version}")))
}

/// `(algorithm, auth_data JSON)` of a `{"algorithm", "auth_data"}` body.
pub fn parse_algorithm(json: &str) -> Result<(String, String)> {
    let value: Value = serde_json::from_str(json).map_err(|_| Error::not_json())?;
    let algorithm = value
        .get("algorithm")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::missing_param("`algorithm` is required"))?;
    // Opaque to the server: kept as sent, whatever its JSON type (as Synapse keeps it).
    let auth_data = value
        .get("auth_data")
        .filter(|a| !a.is_null())
        .ok_or_else(|| Error::missing_param("`auth_data` is required"))?;
    Ok((algorithm.to_owned(), auth_data.to_string()))
}

impl Services {
    /// Creates a new version, which becomes the current one.
    pub async fn backup_create(&self, user_id: &UserId, algorithm: &str) -> Result<String> {
        let (algorithm, auth_data) = parse_algorithm(algorithm)?;
        let version = self
            .store
            .create_backup_version(user_id.as_str(), &algorithm, &auth_data)
            .await?;
        Ok(version.to_string())
    }

    /// One version (the current one when `version` is None); 404 when there is none.
    pub async fn backup_info(
        &self,
        user_id: &UserId,
        version: Option<&str>,
    ) -> Result<BackupVersionRow> {
        let number = version.map(parse_version).transpose()?;
        self.store
            .backup_version(user_id.as_str(), number)
            .await?
            .ok_or_else(|| match version {
                Some(v) => Error::not_found(format!("Unknown backup version {v}")),
                None => Error::not_found("No current backup version"),
            })
    }

    /// Replaces a version's auth data; its algorithm cannot change.
    pub async fn backup_update(&self, user_id: &UserId, version: &str, body: &str) -> Result<()> {
        let current = self.backup_info(user_id, Some(version)).await?;
        let (algorithm, auth_data) = parse_algorithm(body)?;
        let value: Value = serde_json::from_str(body).map_err(|_| Error::not_json())?;
        if value
            .get("version")
            .and_then(Value::as_str)
            .is_some_and(|v| v != version)
        {
            return Err(Error::invalid_param(
                "The version in the body differs from the one in the path",
            ));
        }
        if algorithm != current.algorithm {
            return Err(Error::invalid_param(
                "A backup version's algorithm cannot change; create a new version",
            ));
        }
        self.store
            .update_backup_version(user_id.as_str(), current.version, &auth_data)
            .await?;
        Ok(())
    }

    /// Deletes a version and its keys.
    pub async fn backup_delete(&self, user_id: &UserId, version: &str) -> Result<()> {
        let number = parse_version(version)?;
        if !self
            .store
            .delete_backup_version(user_id.as_str(), number)
            .await?
        {
            return Err(Error::not_found(format!(
                "Unknown backup version {version}"
            )));
        }
        Ok(())
    }

    /// Stores keys into the current version; `(etag, count)` after. A write to an older
    /// version is refused (403 `M_WRONG_ROOM_KEYS_VERSION`) so a stale client notices.
    pub async fn backup_put(
        &self,
        user_id: &UserId,
        version: &str,
        keys: Vec<BackupKeyRow>,
    ) -> Result<(String, u64)> {
        if keys.len() > MAX_KEYS_PER_UPLOAD {
            return Err(Error::invalid_param(format!(
                "At most {MAX_KEYS_PER_UPLOAD} keys per upload"
            )));
        }
        let number = parse_version(version)?;
        let current = self.backup_info(user_id, None).await?;
        if current.version != number {
            let mut extra = serde_json::Map::new();
            extra.insert("current_version".into(), current.version.to_string().into());
            return Err(Error::Detailed {
                status: http::StatusCode::FORBIDDEN,
                errcode: "M_WRONG_ROOM_KEYS_VERSION",
                message: format!("Backup version {version} is not the current one"),
                extra,
            });
        }
        self.store
            .put_backup_keys(user_id.as_str(), number, &keys)
            .await?
            .ok_or_else(|| Error::not_found(format!("Unknown backup version {version}")))?;
        self.backup_counts(user_id, number).await
    }

    /// Keys of a version, narrowed to a room and a session.
    pub async fn backup_get(
        &self,
        user_id: &UserId,
        version: &str,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<BackupKeyRow>> {
        let current = self.backup_info(user_id, Some(version)).await?;
        Ok(self
            .store
            .backup_keys(user_id.as_str(), current.version, room_id, session_id)
            .await?)
    }

    /// Deletes keys of a version; `(etag, count)` after.
    pub async fn backup_delete_keys(
        &self,
        user_id: &UserId,
        version: &str,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<(String, u64)> {
        let number = parse_version(version)?;
        self.store
            .delete_backup_keys(user_id.as_str(), number, room_id, session_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("Unknown backup version {version}")))?;
        self.backup_counts(user_id, number).await
    }

    async fn backup_counts(&self, user_id: &UserId, version: i64) -> Result<(String, u64)> {
        let info = self
            .store
            .backup_version(user_id.as_str(), Some(version))
            .await?
            .ok_or_else(|| Error::not_found(format!("Unknown backup version {version}")))?;
        Ok((
            info.etag.to_string(),
            u64::try_from(info.count).unwrap_or_default(),
        ))
    }
}
