//! Token transfers of gated contracts (ERC-20/721 `Transfer`, ERC-1155 `TransferSingle` and
//! `TransferBatch`): who was involved, so their verdicts can be dropped and re-read.

use alloy::primitives::{Address, B256, b256};

use crate::rpc::{Chain, ChainError};

/// `Transfer(address,address,uint256)`, the same topic for ERC-20 and ERC-721.
const TRANSFER: B256 = b256!("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");
/// `TransferSingle(address,address,address,uint256,uint256)`.
const TRANSFER_SINGLE: B256 =
    b256!("c3d58168c5ae7397731d063d5bbf3d657854427343f4c083240f7aacaa2d0f62");
/// `TransferBatch(address,address,address,uint256[],uint256[])`.
const TRANSFER_BATCH: B256 =
    b256!("4a39dc06d4c0dbc64b70af90fd698a233a518aa5d07e595d983b8c0526c8f7fb");

/// One transfer log: the contract and the addresses whose holdings it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The token contract.
    pub contract: Address,
    /// Sender and receiver (zero address for mints and burns left out).
    pub parties: Vec<Address>,
}

/// Transfer logs of `contracts` in blocks `from..=to`.
pub async fn transfers(
    chain: &Chain,
    contracts: &[Address],
    from: u64,
    to: u64,
) -> Result<Vec<Transfer>, ChainError> {
    if contracts.is_empty() || from > to {
        return Ok(Vec::new());
    }
    let logs = chain
        .logs(
            contracts,
            &[TRANSFER, TRANSFER_SINGLE, TRANSFER_BATCH],
            from,
            to,
        )
        .await?;
    Ok(logs
        .into_iter()
        .filter_map(|(contract, topics)| {
            // Indexed (from, to) are topics 1–2 for Transfer, 2–3 (after the operator) for 1155.
            let indexed = match topics.first()? {
                t if *t == TRANSFER => topics.get(1..3)?,
                t if *t == TRANSFER_SINGLE || *t == TRANSFER_BATCH => topics.get(2..4)?,
                _ => return None,
            };
            let parties = indexed
                .iter()
                .map(|t| Address::from_word(*t))
                .filter(|a| !a.is_zero())
                .collect();
            Some(Transfer { contract, parties })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_the_event_signatures() {
        let hash = |s: &str| alloy::primitives::keccak256(s.as_bytes());
        assert_eq!(TRANSFER, hash("Transfer(address,address,uint256)"));
        assert_eq!(
            TRANSFER_SINGLE,
            hash("TransferSingle(address,address,address,uint256,uint256)")
        );
        assert_eq!(
            TRANSFER_BATCH,
            hash("TransferBatch(address,address,address,uint256[],uint256[])")
        );
    }
}
