//! delegate.xyz v2: vaults that delegated to a wallet count as that wallet's for a gate.

use alloy::{
    primitives::{Address, B256, Bytes, b256},
    sol,
    sol_types::SolCall,
};
use futures_util::future::try_join_all;

use super::{Scope, rule::Rule};
use crate::rpc::{Chain, ChainError, Chains};

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

/// The registry's events, each with `from` (the vault) and `to` (the delegate) as its first
/// two indexed arguments: `DelegateAll`, `DelegateContract`, `DelegateERC721`, `DelegateERC20`
/// and `DelegateERC1155`.
const DELEGATION_EVENTS: [B256; 5] = [
    b256!("da3ef6410e30373a9137f83f9781a8129962b6882532b7c229de2e39de423227"),
    b256!("021be15e24de4afc43cfb5d0ba95ca38e0783571e05c12bbe6aece8842ae82df"),
    b256!("15e7a1bdcd507dd632d797d38e60cc5a9c0749b9a63097a215c4d006126825c6"),
    b256!("6ebd000dfc4dc9df04f723f827bae7694230795e8f22ed4af438e074cc982d18"),
    b256!("27ab1adc9bca76301ed7a691320766dfa4b4b1aa32c9e05cf789611be7f8c75f"),
];

/// A delegation made or revoked: the vault and the wallet it delegated to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelegationChange {
    /// The delegating vault.
    pub vault: Address,
    /// The delegate.
    pub delegate: Address,
}

/// Delegations made or revoked at the registry in blocks `from..=to`.
pub async fn delegation_changes(
    chain: &Chain,
    from: u64,
    to: u64,
) -> Result<Vec<DelegationChange>, ChainError> {
    if from > to {
        return Ok(Vec::new());
    }
    let logs = chain
        .logs(&[DELEGATE_REGISTRY], &DELEGATION_EVENTS, from, to)
        .await?;
    Ok(logs
        .into_iter()
        .filter_map(|log| {
            let topics = log.topics();
            let (event, vault, delegate) = (topics.first()?, topics.get(1)?, topics.get(2)?);
            DELEGATION_EVENTS.contains(event).then(|| DelegationChange {
                vault: Address::from_word(*vault),
                delegate: Address::from_word(*delegate),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::DELEGATION_EVENTS;

    #[test]
    fn topics_are_the_registry_event_signatures() {
        let hash = |s: &str| alloy::primitives::keccak256(s.as_bytes());
        assert_eq!(
            DELEGATION_EVENTS,
            [
                hash("DelegateAll(address,address,bytes32,bool)"),
                hash("DelegateContract(address,address,address,bytes32,bool)"),
                hash("DelegateERC721(address,address,address,uint256,bytes32,bool)"),
                hash("DelegateERC20(address,address,address,bytes32,uint256)"),
                hash("DelegateERC1155(address,address,address,uint256,bytes32,uint256)"),
            ]
        );
    }
}
