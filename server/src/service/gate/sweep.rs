//! Keeping gates enforced: every gated room's members are re-checked each
//! `recheck_interval_s`, and sooner when a transfer of a gated token involves one of them.
//! Failing members are kicked once their grace period is over; when the chain cannot be
//! asked nobody is removed.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use matrixon_chain::{
    gate::{AddressVerdict, Scope, delegation_changes, judge_together, transfers},
    siwe::Address,
};
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{GATE_EVENT_TYPE, Gate, OnFail, failing_of, roles_bot};
use crate::{http::error::Result, service::Services};

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
    // Each chain is asked at start how its batches are read, so that the log says what each
    // chain lacks or that it could not be asked before anyone's check needs it.
    for chain in services.chains.iter() {
        let chain = chain.clone();
        tokio::spawn(async move {
            match chain.multicall_mode().await {
                Ok(matrixon_chain::rpc::MulticallMode::Deployed(at)) => {
                    tracing::info!(chain = %chain.name, %at, "chain reads go through Multicall3");
                }
                Ok(matrixon_chain::rpc::MulticallMode::Deployless) => tracing::info!(
                    chain = %chain.name,
                    "the chain has no Multicall3 where it was looked for: reads go through a \
                     deployless multicall (set chains.<id>.multicall if it lives elsewhere)"
                ),
                Err(e) => tracing::warn!(
                    chain = %chain.name,
                    error = %e,
                    "no provider of the chain answered at start: gate checks on it answer 503 \
                     until one does"
                ),
            }
        });
    }
    // Per chain: the last block whose logs were read, and the span asked at once.
    let mut cursors: HashMap<u64, (u64, u64)> = HashMap::new();
    loop {
        tokio::select! {
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    return Ok(());
                }
            }
            _ = sweep.tick() => {
                if let Err(e) = services.apply_roles_to_joins().await {
                    tracing::warn!(error = %e, "applying roles to new members failed");
                }
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

/// When a user's passing verdicts all lapse (their payments' periods end): `None` when one of
/// them rests on nothing that lapses.
pub(super) fn lapse(passing: &[&AddressVerdict]) -> Option<i64> {
    let mut latest = 0;
    for verdict in passing.iter().filter(|v| v.pass) {
        latest = latest.max(i64::try_from(verdict.expires_at?).unwrap_or(i64::MAX));
    }
    (latest > 0).then_some(latest)
}

/// How long one instance may hold a room it sweeps before another may take it over.
const SWEEP_LEASE_MS: i64 = 300_000;
/// How soon a re-check that could not ask its chain is tried again.
const UNAVAILABLE_RETRY_MS: i64 = 60_000;

/// How a room's re-check ended.
#[derive(Debug, PartialEq, Eq)]
pub enum SweepOutcome {
    /// Every local member was judged.
    Done,
    /// The chain could not be asked: nobody was judged.
    Unavailable,
}

impl Services {
    /// Re-checks every gated room that is due and that this instance claims first.
    pub async fn sweep_due_rooms(&self) -> Result<()> {
        let now = self.now_ms();
        for (room, seen) in self.store.due_gate_rooms(now).await? {
            let Ok(room_id) = RoomId::parse(&room) else {
                continue;
            };
            // The room's current state is the truth (a redacted gate is no gate). Content
            // not evaluable here (a chain left the configuration) is looked at again later.
            let (gate, roles) = match (
                self.room_gate(&room_id).await,
                self.room_roles(&room_id).await,
            ) {
                (Ok(None), Ok(None)) => {
                    self.store.remove_gate_room(&room).await?;
                    self.store.remove_role_room(&room).await?;
                    continue;
                }
                (Ok(gate), Ok(roles)) => (gate, roles),
                _ => {
                    let later = now.saturating_add(UNAVAILABLE_RETRY_MS);
                    self.store
                        .claim_gate_room(&room, seen, later, now, 0)
                        .await?;
                    continue;
                }
            };
            let interval_s = gate
                .iter()
                .map(|g| g.recheck_interval_s)
                .chain(roles.iter().map(|(r, _)| r.recheck_interval_s))
                .min()
                .unwrap_or(3_600);
            let interval_ms = i64::try_from(interval_s.saturating_mul(1000)).unwrap_or(i64::MAX);
            let next = now.saturating_add(interval_ms);
            let lease = now.saturating_add(SWEEP_LEASE_MS);
            if !self
                .store
                .claim_gate_room(&room, seen, next, now, lease)
                .await?
            {
                continue; // another instance sweeps it
            }
            let mut outcome = Ok(SweepOutcome::Done);
            if let Some(gate) = &gate {
                outcome = self.sweep_room(&room_id, gate).await;
            }
            if let Some((roles, setter)) = &roles
                && matches!(outcome, Ok(SweepOutcome::Done))
            {
                outcome = self.sync_roles(&room_id, roles, setter, None).await;
            }
            let retry = match outcome {
                Ok(SweepOutcome::Done) => None,
                Ok(SweepOutcome::Unavailable) => {
                    Some(now.saturating_add(UNAVAILABLE_RETRY_MS.min(interval_ms)))
                }
                Err(e) => {
                    tracing::warn!(%room_id, error = %e, "re-checking a gated room failed");
                    Some(now.saturating_add(UNAVAILABLE_RETRY_MS.min(interval_ms)))
                }
            };
            self.store.release_gate_room(&room, retry).await?;
        }
        Ok(())
    }

    /// Re-checks the local members of one room; kicks those past their grace period. Members
    /// who could change the gate are not re-checked; members whose verdict could not be read
    /// are left as they are.
    pub async fn sweep_room(&self, room_id: &RoomId, gate: &Gate) -> Result<SweepOutcome> {
        let mut members: Vec<OwnedUserId> = Vec::new();
        let bot = roles_bot(room_id, &self.config.server_name)?;
        for member in self.store.room_members(room_id.as_str(), "join").await? {
            let Ok(user_id) = UserId::parse(member.as_str()) else {
                continue;
            };
            if user_id.server_name() != self.config.server_name
                || user_id == bot
                || self
                    .has_power_for_state(room_id, &user_id, GATE_EVENT_TYPE)
                    .await?
            {
                continue;
            }
            members.push(user_id);
        }
        let holdings = match self.gate_holdings(&members, gate).await {
            Ok(holdings) => holdings,
            Err(e) => return self.sweep_unavailable(room_id, &e.to_string()).await,
        };
        let mut all: Vec<(Address, Scope)> =
            holdings.iter().flat_map(|h| h.subjects.clone()).collect();
        all.sort();
        all.dedup();
        let verdicts = match self.gate_verdicts(gate, &all).await {
            Ok(verdicts) => verdicts,
            Err(e) => return self.sweep_unavailable(room_id, &e.to_string()).await,
        };
        let by_subject: HashMap<(Address, Scope), &AddressVerdict> =
            all.iter().copied().zip(&verdicts).collect();
        let now = self.now_ms();
        let mut lapses: Option<i64> = None;
        for (user_id, holdings) in members.iter().zip(&holdings) {
            let mut mine: Vec<AddressVerdict> = holdings
                .subjects
                .iter()
                .filter_map(|s| by_subject.get(s).map(|v| (*v).clone()))
                .collect();
            judge_together(&gate.rule, &mut mine);
            let mine: Vec<&AddressVerdict> = mine.iter().collect();
            if mine.iter().any(|v| v.pass) {
                self.store
                    .clear_gate_failure(room_id.as_str(), user_id.as_str())
                    .await?;
                if let Some(at) = lapse(&mine) {
                    lapses = Some(lapses.map_or(at, |l| l.min(at)));
                }
                continue;
            }
            // A read that failed is no "no": the member stays. (Delegations that could not be
            // read are not waited for: anyone can flood a wallet with delegations, so the
            // member is judged on what could be read.)
            if mine.iter().any(|v| v.unreadable) {
                tracing::info!(%room_id, %user_id, "gate verdict unreadable: member left as is");
                continue;
            }
            let since = self
                .store
                .gate_failing_since(room_id.as_str(), user_id.as_str(), now)
                .await?;
            let blocks = mine.first().map(|v| v.blocks.clone()).unwrap_or_default();
            let failing = failing_of(&mine);
            if since == now {
                let detail = json!({"failing": failing});
                self.audit(room_id, Some(user_id), "failing", &blocks, &detail)
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
        // Come back when the first payment a member is let in on lapses.
        if let Some(at) = lapses {
            self.store.make_gate_room_due(room_id.as_str(), at).await?;
        }
        Ok(SweepOutcome::Done)
    }

    async fn kick_failing(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        gate: &Gate,
        blocks: &BTreeMap<String, u64>,
        failing: Vec<Value>,
    ) -> Result<()> {
        // The member may have left or been banned while the chain was asked.
        if self.membership(room_id, user_id).await?.as_deref() != Some("join") {
            return Ok(());
        }
        let Some(kicker) = self.gate_enforcer(room_id, user_id).await? else {
            tracing::warn!(%room_id, %user_id, "no local member may kick for this room's gate");
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
            .kick_if_joined(room_id, &kicker, user_id, &reason)
            .await;
        match kicked {
            Ok(_) => {
                self.store
                    .clear_gate_failure(room_id.as_str(), user_id.as_str())
                    .await?;
                let rule = serde_json::to_value(&gate.rule).unwrap_or_default();
                let detail =
                    json!({"by": kicker, "reason": reason, "failing": failing, "rule": rule});
                self.audit(room_id, Some(user_id), "kicked", blocks, &detail)
                    .await
            }
            Err(e) => {
                tracing::warn!(%room_id, %user_id, error = %e, "kicking a member who fails the gate");
                Ok(())
            }
        }
    }

    /// Who kicks `target` in the gate's name: whoever set the gate when they still may, else
    /// the most powerful local member who may.
    async fn gate_enforcer(
        &self,
        room_id: &RoomId,
        target: &UserId,
    ) -> Result<Option<OwnedUserId>> {
        let (target_level, levels) = self.power_level(room_id, target).await?;
        let kick_level = crate::service::rooms::level(levels.get("kick")).unwrap_or(50);
        let setter = self
            .store
            .current_state_event(room_id.as_str(), GATE_EVENT_TYPE, "")
            .await?
            .and_then(|e| crate::service::rooms::Pdu::from_stored(&e).ok())
            .map(|pdu| pdu.sender);
        let mut best: Option<(bool, i64, OwnedUserId)> = None;
        for member in self.store.room_members(room_id.as_str(), "join").await? {
            let Ok(user_id) = UserId::parse(member.as_str()) else {
                continue;
            };
            if user_id.server_name() != self.config.server_name {
                continue;
            }
            let level = self.power_level(room_id, &user_id).await?.0;
            if level < kick_level || level <= target_level {
                continue;
            }
            let is_setter = setter.as_deref() == Some(&*user_id);
            if best
                .as_ref()
                .is_none_or(|(s, l, _)| (is_setter, level) > (*s, *l))
            {
                best = Some((is_setter, level, user_id));
            }
        }
        Ok(best.map(|(_, _, user)| user))
    }

    async fn sweep_unavailable(&self, room_id: &RoomId, why: &str) -> Result<SweepOutcome> {
        tracing::warn!(%room_id, why, "gate re-check skipped: the chain cannot be asked");
        let detail = json!({"error": why, "during": "re-check"});
        self.audit(room_id, None, "unavailable", &BTreeMap::new(), &detail)
            .await?;
        Ok(SweepOutcome::Unavailable)
    }

    /// Keeps the head of every chain a gate reads fresh (checks pin to it), then reads new
    /// transfer logs of every gated token, and the delegation registry's logs where a gate
    /// counts delegations: the addresses involved lose their cached verdicts, and rooms
    /// where their owner — or a member a vault involved delegates to — is a member are
    /// re-checked now. `cursors` holds, per chain, the last block read and the block span
    /// asked at once (halved when a provider refuses a range, grown back after).
    pub async fn poll_transfers(&self, cursors: &mut HashMap<u64, (u64, u64)>) -> Result<()> {
        let mut read: BTreeMap<u64, BTreeMap<Address, Vec<String>>> = BTreeMap::new();
        let mut delegating: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut paid: BTreeMap<u64, Vec<matrixon_chain::gate::Paid>> = BTreeMap::new();
        for (room, gate, roles) in self.store.gate_rooms().await? {
            let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or_default();
            let mut gates: Vec<Gate> = self
                .parse_gate(&parse(&gate))
                .ok()
                .flatten()
                .into_iter()
                .collect();
            if let Ok(Some(roles)) = self.parse_roles(&parse(&roles)) {
                gates.extend(roles.roles.into_iter().map(|r| r.gate));
            }
            for gate in gates {
                for leaf in gate.rule.paid_leaves() {
                    paid.entry(leaf.chain.0).or_default().push(leaf.clone());
                }
                for chain in gate.rule.chains() {
                    read.entry(chain).or_default();
                    if gate.include_delegations {
                        delegating.entry(chain).or_default().push(room.clone());
                    }
                }
                for (chain, contract) in gate.rule.token_contracts() {
                    read.entry(chain)
                        .or_default()
                        .entry(contract)
                        .or_default()
                        .push(room.clone());
                }
            }
        }
        for rooms in delegating.values_mut() {
            rooms.sort();
            rooms.dedup();
        }
        for (chain_id, contracts) in read {
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
            if let Some(leaves) = paid.get(&chain_id) {
                self.check_queued_payments(chain, leaves).await?;
            }
            let delegation_rooms = delegating.remove(&chain_id).unwrap_or_default();
            if contracts.is_empty() && delegation_rooms.is_empty() {
                continue;
            }
            let (seen, span) = *cursors.entry(chain_id).or_insert((latest, MAX_LOG_RANGE));
            let from = seen + 1;
            if from > latest {
                continue;
            }
            let to = latest.min(from.saturating_add(span - 1));
            let addresses: Vec<Address> = contracts.keys().copied().collect();
            let logs = async {
                let found = transfers(chain, &addresses, from, to).await?;
                let changes = if delegation_rooms.is_empty() {
                    Vec::new()
                } else {
                    delegation_changes(chain, from, to).await?
                };
                Ok::<_, matrixon_chain::rpc::ChainError>((found, changes))
            };
            let (found, changes) = match logs.await {
                Ok(found) => {
                    cursors.insert(chain_id, (to, (span * 2).min(MAX_LOG_RANGE)));
                    found
                }
                Err(e) if span > 1 => {
                    tracing::warn!(chain = %chain.caip2, from, to, error = %e, "eth_getLogs failed; narrowing the range");
                    cursors.insert(chain_id, (seen, span / 2));
                    continue;
                }
                Err(e) => {
                    // Even one block is refused: move on rather than stall (interval re-checks
                    // still cover what this block changed).
                    tracing::warn!(chain = %chain.caip2, block = from, error = %e, "skipping a block whose logs cannot be read");
                    cursors.insert(chain_id, (from, 1));
                    continue;
                }
            };
            if let Some(leaves) = paid.get(&chain_id) {
                self.queue_logged_payments(chain, &found, leaves).await?;
            }
            let mut parties: BTreeMap<Address, Vec<String>> = BTreeMap::new();
            for transfer in found {
                let rooms = contracts
                    .get(&transfer.contract)
                    .cloned()
                    .unwrap_or_default();
                for party in transfer.parties {
                    parties
                        .entry(party)
                        .or_default()
                        .extend(rooms.iter().cloned());
                }
            }
            // A delegation made or revoked changes what both sides hold for those gates.
            for change in changes {
                for party in [change.vault, change.delegate] {
                    parties
                        .entry(party)
                        .or_default()
                        .extend(delegation_rooms.iter().cloned());
                }
            }
            for (party, mut rooms) in parties {
                self.gate_cache.invalidate(party, self.now_ms()).await;
                rooms.sort();
                rooms.dedup();
                let address = format!("{party:#x}");
                let mut users: Vec<String> = self
                    .store
                    .wallet_owner(&address)
                    .await?
                    .map(|u| u.to_string())
                    .into_iter()
                    .collect();
                users.extend(self.store.gate_vault_delegates(&address).await?);
                users.sort();
                users.dedup();
                for user in &users {
                    for room in &rooms {
                        let membership = self.store.membership(room, user).await?;
                        if membership.map(|m| m.0).as_deref() == Some("join") {
                            tracing::info!(%room, %user, "gated holdings moved: re-checking now");
                            self.store.make_gate_room_due(room, self.now_ms()).await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
