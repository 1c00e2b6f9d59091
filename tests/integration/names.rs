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
    function mint(address to, uint256 tokenId, string uri) external;
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

/// A `data:application/json;base64,…` URI of `value`.
fn base64_json(value: &serde_json::Value) -> String {
    use base64::Engine;
    format!(
        "data:application/json;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(value.to_string())
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
            multicall: None,
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

    // Gateways that answer too much, or never, are given up on within the limits.
    let huge = {
        let app = axum::Router::new().fallback(|| async { "x".repeat(64 * 1024) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    };
    let hung = crate::anvil::hung_endpoint().await;
    let hung_host = hung.trim_start_matches("http://").to_owned();
    let strict = Gateway {
        allow: vec![huge.to_string(), hung_host],
        timeout: std::time::Duration::from_millis(500),
        max_bytes: 1024,
        ..Gateway::default()
    };
    let limited = Resolver {
        chain,
        gateway: &strict,
    };
    for (label, url, why) in [
        (
            "huge",
            format!("http://{huge}/{{sender}}/{{data}}.json"),
            "more than 1024 bytes",
        ),
        (
            "hung",
            format!("{hung}/{{sender}}/{{data}}.json"),
            "timed out",
        ),
    ] {
        let resolver_contract = anvil
            .deploy(&[creation_code("OffchainResolver"), url.abi_encode()].concat())
            .await;
        ens.delegate("eth", label, resolver_contract).await;
        let started = std::time::Instant::now();
        let refused = limited.address(&format!("x.{label}.eth"), 1).await;
        assert!(
            matches!(&refused, Err(EnsError::Gateway(w)) if w.contains(why)),
            "{label}: {refused:?}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{label}"
        );
    }

    // Avatars (ENSIP-12): https as is; an NFT only while the name's address owns it, followed
    // through its metadata to its image (an IPFS path through the gateway).
    let ipfs = "https://ipfs.example/ipfs/";
    assert_eq!(
        resolver
            .avatar(&chains, "alice.eth", alice.address(), ipfs)
            .await,
        Ok(Some(matrixon_chain::ens::Avatar::Url(
            "https://example.org/alice.png".to_owned()
        )))
    );
    let nft = anvil.deploy(&creation_code("TestAvatarNFT")).await;
    let metadata = base64_json(&json!({"name": "Punk", "image": "ipfs://QmPunk/1.png"}));
    let collector = Key::new(157).address();
    let minted = mintCall {
        to: collector,
        tokenId: alloy::primitives::U256::from(1),
        uri: metadata,
    };
    anvil.transact(nft, &minted.abi_encode()).await;
    let reference = format!("eip155:{CHAIN_ID}/erc721:{nft}/1");
    ens.register(
        "eth",
        "collector",
        collector,
        &[("avatar", reference.as_str())],
        &[],
    )
    .await;
    ens.register(
        "eth",
        "poser",
        carol.address(),
        &[("avatar", reference.as_str())],
        &[],
    )
    .await;
    assert_eq!(
        resolver
            .avatar(&chains, "collector.eth", collector, ipfs)
            .await,
        Ok(Some(matrixon_chain::ens::Avatar::Url(
            "https://ipfs.example/ipfs/QmPunk/1.png".to_owned()
        )))
    );
    assert_eq!(
        resolver
            .avatar(&chains, "poser.eth", carol.address(), ipfs)
            .await,
        Ok(None),
        "an NFT the name's address does not own is no avatar"
    );
    let _ = DEPLOYER;
}

alloy::sol! {
    function changeOwner(address identity, address newOwner) external;
    function addDelegate(address identity, bytes32 delegateType, address delegate, uint256 validity) external;
    function revokeDelegate(address identity, bytes32 delegateType, address delegate) external;
}

/// An ERC-1056 delegate type: the name right-padded to 32 bytes.
fn delegate_type(name: &str) -> alloy::primitives::B256 {
    let mut bytes = [0u8; 32];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    alloy::primitives::B256::from(bytes)
}

/// Names in Matrix: resolving ENS names, addresses and DIDs to users, ENS display names
/// (and a user's own choice winning), invites by name to wallets that never signed in, and
/// each user's did:web document.
/// A local IPFS HTTP gateway serving one PNG at `/ipfs/QmAlice/avatar.png`: its address and
/// the image.
async fn ipfs_gateway() -> (String, Vec<u8>) {
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        48,
        48,
        image::Rgb([10, 200, 30]),
    ))
    .write_to(&mut png, image::ImageFormat::Png)
    .expect("png");
    let png = png.into_inner();
    let served = png.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/ipfs/QmAlice/avatar.png",
        axum::routing::get(move || {
            let png = served.clone();
            // Declared as something else: the server trusts the image's own header.
            async move { ([("content-type", "application/octet-stream")], png) }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr.to_string(), png)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_to_users_become_profiles_and_invite() {
    use crate::harness::{Backend, TestServer, assert_error};
    use crate::wallet::wallet_session;

    let anvil = Anvil::start().await;
    let ens = EnsFixture::new(&anvil).await;
    anvil
        .place("EthereumDIDRegistry", matrixon_chain::did::ETHR_REGISTRY)
        .await;
    let (alice, carol, dave) = (Key::new(161), Key::new(163), Key::new(164));
    // Alice's ENS avatar lives on IPFS, fetched through a local gateway.
    let (ipfs, avatar_png) = ipfs_gateway().await;
    ens.register(
        "eth",
        "alice",
        alice.address(),
        &[("avatar", "ipfs://QmAlice/avatar.png")],
        &[],
    )
    .await;
    ens.primary(alice.address(), "alice.eth").await;
    ens.register("eth", "carol", carol.address(), &[], &[])
        .await;
    let url = anvil.url.clone();
    let srv = TestServer::start_with(&Backend::Sqlite, move |config| {
        config.chains.insert(
            format!("eip155:{CHAIN_ID}"),
            ChainConfig {
                rpc: vec![url],
                name: None,
                timeout_ms: 2_000,
                max_rps: None,
                multicall: None,
            },
        );
        config.names.ens_chain = format!("eip155:{CHAIN_ID}");
        config.names.ipfs_gateway = format!("http://{ipfs}/ipfs");
        config.names.gateway_allow = vec![ipfs];
    })
    .await;
    let bob = srv.register("bob", "pw").await;
    let bob_t = bob["access_token"].as_str().expect("token").to_owned();

    // Signing in makes the verified primary name the display name.
    let (alice_id, alice_t) = wallet_session(&srv, &alice).await;
    let displayname = |user: String| {
        let srv = &srv;
        async move {
            srv.get(
                &format!("/_matrix/client/v3/profile/{user}/displayname"),
                None,
            )
            .await
            .1["displayname"]
                .clone()
        }
    };
    assert_eq!(displayname(alice_id.clone()).await, "alice.eth");
    // …and the ENS avatar, imported into the media repository, the avatar.
    let avatar = |user: String| {
        let srv = &srv;
        async move {
            srv.get(
                &format!("/_matrix/client/v3/profile/{user}/avatar_url"),
                None,
            )
            .await
            .1["avatar_url"]
                .clone()
        }
    };
    let imported = avatar(alice_id.clone()).await;
    let media = imported
        .as_str()
        .and_then(|a| a.strip_prefix("mxc://localhost/"))
        .unwrap_or_else(|| panic!("an mxc:// avatar: {imported}"))
        .to_owned();
    let downloaded = srv
        .http
        .get(srv.url(&format!(
            "/_matrix/client/v1/media/download/localhost/{media}"
        )))
        .bearer_auth(&bob_t)
        .send()
        .await
        .expect("download");
    assert_eq!(downloaded.headers()["content-type"], "image/png");
    assert_eq!(
        downloaded.bytes().await.expect("bytes").to_vec(),
        avatar_png
    );
    // Signing in again keeps it (nothing fetched twice).
    wallet_session(&srv, &alice).await;
    assert_eq!(avatar(alice_id.clone()).await, imported);

    // Resolving: names (normalised), addresses, CAIP-10, did:pkh.
    let resolve = |id: &str| {
        let (srv, token, id) = (&srv, bob_t.clone(), id.to_owned());
        async move {
            srv.get(
                &format!("/_matrix/client/unstable/io.matrixon/resolve/{id}"),
                Some(&token),
            )
            .await
        }
    };
    let found = resolve("alice.eth").await;
    assert_eq!(found.0, 200, "{}", found.1);
    assert_eq!(
        found.1,
        json!({"user_id": alice_id, "address": format!("{:#x}", alice.address()), "name": "alice.eth"})
    );
    assert_eq!(resolve("ALICE.eth").await.1["user_id"], alice_id);
    let did = format!("did:pkh:eip155:1:{:#x}", alice.address());
    assert_eq!(resolve(&did).await.1["user_id"], alice_id);
    assert_eq!(resolve(&did).await.1["did"], did);
    assert_error(&resolve("nobody.eth").await, 404, "M_NOT_FOUND");
    assert_error(&resolve("carol.eth").await, 404, "M_NOT_FOUND");
    assert_error(&resolve("bad..eth").await, 400, "M_INVALID_PARAM");
    assert_error(&resolve("did:example:123").await, 400, "M_INVALID_PARAM");
    assert_error(&resolve("did:web:unknown.invalid").await, 502, "M_UNKNOWN");

    // did:ethr follows the registry on chain: Dave hands his identity to Alice.
    let (dave_id, _) = wallet_session(&srv, &dave).await;
    let ethr = format!("did:ethr:0x7a69:{:#x}", dave.address());
    assert_eq!(resolve(&ethr).await.1["user_id"], dave_id);
    let handover = changeOwnerCall {
        identity: dave.address(),
        newOwner: alice.address(),
    };
    anvil
        .transact_as(
            dave.address(),
            matrixon_chain::did::ETHR_REGISTRY,
            &handover.abi_encode(),
        )
        .await;
    assert_eq!(resolve(&ethr).await.1["user_id"], alice_id);

    // Its DID document comes from the registry: the owner, and delegates while valid (a
    // sigAuth delegate may authenticate; a revoked one is gone).
    let document = |did: String| {
        let (srv, token) = (&srv, bob_t.clone());
        async move {
            srv.get(
                &format!("/_matrix/client/unstable/io.matrixon/did/{did}"),
                Some(&token),
            )
            .await
        }
    };
    let (signer, verifier) = (Key::new(171).address(), Key::new(172).address());
    for (kind, delegate) in [("sigAuth", signer), ("veriKey", verifier)] {
        let add = addDelegateCall {
            identity: dave.address(),
            delegateType: delegate_type(kind),
            delegate,
            validity: alloy::primitives::U256::from(86_400),
        };
        anvil
            .transact_as(
                alice.address(),
                matrixon_chain::did::ETHR_REGISTRY,
                &add.abi_encode(),
            )
            .await;
    }
    let account = |a: alloy::primitives::Address| format!("eip155:31337:{a:#x}");
    let (status, doc) = document(ethr.clone()).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["id"], ethr.as_str());
    let methods: Vec<&str> = doc["verificationMethod"]
        .as_array()
        .expect("methods")
        .iter()
        .map(|m| m["blockchainAccountId"].as_str().expect("account"))
        .collect();
    assert_eq!(
        methods,
        [account(alice.address()), account(verifier), account(signer)],
        "{doc}"
    );
    assert_eq!(
        doc["authentication"].as_array().map(Vec::len),
        Some(2),
        "owner and sigAuth: {doc}"
    );
    let revoke = revokeDelegateCall {
        identity: dave.address(),
        delegateType: delegate_type("sigAuth"),
        delegate: signer,
    };
    anvil
        .transact_as(
            alice.address(),
            matrixon_chain::did::ETHR_REGISTRY,
            &revoke.abi_encode(),
        )
        .await;
    let (_, doc) = document(ethr.clone()).await;
    let methods: Vec<&str> = doc["verificationMethod"]
        .as_array()
        .expect("methods")
        .iter()
        .map(|m| m["blockchainAccountId"].as_str().expect("account"))
        .collect();
    assert_eq!(
        methods,
        [account(alice.address()), account(verifier)],
        "{doc}"
    );
    // did:pkh and a local user's did:web have documents too; nonsense is refused.
    let (status, doc) = document(did.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        doc["verificationMethod"][0]["blockchainAccountId"],
        format!("eip155:1:{:#x}", alice.address())
    );
    let (status, doc) = document(format!(
        "did:web:localhost:users:{}",
        alice_id
            .trim_start_matches('@')
            .split(':')
            .next()
            .expect("localpart")
    ))
    .await;
    assert_eq!(status, 200, "{doc}");
    assert_error(
        &document("did:example:1".into()).await,
        400,
        "M_INVALID_PARAM",
    );

    // A display name the user chose wins over ENS, at the next sign-in too.
    let (status, body) = srv
        .put_json(
            &format!("/_matrix/client/v3/profile/{alice_id}/displayname"),
            Some(&alice_t),
            &json!({"displayname": "Alice A."}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = srv
        .put_json(
            &format!("/_matrix/client/v3/profile/{alice_id}/avatar_url"),
            Some(&alice_t),
            &json!({"avatar_url": "mxc://localhost/mine"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wallet_session(&srv, &alice).await;
    assert_eq!(displayname(alice_id.clone()).await, "Alice A.");
    assert_eq!(avatar(alice_id.clone()).await, "mxc://localhost/mine");

    // Invite by name: Carol's wallet never signed in; her account waits with the invite.
    let (status, created) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&bob_t),
            &json!({"preset": "private_chat"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let room = created["room_id"].as_str().expect("room").to_owned();
    let invite_path = format!("/_matrix/client/unstable/io.matrixon/rooms/{room}/invite");
    let (status, invited) = srv
        .post_json(
            &invite_path,
            Some(&bob_t),
            &json!({"identifier": "carol.eth"}),
        )
        .await;
    assert_eq!(status, 200, "{invited}");
    let carol_id = format!("@{:#x}:localhost", carol.address());
    assert_eq!(invited["user_id"], carol_id);
    let (signed_in, carol_t) = wallet_session(&srv, &carol).await;
    assert_eq!(signed_in, carol_id, "the reserved account is hers");
    let (status, joined) = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&carol_t),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{joined}");
    assert_error(
        &srv.post_json(
            &invite_path,
            Some(&bob_t),
            &json!({"identifier": "Bad..eth"}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &srv.post_json(
            &invite_path,
            Some(&alice_t),
            &json!({"identifier": "carol.eth"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &srv.post_json(&invite_path, Some(&bob_t), &json!({"who": "carol.eth"}))
            .await,
        400,
        "M_BAD_JSON",
    );

    // A reservation gives way to the wallet's owner: Erin, who has a password account,
    // links the wallet an invite had reserved an account for.
    let erin = Key::new(165);
    ens.register("eth", "erin", erin.address(), &[], &[]).await;
    let (status, reserved) = srv
        .post_json(
            &invite_path,
            Some(&bob_t),
            &json!({"identifier": "erin.eth"}),
        )
        .await;
    assert_eq!(status, 200, "{reserved}");
    srv.register("erin", "erin password").await;
    let erin_t = srv.login("erin", "erin password").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (text, signature) = crate::wallet::signed_message(&srv, &erin).await;
    let linked = srv
        .post_with_password_uia(
            "/_matrix/client/unstable/io.matrixon/wallets",
            &erin_t,
            json!({"message": text, "signature": signature}),
            "erin",
            "erin password",
        )
        .await;
    assert_eq!(linked.0, 200, "{}", linked.1);
    assert_eq!(resolve("erin.eth").await.1["user_id"], "@erin:localhost");

    // Names that start like an address are names.
    ens.register("eth", "0xsplits", alice.address(), &[], &[])
        .await;
    assert_eq!(resolve("0xsplits.eth").await.1["user_id"], alice_id);

    // The user directory finds people by their ENS name.
    let (status, body) = srv
        .post_json(
            &format!("/_matrix/client/unstable/io.matrixon/rooms/{room}/invite"),
            Some(&bob_t),
            &json!({"identifier": "alice.eth"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    ens.register("eth", "carolyn", carol.address(), &[], &[])
        .await;
    ens.primary(carol.address(), "carolyn.eth").await;
    // Lookups (misses too) are cached for names.cache_ttl_s: the new name shows after that.
    srv.clock.advance(std::time::Duration::from_secs(301));
    wallet_session(&srv, &carol).await;
    let (_, found) = srv
        .post_json(
            "/_matrix/client/v3/user_directory/search",
            Some(&bob_t),
            &json!({"search_term": "carolyn.eth"}),
        )
        .await;
    assert_eq!(found["results"][0]["user_id"], carol_id, "{found}");

    // did:web documents: linked wallets as verification methods, the Matrix ID a service.
    let (status, document) = srv
        .get(&format!("/users/{:#x}/did.json", alice.address()), None)
        .await;
    assert_eq!(status, 200, "{document}");
    let id = format!("did:web:localhost:users:{:#x}", alice.address());
    assert_eq!(document["id"], id);
    assert_eq!(
        document["verificationMethod"][0]["blockchainAccountId"],
        format!("eip155:1:{:#x}", alice.address())
    );
    assert_eq!(document["service"][0]["type"], "MatrixUser");
    assert_error(
        &srv.get("/users/nobody/did.json", None).await,
        404,
        "M_NOT_FOUND",
    );
    let _ = DEPLOYER;
    srv.finish().await;
}

/// An HTTPS server (certificate for `localhost`/127.0.0.1 from the test CA in
/// `tests/fixtures/tls`) answering every GET with `document`; its port and request count.
async fn https_document(document: serde_json::Value) -> (u16, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let acceptor = crate::tls::acceptor();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let body = document.to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, body, counter) = (acceptor.clone(), body.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, hits)
}

/// did:web over TLS with a test CA: resolved when the host is allow-listed, refused (before
/// any request) when the document's host is a loopback address that is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn did_web_resolves_over_tls_and_refuses_private_hosts() {
    use crate::harness::{Backend, TestServer, assert_error};
    use crate::wallet::wallet_session;

    let owner = Key::new(171);
    let document = json!({
        "id": "did:web:localhost",
        "verificationMethod": [{
            "id": "did:web:localhost#key-1",
            "type": "EcdsaSecp256k1RecoveryMethod2020",
            "controller": "did:web:localhost",
            "blockchainAccountId": format!("eip155:1:{}", owner.address().to_checksum(None)),
        }]
    });
    let (port, hits) = https_document(document).await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, include_bytes!("../fixtures/tls/ca.pem")).expect("ca");
    let ca = ca.to_string_lossy().into_owned();
    let srv = TestServer::start_with(&Backend::Sqlite, move |config| {
        config.names.gateway_allow = vec![format!("localhost:{port}")];
        config.names.extra_ca_file = Some(ca);
    })
    .await;
    let (owner_id, token) = wallet_session(&srv, &owner).await;
    let resolve = |id: String| {
        let (srv, token) = (&srv, token.clone());
        async move {
            srv.get(
                &format!("/_matrix/client/unstable/io.matrixon/resolve/{id}"),
                Some(&token),
            )
            .await
        }
    };
    // The DID's own `%3A` (a port) is escaped again inside the request path.
    let found = resolve(format!("did:web:localhost%253A{port}")).await;
    assert_eq!(found.0, 200, "{}", found.1);
    assert_eq!(found.1["user_id"], owner_id);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // The same server by IP is not allow-listed: a loopback address, refused unasked.
    let refused = resolve(format!("did:web:127.0.0.1%253A{port}")).await;
    assert_error(&refused, 502, "M_UNKNOWN");
    assert!(
        refused.1["error"]
            .as_str()
            .expect("message")
            .contains("refused"),
        "{}",
        refused.1
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    srv.finish().await;
}

/// With Redis configured, lookups are cached there (shared by instances): a cached name still
/// resolves while the chain is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_lookups_are_cached_in_redis_when_configured() {
    use crate::harness::{Backend, TestServer, redis_url};
    use crate::wallet::wallet_session;

    let Some(redis) = redis_url("name_lookups_are_cached_in_redis_when_configured") else {
        return;
    };
    let anvil = Anvil::start().await;
    let ens = EnsFixture::new(&anvil).await;
    let alice = Key::new(181);
    ens.register("eth", "alice", alice.address(), &[], &[])
        .await;
    let url = anvil.url.clone();
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos();
    let server_name = format!("names{unique}.test");
    let (name, redis_for_server) = (server_name.clone(), redis.clone());
    let srv = TestServer::start_with(&Backend::Sqlite, move |config| {
        config.server_name = name.try_into().expect("server name");
        config.redis.url = Some(redis_for_server);
        config.chains.insert(
            format!("eip155:{CHAIN_ID}"),
            ChainConfig {
                rpc: vec![url],
                name: None,
                timeout_ms: 1_000,
                max_rps: None,
                multicall: None,
            },
        );
        config.names.ens_chain = format!("eip155:{CHAIN_ID}");
    })
    .await;
    let (alice_id, token) = wallet_session(&srv, &alice).await;
    let path = "/_matrix/client/unstable/io.matrixon/resolve/alice.eth";
    assert_eq!(srv.get(path, Some(&token)).await.1["user_id"], alice_id);
    let client = redis::Client::open(redis).expect("redis");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let stored: Option<String> = redis::cmd("GET")
        .arg(format!("matrixon:{server_name}:names:fwd:alice.eth"))
        .query_async(&mut connection)
        .await
        .expect("GET");
    assert!(
        stored.is_some_and(|s| s.contains(&format!("{:#x}", alice.address()))),
        "the lookup is in Redis"
    );
    drop(anvil);
    assert_eq!(srv.get(path, Some(&token)).await.1["user_id"], alice_id);
    srv.finish().await;
}
