//! The chain layer against a real node: failover, retries, pinned reads, Multicall3, and
//! SIWE signatures of contract accounts (ERC-1271 deployed, ERC-6492 counterfactual).

use std::{collections::BTreeMap, time::Duration};

use alloy::{
    primitives::{Address, B256, Bytes, U256},
    sol,
    sol_types::{SolCall, SolValue},
};
use matrixon_chain::{
    rpc::{ChainConfig, ChainError, Chains, MULTICALL3},
    siwe::{Expectations, Signer, SiweError, VerifyError, verify},
};
use serde_json::json;
use time::OffsetDateTime;

use crate::anvil::{Anvil, CHAIN_ID, Key, Proxy, closed_endpoint, creation_code, hung_endpoint};

sol! {
    function getEthBalance(address account) external view returns (uint256);
    function mint(address to, uint256 amount) external;
    function balanceOf(address owner) external view returns (uint256);
    function ownerOf(uint256 tokenId) external view returns (address);
}

fn chains(rpc: Vec<String>, timeout_ms: u64) -> Chains {
    let config = BTreeMap::from([(
        format!("eip155:{CHAIN_ID}"),
        ChainConfig {
            rpc,
            name: Some("anvil".to_owned()),
            timeout_ms,
            max_rps: None,
            multicall: None,
        },
    )]);
    Chains::new(&config).expect("valid chain config")
}

#[tokio::test]
async fn failover_skips_dead_and_hung_providers_and_retries_rate_limits() {
    let anvil = Anvil::start().await;
    let proxy = Proxy::start(&anvil.url).await;
    proxy
        .refuse_next
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let chains = chains(
        vec![closed_endpoint(), hung_endpoint().await, proxy.url.clone()],
        400,
    );
    let chain = chains.get(CHAIN_ID).expect("configured");

    let block = chain
        .pin()
        .await
        .expect("answered through the third provider");
    assert_eq!(block, 0);
    let stats = chain.provider_stats();
    assert_eq!(
        (stats[0].requests, stats[0].errors),
        (1, 1),
        "closed port: {stats:?}"
    );
    assert_eq!(
        (stats[1].requests, stats[1].errors),
        (1, 1),
        "hung endpoint: {stats:?}"
    );
    // Two 429s, then the answer: three attempts on the proxy.
    assert_eq!(
        (stats[2].requests, stats[2].errors),
        (3, 2),
        "rate-limited proxy: {stats:?}"
    );
    assert_eq!(proxy.count("eth_blockNumber"), 3);

    // JSON-RPC -32005 ("limit exceeded", inside an HTTP 200) is retried the same way.
    proxy
        .limit_next
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let before = chain.provider_stats()[2].clone();
    assert_eq!(chain.pin().await.expect("answered after two -32005"), 0);
    let after = &chain.provider_stats()[2];
    assert_eq!(
        (
            after.requests - before.requests,
            after.errors - before.errors
        ),
        (3, 2),
        "{after:?}"
    );

    // Only dead providers: "could not be asked", never "no".
    let dead = chains_of_dead().await;
    let err = dead
        .get(CHAIN_ID)
        .expect("configured")
        .pin()
        .await
        .expect_err("nobody answers");
    assert!(matches!(err, ChainError::Unavailable(_)), "{err:?}");
    assert!(matches!(dead.get(1), Err(ChainError::NotConfigured(_))));

    // A revert is the chain's answer: "refused", not "unavailable".
    let reverted = chain
        .call(Some(MULTICALL3), Bytes::from_static(&[1, 2, 3, 4]), None)
        .await
        .expect_err("no such function");
    assert!(matches!(reverted, ChainError::Refused(_)), "{reverted:?}");
}

async fn chains_of_dead() -> Chains {
    chains(vec![closed_endpoint(), hung_endpoint().await], 300)
}

#[tokio::test]
async fn bad_chain_configuration_is_named() {
    let config = |key: &str, rpc: Vec<String>| {
        BTreeMap::from([(
            key.to_owned(),
            ChainConfig {
                rpc,
                name: None,
                timeout_ms: 1000,
                max_rps: None,
                multicall: None,
            },
        )])
    };
    let err = Chains::new(&config("eip155:1", vec![])).expect_err("no providers");
    assert!(err.contains("eip155:1"), "{err}");
    let err =
        Chains::new(&config("cosmos:hub", vec!["http://x".to_owned()])).expect_err("not eip155");
    assert!(err.contains("cosmos:hub"), "{err}");
    let err = Chains::new(&config("eip155:1", vec!["ftp://x".to_owned()])).expect_err("scheme");
    assert!(err.contains("ftp://x"), "{err}");
}

#[tokio::test]
async fn multicall_of_500_reads_is_one_eth_call_at_a_pinned_block() {
    let anvil = Anvil::start().await;
    let proxy = Proxy::start(&anvil.url).await;
    let chains = chains(vec![proxy.url.clone()], 5_000);
    let chain = chains.get(CHAIN_ID).expect("configured");

    let holders: Vec<Address> = (1..=500u16)
        .map(|i| Address::left_padding_from(&i.to_be_bytes()))
        .collect();
    for (i, holder) in holders.iter().enumerate().take(3) {
        anvil
            .rpc(
                "anvil_setBalance",
                json!([holder.to_string(), format!("0x{:x}", 1000 + i)]),
            )
            .await;
    }
    anvil.rpc("evm_mine", json!([])).await;
    let pinned = chain.pin().await.expect("block");

    // The chain moves on after the pin: the pinned reads must not see it. (anvil's cheat
    // codes edit the latest block's state in place, so move past the pinned block first.)
    anvil.rpc("evm_mine", json!([])).await;
    anvil
        .rpc("anvil_setBalance", json!([holders[0].to_string(), "0x1"]))
        .await;
    anvil.rpc("evm_mine", json!([])).await;

    let mut calls: Vec<(Address, Bytes)> = holders
        .iter()
        .map(|h| {
            (
                MULTICALL3,
                getEthBalanceCall { account: *h }.abi_encode().into(),
            )
        })
        .collect();
    calls.push((MULTICALL3, Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]))); // reverts
    let before = proxy.count("eth_call");
    let results = chain
        .multicall(&calls, Some(pinned))
        .await
        .expect("multicall");
    assert_eq!(
        proxy.count("eth_call") - before,
        1,
        "one eth_call for 501 reads"
    );
    assert_eq!(results.len(), 501);
    let balance = |i: usize| U256::abi_decode(&results[i].data).expect("uint");
    assert_eq!(
        balance(0),
        U256::from(1000),
        "read at the pinned block, not the latest"
    );
    assert_eq!(balance(2), U256::from(1002));
    assert_eq!(balance(499), U256::ZERO);
    assert!(results[..500].iter().all(|r| r.success));
    assert!(!results[500].success, "per-call failure flag");
    // And the latest block does see the change.
    assert_eq!(
        chain
            .balance(holders[0], chain.pin().await.expect("block"))
            .await
            .expect("balance"),
        U256::from(1)
    );
}

fn siwe_text(address: Address, nonce: &str) -> String {
    format!(
        "matrix.example.org wants you to sign in with your Ethereum account:\n{}\n\nSign in to Matrixon\n\nURI: https://matrix.example.org/login\nVersion: 1\nChain ID: {CHAIN_ID}\nNonce: {nonce}\nIssued At: 2026-11-25T12:00:00Z",
        address.to_checksum(None)
    )
}

fn expectations(nonce: &str) -> Expectations<'_> {
    Expectations {
        domain: "matrix.example.org",
        scheme: None,
        uri_origin: Some("https://matrix.example.org"),
        chain_ids: &[CHAIN_ID],
        nonce: Some(nonce),
        now: OffsetDateTime::now_utc(),
        clock_skew: Duration::from_secs(60),
        reject_future_issued_at: true,
    }
}

/// On a fresh chain as a developer gets it (no Multicall3): contract-account logins need none.
#[tokio::test]
async fn siwe_with_contract_accounts_on_a_real_chain() {
    let anvil = Anvil::start_without_multicall3(CHAIN_ID).await;
    let chains = chains(vec![anvil.url.clone()], 5_000);
    let owner = Key::new(11);
    let stranger = Key::new(12);

    // A plain account: no chain call needed.
    let text = siwe_text(owner.address(), "eoanonce1");
    let (_, signer) = verify(
        &text,
        &owner.personal_sign(&text),
        &expectations("eoanonce1"),
        &chains,
    )
    .await
    .expect("EOA");
    assert_eq!(signer, Signer::Eoa);

    // ERC-1271: a deployed account whose owner signs.
    let mut code = creation_code("SmartAccount");
    code.extend_from_slice(&owner.address().abi_encode());
    let account = anvil.deploy(&code).await;
    let text = siwe_text(account, "acctnonce1");
    let (_, signer) = verify(
        &text,
        &owner.personal_sign(&text),
        &expectations("acctnonce1"),
        &chains,
    )
    .await
    .expect("1271 valid");
    assert_eq!(signer, Signer::Erc1271);
    let wrong = verify(
        &text,
        &stranger.personal_sign(&text),
        &expectations("acctnonce1"),
        &chains,
    )
    .await;
    assert_eq!(
        wrong.expect_err("stranger"),
        SiweError::Verify(VerifyError::InvalidSignature)
    );

    // ERC-6492: an account that does not exist yet, signing through its factory.
    let account_to_be = anvil
        .counterfactual(owner.address(), B256::repeat_byte(7))
        .await;
    let predicted = account_to_be.address;
    let wrap = |inner: Vec<u8>| account_to_be.wrap(inner);
    let text = siwe_text(predicted, "cfnonce123");
    let (_, signer) = verify(
        &text,
        &wrap(owner.personal_sign(&text)),
        &expectations("cfnonce123"),
        &chains,
    )
    .await
    .expect("6492 valid");
    assert_eq!(signer, Signer::Erc6492);
    let code = anvil
        .rpc("eth_getCode", json!([predicted.to_string(), "latest"]))
        .await;
    assert_eq!(
        code, "0x",
        "verification simulated the deployment, it did not perform it"
    );
    let wrong = verify(
        &text,
        &wrap(stranger.personal_sign(&text)),
        &expectations("cfnonce123"),
        &chains,
    )
    .await;
    assert_eq!(
        wrong.expect_err("stranger"),
        SiweError::Verify(VerifyError::InvalidSignature)
    );

    // Once deployed, the same account verifies through ERC-1271.
    anvil
        .transact(account_to_be.factory, &account_to_be.deploy_calldata())
        .await;
    let (_, signer) = verify(
        &text,
        &owner.personal_sign(&text),
        &expectations("cfnonce123"),
        &chains,
    )
    .await
    .expect("deployed");
    assert_eq!(signer, Signer::Erc1271);

    // RPC down during a contract check: unavailable, not invalid.
    let dead = chains_of_dead().await;
    let text = siwe_text(account, "downnonce1");
    let down = verify(
        &text,
        &owner.personal_sign(&text),
        &expectations("downnonce1"),
        &dead,
    )
    .await;
    assert!(
        matches!(down, Err(SiweError::Verify(VerifyError::Unavailable(_)))),
        "{down:?}"
    );
    let wrapped_down = verify(
        &text,
        &wrap(owner.personal_sign(&text)),
        &expectations("downnonce1"),
        &dead,
    )
    .await;
    assert!(
        matches!(
            wrapped_down,
            Err(SiweError::Verify(VerifyError::Unavailable(_)))
        ),
        "{wrapped_down:?}"
    );
}

#[tokio::test]
async fn server_reads_chains_from_its_config_and_exports_provider_metrics() {
    let anvil = Anvil::start().await;
    let srv = crate::harness::TestServer::start_with(&crate::harness::Backend::Sqlite, |c| {
        c.chains = BTreeMap::from([(
            format!("eip155:{CHAIN_ID}"),
            ChainConfig {
                rpc: vec![closed_endpoint(), format!("{}/?key=SECRET", anvil.url)],
                name: None,
                timeout_ms: 2_000,
                max_rps: None,
                multicall: None,
            },
        )]);
    })
    .await;
    let services = &srv.server.as_ref().expect("running").services;
    let chain = services.chains.get(CHAIN_ID).expect("configured");
    // The start-up probe asks once where Multicall3 is (waited for here, never asked twice),
    // then a read: two requests, each first refused by the closed port.
    assert_eq!(
        chain.multicall_mode().await,
        Ok(matrixon_chain::rpc::MulticallMode::Deployed(
            matrixon_chain::rpc::MULTICALL3
        ))
    );
    chain.pin().await.expect("block number");
    let text = srv.metrics().await;
    let chain = format!("eip155:{CHAIN_ID}");
    assert!(
        text.contains(&format!(
            r#"matrixon_rpc_requests_total{{chain="{chain}",provider="0:127.0.0.1:1"}} 2"#
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"matrixon_rpc_errors_total{{chain="{chain}",provider="0:127.0.0.1:1"}} 2"#
        )),
        "{text}"
    );
    let port = anvil.url.rsplit(':').next().expect("port");
    assert!(
        text.contains(&format!(
            r#"matrixon_rpc_requests_total{{chain="{chain}",provider="1:127.0.0.1:{port}"}} 2"#
        )),
        "{text}"
    );
    assert!(
        !text.contains("SECRET"),
        "provider URLs with keys must not leak into metrics"
    );
    srv.finish().await;
}

#[tokio::test]
async fn request_rate_cap_holds_back_requests() {
    let anvil = Anvil::start().await;
    let config = BTreeMap::from([(
        format!("eip155:{CHAIN_ID}"),
        ChainConfig {
            rpc: vec![anvil.url.clone()],
            name: None,
            timeout_ms: 300,
            max_rps: Some(2),
            multicall: None,
        },
    )]);
    let chains = Chains::new(&config).expect("config");
    let chain = chains.get(CHAIN_ID).expect("configured");
    // A full bucket lets two through at once; the third would have to wait 500 ms, longer
    // than the 300 ms timeout, so it is refused rather than queued.
    chain.pin().await.expect("first");
    chain.pin().await.expect("second");
    let third = chain.pin().await.expect_err("capped");
    assert!(
        matches!(third, ChainError::Unavailable(ref why) if why.contains("rate cap")),
        "{third:?}"
    );
}

/// `selector ++ args` for a function whose Rust name differs from its Solidity name.
fn renamed(signature: &str, args: &[u8]) -> Bytes {
    let mut data = alloy::primitives::keccak256(signature.as_bytes())[..4].to_vec();
    data.extend_from_slice(args);
    data.into()
}

#[tokio::test]
async fn token_holdings_read_in_one_pinned_batch() {
    let anvil = Anvil::start().await;
    let chains = chains(vec![anvil.url.clone()], 5_000);
    let chain = chains.get(CHAIN_ID).expect("configured");
    let erc20 = anvil.deploy(&creation_code("TestERC20")).await;
    let erc721 = anvil.deploy(&creation_code("TestERC721")).await;
    let erc1155 = anvil.deploy(&creation_code("TestERC1155")).await;
    let alice = Key::new(21).address();
    let bob = Key::new(22).address();

    let hundred = U256::from(100u64) * U256::from(10u64).pow(U256::from(18u64));
    anvil
        .transact(
            erc20,
            &mintCall {
                to: alice,
                amount: hundred,
            }
            .abi_encode(),
        )
        .await;
    anvil
        .transact(
            erc721,
            &mintCall {
                to: bob,
                amount: U256::from(42u64),
            }
            .abi_encode(),
        )
        .await;
    let args = (alice, U256::from(7u64), U256::from(3u64)).abi_encode_params();
    anvil
        .transact(erc1155, &renamed("mint(address,uint256,uint256)", &args))
        .await;
    let block = chain.pin().await.expect("block");

    let calls = vec![
        (erc20, balanceOfCall { owner: alice }.abi_encode().into()),
        (erc20, balanceOfCall { owner: bob }.abi_encode().into()),
        (
            erc721,
            ownerOfCall {
                tokenId: U256::from(42u64),
            }
            .abi_encode()
            .into(),
        ),
        (
            erc721,
            ownerOfCall {
                tokenId: U256::from(43u64),
            }
            .abi_encode()
            .into(),
        ), // not minted: reverts
        (erc721, balanceOfCall { owner: bob }.abi_encode().into()),
        (
            erc1155,
            renamed(
                "balanceOf(address,uint256)",
                &(alice, U256::from(7u64)).abi_encode_params(),
            ),
        ),
        (
            erc1155,
            renamed(
                "balanceOf(address,uint256)",
                &(bob, U256::from(7u64)).abi_encode_params(),
            ),
        ),
    ];
    let results = chain
        .multicall(&calls, Some(block))
        .await
        .expect("multicall");
    let uint = |i: usize| U256::abi_decode(&results[i].data).expect("uint");
    assert_eq!(uint(0), hundred);
    assert_eq!(uint(1), U256::ZERO);
    assert_eq!(Address::abi_decode(&results[2].data).expect("address"), bob);
    assert!(
        !results[3].success,
        "ownerOf an unminted token reverts, flagged per call"
    );
    assert_eq!(uint(4), U256::from(1u64));
    assert_eq!(uint(5), U256::from(3u64));
    assert_eq!(uint(6), U256::ZERO);
    // Native balance through the same batch mechanism.
    let native = chain
        .multicall(
            &[(
                MULTICALL3,
                getEthBalanceCall { account: alice }.abi_encode().into(),
            )],
            Some(block),
        )
        .await;
    assert_eq!(
        U256::abi_decode(&native.expect("native")[0].data).expect("uint"),
        U256::ZERO
    );
}
