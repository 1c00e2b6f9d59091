//! Token-gated rooms: the `io.matrixon.room.gate` state event, the check at the door (join,
//! knock, invite acceptance), the dry-run check, and the audit log. Re-verification of
//! members lives in `sweep`, cached verdicts in `cache`.

mod cache;
mod sweep;

use std::collections::BTreeMap;

use http::StatusCode;
use matrixon_chain::{
    gate::{AddressVerdict, Rule, evaluate},
    rpc::ChainError,
    siwe::Address,
};
use ruma::{RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;

pub use cache::VerdictCache;
pub use sweep::run as run_background;

use super::Services;
use crate::http::error::{Error, Result};

/// The state event type (state key `""`) that holds a room's gate.
pub const GATE_EVENT_TYPE: &str = "io.matrixon.room.gate";
/// The errcode of a refusal because no chain provider answered (fail closed).
pub const UNAVAILABLE_ERRCODE: &str = "IO.MATRIXON.GATE_UNAVAILABLE";
/// Longest re-check interval and grace period: 30 days.
const MAX_INTERVAL_S: u64 = 30 * 86_400;

/// What happens to a member who stops meeting the rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFail {
    /// Kicked once the grace period is over.
    #[default]
    Kick,
    /// Recorded in the audit log only.
    None,
}

/// A room's gate.
#[derive(Clone, Debug)]
pub struct Gate {
    /// The rule members must meet.
    pub rule: Rule,
    /// Seconds between re-checks of every member.
    pub recheck_interval_s: u64,
    /// What a failing member gets.
    pub on_fail: OnFail,
    /// Whether vaults that delegated to a member's wallet (delegate.xyz v2) count as theirs.
    pub include_delegations: bool,
    /// Seconds a failing member keeps access before `on_fail` applies.
    pub grace_s: u64,
    /// A digest of the rule: the key its cached verdicts live under.
    pub key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GateContent {
    rule: Value,
    #[serde(default = "default_interval")]
    recheck_interval_s: u64,
    #[serde(default)]
    on_fail: OnFail,
    #[serde(default)]
    include_delegations: bool,
    #[serde(default)]
    grace_s: u64,
}

fn default_interval() -> u64 {
    3_600
}

/// What a dry-run check asks about.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Check against this room's gate…
    pub room_id: Option<ruma::OwnedRoomId>,
    /// …or against this rule.
    pub rule: Option<Value>,
    /// For this address…
    pub address: Option<String>,
    /// …or for this user's wallets.
    pub user_id: Option<ruma::OwnedUserId>,
}

impl Gate {
    /// Seconds a verdict may be reused for this gate.
    fn cache_ttl_ms(&self, configured_s: u64) -> u64 {
        configured_s
            .min(self.recheck_interval_s / 2)
            .saturating_mul(1000)
    }
}

impl Services {
    /// Parses gate content as sent; `None` for `{}` (the gate removed). Errors are
    /// `M_BAD_JSON` naming the path of the fault.
    pub fn parse_gate(&self, content: &Value) -> Result<Option<Gate>> {
        if content.as_object().is_some_and(serde_json::Map::is_empty) {
            return Ok(None);
        }
        let bad = |path: &str, message: &str| {
            Error::bad_json(format!("Invalid {GATE_EVENT_TYPE} at {path}: {message}"))
        };
        let parsed: GateContent = serde_path_to_error::deserialize(content)
            .map_err(|e| bad(&e.path().to_string(), &e.inner().to_string()))?;
        let configured = |id: u64| self.chains.get(id).is_ok();
        let rule = Rule::parse(&parsed.rule, &configured).map_err(|e| {
            let path = if e.path.is_empty() {
                "rule".to_owned()
            } else {
                format!("rule.{}", e.path)
            };
            bad(&path, &e.message)
        })?;
        if !(1..=MAX_INTERVAL_S).contains(&parsed.recheck_interval_s) {
            return Err(bad(
                "recheck_interval_s",
                &format!("must be between 1 and {MAX_INTERVAL_S} seconds"),
            ));
        }
        if parsed.grace_s > MAX_INTERVAL_S {
            return Err(bad(
                "grace_s",
                &format!("must be at most {MAX_INTERVAL_S} seconds"),
            ));
        }
        let canonical = serde_json::to_string(&rule).map_err(anyhow::Error::new)?;
        let key = hex::encode(&sha2::Sha256::digest(canonical.as_bytes())[..16]);
        Ok(Some(Gate {
            rule,
            recheck_interval_s: parsed.recheck_interval_s,
            on_fail: parsed.on_fail,
            include_delegations: parsed.include_delegations,
            grace_s: parsed.grace_s,
            key,
        }))
    }

    /// The room's current gate. A stored gate this server can no longer evaluate (its
    /// chain was removed from the configuration) reads as "cannot be asked".
    pub async fn room_gate(&self, room_id: &RoomId) -> Result<Option<Gate>> {
        let Some(content) = self.state_content(room_id, GATE_EVENT_TYPE, "").await? else {
            return Ok(None);
        };
        self.parse_gate(&content)
            .map_err(|e| unavailable(&format!("the room's gate cannot be evaluated here ({e})")))
    }

    /// Refuses bad gate content before it becomes an event.
    pub(crate) fn validate_gate_event(
        &self,
        state_key: Option<&str>,
        content: &Value,
    ) -> Result<()> {
        if state_key != Some("") {
            return Err(Error::bad_json(format!(
                "{GATE_EVENT_TYPE} is a state event with the state key \"\""
            )));
        }
        self.parse_gate(content).map(drop)
    }

    /// After a gate event: schedule the room so every member is re-checked now (the sweep
    /// reads the gate from the room's state, so content validated when sent is not re-parsed).
    pub(crate) async fn gate_event_appended(
        &self,
        room_id: &RoomId,
        content: &Value,
    ) -> Result<()> {
        if content.as_object().is_some_and(serde_json::Map::is_empty) {
            self.store.remove_gate_room(room_id.as_str()).await?;
        } else {
            self.store
                .set_gate_room(room_id.as_str(), &content.to_string(), self.now_ms())
                .await?;
        }
        Ok(())
    }

    /// The door: lets `user_id` become a member (`action`: join, knock) only when one of their
    /// wallets meets the room's gate. Every decision goes to the audit log.
    pub(crate) async fn enforce_gate(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        action: &str,
    ) -> Result<()> {
        let Some(gate) = self.room_gate(room_id).await? else {
            return Ok(());
        };
        let addresses = match self.gate_addresses(user_id, &gate).await {
            Ok(addresses) => addresses,
            Err(e) => return Err(self.gate_unavailable(room_id, user_id, &e).await),
        };
        if addresses.is_empty() {
            self.audit(
                room_id,
                Some(user_id),
                "refused",
                &BTreeMap::new(),
                &json!({"reason": "no linked wallet"}),
            )
            .await?;
            let message = "This room is token-gated: link a wallet that meets its rule first";
            return Err(refusal(message, &gate, room_id, &[]));
        }
        let verdicts = match self.gate_verdicts(&gate, &addresses).await {
            Ok(verdicts) => verdicts,
            Err(e) => return Err(self.gate_unavailable(room_id, user_id, &e).await),
        };
        if let Some(passing) = verdicts.iter().find(|v| v.pass) {
            self.audit(
                room_id,
                Some(user_id),
                "allowed",
                &passing.blocks,
                &json!({"action": action, "address": passing.address}),
            )
            .await?;
            self.store
                .clear_gate_failure(room_id.as_str(), user_id.as_str())
                .await?;
            return Ok(());
        }
        let blocks = verdicts
            .first()
            .map(|v| v.blocks.clone())
            .unwrap_or_default();
        self.audit(
            room_id,
            Some(user_id),
            "refused",
            &blocks,
            &json!({"action": action, "failing": failing(&verdicts)}),
        )
        .await?;
        let reasons: Vec<String> = failing(&verdicts)
            .iter()
            .map(|l| {
                format!(
                    "{} (needs {}, read {})",
                    l["path"].as_str().unwrap_or(""),
                    l["required"].as_str().unwrap_or(""),
                    l["value"].as_str().unwrap_or("")
                )
            })
            .collect();
        let message = format!(
            "This room is token-gated and none of your wallets meets its rule: {}",
            reasons.join("; ")
        );
        Err(refusal(&message, &gate, room_id, &verdicts))
    }

    async fn gate_unavailable(&self, room_id: &RoomId, user_id: &UserId, e: &ChainError) -> Error {
        let detail = json!({"error": e.to_string()});
        if let Err(audit) = self
            .audit(
                room_id,
                Some(user_id),
                "unavailable",
                &BTreeMap::new(),
                &detail,
            )
            .await
        {
            return audit;
        }
        unavailable(&e.to_string())
    }

    /// The addresses that count as `user_id`'s for `gate`: linked wallets, plus vaults that
    /// delegated to them when the gate includes delegations.
    async fn gate_addresses(
        &self,
        user_id: &UserId,
        gate: &Gate,
    ) -> std::result::Result<Vec<Address>, ChainError> {
        let wallets = self
            .store
            .wallets(user_id)
            .await
            .map_err(|e| ChainError::Unavailable(format!("reading linked wallets: {e}")))?;
        let mut addresses: Vec<Address> = wallets
            .iter()
            .filter_map(|(address, _)| address.parse().ok())
            .collect();
        if gate.include_delegations && !addresses.is_empty() {
            let vaults =
                matrixon_chain::gate::delegated_vaults(&self.chains, &gate.rule, &addresses)
                    .await?;
            addresses.extend(vaults);
        }
        addresses.sort();
        addresses.dedup();
        Ok(addresses)
    }

    /// Verdicts for `addresses`, from the cache where fresh, the rest read in one evaluation.
    pub async fn gate_verdicts(
        &self,
        gate: &Gate,
        addresses: &[Address],
    ) -> std::result::Result<Vec<AddressVerdict>, ChainError> {
        let now = self.now_ms();
        let mut known: Vec<Option<AddressVerdict>> = Vec::with_capacity(addresses.len());
        for address in addresses {
            known.push(self.gate_cache.get(&gate.key, *address, now).await);
        }
        let missing: Vec<Address> = addresses
            .iter()
            .zip(&known)
            .filter(|(_, v)| v.is_none())
            .map(|(a, _)| *a)
            .collect();
        if !missing.is_empty() {
            let fresh = evaluate(
                &self.chains,
                &gate.rule,
                &missing,
                self.config.gate.batch_size,
            )
            .await?;
            let ttl = gate.cache_ttl_ms(self.config.gate.cache_ttl_s);
            let mut fresh = fresh.into_iter();
            for (slot, address) in known.iter_mut().zip(addresses) {
                if slot.is_none()
                    && let Some(verdict) = fresh.next()
                {
                    if ttl > 0 {
                        self.gate_cache
                            .put(&gate.key, *address, &verdict, now, ttl)
                            .await;
                    }
                    *slot = Some(verdict);
                }
            }
        }
        Ok(known.into_iter().flatten().collect())
    }

    /// The dry run: a room's gate or a rule, for an address or a user's wallets.
    pub async fn gate_check(&self, caller: &UserId, request: CheckRequest) -> Result<Value> {
        let gate = match (&request.room_id, &request.rule) {
            (Some(room_id), None) => self
                .room_gate(room_id)
                .await?
                .ok_or_else(|| Error::not_found(format!("{room_id} has no gate")))?,
            (None, Some(rule)) => self
                .parse_gate(&json!({"rule": rule}))?
                .ok_or_else(|| Error::bad_json("An empty rule"))?,
            _ => return Err(Error::bad_json("Give exactly one of room_id and rule")),
        };
        let addresses = match (&request.address, &request.user_id) {
            (Some(address), None) => {
                vec![matrixon_chain::gate::parse_address(address).map_err(Error::invalid_param)?]
            }
            (None, Some(user_id)) => {
                self.ensure_may_inspect(caller, user_id, request.room_id.as_deref())
                    .await?;
                self.gate_addresses(user_id, &gate)
                    .await
                    .map_err(|e| unavailable(&e.to_string()))?
            }
            _ => return Err(Error::bad_json("Give exactly one of address and user_id")),
        };
        let verdicts = self
            .gate_verdicts(&gate, &addresses)
            .await
            .map_err(|e| unavailable(&e.to_string()))?;
        Ok(json!({
            "pass": verdicts.iter().any(|v| v.pass),
            "rule": gate.rule,
            "addresses": verdicts,
        }))
    }

    /// Users may check themselves; checking someone else needs the power to change the
    /// gate of the room named.
    async fn ensure_may_inspect(
        &self,
        caller: &UserId,
        user_id: &UserId,
        room_id: Option<&RoomId>,
    ) -> Result<()> {
        if caller == user_id {
            return Ok(());
        }
        match room_id {
            Some(room_id)
                if self
                    .has_power_for_state(room_id, caller, GATE_EVENT_TYPE)
                    .await? =>
            {
                Ok(())
            }
            _ => Err(Error::forbidden(
                "Only room administrators (with room_id) may check another user's wallets",
            )),
        }
    }

    /// Appends a decision to the audit log.
    async fn audit(
        &self,
        room_id: &RoomId,
        user_id: Option<&UserId>,
        decision: &str,
        blocks: &BTreeMap<String, u64>,
        detail: &Value,
    ) -> Result<()> {
        tracing::info!(%room_id, ?user_id, decision, ?blocks, "gate decision");
        let blocks = serde_json::to_string(blocks).map_err(anyhow::Error::new)?;
        self.store
            .gate_audit(
                self.now_ms(),
                room_id.as_str(),
                user_id.map_or("", |u| u.as_str()),
                decision,
                &blocks,
                &detail.to_string(),
            )
            .await?;
        Ok(())
    }

    /// The audit log for server administrators, newest first.
    pub async fn gate_audit_log(
        &self,
        room_id: Option<&RoomId>,
        from: Option<i64>,
        limit: i64,
    ) -> Result<Value> {
        let rows = self
            .store
            .gate_audit_log(room_id.map(RoomId::as_str), from.unwrap_or(i64::MAX), limit)
            .await?;
        let next = (rows.len() == usize::try_from(limit).unwrap_or(usize::MAX))
            .then(|| rows.last().map(|r| r.id))
            .flatten();
        let entries: Vec<Value> = rows
            .into_iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "ts": r.ts_ms,
                    "room_id": r.room_id,
                    "user_id": r.user_id,
                    "decision": r.decision,
                    "blocks": serde_json::from_str::<Value>(&r.blocks).unwrap_or(Value::Null),
                    "detail": serde_json::from_str::<Value>(&r.detail).unwrap_or(Value::Null),
                })
            })
            .collect();
        let mut body = json!({"entries": entries});
        if let Some(next) = next {
            body["next_from"] = next.into();
        }
        Ok(body)
    }
}

/// The leaves that counted against each address, for error bodies and the audit log.
fn failing(verdicts: &[AddressVerdict]) -> Vec<Value> {
    verdicts
        .iter()
        .flat_map(|v| {
            v.failing().map(|l| {
                json!({"address": v.address, "path": l.path, "value": l.value,
                       "required": l.required, "negated": l.negated})
            })
        })
        .collect()
}

/// 403 `M_FORBIDDEN` with the verdict under `io.matrixon.gate`.
fn refusal(message: &str, gate: &Gate, room_id: &RoomId, verdicts: &[AddressVerdict]) -> Error {
    let mut extra = serde_json::Map::new();
    extra.insert(
        "io.matrixon.gate".to_owned(),
        json!({
            "room_id": room_id,
            "rule": gate.rule,
            "failing": failing(verdicts),
            "addresses": verdicts,
        }),
    );
    Error::Detailed {
        status: StatusCode::FORBIDDEN,
        errcode: "M_FORBIDDEN",
        message: message.to_owned(),
        extra,
    }
}

/// 503 with [`UNAVAILABLE_ERRCODE`]: the chain could not be asked, so the door stays shut.
fn unavailable(why: &str) -> Error {
    Error::Detailed {
        status: StatusCode::SERVICE_UNAVAILABLE,
        errcode: UNAVAILABLE_ERRCODE,
        message: format!(
            "This room is token-gated and its chain cannot be asked right now, so nobody can \
             join until it can; try again later ({why})"
        ),
        extra: serde_json::Map::new(),
    }
}
