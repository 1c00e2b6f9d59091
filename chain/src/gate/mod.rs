//! Gating rules: the JSON language a room's gate is written in, its validation with precise
//! errors, and its evaluation for a set of addresses through Multicall3 at pinned blocks.

mod delegation;
mod eval;
mod rule;
mod tokens;
mod transfers;

#[cfg(test)]
mod tests;

pub use alloy::primitives::B256;
pub use delegation::{DELEGATE_REGISTRY, DelegationChange, delegated_vaults, delegation_changes};
pub use eval::{
    AddressVerdict, LeafResult, Ledger, Payment, Scope, evaluate, evaluate_with_payments,
    judge_together,
};
pub use rule::{
    Addr, Amount, Caip2, Call, CompiledCall, Ens, Erc20, Erc721, Erc1155, Expect, MAX_DEPTH,
    MAX_LEAVES, MAX_PERIOD_S, Native, Op, Paid, Rule, RuleError, Unlock, parse_address,
};
pub use tokens::{TokenNames, token_names};
pub use transfers::{MinedPayments, Transfer, mined_payments, parse_tx_hash, transfers};
