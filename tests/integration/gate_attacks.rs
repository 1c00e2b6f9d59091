//! Attacks on token gates from the adversarial review, as they were reproduced against the
//! release binary (anvil, real tokens): one holding seating many accounts, vaults and
//! delegations that moved, redacted gates, rooms open before their gate, negations dodged
//! with a second wallet, verdicts kept longer than a gate allows, resolvers that revert, and
//! dry runs that spend the operator's provider quota. Each failed before its fix.

use std::time::Duration;

use alloy::{
    primitives::{Address, B256, U256},
    sol_types::SolCall,
};
use matrixon_chain::gate::DELEGATE_REGISTRY;
use serde_json::{Value, json};

use crate::{
    anvil::{Anvil, EnsFixture, Key, closed_endpoint},
    gate::{
        ETH, GATE, ITest, caip2, check, create_room, deploy, gated_config, join, set_balance,
        set_gate, wait_membership,
    },
    harness::{Backend, TestServer, assert_error, both_backends},
    wallet::{signed_message, wallet_session},
};

both_backends!(
    one_holding_seats_one_account_at_a_time,
    moved_vaults_and_revoked_delegations_are_rechecked,
    negations_count_every_address_of_a_user,
    a_redacted_gate_needs_the_gates_power,
    joins_never_land_before_the_gate,
);

fn token(v: &Value) -> String {
    v["access_token"].as_str().expect("token").to_owned()
}

/// A public room gated from its creation by `content`.
async fn gated_room(srv: &TestServer, token: &str, content: Value) -> String {
    create_room(
        srv,
        token,
        json!({"preset": "public_chat", "initial_state": [
            {"type": GATE, "state_key": "", "content": content}]}),
    )
    .await
}

/// Links `key`'s wallet to a password account (UIA with the password, then the signature).
async fn link(srv: &TestServer, token: &str, user: &str, password: &str, key: &Key) {
    let (text, signature) = signed_message(srv, key).await;
    let linked = srv
        .post_with_password_uia(
            "/_matrix/client/unstable/io.matrixon/wallets",
            token,
            json!({"message": text, "signature": signature}),
            user,
            password,
        )
        .await;
    assert_eq!(linked.0, 200, "{:?}", linked.1);
}

/// Unlinks `key`'s wallet (UIA with the password).
async fn unlink(srv: &TestServer, token: &str, user: &str, password: &str, key: &Key) {
    let path = format!(
        "/_matrix/client/unstable/io.matrixon/wallets/{:#x}",
        key.address()
    );
    let delete = |body: Value| {
        srv.request(
            reqwest::Method::DELETE,
            &path,
            Some(token),
            Some(body.to_string().into_bytes()),
        )
    };
    let first = delete(json!({})).await;
    assert_eq!(first.0, 401, "{:?}", first.1);
    let second = delete(json!({"auth": {
        "type": "m.login.password", "session": first.1["session"],
        "identifier": {"type": "m.id.user", "user": user}, "password": password,
    }}))
    .await;
    assert_eq!(second.0, 200, "{:?}", second.1);
}

async fn mint(anvil: &Anvil, token: Address, to: Address, amount: u64) {
    let call = ITest::mint_0Call {
        to,
        amountOrId: U256::from(amount),
    };
    anvil.transact(token, &call.abi_encode()).await;
}

/// Four password accounts in turn linked one holding wallet, joined, unlinked: all four
/// stayed joined, walletless, until the hourly re-check. Unlinking is a transfer now.
async fn one_holding_seats_one_account_at_a_time(backend: Backend) {
    let anvil = Anvil::start().await;
    let srv = TestServer::start_with(&backend, gated_config(&[(&caip2(), &anvil.url)])).await;
    let erc20 = deploy(&anvil, "TestERC20").await;
    let holder = Key::new(131);
    mint(&anvil, erc20, holder.address(), 100).await;
    let owner = token(&srv.register("owner", "pw").await);
    let room = gated_room(
        &srv,
        &owner,
        json!({"rule": {"erc20": {"chain": caip2(),
            "contract": erc20.to_string(), "min": "100"}}, "recheck_interval_s": 3600}),
    )
    .await;
    for name in ["seat1", "seat2", "seat3", "seat4"] {
        let t = token(&srv.register(name, "seat pw").await);
        link(&srv, &t, name, "seat pw", &holder).await;
        assert_eq!(
            join(&srv, &t, &room).await.0,
            200,
            "{name} holds, via the wallet"
        );
        unlink(&srv, &t, name, "seat pw", &holder).await;
        wait_membership(
            &srv,
            &owner,
            &room,
            &format!("@{name}:localhost"),
            "leave",
            15,
        )
        .await;
    }
    srv.finish().await;
}

/// A vault's tokens moving away, or its delegation revoked, left the members it delegated
/// to joined until the hourly re-check.
async fn moved_vaults_and_revoked_delegations_are_rechecked(backend: Backend) {
    let anvil = Anvil::start().await;
    let srv = TestServer::start_with(&backend, gated_config(&[(&caip2(), &anvil.url)])).await;
    anvil.place("DelegateRegistry", DELEGATE_REGISTRY).await;
    let erc20 = deploy(&anvil, "TestERC20").await;
    let owner = token(&srv.register("owner", "pw").await);
    let room = gated_room(
        &srv,
        &owner,
        json!({"rule": {"erc20": {"chain": caip2(),
            "contract": erc20.to_string(), "min": "100"}}, "recheck_interval_s": 3600,
            "include_delegations": true}),
    )
    .await;
    let delegate = |vault: Address, to: Address, enable: bool| {
        let anvil = &anvil;
        async move {
            let call = ITest::delegateAllCall {
                to,
                rights: B256::ZERO,
                enable,
            };
            anvil
                .transact_as(vault, DELEGATE_REGISTRY, &call.abi_encode())
                .await;
        }
    };
    let (vault1, wallet1) = (Key::new(141), Key::new(142));
    let (vault2, wallet2) = (Key::new(143), Key::new(144));
    mint(&anvil, erc20, vault1.address(), 100).await;
    mint(&anvil, erc20, vault2.address(), 100).await;
    delegate(vault1.address(), wallet1.address(), true).await;
    delegate(vault2.address(), wallet2.address(), true).await;
    let (user1, token1) = wallet_session(&srv, &wallet1).await;
    let (user2, token2) = wallet_session(&srv, &wallet2).await;
    assert_eq!(join(&srv, &token1, &room).await.0, 200);
    assert_eq!(join(&srv, &token2, &room).await.0, 200);
    // Let the first sweep and log poll pass.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The first vault sends its tokens elsewhere.
    let call = transferCall {
        to: Key::new(145).address(),
        value: U256::from(100),
    };
    anvil
        .transact_as(vault1.address(), erc20, &call.abi_encode())
        .await;
    wait_membership(&srv, &owner, &room, &user1, "leave", 15).await;

    // The second revokes its delegation; its tokens stay where they were.
    delegate(vault2.address(), wallet2.address(), false).await;
    wait_membership(&srv, &owner, &room, &user2, "leave", 15).await;
    srv.finish().await;
}

alloy::sol! {
    function transfer(address to, uint256 value) external returns (bool);
}

/// `all[erc20 ≥ 100, not(erc721 banned)]`: the banned badge's holder got in by linking a
/// second, clean wallet, or through a fresh vault delegating to them. A negated leaf held by
/// any of a user's addresses now counts against the user — at the door and in re-checks.
async fn negations_count_every_address_of_a_user(backend: Backend) {
    let anvil = Anvil::start().await;
    let srv = TestServer::start_with(&backend, gated_config(&[(&caip2(), &anvil.url)])).await;
    anvil.place("DelegateRegistry", DELEGATE_REGISTRY).await;
    let erc20 = deploy(&anvil, "TestERC20").await;
    let badge = deploy(&anvil, "TestERC721").await;
    let owner = token(&srv.register("owner", "pw").await);
    let rule = json!({"all": [
        {"erc20": {"chain": caip2(), "contract": erc20.to_string(), "min": "100"}},
        {"not": {"erc721": {"chain": caip2(), "contract": badge.to_string()}}}
    ]});
    let room = gated_room(
        &srv,
        &owner,
        json!({"rule": rule, "recheck_interval_s": 3600,
            "include_delegations": true}),
    )
    .await;

    // A second, clean wallet.
    let (banned, clean) = (Key::new(151), Key::new(152));
    mint(&anvil, badge, banned.address(), 1).await;
    mint(&anvil, erc20, clean.address(), 100).await;
    let mallory = token(&srv.register("mallory", "m pw").await);
    link(&srv, &mallory, "mallory", "m pw", &banned).await;
    link(&srv, &mallory, "mallory", "m pw", &clean).await;
    let refused = join(&srv, &mallory, &room).await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    let failing = &refused.1["io.matrixon.gate"]["failing"];
    assert!(
        failing
            .as_array()
            .expect("failing")
            .iter()
            .any(|f| f["path"] == "all[1].not.erc721"
                && f["address"] == clean.address().to_checksum(None)
                && f["value"]
                    .as_str()
                    .is_some_and(|v| v.contains(&banned.address().to_checksum(None)))),
        "{failing}"
    );

    // A fresh vault, holding the tokens, delegating to the banned wallet.
    let (banned2, vault) = (Key::new(153), Key::new(154));
    mint(&anvil, badge, banned2.address(), 2).await;
    mint(&anvil, erc20, vault.address(), 100).await;
    let call = ITest::delegateAllCall {
        to: banned2.address(),
        rights: B256::ZERO,
        enable: true,
    };
    anvil
        .transact_as(vault.address(), DELEGATE_REGISTRY, &call.abi_encode())
        .await;
    let (_, trent) = wallet_session(&srv, &banned2).await;
    assert_error(&join(&srv, &trent, &room).await, 403, "M_FORBIDDEN");

    // A member who joined clean and then links a banned wallet is removed.
    let (clean2, banned3) = (Key::new(155), Key::new(156));
    mint(&anvil, erc20, clean2.address(), 100).await;
    mint(&anvil, badge, banned3.address(), 3).await;
    let peggy = token(&srv.register("peggy", "p pw").await);
    link(&srv, &peggy, "peggy", "p pw", &clean2).await;
    assert_eq!(join(&srv, &peggy, &room).await.0, 200);
    link(&srv, &peggy, "peggy", "p pw", &banned3).await;
    wait_membership(&srv, &owner, &room, "@peggy:localhost", "leave", 15).await;
    srv.finish().await;
}

/// The gate needs power 100 to change, a redaction 50: a moderator opened the room by
/// redacting it. Redacting the gate now needs the gate's power.
async fn a_redacted_gate_needs_the_gates_power(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let owner = token(&srv.register("owner", "pw").await);
    let moderator = token(&srv.register("moderator", "pw").await);
    let outsider = token(&srv.register("outsider", "pw").await);
    let listed = "0x51a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4";
    let room = create_room(&srv, &owner, json!({"preset": "public_chat",
        "power_level_content_override": {"users": {"@owner:localhost": 100, "@moderator:localhost": 50}}}))
    .await;
    assert_eq!(join(&srv, &moderator, &room).await.0, 200);
    let (status, set) = set_gate(
        &srv,
        &owner,
        &room,
        &json!({"rule": {"allowlist": [listed]}}),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    let gate_event = set["event_id"].as_str().expect("event id").to_owned();
    assert_error(&join(&srv, &outsider, &room).await, 403, "M_FORBIDDEN");

    let redact = |who: String, txn: &'static str| {
        let (srv, room, gate_event) = (&srv, room.clone(), gate_event.clone());
        async move {
            srv.put_json(
                &format!("/_matrix/client/v3/rooms/{room}/redact/{gate_event}/{txn}"),
                Some(&who),
                &json!({"reason": "open up"}),
            )
            .await
        }
    };
    assert_error(&redact(moderator.clone(), "r1").await, 403, "M_FORBIDDEN");
    assert_error(&join(&srv, &outsider, &room).await, 403, "M_FORBIDDEN");
    // Whoever may change the gate may still remove it this way.
    assert_eq!(redact(owner.clone(), "r2").await.0, 200);
    assert_eq!(join(&srv, &outsider, &room).await.0, 200);
    srv.finish().await;
}

/// Joins by alias racing `createRoom` with the gate in `initial_state` got non-holders in on
/// 10 of 10 tries; a join racing a gate being set could land after it. The alias resolves
/// only once the room is set up, the gate comes before the join rules, and a join is
/// appended only on the gate it was decided against.
async fn joins_never_land_before_the_gate(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let owner = token(&srv.register("owner", "pw").await);
    let outsider = token(&srv.register("outsider", "pw").await);
    let listed = "0x51a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4";
    for attempt in 0..10 {
        let alias = format!("race{attempt}");
        let full = format!("%23{alias}:localhost");
        let create = create_room(
            &srv,
            &owner,
            json!({"preset": "public_chat",
            "room_alias_name": alias, "name": "Gated", "topic": "soon",
            "initial_state": [{"type": GATE, "state_key": "",
                "content": {"rule": {"allowlist": [listed]}}}]}),
        );
        let joins = async {
            let mut outcomes = Vec::new();
            for _ in 0..200 {
                let answer = join(&srv, &outsider, &full).await;
                let done = answer.0 != 404;
                outcomes.push(answer);
                if done {
                    break;
                }
                tokio::task::yield_now().await;
            }
            outcomes
        };
        let (_, outcomes) = tokio::join!(create, joins);
        for (status, body) in &outcomes {
            assert_ne!(
                *status, 200,
                "attempt {attempt}: a non-holder joined: {body}"
            );
        }
    }

    // A join racing the gate being set: either it landed before the gate, or it was refused.
    for attempt in 0..10 {
        let room = create_room(&srv, &owner, json!({"preset": "public_chat"})).await;
        let content = json!({"rule": {"allowlist": [listed]}});
        let gate = set_gate(&srv, &owner, &room, &content);
        let (gate, joined) = tokio::join!(gate, join(&srv, &outsider, &room));
        assert_eq!(gate.0, 200, "{}", gate.1);
        if joined.0 == 200 {
            let (_, messages) = srv
                .get(
                    &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
                    Some(&owner),
                )
                .await;
            let chunk = messages["chunk"].as_array().expect("chunk");
            let gate_at = chunk
                .iter()
                .position(|e| e["event_id"] == gate.1["event_id"])
                .expect("the gate event");
            let join_at = chunk
                .iter()
                .position(|e| {
                    e["type"] == "m.room.member" && e["state_key"] == "@outsider:localhost"
                })
                .expect("the join event");
            // Newest first: the join must be older than the gate.
            assert!(
                join_at > gate_at,
                "attempt {attempt}: the join landed after the gate"
            );
        } else {
            assert_error(&joined, 403, "M_FORBIDDEN");
        }
    }
    srv.finish().await;
}

/// A dry run with the same rule kept a 60 s verdict that a room re-checking every 2 s then
/// used: freshness is now the reading gate's to judge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_are_as_fresh_as_the_reading_gate_asks() {
    let anvil = Anvil::start().await;
    let srv =
        TestServer::start_with(&Backend::Sqlite, gated_config(&[(&caip2(), &anvil.url)])).await;
    let owner = token(&srv.register("owner", "pw").await);
    let rule = json!({"native": {"chain": caip2(), "min": ETH.to_string()}});
    let room = gated_room(&srv, &owner, json!({"rule": rule, "recheck_interval_s": 2})).await;
    let wallet = Key::new(161);
    set_balance(&anvil, wallet.address(), 2 * ETH).await;
    let (_, holder) = wallet_session(&srv, &wallet).await;
    assert_eq!(
        check(&srv, &holder, &rule, wallet.address()).await["pass"],
        true
    );
    // Balance changes leave no log: only the cache's age can tell.
    set_balance(&anvil, wallet.address(), 0).await;
    srv.clock.advance(Duration::from_millis(1500));
    assert_error(&join(&srv, &holder, &room).await, 403, "M_FORBIDDEN");
    srv.finish().await;
}

/// `ens.parent` read a reverting resolver as "no primary name", and members were kicked for
/// it. A failed read is unknown, as for `call`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverting_resolver_is_unknown_not_no() {
    let anvil = Anvil::start().await;
    let srv = TestServer::start_with(&Backend::Sqlite, |config| {
        gated_config(&[(&caip2(), &anvil.url)])(config);
        config.gate.cache_ttl_s = 0;
    })
    .await;
    let ens = EnsFixture::new(&anvil).await;
    let member = Key::new(171);
    let deployer: Address = crate::anvil::DEPLOYER.parse().expect("address");
    ens.register("eth", "dao", deployer, &[], &[]).await;
    ens.register("dao.eth", "member", member.address(), &[], &[])
        .await;
    ens.primary(member.address(), "member.dao.eth").await;
    let (_, t) = wallet_session(&srv, &member).await;
    let rule = json!({"ens": {"chain": caip2(), "parent": "dao.eth"}});
    let verdict = check(&srv, &t, &rule, member.address()).await;
    assert_eq!(verdict["pass"], true, "{verdict}");

    // The reverse record's resolver becomes a contract without `name()`: every read reverts.
    let broken = deploy(&anvil, "TestERC20").await;
    let call = IReverse::setSubnodeRecordCall {
        node: matrixon_chain::ens::namehash("addr.reverse"),
        label: alloy::primitives::keccak256(alloy::primitives::hex::encode(
            member.address().as_slice(),
        )),
        owner: deployer,
        resolver: broken,
        ttl: 0,
    };
    anvil
        .transact(matrixon_chain::ens::REGISTRY, &call.abi_encode())
        .await;
    let verdict = check(&srv, &t, &rule, member.address()).await;
    let leaf = &verdict["addresses"][0]["leaves"][0];
    assert_eq!(verdict["pass"], false, "{verdict}");
    assert_eq!(leaf["unknown"], true, "{verdict}");
    assert_eq!(leaf["value"], "unreadable", "{verdict}");
    assert_eq!(verdict["addresses"][0]["unreadable"], true, "{verdict}");
    srv.finish().await;
}

alloy::sol! {
    interface IReverse {
        function setSubnodeRecord(bytes32 node, bytes32 label, address owner, address resolver, uint64 ttl) external;
    }
}

/// One dry run read 6,400 values for one request: checks are charged by the chain reads
/// they need, and one that needs more than the whole budget is refused outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_are_charged_by_chain_reads() {
    let srv = TestServer::start_with(&Backend::Sqlite, |config| {
        gated_config(&[(&caip2(), &closed_endpoint())])(config);
        config.rate_limits.enabled = true;
    })
    .await;
    let services = &srv.server.as_ref().expect("running").services;
    services
        .create_account("dora", Some("pw".to_owned()), false, None)
        .await
        .expect("account");
    let dora = token(&srv.login("dora", "pw").await);
    let contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
    let ids: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    let leaf = json!({"erc721": {"chain": caip2(), "contract": contract, "token_ids": ids}});
    let address = Key::new(181).address().to_string();
    let dry_run = |rule: Value| {
        let (srv, dora, address) = (&srv, dora.clone(), address.clone());
        async move {
            srv.post_json(
                "/_matrix/client/unstable/io.matrixon/gate/check",
                Some(&dora),
                &json!({"rule": rule, "address": address}),
            )
            .await
        }
    };
    // 11 × 100 reads: more than one check may spend.
    let huge = json!({"any": vec![leaf.clone(); 11]});
    let refused = dry_run(huge).await;
    assert_error(&refused, 400, "M_INVALID_PARAM");
    assert!(
        refused.1["error"]
            .as_str()
            .is_some_and(|e| e.contains("1100 chain reads")),
        "{}",
        refused.1
    );
    // 100 reads each: the budget (1,000) allows ten, then says when to come back.
    for _ in 0..10 {
        let answer = dry_run(leaf.clone()).await;
        assert_ne!(answer.0, 429, "{}", answer.1);
    }
    let limited = dry_run(leaf.clone()).await;
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED");
    assert!(
        limited.1["retry_after_ms"].as_u64().is_some(),
        "{}",
        limited.1
    );
    srv.finish().await;
}
