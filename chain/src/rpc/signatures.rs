//! ERC-1271 and ERC-6492 signature checks through the configured chains.

use std::sync::OnceLock;

use alloy::{
    primitives::{Address, B256, Bytes, FixedBytes},
    sol,
    sol_types::{SolCall, SolValue},
};

use super::{ChainError, Chains};
use crate::siwe::{ContractSignatures, Unavailable};

sol! {
    interface IERC1271 {
        function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4 magic);
    }
}

const ERC1271_MAGIC: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];

/// Creation code of the ERC-6492 validator (`contracts/src/UniversalSigValidator.sol`).
fn validator_code() -> Result<&'static Bytes, Unavailable> {
    static CODE: OnceLock<Option<Bytes>> = OnceLock::new();
    CODE.get_or_init(|| {
        let artifact: serde_json::Value = serde_json::from_str(include_str!(
            "../../../contracts/out/UniversalSigValidator.json"
        ))
        .ok()?;
        artifact["bytecode"].as_str()?.parse().ok()
    })
    .as_ref()
    .ok_or_else(|| {
        Unavailable("the ERC-6492 validator artifact is missing from this build".to_owned())
    })
}

fn unavailable(error: ChainError) -> Unavailable {
    Unavailable(error.to_string())
}

/// On a chain without configured providers no contract is known: only plain-account
/// signatures can be checked there, and contract signatures are not valid. (Being
/// unconfigured is a standing policy, not an outage, so it is not "unavailable".)
impl ContractSignatures for Chains {
    async fn has_code(&self, chain_id: u64, address: Address) -> Result<bool, Unavailable> {
        let Ok(chain) = self.get(chain_id) else {
            return Ok(false);
        };
        let block = chain.pin().await.map_err(unavailable)?;
        Ok(!chain
            .code(address, block)
            .await
            .map_err(unavailable)?
            .is_empty())
    }

    async fn erc1271_valid(
        &self,
        chain_id: u64,
        address: Address,
        hash: B256,
        signature: Bytes,
    ) -> Result<bool, Unavailable> {
        let Ok(chain) = self.get(chain_id) else {
            return Ok(false);
        };
        let data = IERC1271::isValidSignatureCall { hash, signature }.abi_encode();
        match chain.call(Some(address), data.into(), None).await {
            Ok(raw) => Ok(IERC1271::isValidSignatureCall::abi_decode_returns(&raw)
                .is_ok_and(|magic: FixedBytes<4>| magic.0 == ERC1271_MAGIC)),
            // A revert is the account's answer: not valid.
            Err(ChainError::Refused(_)) => Ok(false),
            Err(other) => Err(unavailable(other)),
        }
    }

    async fn erc6492_valid(
        &self,
        chain_id: u64,
        address: Address,
        hash: B256,
        wrapped_signature: Bytes,
    ) -> Result<bool, Unavailable> {
        let Ok(chain) = self.get(chain_id) else {
            return Ok(false);
        };
        let mut data = validator_code()?.to_vec();
        data.extend_from_slice(&(address, hash, wrapped_signature).abi_encode_params());
        match chain.call(None, data.into(), None).await {
            Ok(raw) => Ok(raw.as_ref() == [1]),
            Err(ChainError::Refused(_)) => Ok(false),
            Err(other) => Err(unavailable(other)),
        }
    }
}
