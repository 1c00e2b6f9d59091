//! delegate.xyz v2: vaults that delegated to a wallet count as that wallet's for a gate.

use alloy::{
    primitives::{Address, B256, Bytes},
    sol,
    sol_types::SolCall,
};
use futures_util::future::try_join_all;

use super::rule::Rule;
use crate::rpc::{ChainError, Chains};

/// The delegate.xyz v2 registry's canonical address, the same on every chain.
pub const DELEGATE_REGISTRY: Address =
    alloy::primitives::address!("00000000000000447e69651d841bD8D104Bed493");

sol! {
    /// The registry read used here.
    interface IDelegateRegistry {
        enum DelegationType { NONE, ALL, CONTRACT, ERC721, ERC20, ERC1155 }
        struct Delegation {
            DelegationType type_;
            address to;
            address from;
            bytes32 rights;
            address contract_;
            uint256 tokenId;
            uint256 amount;
        }
        function getIncomingDelegations(address to) external view returns (Delegation[] memory delegations);
    }
}

/// Vaults that delegated to any of `wallets`, on any chain `rule` reads: whole-wallet
/// delegations, and contract-wide ones for a contract the rule names on that chain, both
/// without a rights restriction. Token- and amount-level delegations are not counted (the
/// vault's whole balance would then count, which the delegation did not grant).
pub async fn delegated_vaults(
    chains: &Chains,
    rule: &Rule,
    wallets: &[Address],
) -> Result<Vec<Address>, ChainError> {
    let reads = rule.chains();
    let contracts = rule.contracts();
    let calls: Vec<(Address, Bytes)> = wallets
        .iter()
        .map(|to| {
            let call = IDelegateRegistry::getIncomingDelegationsCall { to: *to };
            (DELEGATE_REGISTRY, call.abi_encode().into())
        })
        .collect();
    let per_chain = try_join_all(reads.iter().map(|id| {
        let calls = &calls;
        async move { Ok::<_, ChainError>((*id, chains.get(*id)?.multicall(calls, None).await?)) }
    }))
    .await?;
    let mut vaults = Vec::new();
    for (chain, outcomes) in per_chain {
        for outcome in outcomes.iter().filter(|o| o.success) {
            let Ok(delegations) =
                IDelegateRegistry::getIncomingDelegationsCall::abi_decode_returns(&outcome.data)
            else {
                continue;
            };
            for d in delegations {
                let whole = matches!(d.type_, IDelegateRegistry::DelegationType::ALL);
                let contract = matches!(d.type_, IDelegateRegistry::DelegationType::CONTRACT)
                    && contracts.contains(&(chain, d.contract_));
                if d.rights == B256::ZERO && (whole || contract) && !d.from.is_zero() {
                    vaults.push(d.from);
                }
            }
        }
    }
    vaults.sort();
    vaults.dedup();
    Ok(vaults)
}
