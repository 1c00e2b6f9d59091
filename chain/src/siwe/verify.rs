//! Checking a message against what the relying party expects, and its signature.

use std::{future::Future, time::Duration};

use alloy_primitives::{Address, B256, Bytes, Signature, eip191_hash_message, keccak256};
use time::OffsetDateTime;

use super::Message;

/// The 32-byte suffix that marks an ERC-6492 wrapped signature.
pub const ERC6492_MAGIC: [u8; 32] = [
    0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
    0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92, 0x64, 0x92,
];

/// What the verifier (the server) requires of a message.
#[derive(Clone, Debug)]
pub struct Expectations<'a> {
    /// The domain (authority) the server serves the sign-in page from.
    pub domain: &'a str,
    /// The scheme; a message that names a scheme must name this one.
    pub scheme: Option<&'a str>,
    /// `scheme://authority` the message's URI must belong to; `None` to skip.
    pub uri_origin: Option<&'a str>,
    /// Chains that may be signed for; empty allows any.
    pub chain_ids: &'a [u64],
    /// The nonce the server handed out; `None` when the caller checks it itself.
    pub nonce: Option<&'a str>,
    /// Now, from the caller's clock.
    pub now: OffsetDateTime,
    /// Tolerance for clock differences on expiry, not-before and issued-at.
    pub clock_skew: Duration,
    /// Refuse messages issued later than now + skew. (The reference implementation does
    /// not check this; servers should.)
    pub reject_future_issued_at: bool,
}

/// Why a message was not accepted. `Unavailable` is the only one that is not the signer's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The message names another domain.
    #[error("the message is for domain {0}, not this one")]
    DomainMismatch(String),
    /// The message names another scheme.
    #[error("the message is for scheme {0}, not this one")]
    SchemeMismatch(String),
    /// The message's URI is not on this server.
    #[error("the message's URI {0} is not on this server")]
    UriMismatch(String),
    /// The chain is not accepted here.
    #[error("chain {0} is not accepted here")]
    ChainNotAllowed(u64),
    /// The nonce is not the one handed out.
    #[error("the nonce does not match")]
    NonceMismatch,
    /// Past its expiration time.
    #[error("the message has expired")]
    Expired,
    /// Before its not-before time.
    #[error("the message is not valid yet")]
    NotYetValid,
    /// Issued in the future.
    #[error("the message claims to be issued in the future")]
    IssuedInFuture,
    /// The signature bytes are not a signature.
    #[error("the signature is malformed: {0}")]
    MalformedSignature(String),
    /// A malleable (high-s) ECDSA signature.
    #[error("the signature has a high s value")]
    HighS,
    /// The signature is well-formed but not the account's.
    #[error("the signature does not match the address")]
    InvalidSignature,
    /// The chain could not be asked (RPC down, timed out); retry later, do not treat as invalid.
    #[error("the chain could not be asked: {0}")]
    Unavailable(String),
}

/// Who signed: what kind of account proved control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signer {
    /// A plain account (EIP-191 `personal_sign`, ecrecover).
    Eoa,
    /// A deployed contract account (ERC-1271).
    Erc1271,
    /// A not-yet-deployed contract account (ERC-6492).
    Erc6492,
}

/// The chain could not be asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// The on-chain calls signature verification needs, on the message's chain.
pub trait ContractSignatures: Sync {
    /// Whether `address` has code on `chain_id`.
    fn has_code(
        &self,
        chain_id: u64,
        address: Address,
    ) -> impl Future<Output = Result<bool, Unavailable>> + Send;

    /// ERC-1271 `isValidSignature(hash, signature) == 0x1626ba7e` on a deployed account.
    fn erc1271_valid(
        &self,
        chain_id: u64,
        address: Address,
        hash: B256,
        signature: Bytes,
    ) -> impl Future<Output = Result<bool, Unavailable>> + Send;

    /// ERC-6492: the wrapped signature, verified by simulating deployment in one `eth_call`.
    fn erc6492_valid(
        &self,
        chain_id: u64,
        address: Address,
        hash: B256,
        wrapped_signature: Bytes,
    ) -> impl Future<Output = Result<bool, Unavailable>> + Send;
}

/// For verifiers with no chain access: every account is treated as a plain account.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoChain;

impl ContractSignatures for NoChain {
    async fn has_code(&self, _: u64, _: Address) -> Result<bool, Unavailable> {
        Ok(false)
    }
    async fn erc1271_valid(
        &self,
        _: u64,
        _: Address,
        _: B256,
        _: Bytes,
    ) -> Result<bool, Unavailable> {
        Err(Unavailable("no chain access configured".to_owned()))
    }
    async fn erc6492_valid(
        &self,
        _: u64,
        _: Address,
        _: B256,
        _: Bytes,
    ) -> Result<bool, Unavailable> {
        Err(Unavailable("no chain access configured".to_owned()))
    }
}

fn within(duration: Duration) -> time::Duration {
    time::Duration::try_from(duration).unwrap_or(time::Duration::MAX)
}

/// Checks the message's fields against the expectations (no signature, no chain).
pub fn check_fields(message: &Message, expect: &Expectations<'_>) -> Result<(), VerifyError> {
    if !message.domain.eq_ignore_ascii_case(expect.domain) {
        return Err(VerifyError::DomainMismatch(message.domain.clone()));
    }
    if let (Some(got), Some(want)) = (&message.scheme, expect.scheme)
        && !got.eq_ignore_ascii_case(want)
    {
        return Err(VerifyError::SchemeMismatch(got.clone()));
    }
    if let Some(origin) = expect.uri_origin {
        let uri = message.uri.as_str();
        let same_origin = uri.len() >= origin.len()
            && uri[..origin.len()].eq_ignore_ascii_case(origin)
            && matches!(
                uri.as_bytes().get(origin.len()),
                None | Some(b'/' | b'?' | b'#')
            );
        if !same_origin {
            return Err(VerifyError::UriMismatch(message.uri.clone()));
        }
    }
    if !expect.chain_ids.is_empty() && !expect.chain_ids.contains(&message.chain_id) {
        return Err(VerifyError::ChainNotAllowed(message.chain_id));
    }
    if let Some(nonce) = expect.nonce
        && nonce != message.nonce
    {
        return Err(VerifyError::NonceMismatch);
    }
    let skew = within(expect.clock_skew);
    if let Some(expiration) = &message.expiration_time
        && expect.now >= expiration.at + skew
    {
        return Err(VerifyError::Expired);
    }
    if let Some(not_before) = &message.not_before
        && expect.now < not_before.at - skew
    {
        return Err(VerifyError::NotYetValid);
    }
    if expect.reject_future_issued_at && message.issued_at.at > expect.now + skew {
        return Err(VerifyError::IssuedInFuture);
    }
    Ok(())
}

/// The address a 65-byte EIP-191 signature over `text` recovers to, refusing high-s.
///
/// Recovery uses libsecp256k1 (the C library Bitcoin Core and geth use): several times faster
/// than the pure-Rust curve, and logins are the server's hottest cryptographic path.
pub fn recover_eoa(text: &str, signature: &[u8]) -> Result<Address, VerifyError> {
    use secp256k1::{
        Message as Digest, SECP256K1,
        ecdsa::{RecoverableSignature, RecoveryId},
    };
    let bytes: &[u8; 65] = signature.try_into().map_err(|_| {
        VerifyError::MalformedSignature(format!("{} bytes, expected 65", signature.len()))
    })?;
    let parity = match bytes[64] {
        0 | 27 => 0,
        1 | 28 => 1,
        _ => {
            return Err(VerifyError::MalformedSignature(
                "bad recovery byte".to_owned(),
            ));
        }
    };
    let parsed =
        Signature::from_raw(bytes).map_err(|e| VerifyError::MalformedSignature(e.to_string()))?;
    if parsed.normalize_s().is_some() {
        return Err(VerifyError::HighS);
    }
    let malformed = |e: secp256k1::Error| VerifyError::MalformedSignature(e.to_string());
    let recid = RecoveryId::try_from(parity).map_err(malformed)?;
    let recoverable = RecoverableSignature::from_compact(&bytes[..64], recid).map_err(malformed)?;
    let digest = Digest::from_digest(eip191_hash_message(text).0);
    let key = SECP256K1
        .recover_ecdsa(digest, &recoverable)
        .map_err(|_| VerifyError::InvalidSignature)?;
    let uncompressed = key.serialize_uncompressed();
    Ok(Address::from_slice(&keccak256(&uncompressed[1..])[12..]))
}

/// Verifies that `signature` over the exact message `text` comes from `message.address`.
///
/// ERC-6492 wrapped signatures are checked on chain first. Then a plain-account signature is
/// tried locally: a key that recovers to the address proves control without asking the chain,
/// which saves a round trip per login and gives the same answer (no contract account has a
/// private key). Otherwise an account with code is asked through ERC-1271.
pub async fn check_signature(
    text: &str,
    message: &Message,
    signature: &[u8],
    chain: &impl ContractSignatures,
) -> Result<Signer, VerifyError> {
    let unavailable = |e: Unavailable| VerifyError::Unavailable(e.0);
    let hash = eip191_hash_message(text);
    if signature.len() > 32 && signature[signature.len() - 32..] == ERC6492_MAGIC {
        let answer = chain
            .erc6492_valid(
                message.chain_id,
                message.address,
                hash,
                Bytes::copy_from_slice(signature),
            )
            .await;
        return verdict(answer, Signer::Erc6492);
    }
    let local = recover_eoa(text, signature);
    if matches!(local, Ok(address) if address == message.address) {
        return Ok(Signer::Eoa);
    }
    if chain
        .has_code(message.chain_id, message.address)
        .await
        .map_err(unavailable)?
    {
        let answer = chain
            .erc1271_valid(
                message.chain_id,
                message.address,
                hash,
                Bytes::copy_from_slice(signature),
            )
            .await;
        return verdict(answer, Signer::Erc1271);
    }
    match local {
        Ok(_) => Err(VerifyError::InvalidSignature),
        Err(e) => Err(e),
    }
}

/// A contract's answer about a signature, as a verification result.
fn verdict(answer: Result<bool, Unavailable>, signer: Signer) -> Result<Signer, VerifyError> {
    match answer {
        Ok(true) => Ok(signer),
        Ok(false) => Err(VerifyError::InvalidSignature),
        Err(e) => Err(VerifyError::Unavailable(e.0)),
    }
}

/// Parses `text`, checks its fields, then its signature: the whole of EIP-4361 verification.
pub async fn verify(
    text: &str,
    signature: &[u8],
    expect: &Expectations<'_>,
    chain: &impl ContractSignatures,
) -> Result<(Message, Signer), SiweError> {
    let message: Message = text.parse()?;
    check_fields(&message, expect)?;
    let signer = check_signature(text, &message, signature, chain).await?;
    Ok((message, signer))
}

/// Either the message is malformed or it was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SiweError {
    /// The text is not a valid EIP-4361 message.
    #[error(transparent)]
    Parse(#[from] super::ParseError),
    /// The message was understood and refused (or the chain could not be asked).
    #[error(transparent)]
    Verify(#[from] VerifyError),
}
