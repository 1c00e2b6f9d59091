//! End-to-end encryption keys: device keys, one-time and fallback keys, cross-signing keys
//! and the signatures added to them later, each kept as the JSON text the client signed.

use sqlx::{Any, Row, Transaction};

use super::Store;

/// Which device-list change a write records: whose devices or keys changed.
pub(super) async fn record_device_list_change(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
) -> Result<i64, sqlx::Error> {
    record_key_change(tx, user_id, None).await
}

/// A change of `user_id`'s keys that only `only_for` is told of when given.
async fn record_key_change(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
    only_for: Option<&str>,
) -> Result<i64, sqlx::Error> {
    let position = Store::next_position(tx, "device_lists").await?;
    sqlx::query(
        "INSERT INTO device_list_changes (stream_id, user_id, only_for) VALUES ($1, $2, $3)",
    )
    .bind(position)
    .bind(user_id)
    .bind(only_for)
    .execute(&mut **tx)
    .await?;
    Ok(position)
}

/// One signature added to a key after it was uploaded.
#[derive(Clone, Debug)]
pub struct KeySignature {
    /// Whose key carries the signature.
    pub target_user_id: String,
    /// The device ID or cross-signing public key signed.
    pub target_key_id: String,
    /// Who signed.
    pub signer_user_id: String,
    /// `ed25519:<key>` of the signing key.
    pub signer_key_id: String,
    /// The unpadded base64 signature.
    pub signature: String,
}

impl Store {
    /// Stores a device's identity keys, recording a device-list change when they are new or
    /// differ; false when the device no longer exists.
    pub async fn set_device_keys(
        &self,
        user_id: &str,
        device_id: &str,
        key_json: &str,
    ) -> Result<bool, sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        // Written in one statement (no read first: a SQLite snapshot could go stale).
        let changed = sqlx::query(
            "INSERT INTO device_keys (user_id, device_id, key_json) \
             SELECT $1, $2, $3 WHERE EXISTS \
             (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json \
             WHERE device_keys.key_json <> excluded.key_json",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(key_json)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if changed {
            record_device_list_change(&mut tx, user_id).await?;
        }
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(exists.is_some())
    }

    /// The stored device keys of a user's devices (all when `devices` is empty):
    /// `(device_id, key_json, display_name)`.
    pub async fn device_keys(
        &self,
        user_id: &str,
    ) -> Result<Vec<(String, String, Option<String>)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT k.device_id, k.key_json, d.display_name FROM device_keys k \
             JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id \
             WHERE k.user_id = $1 ORDER BY k.device_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Adds one-time keys (`(algorithm, key_id, json)`); re-uploading a stored key as it is
    /// changes nothing. `Some(key_id)` (and nothing stored) when a key ID is already stored
    /// with other content. Ignored when the device no longer exists.
    pub async fn add_one_time_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &[(String, String, String)],
    ) -> Result<Option<String>, sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        // This upload's place in the device's order of uploads (claims follow it).
        let upload: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(upload_seq), 0) + 1 FROM one_time_keys \
             WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_one(&mut *tx)
        .await?;
        for (algorithm, key_id, json) in keys {
            let inserted = sqlx::query(
                "INSERT INTO one_time_keys \
                 (user_id, device_id, algorithm, key_id, key_json, upload_seq) \
                 SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS \
                 (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2) \
                 ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .bind(key_id)
            .bind(json)
            .bind(upload)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                let stored: Option<String> = sqlx::query_scalar(
                    "SELECT key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 \
                     AND algorithm = $3 AND key_id = $4",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(algorithm)
                .bind(key_id)
                .fetch_optional(&mut *tx)
                .await?;
                if stored.is_some_and(|stored| stored != *json) {
                    return Ok(Some(key_id.clone()));
                }
            }
        }
        tx.commit().await?;
        Ok(None)
    }

    /// Replaces the fallback key of each algorithm (`(algorithm, key_id, json)`); re-uploading
    /// the current key keeps its used flag.
    pub async fn set_fallback_keys(
        &self,
        user_id: &str,
        device_id: &str,
        keys: &[(String, String, String)],
    ) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        for (algorithm, key_id, json) in keys {
            sqlx::query(
                "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) \
                 SELECT $1, $2, $3, $4, $5, 0 WHERE EXISTS \
                 (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2) \
                 ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET \
                 key_id = excluded.key_id, key_json = excluded.key_json, \
                 used = CASE WHEN fallback_keys.key_id = excluded.key_id \
                 AND fallback_keys.key_json = excluded.key_json THEN fallback_keys.used ELSE 0 END",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .bind(key_id)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Unclaimed one-time keys of a device, per algorithm.
    pub async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 \
             GROUP BY algorithm ORDER BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Algorithms for which the device has a fallback key nobody has used yet.
    pub async fn unused_fallback_key_types(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 \
             AND used = 0 ORDER BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Claims a key of `algorithm` for a device: a one-time key (removed), else the fallback
    /// key (marked used, handed out again until replaced). `(key_id, json)`.
    pub async fn claim_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        // One statement picks and deletes (no read first: a SQLite snapshot could go stale);
        // on PostgreSQL a racing claim can take the same key first, so the loser tries again.
        for _ in 0..8 {
            let taken = sqlx::query(
                "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 \
                 AND algorithm = $3 AND key_id = (SELECT key_id FROM one_time_keys \
                 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
                 ORDER BY upload_seq, key_id LIMIT 1) RETURNING key_id, key_json",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = taken {
                let claimed = (row.try_get(0)?, row.try_get(1)?);
                tx.commit().await?;
                return Ok(Some(claimed));
            }
            let left: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM one_time_keys WHERE user_id = $1 AND device_id = $2 \
                 AND algorithm = $3 LIMIT 1",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .fetch_optional(&mut *tx)
            .await?;
            if left.is_none() {
                break;
            }
        }
        let fallback = sqlx::query(
            "UPDATE fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 \
             AND algorithm = $3 RETURNING key_id, key_json",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        fallback
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
    }

    /// A user's cross-signing keys: `(key_type, json)`.
    pub async fn cross_signing_keys(
        &self,
        user_id: &str,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT key_type, key_json FROM cross_signing_keys WHERE user_id = $1 ORDER BY key_type",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Replaces cross-signing keys (`(key_type, json)`) in one step and records the change.
    /// A new master key drops the signatures made by and on the old keys.
    pub async fn set_cross_signing_keys(
        &self,
        user_id: &str,
        keys: &[(String, String)],
        new_master: bool,
    ) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        if new_master {
            sqlx::query("DELETE FROM cross_signing_keys WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "DELETE FROM key_signatures WHERE target_user_id = $1 OR signer_user_id = $1",
            )
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        }
        for (key_type, json) in keys {
            sqlx::query(
                "INSERT INTO cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json",
            )
            .bind(user_id)
            .bind(key_type)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        }
        // A user-signing key alone is its owner's business (others never see it).
        let private = !new_master && keys.iter().all(|(key_type, _)| key_type == "user_signing");
        record_key_change(&mut tx, user_id, private.then_some(user_id)).await?;
        tx.commit().await
    }

    /// Adds verified signatures and records a device-list change for each signed user.
    pub async fn add_key_signatures(&self, signatures: &[KeySignature]) -> Result<(), sqlx::Error> {
        if signatures.is_empty() {
            return Ok(());
        }
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        // Whose keys changed, and who alone is told (a signature on another user's key is
        // the signer's: others do not see it).
        let mut changed: Vec<(&str, Option<&str>)> = Vec::new();
        for s in signatures {
            sqlx::query(
                "INSERT INTO key_signatures (target_user_id, target_key_id, signer_user_id, \
                 signer_key_id, signature) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) \
                 DO UPDATE SET signature = excluded.signature",
            )
            .bind(&s.target_user_id)
            .bind(&s.target_key_id)
            .bind(&s.signer_user_id)
            .bind(&s.signer_key_id)
            .bind(&s.signature)
            .execute(&mut *tx)
            .await?;
            let only_for =
                (s.signer_user_id != s.target_user_id).then_some(s.signer_user_id.as_str());
            let change = (s.target_user_id.as_str(), only_for);
            if !changed.contains(&change) {
                changed.push(change);
            }
        }
        for (user, only_for) in changed {
            record_key_change(&mut tx, user, only_for).await?;
        }
        tx.commit().await
    }

    /// Signatures added later to the keys of `target_user_id`.
    pub async fn key_signatures(
        &self,
        target_user_id: &str,
    ) -> Result<Vec<KeySignature>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT target_key_id, signer_user_id, signer_key_id, signature FROM key_signatures \
             WHERE target_user_id = $1",
        )
        .bind(target_user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KeySignature {
                    target_user_id: target_user_id.to_owned(),
                    target_key_id: r.try_get(0)?,
                    signer_user_id: r.try_get(1)?,
                    signer_key_id: r.try_get(2)?,
                    signature: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Records that a user's devices changed (a rename, say) for other users' device lists.
    pub async fn device_list_changed(&self, user_id: &str) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        record_device_list_change(&mut tx, user_id).await?;
        tx.commit().await
    }

    /// The latest device-list position of one user (0 when it never changed): the
    /// `stream_id` other servers follow that user's device list by.
    pub async fn device_list_stream_id(&self, user_id: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT COALESCE(MAX(stream_id), 0) FROM device_list_changes \
             WHERE user_id = $1 AND only_for IS NULL",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await
    }

    /// The latest device-list position.
    pub async fn max_device_list_stream(&self) -> Result<i64, sqlx::Error> {
        self.stream_position("device_lists").await
    }

    /// Users whose device lists changed in `(after, upto]` and who share a joined room with
    /// `user_id` (or are that user).
    pub async fn device_list_changes_for(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT c.user_id FROM device_list_changes c \
             WHERE c.stream_id > $2 AND c.stream_id <= $3 \
             AND (c.only_for IS NULL OR c.only_for = $1) AND (c.user_id = $1 OR EXISTS ( \
             SELECT 1 FROM memberships a JOIN memberships b ON a.room_id = b.room_id \
             WHERE a.user_id = $1 AND a.membership = 'join' \
             AND b.user_id = c.user_id AND b.membership = 'join')) ORDER BY c.user_id",
        )
        .bind(user_id)
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await
    }

    /// Memberships that changed in `(after, upto]` in rooms `user_id` is joined to or left in
    /// that window, with that user's own: `(room, my membership, my membership_since, member,
    /// membership, membership_since)`.
    pub async fn membership_changes_around(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
    ) -> Result<Vec<(String, String, i64, String, String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT m1.room_id, m1.membership, m1.membership_since, m2.user_id, m2.membership, \
             m2.membership_since FROM memberships m1 JOIN memberships m2 ON m2.room_id = m1.room_id \
             WHERE m1.user_id = $1 AND m2.user_id <> $1 AND m1.membership_since <= $3 AND ( \
             (m1.membership = 'join' AND (m1.membership_since > $2 \
               OR (m2.membership_since > $2 AND m2.membership_since <= $3))) \
             OR (m1.membership IN ('leave', 'ban') AND m1.membership_since > $2))",
        )
        .bind(user_id)
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    r.try_get(5)?,
                ))
            })
            .collect()
    }

    /// True when the two users are both joined to some room.
    pub async fn share_a_room(&self, a: &str, b: &str) -> Result<bool, sqlx::Error> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM memberships x JOIN memberships y ON x.room_id = y.room_id \
             WHERE x.user_id = $1 AND x.membership = 'join' AND y.user_id = $2 \
             AND y.membership = 'join' LIMIT 1",
        )
        .bind(a)
        .bind(b)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }
}
