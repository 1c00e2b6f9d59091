//! Gating rules: the JSON language a room's gate is written in, its validation with precise
//! errors, and its evaluation for a set of addresses through Multicall3 at pinned blocks.

mod delegation;
mod eval;
mod rule;
mod transfers;

#[cfg(test)]
mod tests;

pub use delegation::{DELEGATE_REGISTRY, DelegationChange, delegated_vaults, delegation_changes};
pub use eval::{AddressVerdict, LeafResult, Scope, evaluate, judge_together};
pub use rule::{
    Addr, Amount, Caip2, Call, CompiledCall, Ens, Erc20, Erc721, Erc1155, Expect, MAX_DEPTH,
    MAX_LEAVES, Native, Op, Rule, RuleError, parse_address,
};
pub use transfers::{Transfer, transfers};
