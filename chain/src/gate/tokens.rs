//! What people call the tokens a rule names: each contract's `name()`, `symbol()` and
//! `decimals()`, read in one batch per chain, for pages that put a rule in words.

use std::collections::BTreeMap;

use alloy::{
    primitives::{Address, Bytes},
    sol,
    sol_types::SolCall,
};
use serde::Serialize;

use crate::rpc::{ChainError, Chains};

sol! {
    interface ITokenNames {
        function name() external view returns (string);
        function symbol() external view returns (string);
        function decimals() external view returns (uint8);
    }
}

/// Longest name or symbol kept: a contract's strings are anyone's to choose.
const MAX_TEXT: usize = 64;

/// A token's names, each `None` when the contract does not answer it (ERC-721 and ERC-1155
/// have no decimals; many ERC-1155 have no name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TokenNames {
    /// `name()`.
    pub name: Option<String>,
    /// `symbol()`.
    pub symbol: Option<String>,
    /// `decimals()`.
    pub decimals: Option<u8>,
}

/// The names of `contracts` (chain id, address), one read batch per chain at its latest
/// block. A chain that cannot be asked is an error; a contract that does not answer has
/// `None`s.
pub async fn token_names(
    chains: &Chains,
    contracts: &[(u64, Address)],
    batch_size: usize,
) -> Result<BTreeMap<(u64, Address), TokenNames>, ChainError> {
    let mut by_chain: BTreeMap<u64, Vec<Address>> = BTreeMap::new();
    for (chain, contract) in contracts {
        by_chain.entry(*chain).or_default().push(*contract);
    }
    let mut out = BTreeMap::new();
    for (id, addresses) in by_chain {
        let chain = chains.get(id)?;
        let calls: Vec<(Address, Bytes)> = addresses
            .iter()
            .flat_map(|a| {
                [
                    (*a, Bytes::from(ITokenNames::nameCall {}.abi_encode())),
                    (*a, Bytes::from(ITokenNames::symbolCall {}.abi_encode())),
                    (*a, Bytes::from(ITokenNames::decimalsCall {}.abi_encode())),
                ]
            })
            .collect();
        let (_, outcomes) = chain.read(&calls, batch_size).await?;
        for (address, answers) in addresses.iter().zip(outcomes.chunks(3)) {
            let ok = |i: usize| answers.get(i).filter(|o| o.success).map(|o| &o.data);
            let text = |s: String| {
                let s: String = s.chars().filter(|c| !invisible(*c)).collect();
                (!s.is_empty()).then(|| s.chars().take(MAX_TEXT).collect())
            };
            out.insert(
                (id, *address),
                TokenNames {
                    name: ok(0)
                        .and_then(|d| ITokenNames::nameCall::abi_decode_returns(d).ok())
                        .and_then(text),
                    symbol: ok(1)
                        .and_then(|d| ITokenNames::symbolCall::abi_decode_returns(d).ok())
                        .and_then(text),
                    decimals: ok(2)
                        .and_then(|d| ITokenNames::decimalsCall::abi_decode_returns(d).ok()),
                },
            );
        }
    }
    Ok(out)
}

/// Control characters, and the format characters that reorder or hide text (bidirectional
/// marks, overrides and isolates, zero-width characters, line separators, tags): a token's
/// name could disguise a rule.
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{E0000}'..='\u{E007F}'
        )
}
