//! ENS through the Universal Resolver at its mainnet address on anvil: forward resolution
//! (coin types, wildcards, CCIP-Read through a local gateway), text records, primary names
//! with their forward check, normalisation, and CCIP-Read gateways that point inside.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use alloy::{
    primitives::{Address, Bytes},
    sol_types::{SolCall, SolValue},
};
use matrixon_chain::{
    ens::{EnsError, Gateway, Resolver},
    rpc::{ChainConfig, Chains},
};
use serde_json::json;

use crate::anvil::{Anvil, CHAIN_ID, DEPLOYER, EnsFixture, Key, creation_code};

alloy::sol! {
    function resolve(bytes name, bytes data) external view returns (bytes);
    function addr(bytes32 node) external view returns (address);
    function setName(string name) external returns (bytes32);
}

/// A CCIP-Read gateway answering every `addr` question with `answer`; counts its requests.
async fn gateway(answer: Address) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/gateway/{sender}/{data}",
        axum::routing::get(
            move |axum::extract::Path((_sender, data)): axum::extract::Path<(String, String)>| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let hex = data.trim_end_matches(".json");
                    let raw = alloy::primitives::hex::decode(hex).unwrap_or_default();
                    let Ok(call) = resolveCall::abi_decode(&raw) else {
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            "not resolve()".to_owned(),
                        );
                    };
                    let inner = if addrCall::abi_decode(&call.data).is_ok() {
                        answer.abi_encode()
                    } else {
                        Vec::new()
                    };
                    let response = Bytes::from(inner).abi_encode();
                    let body = json!({"data": Bytes::from(response).to_string()});
                    (axum::http::StatusCode::OK, body.to_string())
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (
        format!("http://{addr}/gateway/{{sender}}/{{data}}.json"),
        hits,
    )
}

fn chains(anvil: &Anvil) -> Chains {
    let config = [(
        format!("eip155:{CHAIN_ID}"),
        ChainConfig {
            rpc: vec![anvil.url.clone()],
            name: None,
            timeout_ms: 2_000,
            max_rps: None,
        },
    )]
    .into_iter()
    .collect();
    Chains::new(&config).expect("chains")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ens_resolves_forward_reverse_wildcard_and_offchain() {
    let anvil = Anvil::start().await;
    let ens = EnsFixture::new(&anvil).await;
    let (alice, bob, carol) = (Key::new(151), Key::new(152), Key::new(153));
    let optimism = Key::new(154).address();
    ens.register(
        "eth",
        "alice",
        alice.address(),
        &[
            ("avatar", "https://example.org/alice.png"),
            ("url", "https://alice.example"),
        ],
        &[(matrixon_chain::ens::coin_type(10), optimism)],
    )
    .await;
    // Alice claims her name through the reverse registrar; Bob claims hers (it does not
    // resolve to him); Carol's name resolves to someone else.
    let mut code = creation_code("ReverseRegistrar");
    code.extend((matrixon_chain::ens::REGISTRY, ens.resolver).abi_encode_params());
    let registrar = anvil.deploy(&code).await;
    let handover = crate::anvil::IEnsAdmin::setSubnodeOwnerCall {
        node: matrixon_chain::ens::namehash("reverse"),
        label: alloy::primitives::keccak256("addr"),
        owner: registrar,
    };
    anvil
        .transact(matrixon_chain::ens::REGISTRY, &handover.abi_encode())
        .await;
    let claim = setNameCall {
        name: "alice.eth".to_owned(),
    };
    anvil
        .transact_as(alice.address(), registrar, &claim.abi_encode())
        .await;
    anvil
        .transact_as(bob.address(), registrar, &claim.abi_encode())
        .await;
    ens.register("eth", "carol", bob.address(), &[], &[]).await;
    let carols = setNameCall {
        name: "carol.eth".to_owned(),
    };
    anvil
        .transact_as(carol.address(), registrar, &carols.abi_encode())
        .await;

    // Wildcard names under offchain.eth, answered by a gateway through CCIP-Read.
    let far = Key::new(155).address();
    let (url, hits) = gateway(far).await;
    let offchain = anvil
        .deploy(&[creation_code("OffchainResolver"), url.abi_encode()].concat())
        .await;
    ens.delegate("eth", "offchain", offchain).await;

    let chains = chains(&anvil);
    let chain = chains.get(CHAIN_ID).expect("chain");
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host")
        .to_owned();
    let allowed = Gateway {
        allow: vec![host],
        ..Gateway::default()
    };
    let resolver = Resolver {
        chain,
        gateway: &allowed,
    };

    // Forward, normalised first; other chains' addresses by coin type; text records.
    assert_eq!(
        resolver.address("alice.eth", 1).await,
        Ok(Some(alice.address()))
    );
    assert_eq!(
        resolver.address("ALICE.eth", 1).await,
        Ok(Some(alice.address()))
    );
    assert_eq!(resolver.address("alice.eth", 10).await, Ok(Some(optimism)));
    assert_eq!(resolver.address("nobody.eth", 1).await, Ok(None));
    assert_eq!(
        resolver.text("alice.eth", "avatar").await,
        Ok(Some("https://example.org/alice.png".to_owned()))
    );
    assert_eq!(resolver.text("alice.eth", "com.twitter").await, Ok(None));
    assert!(matches!(
        resolver.address("alice..eth", 1).await,
        Err(EnsError::InvalidName(_))
    ));

    // Reverse: kept only when the name resolves back.
    assert_eq!(
        resolver.primary_name(alice.address()).await,
        Ok(Some("alice.eth".to_owned()))
    );
    assert_eq!(resolver.primary_name(bob.address()).await, Ok(None));
    assert_eq!(resolver.primary_name(carol.address()).await, Ok(None));
    assert_eq!(
        resolver.primary_name(Key::new(156).address()).await,
        Ok(None)
    );

    // Wildcard + CCIP-Read through the allow-listed local gateway.
    assert_eq!(
        resolver.address("anyone.offchain.eth", 1).await,
        Ok(Some(far))
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // The same gateway, not allow-listed: it is on loopback, so it is never asked.
    let closed = Gateway::default();
    let guarded = Resolver {
        chain,
        gateway: &closed,
    };
    let refused = guarded.address("anyone.offchain.eth", 1).await;
    assert!(
        matches!(&refused, Err(EnsError::Gateway(why)) if why.contains("https")),
        "{refused:?}"
    );
    // An https gateway on a private or metadata address is refused before any request.
    for target in [
        "https://127.0.0.1:1/{sender}/{data}.json",
        "https://169.254.169.254/latest/meta-data/{data}",
        "https://10.0.0.1/{data}",
    ] {
        let sneaky = anvil
            .deploy(&[creation_code("OffchainResolver"), target.abi_encode()].concat())
            .await;
        ens.delegate("eth", "sneaky", sneaky).await;
        let refused = guarded.address("x.sneaky.eth", 1).await;
        assert!(
            matches!(&refused, Err(EnsError::Gateway(why)) if why.contains("private")),
            "{target}: {refused:?}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "no request reached the gateway"
    );
    let _ = DEPLOYER;
}
