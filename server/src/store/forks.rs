//! Storing an event that joins a fork of a room's history: the state before it is its
//! branch's (not the room's current state), and the room's state after it is the result of
//! state resolution, written in the same transaction as the event.

use sqlx::{Any, Transaction};

use super::StateMap;

/// What state resolution decided for an event that does not build on the room's latest.
#[derive(Debug)]
pub struct Resolution {
    /// The room's current state before the event.
    pub previous: StateMap,
    /// The state before the event, from its `prev_events`.
    pub state_before: StateMap,
    /// The room's state after the event (resolved with the previous state).
    pub current: StateMap,
    /// The room's forward extremities after the event.
    pub extremities: Vec<String>,
    /// `(user id, membership, member event id)` for memberships the resolution changed.
    pub memberships: Vec<(String, String, String)>,
}

/// A state group holding `target`, stored as the changes from `base` (whose state is
/// `base_map`) when `target` only adds or replaces entries, else whole; `base` itself
/// when nothing changes.
pub(super) async fn group_for(
    tx: &mut Transaction<'static, Any>,
    room_id: &str,
    base: Option<i64>,
    base_map: &StateMap,
    target: &StateMap,
) -> Result<i64, sqlx::Error> {
    let removes = base_map.keys().any(|key| !target.contains_key(key));
    let changes: Vec<(&(String, String), &String)> = target
        .iter()
        .filter(|(key, id)| base_map.get(*key) != Some(*id))
        .collect();
    if let Some(base) = base
        && !removes
        && changes.is_empty()
    {
        return Ok(base);
    }
    let id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM state_groups")
        .fetch_one(&mut **tx)
        .await?;
    let base_depth: Option<i64> = match base {
        Some(base) => {
            sqlx::query_scalar("SELECT depth FROM state_groups WHERE id = $1")
                .bind(base)
                .fetch_optional(&mut **tx)
                .await?
        }
        None => None,
    };
    let delta = match base_depth {
        Some(depth) if !removes && depth + 1 < super::events::MAX_STATE_DELTAS => Some(depth + 1),
        _ => None,
    };
    sqlx::query("INSERT INTO state_groups (id, room_id, parent, depth) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(room_id)
        .bind(delta.and(base))
        .bind(delta.unwrap_or(0))
        .execute(&mut **tx)
        .await?;
    let entries: Vec<(&(String, String), &String)> = match delta {
        Some(_) => changes,
        None => target.iter().collect(),
    };
    for ((kind, state_key), event_id) in entries {
        sqlx::query(
            "INSERT INTO state_group_entries (group_id, type, state_key, event_id) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(kind)
        .bind(state_key)
        .bind(event_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(id)
}

/// Makes `resolution.current` the room's current state as of stream position `stream`:
/// current state rows, memberships; the state group now current.
pub(super) async fn apply(
    tx: &mut Transaction<'static, Any>,
    room_id: &str,
    base: Option<i64>,
    stream: i64,
    resolution: &Resolution,
) -> Result<i64, sqlx::Error> {
    let group = group_for(tx, room_id, base, &resolution.previous, &resolution.current).await?;
    for (kind, state_key) in resolution.previous.keys() {
        if !resolution
            .current
            .contains_key(&(kind.clone(), state_key.clone()))
        {
            sqlx::query(
                "DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3",
            )
            .bind(room_id)
            .bind(kind)
            .bind(state_key)
            .execute(&mut **tx)
            .await?;
        }
    }
    for ((kind, state_key), event_id) in &resolution.current {
        if resolution
            .previous
            .get(&(kind.clone(), state_key.clone()))
            .is_some_and(|was| was == event_id)
        {
            continue;
        }
        sqlx::query(
            "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id",
        )
        .bind(room_id)
        .bind(kind)
        .bind(state_key)
        .bind(event_id)
        .execute(&mut **tx)
        .await?;
    }
    for (user_id, membership, event_id) in &resolution.memberships {
        super::events::upsert_membership(tx, room_id, (user_id, membership, event_id), stream)
            .await?;
    }
    Ok(group)
}
