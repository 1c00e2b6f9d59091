//! JSON-RPC access to EVM chains: a registry keyed by CAIP-2 id, failover between providers,
//! reads pinned to one block, and Multicall3 batches — through Multicall3 where the chain has
//! it (at its canonical address or the one configured), else through a deployless multicall
//! (one `eth_call` carrying the creation code of `contracts/src/DeploylessMulticall.sol`), so
//! that any EVM chain, a fresh dev chain included, is read in one round trip per batch.

mod signatures;
mod transport;

use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
    time::Duration,
};

use alloy::{
    eips::BlockId,
    primitives::{Address, Bytes},
    providers::{Provider, RootProvider},
    rpc::{client::RpcClient, types::TransactionRequest},
    sol,
    sol_types::SolCall,
    transports::{RpcError, TransportErrorKind},
};
use serde::Deserialize;

pub use transport::{FailoverTransport, ProviderSnapshot};

/// Multicall3's address on every chain that has it (and on the test chain).
pub const MULTICALL3: Address =
    alloy::primitives::address!("cA11bde05977b3631167028862bE2a173976CA11");

sol! {
    /// The part of Multicall3 used here.
    interface IMulticall3 {
        struct Call3 { address target; bool allowFailure; bytes callData; }
        struct Result { bool success; bytes returnData; }
        function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData);
        function getBlockNumber() external view returns (uint256 blockNumber);
    }

    /// The deployless multicall's constructor arguments and answer.
    interface IDeploylessMulticall {
        function construct(address multicall, IMulticall3.Call3[] calls) external;
        function answer() external returns (uint256 blockNumber, IMulticall3.Result[] results);
    }
}

/// Creation code of the deployless multicall (`contracts/src/DeploylessMulticall.sol`).
fn deployless_code() -> Result<&'static Bytes, ChainError> {
    static CODE: OnceLock<Option<Bytes>> = OnceLock::new();
    CODE.get_or_init(|| {
        let artifact: serde_json::Value = serde_json::from_str(include_str!(
            "../../../contracts/out/DeploylessMulticall.json"
        ))
        .ok()?;
        artifact["bytecode"].as_str()?.parse().ok()
    })
    .as_ref()
    .ok_or_else(|| ChainError::Refused("the deployless multicall is not built in".to_owned()))
}

/// How a chain's batches are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MulticallMode {
    /// Through Multicall3 at this address.
    Deployed(Address),
    /// Through the deployless multicall (the chain has no Multicall3 where it was looked for).
    Deployless,
}

/// One `[chains."eip155:<id>"]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// Provider URLs, tried in order.
    pub rpc: Vec<String>,
    /// A human name for logs and metrics.
    #[serde(default)]
    pub name: Option<String>,
    /// Per-attempt timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Requests per second sent to each provider, at most.
    #[serde(default)]
    pub max_rps: Option<u32>,
    /// Where Multicall3 lives on this chain, when not at its canonical address; a chain
    /// without it at all is read through a deployless multicall.
    #[serde(default)]
    pub multicall: Option<Address>,
}

fn default_timeout_ms() -> u64 {
    5_000
}

/// Whether the chain refused, or could not be asked. Callers fail closed on `Unavailable`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// No provider answered (down, hung, rate-limited beyond retries, timed out).
    #[error("the chain could not be asked: {0}")]
    Unavailable(String),
    /// A provider answered with an error: a revert, an invalid call. This is an answer.
    #[error("the chain refused: {0}")]
    Refused(String),
    /// The chain is not configured here.
    #[error("chain {0} is not configured")]
    NotConfigured(String),
}

impl From<RpcError<TransportErrorKind>> for ChainError {
    fn from(error: RpcError<TransportErrorKind>) -> Self {
        match error {
            RpcError::ErrorResp(payload) => Self::Refused(payload.to_string()),
            RpcError::Transport(kind) => Self::Unavailable(kind.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// The outcome of one call inside a Multicall3 batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallOutcome {
    /// The call did not revert.
    pub success: bool,
    /// Its return data (or revert data).
    pub data: Bytes,
}

/// One configured chain.
#[derive(Clone, Debug)]
pub struct Chain {
    /// CAIP-2 id, e.g. `eip155:1`.
    pub caip2: String,
    /// EIP-155 chain id.
    pub id: u64,
    /// Configured name, or the CAIP-2 id.
    pub name: String,
    provider: RootProvider,
    transport: FailoverTransport,
    /// Where Multicall3 is looked for.
    multicall_at: Address,
    /// Found out at the first read (or the start-up probe), then kept.
    mode: Arc<tokio::sync::OnceCell<MulticallMode>>,
}

/// Largest creation code (with its arguments) a node runs (EIP-3860).
const MAX_INITCODE: usize = 49_152;
/// Most calls in one deployless multicall: their answers must fit the 24 KiB a contract
/// creation may return (EIP-170); 100 balances take 16 KiB.
const DEPLOYLESS_CALLS: usize = 100;

/// Most Multicall3 batches of one chain in flight at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// Every configured chain, by CAIP-2 id.
#[derive(Clone, Debug, Default)]
pub struct Chains {
    chains: BTreeMap<u64, Chain>,
}

/// Parses `eip155:<id>`.
pub fn parse_caip2(caip2: &str) -> Result<u64, String> {
    let id = caip2
        .strip_prefix("eip155:")
        .ok_or_else(|| format!("`{caip2}`: only eip155 chains are supported"))?;
    if id.is_empty()
        || id.len() > 20
        || !id.bytes().all(|b| b.is_ascii_digit())
        || (id.len() > 1 && id.starts_with('0'))
    {
        return Err(format!("`{caip2}`: the chain id must be a decimal number"));
    }
    id.parse()
        .map_err(|_| format!("`{caip2}`: chain id out of range"))
}

impl Chains {
    /// Builds the registry; errors name the chain entry at fault.
    pub fn new(config: &BTreeMap<String, ChainConfig>) -> Result<Self, String> {
        let mut chains = BTreeMap::new();
        for (caip2, entry) in config {
            let id = parse_caip2(caip2)?;
            if entry.timeout_ms == 0 {
                return Err(format!("chains.\"{caip2}\".timeout_ms must be at least 1"));
            }
            let transport = FailoverTransport::new(
                &entry.rpc,
                Duration::from_millis(entry.timeout_ms),
                entry.max_rps,
            )
            .map_err(|e| format!("chains.\"{caip2}\".rpc: {e}"))?;
            let provider = RootProvider::new(RpcClient::new(transport.clone(), false));
            let name = entry.name.clone().unwrap_or_else(|| caip2.clone());
            chains.insert(
                id,
                Chain {
                    caip2: caip2.clone(),
                    id,
                    name,
                    provider,
                    transport,
                    multicall_at: entry.multicall.unwrap_or(MULTICALL3),
                    mode: Arc::default(),
                },
            );
        }
        Ok(Self { chains })
    }

    /// The chain with EIP-155 id `id`.
    pub fn get(&self, id: u64) -> Result<&Chain, ChainError> {
        self.chains
            .get(&id)
            .ok_or_else(|| ChainError::NotConfigured(format!("eip155:{id}")))
    }

    /// Every chain.
    pub fn iter(&self) -> impl Iterator<Item = &Chain> {
        self.chains.values()
    }
}

impl Chain {
    /// How this chain's batches are read: asks the chain for Multicall3's code the first time
    /// (an unanswered ask is asked again next time), then keeps the answer.
    pub async fn multicall_mode(&self) -> Result<MulticallMode, ChainError> {
        self.mode
            .get_or_try_init(|| async {
                let code = self
                    .provider
                    .get_code_at(self.multicall_at)
                    .block_id(BlockId::latest())
                    .await?;
                Ok(if code.is_empty() {
                    MulticallMode::Deployless
                } else {
                    MulticallMode::Deployed(self.multicall_at)
                })
            })
            .await
            .copied()
    }

    /// The latest block number: pin a check to it so all its reads agree.
    pub async fn pin(&self) -> Result<u64, ChainError> {
        Ok(self.provider.get_block_number().await?)
    }

    /// Reads `calls` at one block, in batches of at most `batch_size`; the block and every
    /// outcome in call order. What fits one batch is one `eth_call` at the latest block, which
    /// reports its number through Multicall3 (the chain's `block.number`: on Arbitrum, the L1
    /// block); more batches pin to `eth_blockNumber` first.
    pub async fn read(
        &self,
        calls: &[(Address, Bytes)],
        batch_size: usize,
    ) -> Result<(u64, Vec<CallOutcome>), ChainError> {
        if calls.len() >= batch_size.max(1) {
            let block = self.pin().await?;
            return Ok((
                block,
                self.multicall_batched(calls, block, batch_size).await?,
            ));
        }
        let mut batch = Vec::with_capacity(calls.len() + 1);
        batch.push((
            MULTICALL3,
            Bytes::from(IMulticall3::getBlockNumberCall {}.abi_encode()),
        ));
        batch.extend_from_slice(calls);
        let mut outcomes = self.multicall(&batch, None).await?;
        let block = outcomes
            .first()
            .filter(|o| o.success)
            .and_then(|o| IMulticall3::getBlockNumberCall::abi_decode_returns(&o.data).ok())
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| ChainError::Refused("Multicall3 did not report the block".to_owned()))?;
        outcomes.remove(0);
        Ok((block, outcomes))
    }

    /// [`Self::multicall`] over any number of calls: batches of at most `batch_size`, a few
    /// in flight at once, all at `block`; outcomes in call order.
    pub async fn multicall_batched(
        &self,
        calls: &[(Address, Bytes)],
        block: u64,
        batch_size: usize,
    ) -> Result<Vec<CallOutcome>, ChainError> {
        let chunks: Vec<&[(Address, Bytes)]> = calls.chunks(batch_size.max(1)).collect();
        let mut batches: Vec<Vec<CallOutcome>> = Vec::with_capacity(chunks.len());
        for group in chunks.chunks(BATCHES_IN_FLIGHT) {
            let answers = futures_util::future::try_join_all(
                group.iter().map(|chunk| self.multicall(chunk, Some(block))),
            )
            .await?;
            batches.extend(answers);
        }
        Ok(batches.into_iter().flatten().collect())
    }

    /// The code at `address` at `block`.
    pub async fn code(&self, address: Address, block: u64) -> Result<Bytes, ChainError> {
        Ok(self
            .provider
            .get_code_at(address)
            .block_id(BlockId::number(block))
            .await?)
    }

    /// The native balance of `address` at `block`.
    pub async fn balance(
        &self,
        address: Address,
        block: u64,
    ) -> Result<alloy::primitives::U256, ChainError> {
        Ok(self
            .provider
            .get_balance(address)
            .block_id(BlockId::number(block))
            .await?)
    }

    /// `eth_call` to `to` (or a deployless call when `to` is `None`) at `block`.
    pub async fn call(
        &self,
        to: Option<Address>,
        data: Bytes,
        block: Option<u64>,
    ) -> Result<Bytes, ChainError> {
        let request = match to {
            Some(to) => TransactionRequest::default().to(to).input(data.into()),
            None => TransactionRequest::default().input(data.into()),
        };
        let block = block.map_or(BlockId::latest(), BlockId::number);
        Ok(self.provider.call(request).block(block).await?)
    }

    /// `eth_call` to `to` at the latest block, telling a revert (with its data) from an answer.
    pub async fn call_or_revert(
        &self,
        to: Address,
        data: Bytes,
    ) -> Result<CallOutcome, ChainError> {
        let request = TransactionRequest::default().to(to).input(data.into());
        match self.provider.call(request).await {
            Ok(data) => Ok(CallOutcome {
                success: true,
                data,
            }),
            Err(RpcError::ErrorResp(payload)) => match payload.as_revert_data() {
                Some(data) => Ok(CallOutcome {
                    success: false,
                    data,
                }),
                None => Err(ChainError::Refused(payload.to_string())),
            },
            Err(other) => Err(other.into()),
        }
    }

    /// Many read calls as one `eth_call` to Multicall3, at `block` (latest when `None`), each
    /// with its own success flag.
    pub async fn multicall(
        &self,
        calls: &[(Address, Bytes)],
        block: Option<u64>,
    ) -> Result<Vec<CallOutcome>, ChainError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let mode = self.multicall_mode().await?;
        // Callers name Multicall3's own views (balances, the block) by its canonical address.
        let to_multicall = |target: Address| match mode {
            MulticallMode::Deployed(at) if target == MULTICALL3 => at,
            _ => target,
        };
        let batch: Vec<IMulticall3::Call3> = calls
            .iter()
            .map(|(target, data)| IMulticall3::Call3 {
                target: to_multicall(*target),
                allowFailure: true,
                callData: data.clone(),
            })
            .collect();
        let results = match mode {
            MulticallMode::Deployed(at) => {
                let call = IMulticall3::aggregate3Call { calls: batch };
                let raw = self.call(Some(at), call.abi_encode().into(), block).await?;
                IMulticall3::aggregate3Call::abi_decode_returns(&raw).map_err(|e| {
                    ChainError::Refused(format!("undecodable Multicall3 answer: {e}"))
                })?
            }
            MulticallMode::Deployless => self.deployless(batch, block).await?,
        };
        if results.len() != calls.len() {
            return Err(ChainError::Refused(
                "Multicall3 returned the wrong number of results".to_owned(),
            ));
        }
        Ok(results
            .into_iter()
            .map(|r| CallOutcome {
                success: r.success,
                data: r.returnData,
            })
            .collect())
    }

    /// A batch through the deployless multicall, all at one block (pinned first when it takes
    /// several calls). Nodes apply contract-creation limits to calls too: at most 48 KiB of
    /// code and arguments (EIP-3860) and 24 KiB of answer (EIP-170, the "deployed code"), so a
    /// batch goes in parts of at most [`DEPLOYLESS_CALLS`] calls within the first limit, and a
    /// part whose answer is still too large (long return data) is halved and asked again.
    async fn deployless(
        &self,
        batch: Vec<IMulticall3::Call3>,
        block: Option<u64>,
    ) -> Result<Vec<IMulticall3::Result>, ChainError> {
        let code = deployless_code()?;
        let room = MAX_INITCODE.saturating_sub(code.len()).saturating_sub(256);
        // Each call takes five words besides its padded data.
        let size = |call: &IMulticall3::Call3| 160 + call.callData.len().div_ceil(32) * 32;
        let mut parts: Vec<Vec<IMulticall3::Call3>> = vec![Vec::new()];
        let mut used = 0;
        for call in batch {
            let cost = size(&call);
            if parts.last().is_some_and(|p| {
                !p.is_empty() && (used + cost > room || p.len() >= DEPLOYLESS_CALLS)
            }) {
                parts.push(Vec::new());
                used = 0;
            }
            used += cost;
            if let Some(part) = parts.last_mut() {
                part.push(call);
            }
        }
        let mut block = match (block, parts.len()) {
            (None, n) if n > 1 => Some(self.pin().await?),
            (block, _) => block,
        };
        let mut results = Vec::new();
        // Parts in order: a halved part's halves go next, first half first.
        let mut pending: Vec<Vec<IMulticall3::Call3>> = parts.into_iter().rev().collect();
        while let Some(mut calls) = pending.pop() {
            let arguments = IDeploylessMulticall::constructCall {
                multicall: MULTICALL3,
                calls: calls.clone(),
            }
            .abi_encode();
            let mut data = code.to_vec();
            // The constructor's arguments follow the code, without a selector.
            data.extend_from_slice(arguments.get(4..).unwrap_or_default());
            match self.call(None, data.into(), block).await {
                Ok(raw) => {
                    let answer = IDeploylessMulticall::answerCall::abi_decode_returns(&raw)
                        .map_err(|e| {
                            ChainError::Refused(format!(
                                "undecodable deployless multicall answer: {e}"
                            ))
                        })?;
                    results.extend(answer.results);
                }
                Err(ChainError::Refused(message))
                    if calls.len() > 1 && message.to_ascii_lowercase().contains("size") =>
                {
                    if block.is_none() {
                        // Nothing was read yet (this was the only part): pin the halves.
                        block = Some(self.pin().await?);
                    }
                    let second = calls.split_off(calls.len() / 2);
                    pending.push(second);
                    pending.push(calls);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(results)
    }

    /// Logs of one contract in blocks `from..=to` with topic 0 in `events` and topic 1
    /// equal to `subject`, with their data (for events whose fields matter, not only that
    /// they happened).
    pub async fn subject_logs(
        &self,
        contract: Address,
        events: &[alloy::primitives::B256],
        subject: alloy::primitives::B256,
        (from, to): (u64, u64),
    ) -> Result<Vec<alloy::rpc::types::Log>, ChainError> {
        let filter = alloy::rpc::types::Filter::new()
            .address(contract)
            .event_signature(events.to_vec())
            .topic1(subject)
            .from_block(from)
            .to_block(to);
        Ok(self.provider.get_logs(&filter).await?)
    }

    /// Logs emitted by `addresses` with topic 0 in `topics`, in blocks `from..=to`.
    pub async fn logs(
        &self,
        addresses: &[Address],
        topics: &[alloy::primitives::B256],
        from: u64,
        to: u64,
    ) -> Result<Vec<alloy::rpc::types::Log>, ChainError> {
        let filter = alloy::rpc::types::Filter::new()
            .address(addresses.to_vec())
            .event_signature(topics.to_vec())
            .from_block(from)
            .to_block(to);
        Ok(self.provider.get_logs(&filter).await?)
    }

    /// A mined transaction and its receipt (`None`: unknown to the chain, or not mined yet).
    pub async fn mined_transaction(
        &self,
        hash: alloy::primitives::B256,
    ) -> Result<
        Option<(
            alloy::rpc::types::Transaction,
            alloy::rpc::types::TransactionReceipt,
        )>,
        ChainError,
    > {
        let Some(receipt) = self.provider.get_transaction_receipt(hash).await? else {
            return Ok(None);
        };
        let Some(transaction) = self.provider.get_transaction_by_hash(hash).await? else {
            return Ok(None);
        };
        Ok(Some((transaction, receipt)))
    }

    /// A block's time, in ms since the epoch.
    pub async fn block_time_ms(&self, block: u64) -> Result<u64, ChainError> {
        let header = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Number(block))
            .await?
            .ok_or_else(|| ChainError::Refused(format!("no block {block}")))?;
        Ok(header.header.timestamp.saturating_mul(1000))
    }

    /// Counters per provider.
    pub fn provider_stats(&self) -> Vec<ProviderSnapshot> {
        self.transport.stats()
    }
}
