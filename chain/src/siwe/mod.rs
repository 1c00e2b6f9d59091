//! Sign-In with Ethereum (EIP-4361): parse, check, and verify signatures of plain accounts
//! (EIP-191), deployed contract accounts (ERC-1271) and undeployed ones (ERC-6492).

mod message;
mod rfc3986;
mod verify;

#[cfg(test)]
mod tests;

pub use alloy_primitives::Address;
pub use message::{Fields, Message, ParseError, Timestamp, limits};
pub use verify::{
    ContractSignatures, ERC6492_MAGIC, Expectations, NoChain, Signer, SiweError, Unavailable,
    VerifyError, check_fields, check_signature, recover_eoa, verify,
};
