//! Paid access: the payments `paid` rule leaves count, found in the transfer logs of gated
//! ERC-20 tokens, or submitted by their payer as a transaction hash (`POST …/gate/pay`) and
//! checked on chain — it succeeded, it has the confirmations, it paid the rule's recipient at
//! least the rule's amount, from one of the submitter's wallets.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Mutex, PoisonError},
};

use matrixon_chain::{
    gate::{B256, Ledger, Paid, Payment, Scope, Transfer, mined_payments, parse_tx_hash},
    rpc::{Chain, ChainError},
    siwe::Address,
};
use ruma::{OwnedRoomId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::unavailable;
use crate::{
    http::error::{Error, Result},
    service::{Limit, Services},
    store::PaymentRow,
};

/// Chain reads one submitted payment costs per chain asked: receipt, transaction, block, head.
const READS_PER_PAYMENT: u32 = 4;

/// A payment submitted by its payer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    /// The room whose gate or roles ask for the payment.
    pub room_id: OwnedRoomId,
    /// The transaction that paid.
    pub tx_hash: String,
}

fn to_row(chain: u64, tx: &str, log_index: Option<u64>, payment: &Payment) -> PaymentRow {
    PaymentRow {
        chain: i64::try_from(chain).unwrap_or(i64::MAX),
        tx_hash: tx.to_owned(),
        log_index: log_index.and_then(|i| i64::try_from(i).ok()).unwrap_or(-1),
        token: payment.token.map(|t| format!("{t:#x}")).unwrap_or_default(),
        payer: format!("{:#x}", payment.payer),
        recipient: format!("{:#x}", payment.recipient),
        amount: payment.amount.to_string(),
        paid_at_ms: i64::try_from(payment.paid_at_ms).unwrap_or(i64::MAX),
    }
}

fn from_row(row: &PaymentRow) -> Option<Payment> {
    Some(Payment {
        chain: u64::try_from(row.chain).ok()?,
        token: if row.token.is_empty() {
            None
        } else {
            Some(row.token.parse().ok()?)
        },
        payer: row.payer.parse().ok()?,
        recipient: row.recipient.parse().ok()?,
        amount: row.amount.parse().ok()?,
        paid_at_ms: u64::try_from(row.paid_at_ms).ok()?,
    })
}

impl Services {
    /// The payments `rule`'s `paid` leaves are judged on, for `subjects`: those made within
    /// the longest period a leaf counts (none read when the rule has no such leaf).
    pub(crate) async fn payment_ledger(
        &self,
        rule: &matrixon_chain::gate::Rule,
        subjects: &[(Address, Scope)],
    ) -> std::result::Result<Ledger, ChainError> {
        let now = self.now_ms();
        let mut ledger = Ledger {
            now_ms: u64::try_from(now).unwrap_or_default(),
            payments: Vec::new(),
        };
        let Some(period_s) = rule.paid_leaves().iter().map(|l| l.period_s).max() else {
            return Ok(ledger);
        };
        let since =
            now.saturating_sub(i64::try_from(period_s.saturating_mul(1000)).unwrap_or(i64::MAX));
        let payers: BTreeSet<Address> = subjects.iter().map(|(a, _)| *a).collect();
        for payer in payers {
            let rows = self
                .store
                .payments_by(&format!("{payer:#x}"), since)
                .await
                .map_err(|e| ChainError::Unavailable(format!("reading payments: {e}")))?;
            ledger.payments.extend(rows.iter().filter_map(from_row));
        }
        Ok(ledger)
    }

    /// The `paid` leaves of the room's gate and roles.
    async fn room_paid_leaves(&self, room_id: &RoomId) -> Result<Vec<Paid>> {
        let mut leaves: Vec<Paid> = Vec::new();
        if let Some(gate) = self.room_gate(room_id).await? {
            leaves.extend(gate.rule.paid_leaves().into_iter().cloned());
        }
        if let Some((roles, _)) = self.room_roles(room_id).await.map_err(|_| unavailable())? {
            for role in &roles.roles {
                leaves.extend(role.gate.rule.paid_leaves().into_iter().cloned());
            }
        }
        Ok(leaves)
    }

    /// A payment submitted by its payer: found on one of the chains the room's `paid` leaves
    /// name, checked, and recorded for every leaf it meets. Refusals say why and record nothing.
    pub async fn gate_pay(&self, caller: &UserId, request: PayRequest) -> Result<Value> {
        let room_id = &request.room_id;
        self.ensure_may_see_gate(caller, room_id).await?;
        let leaves = self.room_paid_leaves(room_id).await?;
        if leaves.is_empty() {
            return Err(Error::invalid_param(format!(
                "{room_id}'s gate and roles ask for no payment"
            )));
        }
        let hash = parse_tx_hash(&request.tx_hash).ok_or_else(|| {
            Error::invalid_param("tx_hash must be a transaction hash: 0x and 64 hex digits")
        })?;
        let tx = format!("{hash:#x}");
        let chains: BTreeSet<u64> = leaves.iter().map(|l| l.chain.0).collect();
        let reads =
            READS_PER_PAYMENT.saturating_mul(u32::try_from(chains.len()).unwrap_or(u32::MAX));
        self.limiter
            .take(
                Limit::ChainReadsPerUser,
                caller.as_str(),
                reads,
                self.now_ms(),
            )
            .map_err(Error::limit_exceeded)?;
        let mut found = None;
        for id in &chains {
            let chain = self.chains.get(*id).map_err(|_| unavailable())?;
            match mined_payments(chain, hash).await {
                Ok(Some(mined)) => {
                    found = Some((*id, mined));
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(chain = %chain.caip2, error = %e, "checking a submitted payment");
                    return Err(unavailable());
                }
            }
        }
        let Some((chain_id, mined)) = found else {
            let names: Vec<String> = chains.iter().map(|c| format!("eip155:{c}")).collect();
            return Err(Error::not_found(format!(
                "No mined transaction {tx} on {} (the chains the room's payments are on)",
                names.join(", ")
            )));
        };
        if !mined.succeeded {
            return Err(Error::invalid_param(format!(
                "Transaction {tx} reverted: it paid nothing"
            )));
        }
        let needed = self.config.gate.payment_confirmations;
        if mined.confirmations < needed {
            return Err(Error::invalid_param(format!(
                "Transaction {tx} has {} of the {needed} confirmations a payment needs; submit \
                 it again in a few blocks",
                mined.confirmations
            )));
        }
        let wallets: Vec<Address> = self
            .store
            .wallets(caller)
            .await?
            .iter()
            .filter_map(|(a, _)| a.parse().ok())
            .collect();
        let mut accepted: Vec<(Option<u64>, Payment, u64)> = Vec::new();
        let mut reasons: Vec<String> = Vec::new();
        for (log_index, payment) in &mined.payments {
            let paid_in =
                |leaf: &&Paid| leaf.chain.0 == chain_id && leaf.token.map(|t| t.0) == payment.token;
            for leaf in leaves.iter().filter(paid_in) {
                let asset = payment.token.map_or_else(
                    || "wei".to_owned(),
                    |t| format!("base units of {}", t.to_checksum(None)),
                );
                if payment.recipient != leaf.recipient.0 {
                    reasons.push(format!(
                        "it pays {}, not {}, whom the room's rule asks to be paid",
                        payment.recipient.to_checksum(None),
                        leaf.recipient.0.to_checksum(None)
                    ));
                } else if payment.amount < leaf.amount.0 {
                    reasons.push(format!(
                        "it pays {} {asset}, less than the {} the rule asks for",
                        payment.amount, leaf.amount.0
                    ));
                } else if !wallets.contains(&payment.payer) {
                    reasons.push(format!(
                        "it was paid by {}, which is not one of your linked wallets",
                        payment.payer.to_checksum(None)
                    ));
                } else {
                    accepted.push((*log_index, payment.clone(), leaf.period_s));
                }
            }
        }
        if accepted.is_empty() {
            if reasons.is_empty() {
                reasons.push(
                    "it transfers nothing the room's rules ask for (another token or coin)"
                        .to_owned(),
                );
            }
            reasons.dedup();
            return Err(Error::invalid_param(format!(
                "Transaction {tx} is no payment for {room_id}: {}",
                reasons.join("; ")
            )));
        }
        // One entry per transfer, counting for the longest period of the leaves it meets.
        let mut by_transfer: HashMap<Option<u64>, (Payment, u64)> = HashMap::new();
        for (log_index, payment, period_s) in accepted {
            let entry = by_transfer.entry(log_index).or_insert((payment, period_s));
            entry.1 = entry.1.max(period_s);
        }
        let mut recorded = Vec::new();
        for (log_index, (payment, period_s)) in by_transfer {
            self.record_payment(chain_id, &tx, log_index, &payment)
                .await?;
            recorded.push(json!({
                "chain": format!("eip155:{chain_id}"),
                "tx_hash": tx,
                "token": payment.token.map(|t| t.to_checksum(None)),
                "payer": payment.payer.to_checksum(None),
                "recipient": payment.recipient.to_checksum(None),
                "amount": payment.amount.to_string(),
                "paid_at": payment.paid_at_ms,
                "expires_at": payment.paid_at_ms.saturating_add(period_s.saturating_mul(1000)),
            }));
        }
        Ok(json!({"payments": recorded}))
    }

    /// Records a payment (again is a no-op) and treats it like a transfer: the payer's
    /// verdicts go and the rooms their owner is in are re-checked now.
    async fn record_payment(
        &self,
        chain: u64,
        tx: &str,
        log_index: Option<u64>,
        payment: &Payment,
    ) -> Result<()> {
        if !self
            .store
            .record_payment(&to_row(chain, tx, log_index, payment))
            .await?
        {
            return Ok(());
        }
        tracing::info!(chain, tx, payer = %payment.payer, amount = %payment.amount, "payment recorded");
        let payer = format!("{:#x}", payment.payer);
        match self.store.wallet_owner(&payer).await? {
            Some(owner) => self.wallet_holdings_changed(&owner, &payer).await,
            None => {
                self.gate_cache
                    .invalidate(payment.payer, self.now_ms())
                    .await;
                Ok(())
            }
        }
    }

    /// From the transfer-log poll: ERC-20 transfers that pay a `paid` leaf's recipient at
    /// least its amount, from a wallet linked to an account here, are queued to be checked
    /// once they have their confirmations (a block seen in the logs can still be reorganised).
    pub(crate) async fn queue_logged_payments(
        &self,
        chain: &Chain,
        transfers: &[Transfer],
        leaves: &[Paid],
    ) -> Result<()> {
        for transfer in transfers {
            let (Some((payer, recipient, amount)), Some((tx, _))) = (transfer.erc20, transfer.id)
            else {
                continue;
            };
            let pays = leaves.iter().any(|l| {
                l.token.map(|t| t.0) == Some(transfer.contract)
                    && l.recipient.0 == recipient
                    && amount >= l.amount.0
            });
            if pays
                && self
                    .store
                    .wallet_owner(&format!("{payer:#x}"))
                    .await?
                    .is_some()
            {
                self.payment_checks.queue(chain.id, tx, self.now_ms());
            }
        }
        Ok(())
    }

    /// Checks the queued payments of `chain` on chain, as a submitted one is: those with their
    /// confirmations are recorded (their ERC-20 transfers that pay a leaf, from wallets linked
    /// here), those that reverted or left the chain are dropped, the rest wait.
    pub(crate) async fn check_queued_payments(&self, chain: &Chain, leaves: &[Paid]) -> Result<()> {
        for tx in self.payment_checks.of(chain.id) {
            let mined = match mined_payments(chain, tx).await {
                Ok(mined) => mined,
                Err(e) => {
                    tracing::info!(chain = %chain.caip2, %tx, error = %e, "a logged payment waits: the chain cannot be asked");
                    continue;
                }
            };
            let Some(mined) = mined else {
                self.payment_checks.retry(chain.id, tx, self.now_ms());
                continue;
            };
            if mined.confirmations < self.config.gate.payment_confirmations {
                self.payment_checks.retry(chain.id, tx, self.now_ms());
                continue;
            }
            self.payment_checks.done(chain.id, tx);
            if !mined.succeeded {
                continue;
            }
            for (log_index, payment) in &mined.payments {
                let pays = leaves.iter().any(|l| {
                    payment.token.is_some()
                        && l.token.map(|t| t.0) == payment.token
                        && l.recipient.0 == payment.recipient
                        && payment.amount >= l.amount.0
                });
                if pays
                    && self
                        .store
                        .wallet_owner(&format!("{:#x}", payment.payer))
                        .await?
                        .is_some()
                {
                    self.record_payment(chain.id, &format!("{tx:#x}"), *log_index, payment)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// Transactions whose logged payments wait for their confirmations, with when they were first
/// seen: kept in memory (after a restart the payer submits what was missed), bounded.
#[derive(Debug, Default)]
pub struct PaymentChecks(Mutex<BTreeMap<(u64, B256), i64>>);

/// Most transactions waiting at once.
const MAX_QUEUED: usize = 10_000;
/// How long a transaction may wait (unmined or unconfirmed) before it is given up.
const MAX_WAIT_MS: i64 = 3_600_000;

impl PaymentChecks {
    fn queue(&self, chain: u64, tx: B256, now_ms: i64) {
        let mut queued = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if queued.len() < MAX_QUEUED {
            queued.entry((chain, tx)).or_insert(now_ms);
        }
    }

    fn of(&self, chain: u64) -> Vec<B256> {
        let queued = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        queued
            .keys()
            .filter(|(c, _)| *c == chain)
            .map(|(_, tx)| *tx)
            .collect()
    }

    fn retry(&self, chain: u64, tx: B256, now_ms: i64) {
        let mut queued = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if queued
            .get(&(chain, tx))
            .is_some_and(|seen| now_ms.saturating_sub(*seen) > MAX_WAIT_MS)
        {
            queued.remove(&(chain, tx));
        }
    }

    fn done(&self, chain: u64, tx: B256) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(chain, tx));
    }
}
