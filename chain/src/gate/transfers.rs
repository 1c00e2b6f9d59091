//! Token transfers of gated contracts (ERC-20/721 `Transfer`, ERC-1155 `TransferSingle` and
//! `TransferBatch`): who was involved, so their verdicts can be dropped and re-read.

use alloy::primitives::{Address, B256, U256, b256};

use super::eval::Payment;
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
    /// For an ERC-20 transfer (three topics, the value as data): from, to and value, which
    /// can be a payment.
    pub erc20: Option<(Address, Address, U256)>,
    /// The block it is in.
    pub block: Option<u64>,
    /// Its transaction and its index in the block's logs: what identifies a payment.
    pub id: Option<(B256, u64)>,
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
        .filter_map(|log| {
            let contract = log.address();
            let topics = log.topics();
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
            let data = &log.data().data;
            let erc20 =
                (topics.len() == 3 && topics[0] == TRANSFER && data.len() == 32).then(|| {
                    (
                        Address::from_word(topics[1]),
                        Address::from_word(topics[2]),
                        U256::from_be_slice(data),
                    )
                });
            Some(Transfer {
                contract,
                parties,
                erc20,
                block: log.block_number,
                id: log.transaction_hash.zip(log.log_index),
            })
        })
        .collect())
}

/// What a mined transaction paid — its coin value and its ERC-20 `Transfer` logs — with the
/// facts a payment is checked on.
#[derive(Clone, Debug)]
pub struct MinedPayments {
    /// The transaction did not revert.
    pub succeeded: bool,
    /// Blocks on top of it, its own included.
    pub confirmations: u64,
    /// Its payments, each with its log index (`None` for the coin sent).
    pub payments: Vec<(Option<u64>, Payment)>,
}

/// A transaction hash as users write it: `0x` and 64 hex digits.
pub fn parse_tx_hash(text: &str) -> Option<B256> {
    let hex = text.strip_prefix("0x")?;
    (hex.len() == 64).then(|| text.parse().ok()).flatten()
}

/// The payments of transaction `hash` on `chain`; `None` when the chain does not know it mined.
pub async fn mined_payments(
    chain: &Chain,
    hash: B256,
) -> Result<Option<MinedPayments>, ChainError> {
    let Some((transaction, receipt)) = chain.mined_transaction(hash).await? else {
        return Ok(None);
    };
    let Some(block) = receipt.block_number else {
        return Ok(None);
    };
    let latest = chain.pin().await?;
    let paid_at_ms = chain.block_time_ms(block).await?;
    let mut payments = Vec::new();
    let value = alloy::consensus::Transaction::value(&transaction);
    if let Some(to) = alloy::consensus::Transaction::to(&transaction)
        && !value.is_zero()
    {
        payments.push((
            None,
            Payment {
                chain: chain.id,
                token: None,
                payer: transaction.inner.signer(),
                recipient: to,
                amount: value,
                paid_at_ms,
            },
        ));
    }
    for log in receipt.inner.logs() {
        let topics = log.topics();
        let data = &log.data().data;
        if topics.len() == 3 && topics[0] == TRANSFER && data.len() == 32 {
            payments.push((
                log.log_index,
                Payment {
                    chain: chain.id,
                    token: Some(log.address()),
                    payer: Address::from_word(topics[1]),
                    recipient: Address::from_word(topics[2]),
                    amount: U256::from_be_slice(data),
                    paid_at_ms,
                },
            ));
        }
    }
    Ok(Some(MinedPayments {
        succeeded: receipt.status(),
        confirmations: latest.saturating_sub(block).saturating_add(1),
        payments,
    }))
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
