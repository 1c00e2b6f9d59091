//! ENS: ENSIP-15 normalisation, namehash, forward and reverse resolution through the
//! Universal Resolver with CCIP-Read (`resolve`, `ccip`), and the batched registry reads that
//! gates use (ownership, forward-verified primary names at a pinned block).

mod avatar;
mod ccip;
mod resolve;

pub use avatar::Avatar;
pub use ccip::{Gateway, REFUSED_ADDRESS, certificates_from_pem, is_public};
pub use resolve::{EnsError, Resolver, UNIVERSAL_RESOLVER, coin_type, dns_encode};

use alloy::{
    primitives::{Address, B256, Bytes, keccak256},
    sol,
    sol_types::SolCall,
};

use crate::rpc::{CallOutcome, Chain, ChainError};

/// The ENS registry's address on mainnet and its testnets (placed there on the test chain too).
pub const REGISTRY: Address =
    alloy::primitives::address!("00000000000C2E074eC69A0dFb2997BA6C7d2e1e");

sol! {
    /// The registry and resolver functions read here.
    interface IEns {
        function owner(bytes32 node) external view returns (address);
        function resolver(bytes32 node) external view returns (address);
        function addr(bytes32 node) external view returns (address);
        function name(bytes32 node) external view returns (string);
    }
}

/// ENSIP-15 normalisation: the form every lookup uses; a name that does not normalise is
/// refused with the reason.
pub fn normalize(name: &str) -> Result<String, EnsError> {
    if name.is_empty() || name.len() > 255 {
        return Err(EnsError::InvalidName(
            "an ENS name has 1 to 255 characters".to_owned(),
        ));
    }
    ens_normalize::ens_normalize(name)
        .map_err(|e| EnsError::InvalidName(format!("`{name}` is not a valid ENS name: {e}")))
}

/// Accepts only names already in normalised form (rules store names as written).
pub fn check_name(name: &str) -> Result<(), String> {
    let normalized = normalize(name).map_err(|e| e.to_string())?;
    if normalized == name {
        Ok(())
    } else {
        Err(format!(
            "write `{name}` in its normalised form, `{normalized}`"
        ))
    }
}

/// ENS namehash (EIP-137) of a normalised name.
pub fn namehash(name: &str) -> B256 {
    let mut node = B256::ZERO;
    if name.is_empty() {
        return node;
    }
    for label in name.rsplit('.') {
        let mut buffer = [0u8; 64];
        buffer[..32].copy_from_slice(node.as_slice());
        buffer[32..].copy_from_slice(keccak256(label.as_bytes()).as_slice());
        node = keccak256(buffer);
    }
    node
}

/// The node of `address`'s reverse record, `<hex>.addr.reverse`.
pub fn reverse_node(address: Address) -> B256 {
    let hex = alloy::primitives::hex::encode(address.as_slice());
    namehash(&format!("{hex}.addr.reverse"))
}

/// The registry owner of `name`, one call for a Multicall3 batch.
pub fn owner_call(name: &str) -> (Address, Bytes) {
    (
        REGISTRY,
        IEns::ownerCall {
            node: namehash(name),
        }
        .abi_encode()
        .into(),
    )
}

/// Decodes an address answer; `None` for a revert or malformed data.
pub fn decode_address(outcome: &CallOutcome) -> Option<Address> {
    outcome
        .success
        .then(|| IEns::ownerCall::abi_decode_returns(&outcome.data).ok())
        .flatten()
}

/// What reading one address's primary name found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrimaryName {
    /// A name that resolves back to the address.
    Verified(String),
    /// No verified name: no reverse record, no valid name, or one that resolves elsewhere.
    Absent,
    /// A read reverted or answered something undecodable: nothing is known.
    Unreadable,
}

/// An address from a successful call, `Err` for a failed or undecodable one.
fn read_address(outcome: &CallOutcome) -> Result<Address, ()> {
    decode_address(outcome).ok_or(())
}

/// Each address's primary ENS name at `block`, kept only when it resolves back to the
/// address; a read that fails on the way makes that address's name unknown, not absent.
pub async fn primary_names(
    chain: &Chain,
    addresses: &[Address],
    block: u64,
    batch_size: usize,
) -> Result<Vec<PrimaryName>, ChainError> {
    let mut found = vec![PrimaryName::Absent; addresses.len()];
    let reverse: Vec<B256> = addresses.iter().map(|a| reverse_node(*a)).collect();
    // Who resolves each reverse record.
    let calls: Vec<(Address, Bytes)> = reverse
        .iter()
        .map(|node| {
            let call = IEns::resolverCall { node: *node };
            (REGISTRY, call.abi_encode().into())
        })
        .collect();
    let resolvers = chain.multicall_batched(&calls, block, batch_size).await?;
    // The names they answer.
    let mut asked = Vec::new();
    let mut calls = Vec::new();
    for (i, outcome) in resolvers.iter().enumerate() {
        match read_address(outcome) {
            Ok(resolver) if !resolver.is_zero() => {
                asked.push(i);
                let call = IEns::nameCall { node: reverse[i] };
                calls.push((resolver, call.abi_encode().into()));
            }
            Ok(_) => {}
            Err(()) => found[i] = PrimaryName::Unreadable,
        }
    }
    let mut names: Vec<Option<String>> = vec![None; addresses.len()];
    for (i, outcome) in asked
        .iter()
        .zip(chain.multicall_batched(&calls, block, batch_size).await?)
    {
        let name = outcome
            .success
            .then(|| IEns::nameCall::abi_decode_returns(&outcome.data).ok())
            .flatten();
        match name {
            Some(name) if check_name(&name).is_ok() => names[*i] = Some(name),
            Some(_) => {}
            None => found[*i] = PrimaryName::Unreadable,
        }
    }
    // Forward check: the name's resolver must map it back to the same address.
    let claimed: Vec<usize> = (0..addresses.len())
        .filter(|i| names[*i].is_some())
        .collect();
    let nodes: Vec<B256> = claimed
        .iter()
        .map(|i| namehash(names[*i].as_deref().unwrap_or_default()))
        .collect();
    let calls: Vec<(Address, Bytes)> = nodes
        .iter()
        .map(|node| {
            (
                REGISTRY,
                IEns::resolverCall { node: *node }.abi_encode().into(),
            )
        })
        .collect();
    let forward_resolvers = chain.multicall_batched(&calls, block, batch_size).await?;
    let mut checked = Vec::new();
    let mut calls = Vec::new();
    for ((i, node), outcome) in claimed.iter().zip(&nodes).zip(&forward_resolvers) {
        match read_address(outcome) {
            Ok(resolver) if !resolver.is_zero() => {
                checked.push(*i);
                calls.push((resolver, IEns::addrCall { node: *node }.abi_encode().into()));
            }
            Ok(_) => {}
            Err(()) => found[*i] = PrimaryName::Unreadable,
        }
    }
    let answers = chain.multicall_batched(&calls, block, batch_size).await?;
    for (i, outcome) in checked.iter().zip(&answers) {
        match read_address(outcome) {
            Ok(address) if address == addresses[*i] => {
                if let Some(name) = names[*i].take() {
                    found[*i] = PrimaryName::Verified(name);
                }
            }
            Ok(_) => {}
            Err(()) => found[*i] = PrimaryName::Unreadable,
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namehash_matches_eip137() {
        assert_eq!(namehash(""), B256::ZERO);
        assert_eq!(
            namehash("eth").to_string(),
            "0x93cdeb708b7545dc668eb9280176169d1c33cfd8ed6f04690a0bcc88a93fc4ae"
        );
        assert_eq!(
            namehash("foo.eth").to_string(),
            "0xde9b09fd7c5f901e23a3f19fecc54828e9c848539801e86591bd9801b019f84f"
        );
    }

    #[test]
    fn names_are_normalised_per_ensip15() {
        assert_eq!(normalize("Nick.ETH").as_deref(), Ok("nick.eth"));
        assert_eq!(normalize("dáo.eth").as_deref(), Ok("dáo.eth"));
        assert_eq!(normalize("🅰️🅱.eth").as_deref(), Ok("🅰🅱.eth"));
        assert!(normalize("dao..eth").is_err());
        assert!(normalize("").is_err());
        assert!(normalize("nick\u{200d}.eth").is_err(), "zero-width joiner");
        assert!(check_name("dao.eth").is_ok());
        assert!(check_name("_dmarc.x-1.eth").is_ok());
        assert!(check_name("Dao.eth").is_err());
    }

    #[test]
    fn dns_encoding_and_coin_types() {
        assert_eq!(dns_encode("a.eth").expect("name"), b"\x01a\x03eth\x00");
        assert!(dns_encode(&"x".repeat(256)).is_err());
        assert_eq!(coin_type(1), 60);
        assert_eq!(coin_type(10), 0x8000_000a);
    }
}
