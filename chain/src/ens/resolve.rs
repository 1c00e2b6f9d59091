//! Names to addresses and back through the Universal Resolver: forward resolution with
//! ENSIP-10 wildcards and CCIP-Read, text records, and primary names (ENSIP-19) that are kept
//! only when they resolve back to the address.

use alloy::{
    primitives::{Address, Bytes},
    sol,
    sol_types::{SolCall, SolError},
};

use super::{Gateway, namehash, normalize};
use crate::rpc::{Chain, ChainError};

/// The Universal Resolver's address on mainnet (placed there on the test chain too).
pub const UNIVERSAL_RESOLVER: Address =
    alloy::primitives::address!("eEeEEEeE14D718C2B47D9923Deab1335E144EeEe");

/// Most CCIP-Read round trips for one lookup (a gateway answer may ask again).
const MAX_LOOKUPS: usize = 4;

sol! {
    /// The Universal Resolver and the resolver profiles read through it.
    interface IUniversalResolver {
        function resolve(bytes name, bytes data) external view returns (bytes, address);
        function reverse(bytes lookupAddress, uint256 coinType) external view returns (string, address, address);
        error ResolverNotFound(bytes name);
        error ReverseAddressMismatch(string primary, bytes primaryAddress);
        function addr(bytes32 node) external view returns (address);
        function addr(bytes32 node, uint256 coinType) external view returns (bytes);
        function text(bytes32 node, string key) external view returns (string);
    }
    error OffchainLookup(address sender, string[] urls, bytes callData, bytes4 callbackFunction, bytes extraData);
}

/// Why a name could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnsError {
    /// The name is not a valid ENS name (ENSIP-15).
    #[error("{0}")]
    InvalidName(String),
    /// The chain could not be asked.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A CCIP-Read gateway refused, failed or was not allowed.
    #[error("CCIP-Read: {0}")]
    Gateway(String),
}

/// The DNS wire encoding of a normalised name.
pub fn dns_encode(name: &str) -> Result<Vec<u8>, EnsError> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        let length = u8::try_from(label.len())
            .ok()
            .filter(|l| *l > 0)
            .ok_or_else(|| {
                EnsError::InvalidName(format!("`{name}` has an empty or overlong label"))
            })?;
        out.push(length);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(out)
}

/// ENSIP-11 coin type of an EVM chain (60 for Ethereum mainnet).
pub fn coin_type(chain_id: u64) -> u64 {
    if chain_id == 1 {
        60
    } else {
        0x8000_0000 | chain_id
    }
}

/// Resolves names on the chain ENS lives on, asking CCIP-Read gateways when told to.
#[derive(Clone, Debug)]
pub struct Resolver<'a> {
    /// The chain holding ENS (mainnet in production).
    pub chain: &'a Chain,
    /// How gateways are asked.
    pub gateway: &'a Gateway,
}

impl Resolver<'_> {
    /// Calls the Universal Resolver with `input`, following CCIP-Read (at most
    /// `MAX_LOOKUPS` gateway answers); the return data, or `None` when it reverted otherwise
    /// (no resolver, no record).
    async fn call_universal(&self, input: Bytes) -> Result<Option<Bytes>, EnsError> {
        let mut target = UNIVERSAL_RESOLVER;
        let mut input = input;
        let mut lookups = 0;
        loop {
            let outcome = self.chain.call_or_revert(target, input.clone()).await?;
            if outcome.success {
                return Ok(Some(outcome.data));
            }
            let Ok(lookup) = OffchainLookup::abi_decode(&outcome.data) else {
                // ResolverNotFound, a missing record, a mismatching reverse record…
                return Ok(None);
            };
            if lookup.sender != target {
                return Err(EnsError::Gateway(
                    "an OffchainLookup from another contract than the one called".to_owned(),
                ));
            }
            if lookups == MAX_LOOKUPS {
                return Err(EnsError::Gateway(format!(
                    "more than {MAX_LOOKUPS} CCIP-Read round trips"
                )));
            }
            lookups += 1;
            let response = self
                .gateway
                .fetch(&lookup.urls, lookup.sender, &lookup.callData)
                .await
                .map_err(EnsError::Gateway)?;
            // callback(response, extraData) on the same contract.
            let mut next = lookup.callbackFunction.to_vec();
            next.extend(alloy::sol_types::SolValue::abi_encode_params(&(
                response,
                lookup.extraData,
            )));
            target = lookup.sender;
            input = next.into();
        }
    }

    /// `resolve(name, data)` through the Universal Resolver: the resolver's answer.
    async fn resolve(&self, name: &str, data: Vec<u8>) -> Result<Option<Bytes>, EnsError> {
        let call = IUniversalResolver::resolveCall {
            name: dns_encode(name)?.into(),
            data: data.into(),
        };
        let Some(raw) = self.call_universal(call.abi_encode().into()).await? else {
            return Ok(None);
        };
        IUniversalResolver::resolveCall::abi_decode_returns(&raw)
            .map(|r| Some(r._0))
            .map_err(|e| EnsError::Gateway(format!("undecodable resolve answer: {e}")))
    }

    /// The address `name` resolves to on `chain_id` (ENSIP-9/11 coin types).
    pub async fn address(&self, name: &str, chain_id: u64) -> Result<Option<Address>, EnsError> {
        let name = normalize(name)?;
        let node = namehash(&name);
        let coin = coin_type(chain_id);
        let data = if coin == 60 {
            IUniversalResolver::addr_0Call { node }.abi_encode()
        } else {
            IUniversalResolver::addr_1Call {
                node,
                coinType: alloy::primitives::U256::from(coin),
            }
            .abi_encode()
        };
        let Some(answer) = self.resolve(&name, data).await? else {
            return Ok(None);
        };
        let address = if coin == 60 {
            IUniversalResolver::addr_0Call::abi_decode_returns(&answer).ok()
        } else {
            IUniversalResolver::addr_1Call::abi_decode_returns(&answer)
                .ok()
                .filter(|b| b.len() == 20)
                .map(|b| Address::from_slice(&b))
        };
        Ok(address.filter(|a| !a.is_zero()))
    }

    /// A text record of `name` (`avatar`, `url`, `com.twitter`…).
    pub async fn text(&self, name: &str, key: &str) -> Result<Option<String>, EnsError> {
        let name = normalize(name)?;
        let data = IUniversalResolver::textCall {
            node: namehash(&name),
            key: key.to_owned(),
        }
        .abi_encode();
        let Some(answer) = self.resolve(&name, data).await? else {
            return Ok(None);
        };
        Ok(IUniversalResolver::textCall::abi_decode_returns(&answer)
            .ok()
            .filter(|t| !t.is_empty()))
    }

    /// The primary name of `address` (ENSIP-19, coin type 60), kept only when it is a valid
    /// name that resolves back to `address` — checked here, whatever the contract says.
    pub async fn primary_name(&self, address: Address) -> Result<Option<String>, EnsError> {
        let call = IUniversalResolver::reverseCall {
            lookupAddress: address.to_vec().into(),
            coinType: alloy::primitives::U256::from(60),
        };
        let Some(raw) = self.call_universal(call.abi_encode().into()).await? else {
            return Ok(None); // no reverse record, or one that does not resolve back
        };
        let Ok(answer) = IUniversalResolver::reverseCall::abi_decode_returns(&raw) else {
            return Ok(None);
        };
        let Ok(name) = normalize(&answer._0) else {
            return Ok(None);
        };
        if name.is_empty() || name != answer._0 {
            return Ok(None);
        }
        Ok((self.address(&name, 1).await? == Some(address)).then_some(name))
    }
}
