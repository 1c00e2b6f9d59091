//! Evaluating a rule for a set of addresses: every chain read of every leaf and address goes
//! into Multicall3 batches, one chain at one block, and the answers become verdicts.

use std::collections::BTreeMap;

use alloy::{
    dyn_abi::{DynSolValue, FunctionExt, JsonAbiExt},
    primitives::{Address, Bytes, U256},
    sol,
    sol_types::SolCall,
};
use futures_util::future::try_join_all;
use serde::Serialize;

use super::rule::{Amount, CompiledCall, Op, Rule};
use crate::{
    ens,
    rpc::{CallOutcome, ChainError, Chains, MULTICALL3},
};

sol! {
    /// Token and Multicall3 reads used by leaves.
    interface IGateReads {
        function balanceOf(address owner) external view returns (uint256);
        function ownerOf(uint256 tokenId) external view returns (address);
        function balanceOf(address account, uint256 id) external view returns (uint256);
        function getEthBalance(address account) external view returns (uint256);
        function getHasValidKey(address keyOwner) external view returns (bool);
    }
}

/// One leaf's outcome for one address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LeafResult {
    /// Where the leaf sits in the rule, e.g. `any[1].erc721`.
    pub path: String,
    /// Whether the leaf's condition holds (false when it does not, or is unknown).
    pub pass: bool,
    /// The chain gave no usable answer (a reverting token, an undecodable result), or the
    /// leaf lies outside a delegation: neither held nor failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
    /// Whether an odd number of `not`s encloses it (then holding counts against the address).
    pub negated: bool,
    /// What was read (a balance, an owner, a name…).
    pub value: String,
    /// What the leaf asks for, in words.
    pub required: String,
    /// When the payment a `paid` leaf holds on stops counting, in ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// Payments the server has seen, which `paid` leaves are judged on: a payment is found once
/// (in transfer logs, or from a transaction its payer submitted) and kept, not read again.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// Now, in ms since the epoch: payments count for their period from when they were made.
    pub now_ms: u64,
    /// Payments made by the addresses judged (others are ignored).
    pub payments: Vec<Payment>,
}

/// One payment: a coin transfer, or one ERC-20 `Transfer` log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// EIP-155 chain id.
    pub chain: u64,
    /// The ERC-20 token; `None` for the chain's coin.
    pub token: Option<Address>,
    /// Who paid.
    pub payer: Address,
    /// Who was paid.
    pub recipient: Address,
    /// How much, in base units.
    pub amount: U256,
    /// The block's time, in ms since the epoch.
    pub paid_at_ms: u64,
}

/// Whose holdings an address stands for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The user's own wallet: every leaf applies.
    Own,
    /// A vault that delegated to the user on `chain`: only leaves on that chain, and only
    /// those of `contract` when the delegation names one.
    Delegated {
        /// EIP-155 chain id of the delegation.
        chain: u64,
        /// The contract a contract-wide delegation covers; `None` for a whole-wallet one.
        contract: Option<Address>,
    },
}

impl Scope {
    /// Whether a leaf reading `chain` (and `contract`) may use this address.
    fn covers(&self, chain: Option<u64>, contract: Option<Address>) -> bool {
        match self {
            Self::Own => true,
            Self::Delegated {
                chain: delegated,
                contract: only,
            } => chain == Some(*delegated) && (only.is_none() || *only == contract),
        }
    }
}

/// The verdict for one address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AddressVerdict {
    /// The address, EIP-55.
    pub address: String,
    /// Whose holdings it stands for.
    pub scope: Scope,
    /// Whether the whole rule holds for it.
    pub pass: bool,
    /// Neither holds nor fails: some leaf that decides it could not be read, or (for a
    /// delegated vault) lies outside the delegation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
    /// Unknown because a read failed (a revert, an undecodable answer), not because of a
    /// delegation's scope: callers must not treat it as a "no".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
    /// The block each chain was read at, by CAIP-2 id.
    pub blocks: BTreeMap<String, u64>,
    /// Every leaf, in rule order.
    pub leaves: Vec<LeafResult>,
    /// For a passing verdict: the earliest time a payment it counts stops counting (ms since
    /// the epoch), when the verdict must be read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl AddressVerdict {
    /// Leaves that counted against the address: failed ones, or held ones under a `not`.
    pub fn failing(&self) -> impl Iterator<Item = &LeafResult> {
        self.leaves
            .iter()
            .filter(|l| !l.unknown && l.pass == l.negated)
    }
}

/// Three-valued (Kleene) truth: what a leaf, and a rule, can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Truth {
    Yes,
    No,
    Unknown,
}

impl Truth {
    fn from_bool(b: bool) -> Self {
        if b { Self::Yes } else { Self::No }
    }
}

/// A leaf with its place in the rule.
struct Leaf<'a> {
    rule: &'a Rule,
    path: String,
    negated: bool,
    compiled: Option<CompiledCall>,
}

fn leaves(rule: &Rule) -> Vec<Leaf<'_>> {
    fn walk<'a>(rule: &'a Rule, path: String, negated: bool, out: &mut Vec<Leaf<'a>>) {
        let at = |segment: String| {
            if path.is_empty() {
                segment
            } else {
                format!("{path}.{segment}")
            }
        };
        match rule {
            Rule::All(rules) | Rule::Any(rules) => {
                for (i, sub) in rules.iter().enumerate() {
                    walk(sub, at(format!("{}[{i}]", rule.kind())), negated, out);
                }
            }
            Rule::Not(sub) => walk(sub, at("not".to_owned()), !negated, out),
            leaf => out.push(Leaf {
                rule: leaf,
                path: at(leaf.kind().to_owned()),
                negated,
                compiled: match leaf {
                    Rule::Call(call) => call.compile().ok(),
                    _ => None,
                },
            }),
        }
    }
    let mut out = Vec::new();
    walk(rule, String::new(), false, &mut out);
    out
}

/// The calls queued for one chain, and which (address, leaf) asked for each.
#[derive(Default)]
struct ChainBatch {
    calls: Vec<(Address, Bytes)>,
}

impl ChainBatch {
    fn push(&mut self, target: Address, data: Vec<u8>) -> usize {
        self.calls.push((target, data.into()));
        self.calls.len() - 1
    }
}

/// The answers read for one chain.
struct ChainAnswers {
    block: u64,
    outcomes: Vec<CallOutcome>,
    primary_names: Vec<ens::PrimaryName>,
}

/// [`evaluate_with_payments`] knowing of no payments.
pub async fn evaluate(
    chains: &Chains,
    rule: &Rule,
    subjects: &[(Address, Scope)],
    batch_size: usize,
) -> Result<Vec<AddressVerdict>, ChainError> {
    evaluate_with_payments(chains, rule, subjects, batch_size, &Ledger::default()).await
}

/// Evaluates `rule` for each `(address, scope)`: every chain read of all of them goes out
/// as Multicall3 batches of at most `batch_size` calls, all reads of one chain at one block
/// (one `eth_call` per chain when they fit one batch); `paid` leaves are judged on `ledger`.
/// `Err` only when a chain could not be asked at all.
pub async fn evaluate_with_payments(
    chains: &Chains,
    rule: &Rule,
    subjects: &[(Address, Scope)],
    batch_size: usize,
    ledger: &Ledger,
) -> Result<Vec<AddressVerdict>, ChainError> {
    let leaves = leaves(rule);
    let mut batches: BTreeMap<u64, ChainBatch> = BTreeMap::new();
    let mut ens_parent_chains: Vec<u64> = Vec::new();
    // slots[subject][leaf] = indices of that leaf's calls in its chain's batch.
    let mut slots: Vec<Vec<Vec<usize>>> = vec![vec![Vec::new(); leaves.len()]; subjects.len()];
    for (a, (address, scope)) in subjects.iter().enumerate() {
        for (l, leaf) in leaves.iter().enumerate() {
            if !in_scope(scope, leaf.rule) {
                continue;
            }
            let (chain, calls) = leaf_calls(leaf, *address);
            let Some(chain) = chain else { continue };
            let batch = batches.entry(chain).or_default();
            for (target, data) in calls {
                slots[a][l].push(batch.push(target, data));
            }
            if let Rule::Ens(ens) = leaf.rule
                && ens.parent.is_some()
                && !ens_parent_chains.contains(&chain)
            {
                ens_parent_chains.push(chain);
            }
        }
    }
    for chain in &ens_parent_chains {
        batches.entry(*chain).or_default();
    }
    let addresses: Vec<Address> = subjects.iter().map(|(a, _)| *a).collect();
    let answers: BTreeMap<u64, ChainAnswers> =
        try_join_all(batches.into_iter().map(|(id, batch)| {
            let needs_names = ens_parent_chains.contains(&id);
            let addresses = &addresses;
            async move {
                let chain = chains.get(id)?;
                let (block, outcomes) = chain.read(&batch.calls, batch_size).await?;
                let primary_names = if needs_names {
                    ens::primary_names(chain, addresses, block, batch_size).await?
                } else {
                    Vec::new()
                };
                Ok::<_, ChainError>((
                    id,
                    ChainAnswers {
                        block,
                        outcomes,
                        primary_names,
                    },
                ))
            }
        }))
        .await?
        .into_iter()
        .collect();
    let blocks: BTreeMap<String, u64> = answers
        .iter()
        .map(|(id, a)| (format!("eip155:{id}"), a.block))
        .collect();
    Ok(subjects
        .iter()
        .enumerate()
        .map(|(a, (address, scope))| {
            let in_scope: Vec<bool> = leaves
                .iter()
                .map(|leaf| in_scope(scope, leaf.rule))
                .collect();
            let results: Vec<LeafResult> = leaves
                .iter()
                .enumerate()
                .map(|(l, leaf)| {
                    if in_scope[l] {
                        judge(leaf, *address, a, &slots[a][l], &answers, ledger)
                    } else {
                        LeafResult {
                            path: leaf.path.clone(),
                            pass: false,
                            unknown: true,
                            negated: leaf.negated,
                            value: "outside the delegation".to_owned(),
                            required: String::new(),
                            expires_at: None,
                        }
                    }
                })
                .collect();
            let mut verdict = AddressVerdict {
                address: address.to_checksum(None),
                scope: *scope,
                pass: false,
                unknown: false,
                unreadable: false,
                blocks: blocks.clone(),
                leaves: results,
                expires_at: None,
            };
            conclude(rule, &leaves, &mut verdict);
            verdict
        })
        .collect())
}

/// Sets a verdict's outcome from its leaves.
fn conclude(rule: &Rule, leaves: &[Leaf<'_>], verdict: &mut AddressVerdict) {
    // With `lapsed`, the leaves held on a payment read as failed: the verdict once they lapse.
    let fold = |lapsed: bool| {
        let mut next = verdict.leaves.iter().map(|r| {
            if r.unknown {
                Truth::Unknown
            } else {
                Truth::from_bool(r.pass && !(lapsed && r.expires_at.is_some()))
            }
        });
        combine(rule, &mut next)
    };
    let truth = fold(false);
    let scope = verdict.scope;
    verdict.pass = truth == Truth::Yes;
    verdict.unknown = truth == Truth::Unknown;
    // A pass that holds without its payments does not lapse with them.
    verdict.expires_at = if verdict.pass && fold(true) != Truth::Yes {
        verdict
            .leaves
            .iter()
            .filter(|l| l.pass && !l.negated)
            .filter_map(|l| l.expires_at)
            .min()
    } else {
        None
    };
    verdict.unreadable = truth == Truth::Unknown
        && verdict
            .leaves
            .iter()
            .zip(leaves)
            .any(|(r, leaf)| r.unknown && in_scope(&scope, leaf.rule));
}

/// Judges one user's addresses (own wallets and vaults) together: a leaf under a `not` that
/// holds for any of them holds for the user, so a banned badge in one wallet bars them
/// whichever wallet or vault they come with. Each verdict is concluded again with those
/// leaves held; leaves outside a `not` stay each address's own.
pub fn judge_together(rule: &Rule, verdicts: &mut [AddressVerdict]) {
    let leaves = leaves(rule);
    let mut holders: Vec<Option<String>> = vec![None; leaves.len()];
    for verdict in verdicts.iter() {
        for (holder, result) in holders.iter_mut().zip(&verdict.leaves) {
            if holder.is_none() && result.negated && result.pass && !result.unknown {
                *holder = Some(verdict.address.clone());
            }
        }
    }
    if holders.iter().all(Option::is_none) {
        return;
    }
    for verdict in verdicts.iter_mut() {
        for (holder, result) in holders.iter().zip(&mut verdict.leaves) {
            if let Some(holder) = holder
                && (!result.pass || result.unknown)
            {
                result.pass = true;
                result.unknown = false;
                result.value = format!("held by {holder}, another of the user's addresses");
            }
        }
        conclude(rule, &leaves, verdict);
    }
}

/// Whether an address of `scope` counts for `rule`'s leaf: a vault only within what it
/// delegated, and never for a payment (one payment would otherwise seat every account the
/// vault delegates to).
fn in_scope(scope: &Scope, rule: &Rule) -> bool {
    let (chain, contract) = leaf_target(rule);
    scope.covers(chain, contract) && (*scope == Scope::Own || !matches!(rule, Rule::Paid(_)))
}

/// The chain and contract a leaf reads (`None` for lists; Multicall3 for native coin).
fn leaf_target(rule: &Rule) -> (Option<u64>, Option<Address>) {
    match rule {
        Rule::Native(l) => (Some(l.chain.0), None),
        Rule::Erc20(l) => (Some(l.chain.0), Some(l.contract.0)),
        Rule::Erc721(l) => (Some(l.chain.0), Some(l.contract.0)),
        Rule::Erc1155(l) => (Some(l.chain.0), Some(l.contract.0)),
        Rule::Call(l) => (Some(l.chain.0), Some(l.contract.0)),
        Rule::Ens(l) => (Some(l.chain.0), Some(ens::REGISTRY)),
        Rule::Unlock(l) => (Some(l.chain.0), Some(l.lock.0)),
        Rule::Paid(l) => (Some(l.chain.0), l.token.map(|t| t.0)),
        Rule::Allowlist(_) | Rule::All(_) | Rule::Any(_) | Rule::Not(_) => (None, None),
    }
}

/// The chain a leaf reads and the calls it needs for `address`.
fn leaf_calls(leaf: &Leaf<'_>, address: Address) -> (Option<u64>, Vec<(Address, Vec<u8>)>) {
    match leaf.rule {
        Rule::Native(l) => (
            Some(l.chain.0),
            vec![(
                MULTICALL3,
                IGateReads::getEthBalanceCall { account: address }.abi_encode(),
            )],
        ),
        Rule::Erc20(l) => (
            Some(l.chain.0),
            vec![(
                l.contract.0,
                IGateReads::balanceOf_0Call { owner: address }.abi_encode(),
            )],
        ),
        Rule::Erc721(l) => match &l.token_ids {
            None => (
                Some(l.chain.0),
                vec![(
                    l.contract.0,
                    IGateReads::balanceOf_0Call { owner: address }.abi_encode(),
                )],
            ),
            Some(ids) => (
                Some(l.chain.0),
                ids.iter()
                    .map(|id| {
                        (
                            l.contract.0,
                            IGateReads::ownerOfCall { tokenId: id.0 }.abi_encode(),
                        )
                    })
                    .collect(),
            ),
        },
        Rule::Erc1155(l) => (
            Some(l.chain.0),
            vec![(
                l.contract.0,
                IGateReads::balanceOf_1Call {
                    account: address,
                    id: l.token_id.0,
                }
                .abi_encode(),
            )],
        ),
        Rule::Call(l) => {
            let Some(compiled) = &leaf.compiled else {
                return (Some(l.chain.0), Vec::new());
            };
            let args: Vec<DynSolValue> = compiled
                .args
                .iter()
                .map(|a| a.clone().unwrap_or(DynSolValue::Address(address)))
                .collect();
            let data = compiled
                .function
                .abi_encode_input(&args)
                .unwrap_or_default();
            (Some(l.chain.0), vec![(l.contract.0, data)])
        }
        Rule::Unlock(l) => (
            Some(l.chain.0),
            vec![(
                l.lock.0,
                IGateReads::getHasValidKeyCall { keyOwner: address }.abi_encode(),
            )],
        ),
        Rule::Ens(l) => match &l.name {
            Some(name) => {
                let (target, data) = ens::owner_call(name);
                (Some(l.chain.0), vec![(target, data.to_vec())])
            }
            None => (Some(l.chain.0), Vec::new()),
        },
        // Payments are not read from the chain here: they are in the ledger.
        Rule::Paid(_) | Rule::Allowlist(_) | Rule::All(_) | Rule::Any(_) | Rule::Not(_) => {
            (None, Vec::new())
        }
    }
}

/// Reads a leaf's answers for one address into a result.
fn judge(
    leaf: &Leaf<'_>,
    address: Address,
    index: usize,
    slots: &[usize],
    answers: &BTreeMap<u64, ChainAnswers>,
    ledger: &Ledger,
) -> LeafResult {
    let mut expires_at = None;
    let outcomes = |chain: u64| -> Vec<Option<&CallOutcome>> {
        slots
            .iter()
            .map(|s| answers.get(&chain).and_then(|a| a.outcomes.get(*s)))
            .collect()
    };
    let balance = |o: Option<&CallOutcome>| {
        o.filter(|o| o.success)
            .and_then(|o| IGateReads::balanceOf_0Call::abi_decode_returns(&o.data).ok())
    };
    let at_least = |chain: u64, min: &Amount, unit: &str| {
        let read = balance(outcomes(chain).first().copied().flatten());
        let value = read.map_or_else(|| "unreadable".to_owned(), |b| b.to_string());
        (
            read.map_or(Truth::Unknown, |b| Truth::from_bool(b >= min.0)),
            value,
            format!("at least {} {unit}", min.0),
        )
    };
    let (truth, value, required) = match leaf.rule {
        Rule::Native(l) => at_least(l.chain.0, &l.min, "wei"),
        Rule::Erc20(l) => at_least(l.chain.0, &l.min, "base units"),
        Rule::Erc1155(l) => at_least(l.chain.0, &l.min, &format!("of token {}", l.token_id.0)),
        Rule::Erc721(l) => match &l.token_ids {
            None => at_least(l.chain.0, &Amount(U256::from(1)), "token"),
            Some(ids) => {
                let answers = outcomes(l.chain.0);
                let owned: Vec<String> = ids
                    .iter()
                    .zip(&answers)
                    .filter(|(_, o)| o.and_then(ens::decode_address) == Some(address))
                    .map(|(id, _)| id.0.to_string())
                    .collect();
                // ownerOf reverts for a token nobody owns (an answer); an answer that does
                // not decode, or none at all, is not.
                let unreadable = answers
                    .iter()
                    .any(|o| o.is_none_or(|o| o.success && ens::decode_address(o).is_none()));
                let list: Vec<String> = ids.iter().map(|id| id.0.to_string()).collect();
                (
                    if !owned.is_empty() {
                        Truth::Yes
                    } else if unreadable {
                        Truth::Unknown
                    } else {
                        Truth::No
                    },
                    if owned.is_empty() {
                        "owns none of them".to_owned()
                    } else {
                        format!("owns {}", owned.join(", "))
                    },
                    format!("one of tokens {}", list.join(", ")),
                )
            }
        },
        Rule::Call(l) => judge_call(leaf, outcomes(l.chain.0).first().copied().flatten()),
        Rule::Unlock(l) => {
            let valid = outcomes(l.chain.0)
                .first()
                .copied()
                .flatten()
                .filter(|o| o.success)
                .and_then(|o| IGateReads::getHasValidKeyCall::abi_decode_returns(&o.data).ok());
            (
                valid.map_or(Truth::Unknown, Truth::from_bool),
                match valid {
                    Some(true) => "a valid key",
                    Some(false) => "no valid key",
                    None => "unreadable",
                }
                .to_owned(),
                format!("a valid key of lock {}", l.lock.0.to_checksum(None)),
            )
        }
        Rule::Ens(l) => match (&l.name, &l.parent) {
            (Some(name), _) => {
                let owner = outcomes(l.chain.0)
                    .first()
                    .copied()
                    .flatten()
                    .and_then(ens::decode_address);
                (
                    owner.map_or(Truth::Unknown, |o| Truth::from_bool(o == address)),
                    owner.map_or_else(|| "unreadable".to_owned(), |o| o.to_checksum(None)),
                    format!("owner of {name}"),
                )
            }
            (None, Some(parent)) => {
                let name = answers
                    .get(&l.chain.0)
                    .and_then(|a| a.primary_names.get(index))
                    .cloned()
                    .unwrap_or(ens::PrimaryName::Unreadable);
                let suffix = format!(".{parent}");
                let (truth, value) = match name {
                    ens::PrimaryName::Verified(name) => {
                        (Truth::from_bool(name.ends_with(&suffix)), name)
                    }
                    ens::PrimaryName::Absent => (Truth::No, "no verified primary name".to_owned()),
                    // A resolver that reverts says nothing about the name: no kick for it.
                    ens::PrimaryName::Unreadable => (Truth::Unknown, "unreadable".to_owned()),
                };
                (truth, value, format!("a primary name under {parent}"))
            }
            (None, None) => (Truth::Unknown, String::new(), "nothing".to_owned()),
        },
        Rule::Paid(l) => {
            let period_ms = l.period_s.saturating_mul(1000);
            let now = ledger.now_ms;
            let latest = ledger
                .payments
                .iter()
                .filter(|p| {
                    p.chain == l.chain.0
                        && p.token == l.token.map(|t| t.0)
                        && p.payer == address
                        && p.recipient == l.recipient.0
                        && p.amount >= l.amount.0
                        // (A block a little ahead of this server's clock still counts.)
                        && p.paid_at_ms.saturating_add(period_ms) > now
                })
                .map(|p| p.paid_at_ms)
                .max();
            expires_at = latest.map(|at| at.saturating_add(period_ms));
            let unit = l.token.map_or_else(
                || "wei".to_owned(),
                |t| format!("base units of {}", t.0.to_checksum(None)),
            );
            (
                Truth::from_bool(latest.is_some()),
                match expires_at {
                    Some(until) => format!("paid, counts until {until}"),
                    None => "no payment within the period".to_owned(),
                },
                format!(
                    "a payment of at least {} {unit} to {} within {} s",
                    l.amount.0,
                    l.recipient.0.to_checksum(None),
                    l.period_s
                ),
            )
        }
        Rule::Allowlist(list) => {
            let listed = list.iter().any(|a| a.0 == address);
            (
                Truth::from_bool(listed),
                if listed { "listed" } else { "not listed" }.to_owned(),
                format!("one of {} listed addresses", list.len()),
            )
        }
        Rule::All(_) | Rule::Any(_) | Rule::Not(_) => {
            (Truth::Unknown, String::new(), String::new())
        }
    };
    LeafResult {
        path: leaf.path.clone(),
        pass: truth == Truth::Yes,
        unknown: truth == Truth::Unknown,
        negated: leaf.negated,
        value,
        required,
        expires_at,
    }
}

fn judge_call(leaf: &Leaf<'_>, outcome: Option<&CallOutcome>) -> (Truth, String, String) {
    let Some(compiled) = &leaf.compiled else {
        return (Truth::Unknown, "invalid call".to_owned(), String::new());
    };
    let required = format!("{:?} {}", compiled.op, show(&compiled.expect)).to_lowercase();
    let Some(outcome) = outcome.filter(|o| o.success) else {
        return (Truth::Unknown, "reverted".to_owned(), required);
    };
    let Some(value) = compiled
        .function
        .abi_decode_output(&outcome.data)
        .ok()
        .and_then(|mut v| (v.len() == 1).then(|| v.remove(0)))
    else {
        return (Truth::Unknown, "undecodable".to_owned(), required);
    };
    let ordering = match (&value, &compiled.expect) {
        (DynSolValue::Uint(a, _), DynSolValue::Uint(b, _)) => Some(a.cmp(b)),
        (DynSolValue::Int(a, _), DynSolValue::Int(b, _)) => Some(a.cmp(b)),
        _ => None,
    };
    let equal = value == compiled.expect;
    let pass = match compiled.op {
        Op::Eq => equal,
        Op::Ne => !equal,
        Op::Gt => ordering.is_some_and(|o| o.is_gt()),
        Op::Gte => ordering.is_some_and(|o| o.is_ge()),
        Op::Lt => ordering.is_some_and(|o| o.is_lt()),
        Op::Lte => ordering.is_some_and(|o| o.is_le()),
    };
    (Truth::from_bool(pass), show(&value), required)
}

/// A returned value as a person reads it.
fn show(value: &DynSolValue) -> String {
    match value {
        DynSolValue::Bool(b) => b.to_string(),
        DynSolValue::Uint(u, _) => u.to_string(),
        DynSolValue::Int(i, _) => i.to_string(),
        DynSolValue::Address(a) => a.to_checksum(None),
        DynSolValue::String(s) => s.clone(),
        DynSolValue::Bytes(b) => alloy::primitives::hex::encode_prefixed(b),
        DynSolValue::FixedBytes(w, size) => {
            alloy::primitives::hex::encode_prefixed(&w[..(*size).min(32)])
        }
        other => format!("{other:?}"),
    }
}

/// Folds leaf outcomes (in rule order) through the combinators, in Kleene's three-valued
/// logic: an unknown leaf decides nothing that the others decide without it.
fn combine(rule: &Rule, next: &mut dyn Iterator<Item = Truth>) -> Truth {
    match rule {
        // Every sub-rule is folded (no short cut): each consumes its own leaves.
        Rule::All(rules) => {
            let results: Vec<Truth> = rules.iter().map(|r| combine(r, next)).collect();
            if results.contains(&Truth::No) {
                Truth::No
            } else if results.contains(&Truth::Unknown) {
                Truth::Unknown
            } else {
                Truth::Yes
            }
        }
        Rule::Any(rules) => {
            let results: Vec<Truth> = rules.iter().map(|r| combine(r, next)).collect();
            if results.contains(&Truth::Yes) {
                Truth::Yes
            } else if results.contains(&Truth::Unknown) {
                Truth::Unknown
            } else {
                Truth::No
            }
        }
        Rule::Not(sub) => match combine(sub, next) {
            Truth::Yes => Truth::No,
            Truth::No => Truth::Yes,
            Truth::Unknown => Truth::Unknown,
        },
        _ => next.next().unwrap_or(Truth::Unknown),
    }
}
