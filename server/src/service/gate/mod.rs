//! Token-gated rooms: the `io.matrixon.room.gate` state event, the check at the door (join,
//! knock, invite acceptance), the dry-run check, and the audit log. Re-verification of
//! members lives in `sweep`, cached verdicts in `cache`.

mod cache;
mod page;
mod payments;
mod roles;
mod sweep;

use std::collections::BTreeMap;

use http::StatusCode;
use matrixon_chain::{
    gate::{AddressVerdict, Rule, Scope, evaluate_with_payments, judge_together},
    rpc::ChainError,
    siwe::Address,
};
use ruma::{RoomId, UserId, events::TimelineEventType};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;

pub use cache::VerdictCache;
pub use payments::{PayRequest, PaymentChecks};
pub use roles::{ROLES_EVENT_TYPE, RoleJoins, Roles, roles_bot};
pub use sweep::run as run_background;

use super::{Limit, Services, rooms::EventDraft};
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

pub(super) fn default_interval() -> u64 {
    3_600
}

/// What the door made of a membership event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Door {
    /// Not someone joining or knocking.
    NotEntry,
    /// A joined member's profile update: to be appended only while they are still joined.
    ProfileUpdate,
    /// An entry allowed under the gate event with this id (`None`: the room had none).
    Entry {
        /// The gate event the decision was made against.
        gate_event: Option<String>,
    },
}

/// The addresses that count as one user's for a gate.
#[derive(Clone, Debug, Default)]
pub struct Holdings {
    /// Own wallets, and delegating vaults with their scope.
    pub subjects: Vec<(Address, Scope)>,
    /// Some wallet's delegations could not be read.
    pub unreadable: bool,
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
        let (rule, key) = self
            .compile_rule(&parsed.rule)
            .map_err(|(path, message)| bad(&join_path("rule", &path), &message))?;
        check_interval(parsed.recheck_interval_s).map_err(|m| bad("recheck_interval_s", &m))?;
        if parsed.grace_s > MAX_INTERVAL_S {
            return Err(bad(
                "grace_s",
                &format!("must be at most {MAX_INTERVAL_S} seconds"),
            ));
        }
        Ok(Some(Gate {
            rule,
            recheck_interval_s: parsed.recheck_interval_s,
            on_fail: parsed.on_fail,
            include_delegations: parsed.include_delegations,
            grace_s: parsed.grace_s,
            key,
        }))
    }

    /// Parses and validates a rule, with the digest its cached verdicts live under; errors
    /// are the path within the rule (empty for the rule itself) and what is wrong.
    pub(crate) fn compile_rule(
        &self,
        rule: &Value,
    ) -> std::result::Result<(Rule, String), (String, String)> {
        let configured = |id: u64| self.chains.get(id).is_ok();
        let rule = Rule::parse(rule, &configured).map_err(|e| (e.path, e.message))?;
        let canonical = serde_json::to_string(&rule).map_err(|e| (String::new(), e.to_string()))?;
        let key = hex::encode(&sha2::Sha256::digest(canonical.as_bytes())[..16]);
        Ok((rule, key))
    }

    /// The room's current gate. A stored gate this server can no longer evaluate (its
    /// chain was removed from the configuration) reads as "cannot be asked".
    pub async fn room_gate(&self, room_id: &RoomId) -> Result<Option<Gate>> {
        Ok(self.room_gate_event(room_id).await?.1)
    }

    /// The room's current gate event's id (`None` when it never had one) and its gate.
    async fn room_gate_event(&self, room_id: &RoomId) -> Result<(Option<String>, Option<Gate>)> {
        let Some(stored) = self
            .store
            .current_state_event(room_id.as_str(), GATE_EVENT_TYPE, "")
            .await?
        else {
            return Ok((None, None));
        };
        let pdu = super::rooms::Pdu::from_stored(&stored).map_err(Error::Internal)?;
        let gate = self
            .parse_gate(&Value::Object(pdu.content_object()))
            .map_err(|e| {
                tracing::warn!(%room_id, error = %e, "a stored gate cannot be evaluated here");
                unavailable()
            })?;
        Ok((Some(stored.event_id), gate))
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

    /// After a redaction in the room: forgets its gate, or its roles, when that event was
    /// the one redacted (roles gone leave the levels as they were).
    pub(crate) async fn gate_redacted(&self, room_id: &RoomId) -> Result<()> {
        let empty = |c: Option<Value>| {
            c.is_none_or(|c| c.as_object().is_none_or(serde_json::Map::is_empty))
        };
        if empty(self.state_content(room_id, GATE_EVENT_TYPE, "").await?) {
            self.store.remove_gate_room(room_id.as_str()).await?;
        }
        if empty(self.state_content(room_id, ROLES_EVENT_TYPE, "").await?) {
            self.store.remove_role_room(room_id.as_str()).await?;
        }
        Ok(())
    }

    /// Every way of becoming a member goes through here (joins by id or alias, accepted
    /// invites, restricted joins, knocks, raw `m.room.member` state sends): a user who is not
    /// joined yet and asks to join or knock meets the gate, after the authorization rules.
    /// The chain is asked before the room is locked; the caller appends only while the
    /// room's gate event is still the one decided on.
    pub(crate) async fn gate_membership(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: &EventDraft,
    ) -> Result<Door> {
        if draft.kind != TimelineEventType::RoomMember
            || draft.state_key.as_deref() != Some(sender.as_str())
        {
            return Ok(Door::NotEntry);
        }
        let action = match draft.content.get("membership").and_then(Value::as_str) {
            Some("join") => "join",
            Some("knock") => "knock",
            _ => return Ok(Door::NotEntry),
        };
        if action == "join" && self.membership(room_id, sender).await?.as_deref() == Some("join") {
            return Ok(Door::ProfileUpdate);
        }
        let (gate_event, gate) = self.room_gate_event(room_id).await?;
        let Some(gate) = gate else {
            return Ok(Door::Entry { gate_event });
        };
        // The roles bot holds no wallet; only the server acts as it (its name is reserved).
        if *sender == *roles_bot(room_id, &self.config.server_name)? {
            return Ok(Door::Entry { gate_event });
        }
        let room = self
            .store
            .room(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        self.prepare(room_id, &room, sender, draft)
            .await?
            .authorize()?;
        self.enforce_gate(room_id, sender, &gate, action).await?;
        Ok(Door::Entry { gate_event })
    }

    /// The door: lets `user_id` become a member (`action`: join, knock) only when one of their
    /// wallets (or vaults delegating to them) meets the room's gate. Called only for changes
    /// the authorization rules allow, so refusals reveal the rule only to people who could
    /// otherwise have joined. Every decision goes to the audit log.
    pub(crate) async fn enforce_gate(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        gate: &Gate,
        action: &str,
    ) -> Result<()> {
        let holdings = match self.gate_holdings(&[user_id.to_owned()], gate).await {
            Ok(mut holdings) => holdings.pop().unwrap_or_default(),
            Err(e) => {
                return Err(self.gate_unavailable(room_id, user_id, &e).await);
            }
        };
        if holdings.subjects.is_empty() && !holdings.unreadable {
            let detail = json!({"action": action, "reason": "no linked wallet"});
            self.audit(room_id, Some(user_id), "refused", &BTreeMap::new(), &detail)
                .await?;
            let message = "This room is token-gated: link a wallet that meets its rule first";
            return Err(refusal(message, gate, room_id, &[]));
        }
        let mut verdicts = match self.gate_verdicts(gate, &holdings.subjects).await {
            Ok(verdicts) => verdicts,
            Err(e) => {
                return Err(self.gate_unavailable(room_id, user_id, &e).await);
            }
        };
        judge_together(&gate.rule, &mut verdicts);
        if let Some(passing) = verdicts.iter().find(|v| v.pass) {
            let detail =
                json!({"action": action, "address": passing.address, "scope": passing.scope});
            self.audit(room_id, Some(user_id), "allowed", &passing.blocks, &detail)
                .await?;
            self.store
                .clear_gate_failure(room_id.as_str(), user_id.as_str())
                .await?;
            // Let in on a payment: the room is re-checked when it lapses.
            let passing: Vec<&AddressVerdict> = verdicts.iter().filter(|v| v.pass).collect();
            if let Some(at) = sweep::lapse(&passing) {
                self.store.make_gate_room_due(room_id.as_str(), at).await?;
            }
            return Ok(());
        }
        if holdings.unreadable || verdicts.iter().any(|v| v.unreadable) {
            let why = "a leaf of the rule could not be read for one of your wallets";
            return Err(self.gate_unavailable(room_id, user_id, &why).await);
        }
        let blocks = verdicts
            .first()
            .map(|v| v.blocks.clone())
            .unwrap_or_default();
        let failing = failing(&verdicts);
        let detail = json!({"action": action, "failing": failing});
        self.audit(room_id, Some(user_id), "refused", &blocks, &detail)
            .await?;
        let reasons: Vec<String> = failing
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
        Err(refusal(&message, gate, room_id, &verdicts))
    }

    /// Audits the full cause (provider URLs included, for administrators only) and answers
    /// the client without it: provider URLs often carry API keys.
    async fn gate_unavailable(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        cause: &(dyn std::fmt::Display + Sync),
    ) -> Error {
        let detail = json!({"error": cause.to_string()});
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
        unavailable()
    }

    /// What counts as each user's for `gate`: linked wallets, plus (when the gate includes
    /// delegations) the vaults that delegated to them, read for everyone in one batch.
    pub(crate) async fn gate_holdings(
        &self,
        users: &[ruma::OwnedUserId],
        gate: &Gate,
    ) -> std::result::Result<Vec<Holdings>, ChainError> {
        let mut out = Vec::with_capacity(users.len());
        let mut all_wallets = Vec::new();
        for user in users {
            let wallets = self
                .store
                .wallets(user)
                .await
                .map_err(|e| ChainError::Unavailable(format!("reading linked wallets: {e}")))?;
            let mut own: Vec<Address> = wallets
                .iter()
                .filter_map(|(address, _)| address.parse().ok())
                .collect();
            own.sort();
            own.dedup();
            all_wallets.extend(own.iter().copied());
            out.push(Holdings {
                subjects: own.into_iter().map(|a| (a, Scope::Own)).collect(),
                unreadable: false,
            });
        }
        if gate.include_delegations && !all_wallets.is_empty() {
            let vaults = matrixon_chain::gate::delegated_vaults(
                &self.chains,
                &gate.rule,
                &all_wallets,
                self.config.gate.batch_size,
            )
            .await?;
            let by_wallet: std::collections::HashMap<Address, Option<Vec<(Address, Scope)>>> =
                all_wallets.iter().copied().zip(vaults).collect();
            for (user, holdings) in users.iter().zip(&mut out) {
                let own: Vec<Address> = holdings.subjects.iter().map(|(a, _)| *a).collect();
                let mut vaults = Vec::new();
                for wallet in own {
                    match by_wallet.get(&wallet).cloned().flatten() {
                        Some(found) => vaults.extend(found),
                        None => holdings.unreadable = true,
                    }
                }
                // Remembered so that the vault's transfers and delegation changes re-check
                // this user (nothing else links the vault to them).
                let mut seen: Vec<String> = vaults.iter().map(|(v, _)| format!("{v:#x}")).collect();
                seen.sort();
                seen.dedup();
                if !seen.is_empty() {
                    self.store
                        .remember_gate_vaults(user.as_str(), &seen, self.now_ms())
                        .await
                        .map_err(|e| ChainError::Unavailable(format!("recording vaults: {e}")))?;
                }
                holdings.subjects.extend(vaults);
                holdings.subjects.sort();
                holdings.subjects.dedup();
            }
        }
        Ok(out)
    }

    /// A wallet was linked to or unlinked from `user_id`, like a transfer of everything it
    /// holds: its cached verdicts go and every gated room the user is in is re-checked now
    /// (an unlinked wallet no longer seats them; a linked one may carry a banned badge).
    pub(crate) async fn wallet_holdings_changed(
        &self,
        user_id: &UserId,
        address: &str,
    ) -> Result<()> {
        let now = self.now_ms();
        if let Ok(address) = address.parse::<Address>() {
            self.gate_cache.invalidate(address, now).await;
        }
        for (room, membership, _) in self.store.user_rooms(user_id.as_str()).await? {
            if membership == "join" {
                self.store.make_gate_room_due(&room, now).await?;
            }
        }
        Ok(())
    }

    /// Verdicts for `subjects`, from the cache where fresh, the rest read in one evaluation.
    pub async fn gate_verdicts(
        &self,
        gate: &Gate,
        subjects: &[(Address, Scope)],
    ) -> std::result::Result<Vec<AddressVerdict>, ChainError> {
        let now = self.now_ms();
        let key = |scope: &Scope| match scope {
            Scope::Own => gate.key.clone(),
            Scope::Delegated { chain, contract } => format!(
                "{}:d{chain}:{}",
                gate.key,
                contract.map_or_else(|| "all".to_owned(), |c| format!("{c:#x}"))
            ),
        };
        // Freshness is this gate's to judge: a verdict another reader kept for longer (a dry
        // run, a gate re-checked less often) is older than this one accepts.
        let ttl = gate.cache_ttl_ms(self.config.gate.cache_ttl_s);
        let mut known: Vec<Option<AddressVerdict>> = Vec::with_capacity(subjects.len());
        for (address, scope) in subjects {
            // A verdict resting on a payment is not reused past the payment's period.
            known.push(if ttl > 0 {
                self.gate_cache
                    .get(&key(scope), *address, now, ttl)
                    .await
                    .filter(|v| {
                        v.expires_at
                            .is_none_or(|e| i64::try_from(e).is_ok_and(|e| e > now))
                    })
            } else {
                None
            });
        }
        let missing: Vec<(Address, Scope)> = subjects
            .iter()
            .zip(&known)
            .filter(|(_, v)| v.is_none())
            .map(|(s, _)| *s)
            .collect();
        if !missing.is_empty() {
            let ledger = self.payment_ledger(&gate.rule, &missing).await?;
            let fresh = evaluate_with_payments(
                &self.chains,
                &gate.rule,
                &missing,
                self.config.gate.batch_size,
                &ledger,
            )
            .await?;
            let mut fresh = fresh.into_iter();
            for (slot, (address, scope)) in known.iter_mut().zip(subjects) {
                if slot.is_none()
                    && let Some(verdict) = fresh.next()
                {
                    if ttl > 0 && !verdict.unreadable {
                        self.gate_cache
                            .put(&key(scope), *address, &verdict, now, ttl)
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
            (Some(room_id), None) => {
                self.ensure_may_see_gate(caller, room_id).await?;
                self.room_gate(room_id)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("{room_id} has no gate")))?
            }
            (None, Some(rule)) => self
                .parse_gate(&json!({"rule": rule}))?
                .ok_or_else(|| Error::bad_json("An empty rule"))?,
            _ => return Err(Error::bad_json("Give exactly one of room_id and rule")),
        };
        let subjects = match (&request.address, &request.user_id) {
            (Some(address), None) => vec![(
                matrixon_chain::gate::parse_address(address).map_err(Error::invalid_param)?,
                Scope::Own,
            )],
            (None, Some(user_id)) => {
                self.ensure_may_inspect(caller, user_id, request.room_id.as_deref())
                    .await?;
                let holdings = self
                    .gate_holdings(std::slice::from_ref(user_id), &gate)
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "gate check: the chain could not be asked");
                        unavailable()
                    })?;
                holdings.into_iter().flat_map(|h| h.subjects).collect()
            }
            _ => return Err(Error::bad_json("Give exactly one of address and user_id")),
        };
        self.charge_reads(caller, &gate, subjects.len())?;
        let mut verdicts = self.gate_verdicts(&gate, &subjects).await.map_err(|e| {
            tracing::warn!(error = %e, "gate check: the chain could not be asked");
            unavailable()
        })?;
        judge_together(&gate.rule, &mut verdicts);
        Ok(json!({
            "pass": verdicts.iter().any(|v| v.pass),
            "rule": gate.rule,
            "addresses": verdicts,
        }))
    }

    /// Charges a dry run's chain reads to the caller's budget: a rule may cost thousands of
    /// reads per request, so requests alone are no measure. 429 when the budget is spent,
    /// 400 when one check needs more than the whole budget.
    fn charge_reads(&self, caller: &UserId, gate: &Gate, addresses: usize) -> Result<()> {
        let delegations = if gate.include_delegations {
            gate.rule.chains().len()
        } else {
            0
        };
        let reads = (gate.rule.reads_per_address() + delegations).saturating_mul(addresses);
        self.charge_reads_of(caller.as_str(), reads)
    }

    /// Charges `reads` chain reads to the bucket `key` (a user, or `ip:` and an address).
    fn charge_reads_of(&self, key: &str, reads: usize) -> Result<()> {
        let capacity = self.limiter.capacity(Limit::ChainReadsPerUser);
        if reads > capacity as usize {
            return Err(Error::invalid_param(format!(
                "This check needs {reads} chain reads; one check may spend at most {capacity} \
                 (rate_limits.chain_reads_per_user.burst)"
            )));
        }
        self.limiter
            .take(
                Limit::ChainReadsPerUser,
                key,
                u32::try_from(reads).unwrap_or(u32::MAX),
                self.now_ms(),
            )
            .map_err(Error::limit_exceeded)
    }

    /// A room's rule is for those who could join or are in it: members, invited and knocking
    /// users, and anyone when the room is public or takes knocks.
    async fn ensure_may_see_gate(&self, caller: &UserId, room_id: &RoomId) -> Result<()> {
        if matches!(
            self.membership(room_id, caller).await?.as_deref(),
            Some("join" | "invite" | "knock")
        ) {
            return Ok(());
        }
        let rule = self
            .state_content(room_id, "m.room.join_rules", "")
            .await?
            .and_then(|c| {
                c.get("join_rule")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        match rule.as_deref() {
            Some("public" | "knock") => Ok(()),
            _ => Err(Error::forbidden(format!(
                "{room_id}'s gate is visible to its members and to those who may join it"
            ))),
        }
    }

    /// Users may check themselves. Checking someone else needs a room where the caller is
    /// joined with the power to change the gate, and the other user is joined, invited or
    /// knocking.
    async fn ensure_may_inspect(
        &self,
        caller: &UserId,
        user_id: &UserId,
        room_id: Option<&RoomId>,
    ) -> Result<()> {
        if caller == user_id {
            return Ok(());
        }
        let refused = || {
            Error::forbidden(
                "Only a room's administrators may check another user, of that room, with room_id",
            )
        };
        let Some(room_id) = room_id else {
            return Err(refused());
        };
        let caller_in = self.membership(room_id, caller).await?.as_deref() == Some("join");
        let target_in = matches!(
            self.membership(room_id, user_id).await?.as_deref(),
            Some("join" | "invite" | "knock")
        );
        if caller_in
            && target_in
            && self
                .has_power_for_state(room_id, caller, GATE_EVENT_TYPE)
                .await?
        {
            Ok(())
        } else {
            Err(refused())
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

/// A re-check interval within bounds, or what is wrong with it.
pub(super) fn check_interval(seconds: u64) -> std::result::Result<(), String> {
    if (1..=MAX_INTERVAL_S).contains(&seconds) {
        Ok(())
    } else {
        Err(format!("must be between 1 and {MAX_INTERVAL_S} seconds"))
    }
}

/// `outer.inner`, or `outer` when `inner` is empty.
pub(super) fn join_path(outer: &str, inner: &str) -> String {
    if inner.is_empty() {
        outer.to_owned()
    } else {
        format!("{outer}.{inner}")
    }
}

/// The leaves that counted against each address, for error bodies and the audit log.
fn failing(verdicts: &[AddressVerdict]) -> Vec<Value> {
    failing_of(&verdicts.iter().collect::<Vec<_>>())
}

fn failing_of(verdicts: &[&AddressVerdict]) -> Vec<Value> {
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

/// 503 with [`UNAVAILABLE_ERRCODE`]: the chain could not be asked (or a deciding leaf could
/// not be read), so the door stays shut. The cause is in the audit log and the server log.
fn unavailable() -> Error {
    Error::Detailed {
        status: StatusCode::SERVICE_UNAVAILABLE,
        errcode: UNAVAILABLE_ERRCODE,
        message: "This room is token-gated and its chain cannot be asked right now (or could \
                  not answer for one of your wallets), so nobody can join until it can; try \
                  again later"
            .to_owned(),
        extra: serde_json::Map::new(),
    }
}
