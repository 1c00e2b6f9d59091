//! Sign-In with Ethereum logins for dApps (`io.matrixon.login.siwe`), from plain wallets and
//! contract wallets, and every way a sign-in can be refused.

use std::collections::BTreeMap;

use alloy::{
    primitives::{Address, B256},
    sol_types::SolValue,
};
use matrixon::config::WalletRegistration;
use matrixon_chain::rpc::ChainConfig;
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    anvil::{Anvil, CHAIN_ID, Key, closed_endpoint, creation_code},
    harness::{Backend, TestServer, assert_error, both_backends, redis_url},
};

both_backends!(
    sdk_wallet_login_provisions_then_reuses_the_account,
    refused_sign_ins_change_nothing,
    wallet_registration_policy,
    wallet_accounts_pass_user_interactive_auth_with_their_wallet,
    linking_wallets_to_accounts,
);

const NONCE_PATH: &str = "/_matrix/client/unstable/io.matrixon/siwe/nonce";

/// A message built from the server's parameters, as a dApp builds it.
fn message(params: &Value, address: Address, chain_id: u64, extra: &str) -> String {
    let now = OffsetDateTime::now_utc().format(&Rfc3339).expect("time");
    format!(
        "{} wants you to sign in with your Ethereum account:\n{}\n\n{}\n\nURI: {}\nVersion: 1\nChain ID: {chain_id}\nNonce: {}\nIssued At: {now}{extra}",
        params["domain"].as_str().expect("domain"),
        address.to_checksum(None),
        params["statement"].as_str().expect("statement"),
        params["uri"].as_str().expect("uri"),
        params["nonce"].as_str().expect("nonce"),
    )
}

async fn params(srv: &TestServer) -> Value {
    let (status, body) = srv.get(NONCE_PATH, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn siwe_login(srv: &TestServer, text: &str, signature: &str) -> (u16, Value) {
    srv.post_json(
        "/_matrix/client/v3/login",
        None,
        &json!({"type": "io.matrixon.login.siwe", "message": text, "signature": signature}),
    )
    .await
}

/// A fresh sign-in message for `key` on chain 1, signed: `(message, signature)`.
pub async fn signed_message(srv: &TestServer, key: &Key) -> (String, String) {
    let text = message(&params(srv).await, key.address(), 1, "");
    let signature = hex(&key.personal_sign(&text));
    (text, signature)
}

/// Signs `key` in (creating its account on first use): `(user_id, access_token)`.
pub async fn wallet_session(srv: &TestServer, key: &Key) -> (String, String) {
    let (text, signature) = signed_message(srv, key).await;
    let (status, body) = siwe_login(srv, &text, &signature).await;
    assert_eq!(status, 200, "{body}");
    (
        body["user_id"].as_str().expect("user id").to_owned(),
        body["access_token"].as_str().expect("token").to_owned(),
    )
}

/// A matrix-sdk client signed in with `key` through the SIWE login type.
pub async fn sdk_wallet_client(srv: &TestServer, key: &Key) -> matrix_sdk::Client {
    let (text, signature) = signed_message(srv, key).await;
    let mut data = serde_json::Map::new();
    data.insert("message".to_owned(), json!(text));
    data.insert("signature".to_owned(), json!(signature));
    let client = srv.client().await;
    client
        .matrix_auth()
        .login_custom("io.matrixon.login.siwe", data)
        .expect("login data")
        .send()
        .await
        .expect("wallet login");
    client
}

fn hex(bytes: &[u8]) -> String {
    format!("0x{}", alloy::primitives::hex::encode(bytes))
}

async fn sdk_wallet_login_provisions_then_reuses_the_account(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let wallet = Key::new(31);
    let expected_user = format!("@{:#x}:localhost", wallet.address());

    let flows = srv.get("/_matrix/client/v3/login", None).await.1;
    assert!(
        flows["flows"]
            .as_array()
            .expect("flows")
            .iter()
            .any(|f| f["type"] == "io.matrixon.login.siwe")
    );
    let p = params(&srv).await;
    assert_eq!(p["chain_ids"], json!(["eip155:1"]));
    assert_eq!(p["version"], "1");
    assert!(p["nonce"].as_str().expect("nonce").len() >= 8);
    assert!(p["expires_at_ms"].as_i64().expect("expiry") > 0);

    // matrix-sdk logs in with the custom login type; the account is created on first sign-in.
    let text = message(&p, wallet.address(), 1, "");
    let mut data = serde_json::Map::new();
    data.insert("message".to_owned(), json!(text));
    data.insert(
        "signature".to_owned(),
        json!(hex(&wallet.personal_sign(&text))),
    );
    let client = srv.client().await;
    let login = client
        .matrix_auth()
        .login_custom("io.matrixon.login.siwe", data)
        .expect("login data")
        .initial_device_display_name("dApp")
        .send()
        .await
        .expect("wallet login");
    assert_eq!(login.user_id.as_str(), expected_user);
    let whoami = client.whoami().await.expect("whoami");
    assert_eq!(whoami.user_id.as_str(), expected_user);
    assert_eq!(whoami.device_id.as_deref(), Some(&*login.device_id));

    // A second sign-in (fresh nonce) reuses the account, on a new device.
    let p = params(&srv).await;
    let text = message(&p, wallet.address(), 1, "");
    let again = siwe_login(&srv, &text, &hex(&wallet.personal_sign(&text))).await;
    assert_eq!(again.0, 200, "{:?}", again.1);
    assert_eq!(again.1["user_id"], expected_user);
    assert_ne!(again.1["device_id"], json!(login.device_id));
    assert_eq!(client.devices().await.expect("devices").devices.len(), 2);
    srv.finish().await;
}

async fn refused_sign_ins_change_nothing(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let wallet = Key::new(32);
    let stranger = Key::new(33);
    let services = srv.server.as_ref().expect("running").services.clone();
    let sign = |k: &Key, t: &str| hex(&k.personal_sign(t));

    // Reused nonce: the first login works, replaying the same signed message does not.
    let p = params(&srv).await;
    let text = message(&p, wallet.address(), 1, "");
    assert_eq!(siwe_login(&srv, &text, &sign(&wallet, &text)).await.0, 200);
    assert_error(
        &siwe_login(&srv, &text, &sign(&wallet, &text)).await,
        403,
        "M_FORBIDDEN",
    );

    // Every other refusal, each for a stranger's fresh address that must stay account-less.
    let victim = stranger.address();
    let mut cases: Vec<(&str, String, String)> = Vec::new();
    let p = params(&srv).await;
    let unknown =
        message(&p, victim, 1, "").replace(p["nonce"].as_str().expect("nonce"), "madeUpNonce123");
    cases.push(("unknown nonce", unknown.clone(), sign(&stranger, &unknown)));
    let p = params(&srv).await;
    let expired = message(&p, victim, 1, "\nExpiration Time: 2020-01-01T00:00:00Z");
    cases.push(("expired", expired.clone(), sign(&stranger, &expired)));
    let p = params(&srv).await;
    let early = message(&p, victim, 1, "\nNot Before: 2999-01-01T00:00:00Z");
    cases.push(("not yet valid", early.clone(), sign(&stranger, &early)));
    let p = params(&srv).await;
    let other_domain =
        message(&p, victim, 1, "").replacen(p["domain"].as_str().expect("d"), "evil.example", 1);
    cases.push((
        "other domain",
        other_domain.clone(),
        sign(&stranger, &other_domain),
    ));
    let p = params(&srv).await;
    let other_uri =
        message(&p, victim, 1, "").replace(p["uri"].as_str().expect("u"), "https://evil.example/");
    cases.push(("other URI", other_uri.clone(), sign(&stranger, &other_uri)));
    let p = params(&srv).await;
    let wrong_chain = message(&p, victim, 5, "");
    cases.push((
        "chain not allowed",
        wrong_chain.clone(),
        sign(&stranger, &wrong_chain),
    ));
    let p = params(&srv).await;
    let others_key = message(&p, victim, 1, "");
    cases.push((
        "signed by another key",
        others_key.clone(),
        sign(&wallet, &others_key),
    ));
    let p = params(&srv).await;
    let signed = message(&p, victim, 1, "");
    let tampered = signed.replace("Sign in to", "Sign in to evil");
    cases.push(("tampered", tampered, sign(&stranger, &signed)));
    let p = params(&srv).await;
    let malformed = message(&p, victim, 1, "");
    cases.push(("malformed hex", malformed, "0xnothex".to_owned()));
    let p = params(&srv).await;
    let oversize = message(
        &p,
        victim,
        1,
        &format!("\nRequest ID: {}", "a".repeat(17_000)),
    );
    cases.push(("oversize", oversize.clone(), sign(&stranger, &oversize)));
    for (name, text, signature) in cases {
        let refused = siwe_login(&srv, &text, &signature).await;
        assert_eq!(refused.0, 403, "{name}: {:?}", refused.1);
        assert_eq!(refused.1["errcode"], "M_FORBIDDEN", "{name}");
        assert!(
            refused.1["error"]
                .as_str()
                .expect("message")
                .starts_with("Sign-in refused"),
            "{name}: {:?}",
            refused.1
        );
    }
    assert_eq!(
        services
            .store
            .wallet_owner(&format!("{victim:#x}"))
            .await
            .expect("db"),
        None,
        "no account created"
    );
    let victim_id = matrix_sdk::ruma::UserId::parse(format!("@{victim:#x}:localhost")).expect("id");
    assert!(
        services
            .store
            .devices(&victim_id)
            .await
            .expect("db")
            .is_empty()
    );
    assert!(services.store.user(&victim_id).await.expect("db").is_none());

    // Malformed requests are JSON errors.
    let no_signature = srv
        .post_json(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "io.matrixon.login.siwe", "message": "x"}),
        )
        .await;
    assert_error(&no_signature, 400, "M_BAD_JSON");
    srv.finish().await;
}

async fn wallet_registration_policy(backend: Backend) {
    let allowed = Key::new(34);
    let other = Key::new(35);
    let srv = TestServer::start_with(&backend, |c| {
        c.wallet.registration = WalletRegistration::Allowlist;
        c.wallet.allowlist = vec![
            format!("{:#x}", allowed.address())
                .to_uppercase()
                .replacen("0X", "0x", 1),
        ];
    })
    .await;
    let (t, s) = signed_message(&srv, &allowed).await;
    assert_eq!(siwe_login(&srv, &t, &s).await.0, 200, "allow-listed");
    let (t, s) = signed_message(&srv, &other).await;
    assert_error(&siwe_login(&srv, &t, &s).await, 403, "M_FORBIDDEN");
    let db = srv.stop().await;

    // Closed: the already-linked wallet still signs in, no new ones.
    let mut config = crate::harness::test_config(&db.url);
    config.wallet.registration = WalletRegistration::Closed;
    let srv = TestServer::start_on(db, config).await;
    let (t, s) = signed_message(&srv, &allowed).await;
    assert_eq!(siwe_login(&srv, &t, &s).await.0, 200, "linked wallet");
    let (t, s) = signed_message(&srv, &other).await;
    assert_error(&siwe_login(&srv, &t, &s).await, 403, "M_FORBIDDEN");
    srv.finish().await;
}

#[tokio::test]
async fn contract_wallets_sign_in_through_the_chain() {
    let anvil = Anvil::start().await;
    let caip2 = format!("eip155:{CHAIN_ID}");
    let (chain_key, rpc_url) = (caip2.clone(), anvil.url.clone());
    let srv = TestServer::start_with(&Backend::Sqlite, move |c| {
        c.wallet.chains = vec![chain_key.clone()];
        c.chains = BTreeMap::from([(
            chain_key,
            ChainConfig {
                rpc: vec![rpc_url],
                name: None,
                timeout_ms: 5_000,
                max_rps: None,
                multicall: None,
            },
        )]);
    })
    .await;
    let owner = Key::new(41);

    // ERC-1271: a deployed smart account.
    let mut code = creation_code("SmartAccount");
    code.extend_from_slice(&owner.address().abi_encode());
    let account = anvil.deploy(&code).await;
    let p = params(&srv).await;
    let text = message(&p, account, CHAIN_ID, "");
    let ok = siwe_login(&srv, &text, &hex(&owner.personal_sign(&text))).await;
    assert_eq!(ok.0, 200, "{:?}", ok.1);
    assert_eq!(ok.1["user_id"], format!("@{account:#x}:localhost"));

    // ERC-6492: an account not deployed yet.
    let account_to_be = anvil
        .counterfactual(owner.address(), B256::repeat_byte(9))
        .await;
    let predicted = account_to_be.address;
    let p = params(&srv).await;
    let text = message(&p, predicted, CHAIN_ID, "");
    let wrapped = account_to_be.wrap(owner.personal_sign(&text));
    let ok = siwe_login(&srv, &text, &hex(&wrapped)).await;
    assert_eq!(ok.0, 200, "{:?}", ok.1);
    assert_eq!(ok.1["user_id"], format!("@{predicted:#x}:localhost"));
    srv.finish().await;

    // The chain unreachable during a contract-wallet check: 503, and no account.
    let (chain_key, dead) = (caip2.clone(), closed_endpoint());
    let srv = TestServer::start_with(&Backend::Sqlite, move |c| {
        c.wallet.chains = vec![chain_key.clone()];
        c.chains = BTreeMap::from([(
            chain_key,
            ChainConfig {
                rpc: vec![dead],
                name: None,
                timeout_ms: 500,
                max_rps: None,
                multicall: None,
            },
        )]);
    })
    .await;
    let p = params(&srv).await;
    let text = message(&p, account, CHAIN_ID, "");
    let down = siwe_login(&srv, &text, &hex(&owner.personal_sign(&text))).await;
    assert_eq!(down.0, 503, "{:?}", down.1);
    assert_eq!(down.1["errcode"], "M_UNKNOWN");
    let services = &srv.server.as_ref().expect("running").services;
    assert_eq!(
        services
            .store
            .wallet_owner(&format!("{account:#x}"))
            .await
            .expect("db"),
        None
    );
    srv.finish().await;
}

async fn wallet_accounts_pass_user_interactive_auth_with_their_wallet(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let wallet = Key::new(36);
    let stranger = Key::new(37);
    let (t, s) = signed_message(&srv, &wallet).await;
    let first = siwe_login(&srv, &t, &s).await.1;
    let (t, s) = signed_message(&srv, &wallet).await;
    let second = siwe_login(&srv, &t, &s).await.1;
    let token = second["access_token"].as_str().expect("token");
    let (t, s) = signed_message(&srv, &stranger).await;
    assert_eq!(
        siwe_login(&srv, &t, &s).await.0,
        200,
        "the stranger has an account too"
    );

    // A wallet account has no password: UIA offers the wallet stage.
    let body = json!({"devices": [first["device_id"]]});
    let challenge = srv
        .post_json("/_matrix/client/v3/delete_devices", Some(token), &body)
        .await;
    assert_eq!(challenge.0, 401, "{:?}", challenge.1);
    assert_eq!(
        challenge.1["flows"],
        json!([{"stages": ["m.login.sso"]}, {"stages": ["io.matrixon.login.siwe"]}])
    );
    let session = challenge.1["session"].clone();

    // Another wallet (even one with its own account) cannot pass it.
    let (t, s) = signed_message(&srv, &stranger).await;
    let mut attempt = body.clone();
    attempt["auth"] =
        json!({"type": "io.matrixon.login.siwe", "session": session, "message": t, "signature": s});
    let refused = srv
        .post_json("/_matrix/client/v3/delete_devices", Some(token), &attempt)
        .await;
    assert_eq!(refused.0, 401, "{:?}", refused.1);
    assert_eq!(refused.1["errcode"], "M_FORBIDDEN");

    // The account's own wallet passes, and the device goes.
    let (t, s) = signed_message(&srv, &wallet).await;
    attempt["auth"] =
        json!({"type": "io.matrixon.login.siwe", "session": session, "message": t, "signature": s});
    let done = srv
        .post_json("/_matrix/client/v3/delete_devices", Some(token), &attempt)
        .await;
    assert_eq!(done.0, 200, "{:?}", done.1);
    assert_error(
        &srv.get(
            "/_matrix/client/v3/account/whoami",
            first["access_token"].as_str(),
        )
        .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(
        srv.get("/_matrix/client/v3/account/whoami", Some(token))
            .await
            .0,
        200
    );
    srv.finish().await;
}

async fn linking_wallets_to_accounts(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let path = "/_matrix/client/unstable/io.matrixon/wallets";
    srv.register("ops", "ops password").await;
    let token = srv.login("ops", "ops password").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let mine = Key::new(51);
    let theirs = Key::new(52);
    assert_eq!(srv.get(path, Some(&token)).await.1, json!({"wallets": []}));
    assert_error(&srv.get(path, None).await, 401, "M_MISSING_TOKEN");

    // A password account links a wallet (UIA with its password, then the wallet's proof).
    let (text, signature) = signed_message(&srv, &mine).await;
    let linked = srv
        .post_with_password_uia(
            path,
            &token,
            json!({"message": text, "signature": signature}),
            "ops",
            "ops password",
        )
        .await;
    assert_eq!(linked.0, 200, "{:?}", linked.1);
    assert_eq!(linked.1["address"], format!("{:#x}", mine.address()));
    let list = srv.get(path, Some(&token)).await.1;
    assert_eq!(
        list["wallets"][0]["address"],
        format!("{:#x}", mine.address())
    );
    // Signing in with that wallet now reaches the password account.
    let (text, signature) = signed_message(&srv, &mine).await;
    assert_eq!(
        siwe_login(&srv, &text, &signature).await.1["user_id"],
        "@ops:localhost"
    );

    // A wallet with its own account cannot be linked here.
    let (text, signature) = signed_message(&srv, &theirs).await;
    assert_eq!(siwe_login(&srv, &text, &signature).await.0, 200);

    // Wallet → user: by address (any valid spelling) or CAIP-10 account.
    let resolve = |id: String| {
        let srv = &srv;
        let token = token.clone();
        async move {
            srv.get(
                &format!("/_matrix/client/unstable/io.matrixon/resolve/{id}"),
                Some(&token),
            )
            .await
        }
    };
    let found = resolve(mine.address().to_checksum(None)).await;
    assert_eq!(found.0, 200, "{:?}", found.1);
    assert_eq!(
        found.1,
        json!({"user_id": "@ops:localhost", "address": format!("{:#x}", mine.address())})
    );
    let found = resolve(format!("eip155:1:{:#x}", theirs.address())).await;
    assert_eq!(
        found.1["user_id"],
        format!("@{:#x}:localhost", theirs.address())
    );
    assert_error(
        &resolve(format!("{:#x}", Key::new(53).address())).await,
        404,
        "M_NOT_FOUND",
    );
    // A checksummed address with the case of one letter flipped: a typo, refused.
    let mut typo = mine.address().to_checksum(None).into_bytes();
    let letter = typo[2..]
        .iter()
        .position(u8::is_ascii_alphabetic)
        .expect("a letter")
        + 2;
    typo[letter] ^= 0x20;
    let typo = String::from_utf8(typo).expect("ascii");
    assert_error(&resolve(typo).await, 400, "M_INVALID_PARAM");
    for bad in [
        "0x1234",
        "alice",
        "eip155:x:0x0000000000000000000000000000000000000000",
        "0xZZ00000000000000000000000000000000000000",
    ] {
        assert_error(&resolve(bad.to_owned()).await, 400, "M_INVALID_PARAM");
    }
    assert_error(
        &srv.get(
            &format!(
                "/_matrix/client/unstable/io.matrixon/resolve/{:#x}",
                mine.address()
            ),
            None,
        )
        .await,
        401,
        "M_MISSING_TOKEN",
    );
    let (text, signature) = signed_message(&srv, &theirs).await;
    let conflict = srv
        .post_with_password_uia(
            path,
            &token,
            json!({"message": text, "signature": signature}),
            "ops",
            "ops password",
        )
        .await;
    assert_error(&conflict, 403, "M_FORBIDDEN");
    assert_eq!(
        srv.get(path, Some(&token)).await.1["wallets"]
            .as_array()
            .expect("list")
            .len(),
        1
    );

    // Unlinking: fine for the password account, refused for a wallet-only account's last wallet.
    let one = format!("{path}/{:#x}", mine.address());
    let first = srv
        .request(
            reqwest::Method::DELETE,
            &one,
            Some(&token),
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(first.0, 401, "UIA first: {:?}", first.1);
    let auth = json!({"auth": {"type": "m.login.password", "session": first.1["session"],
        "identifier": {"type": "m.id.user", "user": "ops"}, "password": "ops password"}});
    let done = srv
        .request(
            reqwest::Method::DELETE,
            &one,
            Some(&token),
            Some(serde_json::to_vec(&auth).expect("json")),
        )
        .await;
    assert_eq!(done.0, 200, "{:?}", done.1);
    assert_eq!(srv.get(path, Some(&token)).await.1, json!({"wallets": []}));

    let (text, signature) = signed_message(&srv, &theirs).await;
    let theirs_token = siwe_login(&srv, &text, &signature).await.1["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let last = format!("{path}/{:#x}", theirs.address());
    let challenge = srv
        .request(
            reqwest::Method::DELETE,
            &last,
            Some(&theirs_token),
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(challenge.0, 401);
    let (text, signature) = signed_message(&srv, &theirs).await;
    let auth = json!({"auth": {"type": "io.matrixon.login.siwe", "session": challenge.1["session"], "message": text, "signature": signature}});
    let refused = srv
        .request(
            reqwest::Method::DELETE,
            &last,
            Some(&theirs_token),
            Some(serde_json::to_vec(&auth).expect("json")),
        )
        .await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_live_in_redis_when_configured() {
    let Some(url) = redis_url("nonces_live_in_redis_when_configured") else {
        return;
    };
    let redis_config = url.clone();
    let srv = TestServer::start_with(&Backend::Sqlite, move |c| {
        c.redis.url = Some(redis_config);
    })
    .await;
    let wallet = Key::new(38);
    let mut redis = redis::Client::open(url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let services = srv.server.as_ref().expect("running").services.clone();

    // The nonce is a Redis key with a TTL, not a database row.
    let p = params(&srv).await;
    let key = format!(
        "matrixon:localhost:nonce:siwe:{}",
        p["nonce"].as_str().expect("nonce")
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("pttl");
    assert!(ttl > 290_000 && ttl <= 300_000, "TTL {ttl} ms");
    let in_database = services
        .store
        .take_nonce(
            "siwe",
            p["nonce"].as_str().expect("nonce"),
            services.now_ms(),
        )
        .await
        .expect("db");
    assert!(!in_database, "no nonce row in the database");

    // Spent once, then gone.
    let text = message(&p, wallet.address(), 1, "");
    let signature = hex(&wallet.personal_sign(&text));
    assert_eq!(siwe_login(&srv, &text, &signature).await.0, 200);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("exists");
    assert_eq!(exists, 0);
    assert_error(
        &siwe_login(&srv, &text, &signature).await,
        403,
        "M_FORBIDDEN",
    );

    // The server's clock decides expiry too, not only Redis's TTL.
    let p = params(&srv).await;
    srv.clock.advance(std::time::Duration::from_secs(301));
    let text = message(&p, wallet.address(), 1, "");
    let late = siwe_login(&srv, &text, &hex(&wallet.personal_sign(&text))).await;
    assert_error(&late, 403, "M_FORBIDDEN");
    srv.finish().await;
}

#[tokio::test]
async fn an_unreachable_redis_stops_the_start_and_says_so() {
    let db = crate::harness::Database::create(&Backend::Sqlite).await;
    let mut config = crate::harness::test_config(&db.url);
    config.redis.url = Some(crate::anvil::closed_endpoint().replace("http://", "redis://"));
    let clock = std::sync::Arc::new(crate::harness::TestClock::default());
    let error = matrixon::Server::start_with_clock(config, clock)
        .await
        .err()
        .expect("no start without its Redis");
    assert!(format!("{error:#}").contains("redis.url"), "{error:#}");
    db.drop_database().await;
}
