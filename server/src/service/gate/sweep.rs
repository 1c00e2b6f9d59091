//! Keeping gates enforced: every gated room's members are re-checked each
//! `recheck_interval_s`, and sooner when a transfer of a gated token involves one of them.
//! Failing members are kicked once their grace period is over; when the chain cannot be
//! asked nobody is removed.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use matrixon_chain::{gate::transfers, siwe::Address};
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{GATE_EVENT_TYPE, Gate, OnFail};
use crate::{
    http::error::Result,
    service::{Services, rooms::MembershipChange},
};

/// Widest block range asked of `eth_getLogs` at once.
const MAX_LOG_RANGE: u64 = 2_000;

/// Runs the re-check sweeps and the transfer-log poll until the server stops.
pub async fn run(
    services: Arc<Services>,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut sweep = tokio::time::interval(Duration::from_millis(
        services.config.gate.sweep_interval_ms,
    ));
    let mut poll = tokio::time::interval(Duration::from_millis(
        services.config.gate.log_poll_interval_ms,
    ));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last block whose logs were read, per chain.
    let mut cursors: HashMap<u64, u64> = HashMap::new();
    loop {
        tokio::select! {
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    return Ok(());
                }
            }
            _ = sweep.tick() => {
                if let Err(e) = services.sweep_due_rooms().await {
                    tracing::warn!(error = %e, "gate re-check sweep failed");
                }
            }
            _ = poll.tick() => {
                if let Err(e) = services.poll_transfers(&mut cursors).await {
                    tracing::warn!(error = %e, "polling gated tokens' transfers failed");
                }
            }
        }
    }
}

impl Services {
    /// Re-checks every gated room that is due and that this instance claims first.
    pub async fn sweep_due_rooms(&self) -> Result<()> {
        let now = self.now_ms();
        for (room, _, seen) in self.store.due_gate_rooms(now).await? {
            let Ok(room_id) = RoomId::parse(&room) else {
                continue;
            };
            // The room's current state is the truth (a redacted gate is no gate).
            let gate = match self.room_gate(&room_id).await {
                Ok(Some(gate)) => gate,
                Ok(None) => {
                    self.store.remove_gate_room(&room).await?;
                    continue;
                }
                Err(_) => {
                    // Not evaluable here (a chain left the configuration): look again later.
                    self.store
                        .claim_gate_room(&room, seen, now + 60_000)
                        .await?;
                    continue;
                }
            };
            let interval_ms =
                i64::try_from(gate.recheck_interval_s.saturating_mul(1000)).unwrap_or(i64::MAX);
            if !self
                .store
                .claim_gate_room(&room, seen, now.saturating_add(interval_ms))
                .await?
            {
                continue; // another instance sweeps it
            }
            if let Err(e) = self.sweep_room(&room_id, &gate).await {
                tracing::warn!(%room_id, error = %e, "re-checking a gated room failed");
            }
        }
        Ok(())
    }

    /// Re-checks the local members of one room; kicks those past their grace period.
    pub async fn sweep_room(&self, room_id: &RoomId, gate: &Gate) -> Result<()> {
        let exempt_level = self.gate_exempt_level(room_id).await?;
        let mut members: Vec<(OwnedUserId, Vec<Address>)> = Vec::new();
        for member in self.store.room_members(room_id.as_str(), "join").await? {
            let Ok(user_id) = UserId::parse(member.as_str()) else {
                continue;
            };
            if user_id.server_name() != self.config.server_name
                || self.power_level(room_id, &user_id).await?.0 >= exempt_level
            {
                continue;
            }
            match self.gate_addresses(&user_id, gate).await {
                Ok(addresses) => members.push((user_id, addresses)),
                Err(e) => return self.sweep_unavailable(room_id, &e.to_string()).await,
            }
        }
        let mut all: Vec<Address> = members.iter().flat_map(|(_, a)| a.clone()).collect();
        all.sort();
        all.dedup();
        let verdicts = match self.gate_verdicts(gate, &all).await {
            Ok(verdicts) => verdicts,
            Err(e) => return self.sweep_unavailable(room_id, &e.to_string()).await,
        };
        let by_address: HashMap<Address, &matrixon_chain::gate::AddressVerdict> =
            all.iter().copied().zip(&verdicts).collect();
        let now = self.now_ms();
        for (user_id, addresses) in &members {
            let mine: Vec<_> = addresses.iter().filter_map(|a| by_address.get(a)).collect();
            if mine.iter().any(|v| v.pass) {
                self.store
                    .clear_gate_failure(room_id.as_str(), user_id.as_str())
                    .await?;
                continue;
            }
            let since = self
                .store
                .gate_failing_since(room_id.as_str(), user_id.as_str(), now)
                .await?;
            let blocks = mine.first().map(|v| v.blocks.clone()).unwrap_or_default();
            let failing: Vec<Value> = mine
                .iter()
                .flat_map(|v| v.failing().map(|l| json!({"address": v.address, "path": l.path, "value": l.value, "required": l.required})))
                .collect();
            if since == now {
                self.audit(
                    room_id,
                    Some(user_id),
                    "failing",
                    &blocks,
                    &json!({"failing": failing}),
                )
                .await?;
            }
            if gate.on_fail == OnFail::None {
                continue;
            }
            let grace_ms = i64::try_from(gate.grace_s.saturating_mul(1000)).unwrap_or(i64::MAX);
            let deadline = since.saturating_add(grace_ms);
            if now < deadline {
                // Come back when the grace period ends rather than a full interval later.
                self.store
                    .make_gate_room_due(room_id.as_str(), deadline)
                    .await?;
                continue;
            }
            self.kick_failing(room_id, user_id, gate, &blocks, failing)
                .await?;
        }
        Ok(())
    }

    async fn kick_failing(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        gate: &Gate,
        blocks: &BTreeMap<String, u64>,
        failing: Vec<Value>,
    ) -> Result<()> {
        let Some(kicker) = self.gate_enforcer(room_id).await? else {
            tracing::warn!(%room_id, "no local member may kick for this room's gate");
            return Ok(());
        };
        let paths: Vec<&str> = failing.iter().filter_map(|f| f["path"].as_str()).collect();
        let reason = if paths.is_empty() {
            "No linked wallet meets this room's token gate any more".to_owned()
        } else {
            format!(
                "No linked wallet meets this room's token gate any more (failing: {})",
                paths.join(", ")
            )
        };
        let kicked = self
            .change_membership(
                room_id,
                &kicker,
                user_id,
                MembershipChange::Leave,
                Some(&reason),
            )
            .await;
        match kicked {
            Ok(_) => {
                self.store
                    .clear_gate_failure(room_id.as_str(), user_id.as_str())
                    .await?;
                let rule = serde_json::to_value(&gate.rule).unwrap_or_default();
                self.audit(
                    room_id,
                    Some(user_id),
                    "kicked",
                    blocks,
                    &json!({"by": kicker, "reason": reason, "failing": failing, "rule": rule}),
                )
                .await
            }
            Err(e) => {
                tracing::warn!(%room_id, %user_id, error = %e, "kicking a member who fails the gate");
                Ok(())
            }
        }
    }

    /// Members at or above this power level may change the gate: they are not re-checked.
    async fn gate_exempt_level(&self, room_id: &RoomId) -> Result<i64> {
        let levels = self
            .state_content(room_id, "m.room.power_levels", "")
            .await?
            .unwrap_or_default();
        let level = |v: Option<&Value>| v.and_then(Value::as_i64);
        Ok(
            level(levels.get("events").and_then(|e| e.get(GATE_EVENT_TYPE)))
                .or_else(|| level(levels.get("state_default")))
                .unwrap_or(50),
        )
    }

    /// Who kicks in the gate's name: whoever set the gate, else the most powerful local member.
    async fn gate_enforcer(&self, room_id: &RoomId) -> Result<Option<OwnedUserId>> {
        let mut best: Option<(i64, OwnedUserId)> = None;
        let setter = self
            .store
            .current_state_event(room_id.as_str(), GATE_EVENT_TYPE, "")
            .await?
            .and_then(|e| crate::service::rooms::Pdu::from_stored(&e).ok())
            .map(|pdu| pdu.sender);
        for member in self.store.room_members(room_id.as_str(), "join").await? {
            let Ok(user_id) = UserId::parse(member.as_str()) else {
                continue;
            };
            if user_id.server_name() != self.config.server_name {
                continue;
            }
            if setter.as_deref() == Some(&*user_id) {
                return Ok(Some(user_id));
            }
            let level = self.power_level(room_id, &user_id).await?.0;
            if best.as_ref().is_none_or(|(l, _)| level > *l) {
                best = Some((level, user_id));
            }
        }
        Ok(best.map(|(_, user)| user))
    }

    async fn sweep_unavailable(&self, room_id: &RoomId, why: &str) -> Result<()> {
        tracing::warn!(%room_id, why, "gate re-check skipped: the chain cannot be asked");
        self.audit(
            room_id,
            None,
            "unavailable",
            &BTreeMap::new(),
            &json!({"error": why, "during": "re-check"}),
        )
        .await
    }

    /// Reads new transfer logs of every gated token; drops the verdicts of the addresses
    /// involved and makes the rooms where they are members due now.
    pub async fn poll_transfers(&self, cursors: &mut HashMap<u64, u64>) -> Result<()> {
        let mut watched: BTreeMap<u64, BTreeMap<Address, Vec<String>>> = BTreeMap::new();
        for (room, content) in self.store.gate_rooms().await? {
            let content: Value = serde_json::from_str(&content).unwrap_or_default();
            let Ok(Some(gate)) = self.parse_gate(&content) else {
                continue;
            };
            for (chain, contract) in gate.rule.token_contracts() {
                watched
                    .entry(chain)
                    .or_default()
                    .entry(contract)
                    .or_default()
                    .push(room.clone());
            }
        }
        for (chain_id, contracts) in watched {
            let Ok(chain) = self.chains.get(chain_id) else {
                continue;
            };
            let latest = match chain.pin().await {
                Ok(latest) => latest,
                Err(e) => {
                    tracing::warn!(chain = %chain.caip2, error = %e, "cannot read the latest block");
                    continue;
                }
            };
            let from = cursors.get(&chain_id).map_or(latest, |seen| seen + 1);
            let to = latest.min(from.saturating_add(MAX_LOG_RANGE - 1));
            let addresses: Vec<Address> = contracts.keys().copied().collect();
            let found = match transfers(chain, &addresses, from, to).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(chain = %chain.caip2, error = %e, "eth_getLogs failed");
                    continue;
                }
            };
            if from <= to {
                cursors.insert(chain_id, to);
            }
            for transfer in found {
                let rooms = contracts
                    .get(&transfer.contract)
                    .cloned()
                    .unwrap_or_default();
                for party in transfer.parties {
                    self.gate_cache.invalidate(party).await;
                    let Some(user) = self.store.wallet_owner(&format!("{party:#x}")).await? else {
                        continue;
                    };
                    for room in &rooms {
                        if self
                            .store
                            .membership(room, user.as_str())
                            .await?
                            .map(|m| m.0)
                            .as_deref()
                            == Some("join")
                        {
                            tracing::info!(%room, %user, "a gated token moved: re-checking now");
                            self.store.make_gate_room_due(room, self.now_ms()).await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
