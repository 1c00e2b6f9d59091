//! delegate.xyz v2: vaults that delegated to a wallet count as that wallet's for a gate.

use alloy::{
    primitives::{Address, B256, Bytes},
    sol,
    sol_types::SolCall,
};
use futures_util::future::try_join_all;

use super::{Scope, rule::Rule};
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

/// Most delegations to one wallet that count (the rest are ignored: anyone can delegate to
/// anyone, so a wallet can be flooded).
pub const MAX_DELEGATIONS: usize = 50;

/// For each of `wallets`, the vaults that delegated to it on the chains `rule` reads, each
/// with the scope it may be used in: whole-wallet delegations on that chain, and
/// contract-wide ones for a contract the rule names there, both without a rights
/// restriction. Token- and amount-level delegations are not counted (the vault's whole
/// balance would then count, which they did not grant). `None` for a wallet whose
/// delegations could not be read.
pub async fn delegated_vaults(
    chains: &Chains,
    rule: &Rule,
    wallets: &[Address],
    batch_size: usize,
) -> Result<Vec<Option<Vec<(Address, Scope)>>>, ChainError> {
    let contracts = rule.contracts();
    let calls: Vec<(Address, Bytes)> = wallets
        .iter()
        .map(|to| {
            let call = IDelegateRegistry::getIncomingDelegationsCall { to: *to };
            (DELEGATE_REGISTRY, call.abi_encode().into())
        })
        .collect();
    let per_chain = try_join_all(rule.chains().into_iter().map(|id| {
        let calls = &calls;
        async move {
            let chain = chains.get(id)?;
            let (_, outcomes) = chain.read(calls, batch_size).await?;
            Ok::<_, ChainError>((id, outcomes))
        }
    }))
    .await?;
    let mut out: Vec<Option<Vec<(Address, Scope)>>> = vec![Some(Vec::new()); wallets.len()];
    for (chain, outcomes) in per_chain {
        for (slot, outcome) in out.iter_mut().zip(&outcomes) {
            let decoded = outcome
                .success
                .then(|| {
                    IDelegateRegistry::getIncomingDelegationsCall::abi_decode_returns(&outcome.data)
                        .ok()
                })
                .flatten();
            let (Some(delegations), Some(vaults)) = (decoded, slot.as_mut()) else {
                *slot = None;
                continue;
            };
            for d in delegations.into_iter().take(MAX_DELEGATIONS) {
                if d.rights != B256::ZERO || d.from.is_zero() {
                    continue;
                }
                let scope = match d.type_ {
                    IDelegateRegistry::DelegationType::ALL => Scope::Delegated {
                        chain,
                        contract: None,
                    },
                    IDelegateRegistry::DelegationType::CONTRACT
                        if contracts.contains(&(chain, d.contract_)) =>
                    {
                        Scope::Delegated {
                            chain,
                            contract: Some(d.contract_),
                        }
                    }
                    _ => continue,
                };
                vaults.push((d.from, scope));
            }
        }
    }
    for vaults in out.iter_mut().flatten() {
        vaults.sort();
        vaults.dedup();
    }
    Ok(out)
}
