//! Token-gated rooms on anvil with real tokens: the rule language end to end, the door
//! (join, invite acceptance, knock, alias, restricted joins, upgrades), re-verification
//! (transfer logs, intervals, grace periods, gate changes), failing closed when the chain
//! cannot be asked, and the audit log.

use std::time::Duration;

use alloy::{
    primitives::{Address, B256, U256},
    sol_types::SolCall,
};
use matrixon::Config;
use matrixon_chain::{
    gate::{DELEGATE_REGISTRY, Scope},
    rpc::{ChainConfig, Chains},
};
use serde_json::{Value, json};

use crate::{
    anvil::{Anvil, CHAIN_ID, DEPLOYER, EnsFixture, Key, Proxy, creation_code},
    harness::{Backend, TestServer, assert_error, both_backends, redis_url},
    wallet::wallet_session,
};

both_backends!(
    the_door_enforces_every_leaf_and_path,
    members_are_rechecked_and_kicked
);

alloy::sol! {
    interface ITest {
        function mint(address to, uint256 amountOrId) external;
        function mint(address to, uint256 id, uint256 amount) external;
        function transferFrom(address from, address to, uint256 id) external;
        function set(address who, bool member, uint8 newLevel, int256 newScore) external;
        function delegateAll(address to, bytes32 rights, bool enable) external payable returns (bytes32);
        function delegateContract(address to, address contract_, bytes32 rights, bool enable) external payable returns (bytes32);
    }
}

pub(crate) const GATE: &str = "io.matrixon.room.gate";
pub(crate) const ETH: u128 = 1_000_000_000_000_000_000;

pub(crate) fn chain_config(url: &str) -> ChainConfig {
    ChainConfig {
        rpc: vec![url.to_owned()],
        name: None,
        timeout_ms: 2_000,
        max_rps: None,
        multicall: None,
    }
}

/// A server that reads `chains` and sweeps and polls every 100 ms.
pub(crate) fn gated_config(chains: &[(&str, &str)]) -> impl FnOnce(&mut Config) + use<> {
    let chains: Vec<(String, String)> = chains
        .iter()
        .map(|(id, url)| ((*id).to_owned(), (*url).to_owned()))
        .collect();
    move |config: &mut Config| {
        for (id, url) in chains {
            config.chains.insert(id, chain_config(&url));
        }
        config.gate.sweep_interval_ms = 100;
        config.gate.log_poll_interval_ms = 100;
    }
}

pub(crate) fn caip2() -> String {
    format!("eip155:{CHAIN_ID}")
}

pub(crate) async fn deploy(anvil: &Anvil, name: &str) -> Address {
    anvil.deploy(&creation_code(name)).await
}

pub(crate) async fn set_balance(anvil: &Anvil, who: Address, wei: u128) {
    anvil
        .rpc(
            "anvil_setBalance",
            json!([who.to_string(), format!("{:#x}", wei)]),
        )
        .await;
}

pub(crate) async fn create_room(srv: &TestServer, token: &str, body: Value) -> String {
    let (status, created) = srv
        .post_json("/_matrix/client/v3/createRoom", Some(token), &body)
        .await;
    assert_eq!(status, 200, "{created}");
    created["room_id"].as_str().expect("room id").to_owned()
}

pub(crate) async fn set_gate(
    srv: &TestServer,
    token: &str,
    room: &str,
    content: &Value,
) -> (u16, Value) {
    srv.put_json(
        &format!("/_matrix/client/v3/rooms/{room}/state/{GATE}/"),
        Some(token),
        content,
    )
    .await
}

pub(crate) async fn join(srv: &TestServer, token: &str, room: &str) -> (u16, Value) {
    srv.post_json(
        &format!("/_matrix/client/v3/join/{room}"),
        Some(token),
        &json!({}),
    )
    .await
}

pub(crate) async fn membership(srv: &TestServer, token: &str, room: &str, user: &str) -> Value {
    srv.get(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}"),
        Some(token),
    )
    .await
    .1
}

pub(crate) async fn check(srv: &TestServer, token: &str, rule: &Value, address: Address) -> Value {
    let (status, body) = srv
        .post_json(
            "/_matrix/client/unstable/io.matrixon/gate/check",
            Some(token),
            &json!({"rule": rule, "address": address.to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The leaf results of the single address of a check, by path.
fn leaves(verdict: &Value) -> Vec<(String, bool, String)> {
    verdict["addresses"][0]["leaves"]
        .as_array()
        .expect("leaves")
        .iter()
        .map(|l| {
            (
                l["path"].as_str().expect("path").to_owned(),
                l["pass"].as_bool().expect("pass"),
                l["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect()
}

pub(crate) async fn admin_token(srv: &TestServer) -> String {
    let services = &srv.server.as_ref().expect("running").services;
    services
        .create_account("auditor", Some("pw".to_owned()), true, None)
        .await
        .expect("admin");
    srv.login("auditor", "pw").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

pub(crate) async fn audit(srv: &TestServer, token: &str, room: &str) -> Vec<Value> {
    let (status, body) = srv
        .get(
            &format!("/_matrix/client/unstable/io.matrixon/admin/gate/audit?room_id={room}"),
            Some(token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["entries"].as_array().expect("entries").clone()
}

async fn the_door_enforces_every_leaf_and_path(backend: Backend) {
    let anvil = Anvil::start().await;
    let srv = TestServer::start_with(&backend, gated_config(&[(&caip2(), &anvil.url)])).await;
    let chain = caip2();
    let (erc20, erc721, erc1155, members) = (
        deploy(&anvil, "TestERC20").await,
        deploy(&anvil, "TestERC721").await,
        deploy(&anvil, "TestERC1155").await,
        deploy(&anvil, "GateMembers").await,
    );
    let (alice_key, bob_key, frank_key, vault) =
        (Key::new(101), Key::new(102), Key::new(106), Key::new(120));
    let (alice, bob) = (alice_key.address(), bob_key.address());
    anvil
        .transact(
            erc20,
            &ITest::mint_0Call {
                to: alice,
                amountOrId: U256::from(150),
            }
            .abi_encode(),
        )
        .await;
    anvil
        .transact(
            erc721,
            &ITest::mint_0Call {
                to: alice,
                amountOrId: U256::from(42),
            }
            .abi_encode(),
        )
        .await;
    anvil
        .transact(
            erc1155,
            &ITest::mint_1Call {
                to: alice,
                id: U256::from(7),
                amount: U256::from(3),
            }
            .abi_encode(),
        )
        .await;
    anvil
        .transact(
            members,
            &ITest::setCall {
                who: alice,
                member: true,
                newLevel: 5,
                newScore: alloy::primitives::I256::try_from(-3).expect("int"),
            }
            .abi_encode(),
        )
        .await;
    set_balance(&anvil, alice, 2 * ETH).await;
    let ens = EnsFixture::new(&anvil).await;
    let deployer: Address = DEPLOYER.parse().expect("address");
    ens.register("eth", "dao", deployer, &[], &[]).await;
    ens.register("dao.eth", "alice", alice, &[], &[]).await;
    ens.primary(alice, "alice.dao.eth").await;
    // Bob's reverse record claims Alice's name, which does not resolve to him: ignored.
    ens.primary(bob, "alice.dao.eth").await;

    let (_, alice_token) = wallet_session(&srv, &alice_key).await;
    let (bob_id, bob_token) = wallet_session(&srv, &bob_key).await;
    let owner = srv.register("owner", "pw").await;
    let owner_token = owner["access_token"].as_str().expect("token").to_owned();
    let carol = srv.register("carol", "pw").await;
    let carol_token = carol["access_token"].as_str().expect("token").to_owned();

    // Every leaf kind through the dry run, for a holder and a non-holder.
    let everything = json!({"any": [
        {"erc20": {"chain": chain, "contract": erc20.to_string(), "min": "100"}},
        {"erc721": {"chain": chain, "contract": erc721.to_string(), "token_ids": ["41", "42"]}},
        {"erc1155": {"chain": chain, "contract": erc1155.to_string(), "token_id": "7", "min": "2"}},
        {"native": {"chain": chain, "min": ETH.to_string()}},
        {"call": {"chain": chain, "contract": members.to_string(),
                  "function": "function isMember(address) view returns (bool)",
                  "args": [":address"], "expect": {"op": "eq", "value": true}}},
        {"call": {"chain": chain, "contract": members.to_string(),
                  "function": "function level(address) view returns (uint8)",
                  "args": [":address"], "expect": {"op": "gte", "value": 5}}},
        {"call": {"chain": chain, "contract": members.to_string(),
                  "function": "function score(address) view returns (int256)",
                  "args": [":address"], "expect": {"op": "lt", "value": "0"}}},
        {"ens": {"chain": chain, "parent": "dao.eth"}},
        {"ens": {"chain": chain, "name": "alice.dao.eth"}},
        {"allowlist": [alice.to_string()]},
        {"not": {"allowlist": [alice.to_string()]}}
    ]});
    let for_alice = check(&srv, &alice_token, &everything, alice).await;
    assert_eq!(for_alice["pass"], true);
    assert_eq!(for_alice["addresses"][0]["scope"], "own");
    let results = leaves(&for_alice);
    assert_eq!(results.len(), 11);
    for (path, pass, value) in &results[..10] {
        assert!(pass, "{path} should hold for alice (read {value})");
    }
    assert_eq!(results[0].2, "150");
    assert_eq!(results[1].2, "owns 42");
    assert_eq!(results[2].2, "3");
    assert_eq!(results[3].2, (2 * ETH).to_string());
    assert_eq!(results[6].2, "-3");
    assert_eq!(results[7].2, "alice.dao.eth");
    assert_eq!(results[8].2, alice.to_checksum(None));
    assert_eq!(results[10].0, "any[10].not.allowlist");
    assert!(
        results[10].1,
        "the allowlist under `not` holds, so it counts against alice"
    );
    let failing = for_alice["addresses"][0]["leaves"][10]["negated"].clone();
    assert_eq!(failing, true);
    // The verdict says which block it read.
    let block = for_alice["addresses"][0]["blocks"][&chain]
        .as_u64()
        .expect("block");
    assert!(block > 0);

    let for_bob = check(&srv, &bob_token, &everything, bob).await;
    assert_eq!(
        for_bob["pass"], true,
        "bob is not on the allowlist, so `not` holds"
    );
    let results = leaves(&for_bob);
    for (path, pass, value) in &results[..10] {
        assert!(!pass, "{path} should fail for bob (read {value})");
    }
    assert_eq!(
        results[7].2, "no verified primary name",
        "a reverse record that does not resolve back is ignored"
    );
    let both = json!({"all": [
        {"erc20": {"chain": chain, "contract": erc20.to_string(), "min": "100"}},
        {"not": {"allowlist": [bob.to_string()]}}
    ]});
    assert_eq!(check(&srv, &alice_token, &both, alice).await["pass"], true);
    assert_eq!(check(&srv, &bob_token, &both, bob).await["pass"], false);
    let other_id =
        json!({"erc721": {"chain": chain, "contract": erc721.to_string(), "token_ids": ["43"]}});
    assert_eq!(
        check(&srv, &alice_token, &other_id, alice).await["pass"],
        false
    );
    let reverting = json!({"call": {"chain": chain, "contract": members.to_string(),
        "function": "function alwaysReverts(address) view returns (bool)",
        "args": [":address"], "expect": {"op": "eq", "value": true}}});
    let reverted = check(&srv, &alice_token, &reverting, alice).await;
    assert_eq!(reverted["pass"], false);
    assert_eq!(leaves(&reverted)[0].2, "reverted");
    // An unreadable leaf is unknown, not false: `not` over it does not let anyone in.
    let negated = check(&srv, &alice_token, &json!({"not": reverting}), alice).await;
    assert_eq!(negated["pass"], false);
    assert_eq!(negated["addresses"][0]["unknown"], true);

    // Bad gates are refused with the path of the fault, and nothing is stored.
    let room = create_room(
        &srv,
        &owner_token,
        json!({"preset": "public_chat", "room_alias_name": "dao"}),
    )
    .await;
    for (content, path) in [
        (
            json!({"rule": {"erc20": {"chain": chain, "contract": erc20.to_string(), "min": "1e2"}}}),
            "rule.erc20.min",
        ),
        (
            json!({"rule": {"erc20": {"chain": "eip155:5", "contract": erc20.to_string()}}}),
            "rule.erc20.chain",
        ),
        (
            json!({"rule": {"allowlist": [alice.to_string()]}, "on_fail": "ban"}),
            "on_fail",
        ),
        (
            json!({"rule": {"allowlist": [alice.to_string()]}, "recheck_interval_s": 0}),
            "recheck_interval_s",
        ),
        (
            json!({"rule": {"any": [{"allowlist": ["0x12"]}]}}),
            "rule.any[0].allowlist[0]",
        ),
        (
            json!({"rule": {"allowlist": [alice.to_string()]}, "colour": "red"}),
            "colour",
        ),
    ] {
        let refused = set_gate(&srv, &owner_token, &room, &content).await;
        assert_error(&refused, 400, "M_BAD_JSON");
        let message = refused.1["error"].as_str().expect("message");
        assert!(message.contains(path), "{message} should name {path}");
    }
    assert_eq!(
        srv.get(
            &format!("/_matrix/client/v3/rooms/{room}/state/{GATE}/"),
            Some(&owner_token)
        )
        .await
        .0,
        404
    );
    let refused = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&owner_token),
            &json!({
        "initial_state": [{"type": GATE, "state_key": "", "content": {"rule": {"nft": {}}}}]}),
        )
        .await;
    assert_error(&refused, 400, "M_BAD_JSON");

    // The gate: 100 MXT. Setting it takes the power for that state event.
    let gate =
        json!({"rule": {"erc20": {"chain": chain, "contract": erc20.to_string(), "min": "100"}}});
    assert_eq!(join(&srv, &carol_token, &room).await.0, 200);
    assert_error(
        &set_gate(&srv, &carol_token, &room, &gate).await,
        403,
        "M_FORBIDDEN",
    );
    let (status, body) = set_gate(&srv, &owner_token, &room, &gate).await;
    assert_eq!(status, 200, "{body}");

    // A holder joins; a non-holder is refused with the failing leaf named; no wallet, no entry.
    assert_eq!(join(&srv, &alice_token, &room).await.0, 200);
    let refused = join(&srv, &bob_token, &room).await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    let detail = &refused.1["io.matrixon.gate"];
    assert_eq!(detail["failing"][0]["path"], "erc20");
    assert_eq!(detail["failing"][0]["value"], "0");
    assert!(
        refused.1["error"]
            .as_str()
            .expect("message")
            .contains("erc20")
    );
    let dave = srv.register("dave", "pw").await;
    let dave_token = dave["access_token"].as_str().expect("token");
    let refused = join(&srv, dave_token, &room).await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    assert!(
        refused.1["error"]
            .as_str()
            .expect("message")
            .contains("link a wallet")
    );

    // By alias, and accepting an invite: refused too (the invite itself is allowed).
    assert_error(
        &join(&srv, &bob_token, "%23dao:localhost").await,
        403,
        "M_FORBIDDEN",
    );
    let (status, body) = srv
        .post_json(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&owner_token),
            &json!({"user_id": bob_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &srv.post_json(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&bob_token),
            &json!({}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        membership(&srv, &owner_token, &room, &bob_id).await["membership"],
        "invite"
    );

    // Knocking on a gated knock room: refused.
    let knock_room = create_room(
        &srv,
        &owner_token,
        json!({"initial_state": [
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}},
        {"type": GATE, "state_key": "", "content": gate}]}),
    )
    .await;
    assert_error(
        &srv.post_json(
            &format!("/_matrix/client/v3/knock/{knock_room}"),
            Some(&bob_token),
            &json!({}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );

    // Nor can a member event be sent as raw state to walk past the door.
    let raw = srv
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{bob_id}"),
            Some(&bob_token),
            &json!({"membership": "join"}),
        )
        .await;
    assert_error(&raw, 403, "M_FORBIDDEN");
    assert_eq!(
        membership(&srv, &owner_token, &room, &bob_id).await["membership"],
        "invite"
    );

    // A gate whose deciding leaf cannot be read fails closed: 503, not a pass through `not`.
    let unreadable = create_room(
        &srv,
        &owner_token,
        json!({"preset": "public_chat", "initial_state": [
        {"type": GATE, "state_key": "", "content": {"rule": {"not": reverting}}}]}),
    )
    .await;
    assert_error(
        &join(&srv, &alice_token, &unreadable).await,
        503,
        "IO.MATRIXON.GATE_UNAVAILABLE",
    );

    // Restricted to members of a room Bob is in: the gate still applies.
    let lobby = create_room(&srv, &owner_token, json!({"preset": "public_chat"})).await;
    assert_eq!(join(&srv, &bob_token, &lobby).await.0, 200);
    let restricted = create_room(
        &srv,
        &owner_token,
        json!({"room_version": "11", "initial_state": [
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "restricted",
            "allow": [{"type": "m.room_membership", "room_id": lobby}]}},
        {"type": GATE, "state_key": "", "content": gate}]}),
    )
    .await;
    assert_error(
        &join(&srv, &bob_token, &restricted).await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(join(&srv, &alice_token, &lobby).await.0, 200);
    assert_eq!(join(&srv, &alice_token, &restricted).await.0, 200);
    // Its rule is for members and those who may join: not for Dave, outside the lobby.
    assert_error(
        &srv.post_json(
            "/_matrix/client/unstable/io.matrixon/gate/check",
            Some(dave_token),
            &json!({"room_id": restricted, "address": alice.to_string()}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        srv.post_json(
            "/_matrix/client/unstable/io.matrixon/gate/check",
            Some(&alice_token),
            &json!({"room_id": restricted, "address": alice.to_string()})
        )
        .await
        .0,
        200
    );

    // Delegation: a vault holding the tokens delegated everything to Frank's wallet.
    anvil.place("DelegateRegistry", DELEGATE_REGISTRY).await;
    anvil
        .transact(
            erc20,
            &ITest::mint_0Call {
                to: vault.address(),
                amountOrId: U256::from(500),
            }
            .abi_encode(),
        )
        .await;
    anvil
        .transact_as(
            vault.address(),
            DELEGATE_REGISTRY,
            &ITest::delegateAllCall {
                to: frank_key.address(),
                rights: B256::ZERO,
                enable: true,
            }
            .abi_encode(),
        )
        .await;
    let (_, frank_token) = wallet_session(&srv, &frank_key).await;
    assert_error(&join(&srv, &frank_token, &room).await, 403, "M_FORBIDDEN");
    let delegated = create_room(&srv, &owner_token, json!({"preset": "public_chat", "initial_state": [
        {"type": GATE, "state_key": "", "content": {"rule": gate["rule"], "include_delegations": true}}]})).await;
    assert_eq!(join(&srv, &frank_token, &delegated).await.0, 200);
    // A delegation for another contract does not lend the vault's ERC-20 balance.
    let (gus_key, vault2) = (Key::new(107), Key::new(121));
    anvil
        .transact(
            erc20,
            &ITest::mint_0Call {
                to: vault2.address(),
                amountOrId: U256::from(500),
            }
            .abi_encode(),
        )
        .await;
    let scoped = ITest::delegateContractCall {
        to: gus_key.address(),
        contract_: erc721,
        rights: B256::ZERO,
        enable: true,
    };
    anvil
        .transact_as(vault2.address(), DELEGATE_REGISTRY, &scoped.abi_encode())
        .await;
    let (_, gus_token) = wallet_session(&srv, &gus_key).await;
    assert_error(
        &join(&srv, &gus_token, &delegated).await,
        403,
        "M_FORBIDDEN",
    );

    // An upgrade carries the gate: the new room refuses Bob and admits Alice.
    let (status, upgraded) = srv
        .post_json(
            &format!("/_matrix/client/v3/rooms/{room}/upgrade"),
            Some(&owner_token),
            &json!({"new_version": "11"}),
        )
        .await;
    assert_eq!(status, 200, "{upgraded}");
    let new_room = upgraded["replacement_room"].as_str().expect("room");
    assert_error(&join(&srv, &bob_token, new_room).await, 403, "M_FORBIDDEN");
    assert_eq!(join(&srv, &alice_token, new_room).await.0, 200);

    // The dry run for a room, for oneself; for someone else only with the gate's power.
    let (status, own) = srv
        .post_json(
            "/_matrix/client/unstable/io.matrixon/gate/check",
            Some(&bob_token),
            &json!({"room_id": room, "user_id": bob_id}),
        )
        .await;
    assert_eq!(status, 200, "{own}");
    assert_eq!(own["pass"], false);
    assert_error(
        &srv.post_json(
            "/_matrix/client/unstable/io.matrixon/gate/check",
            Some(&carol_token),
            &json!({"room_id": room, "user_id": bob_id}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        srv.post_json(
            "/_matrix/client/unstable/io.matrixon/gate/check",
            Some(&owner_token),
            &json!({"room_id": room, "user_id": bob_id})
        )
        .await
        .0,
        200
    );
    assert_error(
        &srv.post_json(
            "/_matrix/client/unstable/io.matrixon/gate/check",
            Some(&owner_token),
            &json!({"room_id": room}),
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &srv.post_json(
            "/_matrix/client/unstable/io.matrixon/gate/check",
            Some(&owner_token),
            &json!({"room_id": room, "address": "0xnope"}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &srv.post_json(
            "/_matrix/client/unstable/io.matrixon/gate/check",
            Some(&owner_token),
            &json!({"rule": {"nft": 1}, "address": alice.to_string()}),
        )
        .await,
        400,
        "M_BAD_JSON",
    );

    // The audit log: every decision with its block, for server administrators only.
    let admin = admin_token(&srv).await;
    let entries = audit(&srv, &admin, &room).await;
    let decisions: Vec<&str> = entries
        .iter()
        .map(|e| e["decision"].as_str().expect("decision"))
        .collect();
    assert!(
        decisions.contains(&"allowed") && decisions.contains(&"refused"),
        "{decisions:?}"
    );
    let allowed = entries
        .iter()
        .find(|e| e["decision"] == "allowed")
        .expect("allowed");
    assert!(allowed["blocks"][&chain].as_u64().expect("block") > 0);
    assert_error(
        &srv.get(
            "/_matrix/client/unstable/io.matrixon/admin/gate/audit",
            Some(&owner_token),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &srv.get(
            "/_matrix/client/unstable/io.matrixon/admin/gate/audit?limit=0",
            Some(&admin),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );

    // Removing the gate (empty content) opens the door.
    assert_eq!(set_gate(&srv, &owner_token, &room, &json!({})).await.0, 200);
    assert_eq!(join(&srv, dave_token, &room).await.0, 200);
    srv.finish().await;
}

/// Waits until `user`'s membership in `room` is `expected`, for up to `seconds`.
pub(crate) async fn wait_membership(
    srv: &TestServer,
    token: &str,
    room: &str,
    user: &str,
    expected: &str,
    seconds: u64,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..seconds * 10 {
        last = membership(srv, token, room, user).await;
        if last["membership"] == expected {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{user} in {room}: expected {expected}, last {last}");
}

/// Waits until the audit log of `room` holds `decision` about `user`.
pub(crate) async fn wait_audit(
    srv: &TestServer,
    admin: &str,
    room: &str,
    user: &str,
    decision: &str,
) {
    for _ in 0..100 {
        if audit(srv, admin, room)
            .await
            .iter()
            .any(|e| e["user_id"] == user && e["decision"] == decision)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no `{decision}` about {user} in the audit log of {room}");
}

async fn members_are_rechecked_and_kicked(backend: Backend) {
    let anvil = Anvil::start().await;
    let redis = redis_url("members_are_rechecked_and_kicked");
    let chains = gated_config(&[(&caip2(), &anvil.url)]);
    let srv = TestServer::start_with(&backend, |config| {
        chains(config);
        if matches!(backend, Backend::Postgres { .. }) {
            config.redis.url = redis.clone();
            // Verdicts in the shared Redis are keyed by server name: a name of its own keeps
            // earlier runs (same deterministic addresses, a fresh chain) out of this one.
            let unique = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_nanos();
            config.server_name = format!("gate{unique}.test").try_into().expect("name");
        }
    })
    .await;
    let chain = caip2();
    let nft = deploy(&anvil, "TestERC721").await;
    let keys: Vec<Key> = (111..=115).map(Key::new).collect();
    let mut sessions = Vec::new();
    for key in &keys {
        sessions.push(wallet_session(&srv, key).await);
    }
    let [
        (alice, alice_t),
        (bob, _),
        (dave, dave_t),
        (erin, erin_t),
        (gina, gina_t),
    ] = <[(String, String); 5]>::try_from(sessions).expect("five");
    let owner = srv.register("owner", "pw").await;
    let owner_t = owner["access_token"].as_str().expect("token").to_owned();
    let admin = admin_token(&srv).await;

    // Transfer path: an hour between re-checks, yet a holder who sells is out in seconds.
    anvil
        .transact(
            nft,
            &ITest::mint_0Call {
                to: keys[0].address(),
                amountOrId: U256::from(1),
            }
            .abi_encode(),
        )
        .await;
    anvil
        .transact(
            nft,
            &ITest::mint_0Call {
                to: keys[4].address(),
                amountOrId: U256::from(2),
            }
            .abi_encode(),
        )
        .await;
    let nft_room = create_room(&srv, &owner_t, json!({"preset": "public_chat", "initial_state": [
        {"type": GATE, "state_key": "", "content": {"rule": {"erc721": {"chain": chain, "contract": nft.to_string()}},
            "recheck_interval_s": 3600}}]})).await;
    assert_eq!(join(&srv, &alice_t, &nft_room).await.0, 200);
    assert_eq!(join(&srv, &gina_t, &nft_room).await.0, 200);
    // Let the first sweep of the new gate pass, then sell.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sell = ITest::transferFromCall {
        from: keys[0].address(),
        to: keys[1].address(),
        id: U256::from(1),
    };
    anvil
        .transact_as(keys[0].address(), nft, &sell.abi_encode())
        .await;
    let kicked = wait_membership(&srv, &owner_t, &nft_room, &alice, "leave", 15).await;
    assert!(
        kicked["reason"]
            .as_str()
            .expect("reason")
            .contains("erc721"),
        "{kicked}"
    );
    assert_eq!(
        membership(&srv, &owner_t, &nft_room, &gina).await["membership"],
        "join"
    );
    wait_audit(&srv, &admin, &nft_room, &alice, "kicked").await;

    // Interval path with a grace period: a native-coin gate, re-checked every minute.
    set_balance(&anvil, keys[2].address(), 2 * ETH).await;
    set_balance(&anvil, keys[3].address(), 2 * ETH).await;
    let coin_room = create_room(&srv, &owner_t, json!({"preset": "public_chat", "initial_state": [
        {"type": GATE, "state_key": "", "content": {"rule": {"native": {"chain": chain, "min": ETH.to_string()}},
            "recheck_interval_s": 60, "grace_s": 600}}]})).await;
    assert_eq!(join(&srv, &dave_t, &coin_room).await.0, 200);
    assert_eq!(join(&srv, &erin_t, &coin_room).await.0, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    set_balance(&anvil, keys[2].address(), 0).await;
    srv.clock.advance(Duration::from_secs(61));
    wait_audit(&srv, &admin, &coin_room, &dave, "failing").await;
    assert_eq!(
        membership(&srv, &owner_t, &coin_room, &dave).await["membership"],
        "join",
        "within the grace period"
    );
    srv.clock.advance(Duration::from_secs(300));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        membership(&srv, &owner_t, &coin_room, &dave).await["membership"],
        "join",
        "still within the grace period"
    );
    srv.clock.advance(Duration::from_secs(301));
    wait_membership(&srv, &owner_t, &coin_room, &dave, "leave", 15).await;
    assert_eq!(
        membership(&srv, &owner_t, &coin_room, &erin).await["membership"],
        "join"
    );

    // Changing the gate re-checks everyone at once.
    let (status, body) = set_gate(
        &srv,
        &owner_t,
        &coin_room,
        &json!({"rule": {"native": {"chain": chain, "min": (5 * ETH).to_string()}},
        "recheck_interval_s": 3600}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_membership(&srv, &owner_t, &coin_room, &erin, "leave", 15).await;

    // Every provider down: joins fail closed with a distinct errcode, and nobody is removed.
    drop(anvil);
    let refused = join(&srv, &alice_t, &nft_room).await;
    assert_error(&refused, 503, "IO.MATRIXON.GATE_UNAVAILABLE");
    srv.clock.advance(Duration::from_secs(3601));
    wait_audit(&srv, &admin, &nft_room, "", "unavailable").await;
    assert_eq!(
        membership(&srv, &owner_t, &nft_room, &gina).await["membership"],
        "join"
    );
    wait_audit(&srv, &admin, &nft_room, &alice, "unavailable").await;
    let _ = bob;
    srv.finish().await;
}

/// One `eth_call` per chain for a cold verdict of a 10-leaf rule over two chains, and
/// ⌈addresses × leaves / batch⌉ calls for a large sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_verdict_is_one_round_trip_per_chain() {
    let (one, two) = (
        Anvil::start().await,
        Anvil::start_with_chain_id(31338).await,
    );
    let (proxy_one, proxy_two) = (Proxy::start(&one.url).await, Proxy::start(&two.url).await);
    let (token_one, token_two) = (
        deploy(&one, "TestERC20").await,
        deploy(&two, "TestERC721").await,
    );
    let holder = Key::new(130).address();
    one.transact(
        token_one,
        &ITest::mint_0Call {
            to: holder,
            amountOrId: U256::from(10),
        }
        .abi_encode(),
    )
    .await;
    let config = [
        (format!("eip155:{CHAIN_ID}"), chain_config(&proxy_one.url)),
        ("eip155:31338".to_owned(), chain_config(&proxy_two.url)),
    ]
    .into_iter()
    .collect();
    let chains = Chains::new(&config).expect("chains");
    let mut leaves = Vec::new();
    for min in 1..=5 {
        leaves.push(json!({"erc20": {"chain": format!("eip155:{CHAIN_ID}"), "contract": token_one.to_string(), "min": min.to_string()}}));
        leaves
            .push(json!({"erc721": {"chain": "eip155:31338", "contract": token_two.to_string()}}));
    }
    let rule = matrixon_chain::gate::Rule::parse(&json!({"all": leaves}), &|_| true).expect("rule");
    let options = 500;
    // As the server does at start: each chain is asked once where its Multicall3 is.
    for chain in chains.iter() {
        chain.multicall_mode().await.expect("probed");
    }
    let before = (
        proxy_one.methods.lock().expect("lock").len(),
        proxy_two.methods.lock().expect("lock").len(),
    );
    let verdicts = matrixon_chain::gate::evaluate(&chains, &rule, &[(holder, Scope::Own)], options)
        .await
        .expect("verdict");
    assert_eq!(verdicts[0].leaves.len(), 10);
    assert!(
        verdicts[0].leaves.iter().step_by(2).all(|l| l.pass),
        "{verdicts:?}"
    );
    assert!(!verdicts[0].pass, "no NFT on the second chain");
    let sent_one: Vec<String> = proxy_one.methods.lock().expect("lock")[before.0..].to_vec();
    let sent_two: Vec<String> = proxy_two.methods.lock().expect("lock")[before.1..].to_vec();
    assert_eq!(sent_one, ["eth_call"], "one request to the first chain");
    assert_eq!(sent_two, ["eth_call"], "one request to the second chain");

    // A sweep of 1,000 addresses × 10 leaves in batches of 500: ⌈10,000 / 500⌉ = 20 requests.
    let addresses: Vec<(Address, Scope)> = (0..1000u64)
        .map(|i| (Address::left_padding_from(&i.to_be_bytes()), Scope::Own))
        .collect();
    let before = (proxy_one.count("eth_call"), proxy_two.count("eth_call"));
    let verdicts = matrixon_chain::gate::evaluate(&chains, &rule, &addresses, options)
        .await
        .expect("sweep");
    assert_eq!(verdicts.len(), 1000);
    let sent = proxy_one.count("eth_call") - before.0 + proxy_two.count("eth_call") - before.1;
    assert_eq!(sent, 20, "5,000 calls per chain in batches of 500");
    // Every batch of a chain read the same block.
    let blocks: std::collections::BTreeSet<_> = verdicts.iter().map(|v| v.blocks.clone()).collect();
    assert_eq!(blocks.len(), 1);
}

/// The figures in docs/BENCHMARKS.md (run it in release mode):
/// `cargo test --release -p matrixon-tests --test integration gate::benchmark -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints figures, run on demand"]
async fn benchmark() {
    let (one, two) = (
        Anvil::start().await,
        Anvil::start_with_chain_id(31338).await,
    );
    let (proxy_one, proxy_two) = (Proxy::start(&one.url).await, Proxy::start(&two.url).await);
    let srv = TestServer::start_with(
        &Backend::Sqlite,
        gated_config(&[(&caip2(), &proxy_one.url), ("eip155:31338", &proxy_two.url)]),
    )
    .await;
    let services = srv.server.as_ref().expect("running").services.clone();
    // Reads only: the background poll's eth_blockNumber and eth_getLogs are not counted.
    let calls = || proxy_one.count("eth_call") + proxy_two.count("eth_call");
    let (token_one, token_two) = (
        deploy(&one, "TestERC20").await,
        deploy(&two, "TestERC721").await,
    );
    let holder = (Key::new(140).address(), Scope::Own);
    one.transact(
        token_one,
        &ITest::mint_0Call {
            to: holder.0,
            amountOrId: U256::from(10),
        }
        .abi_encode(),
    )
    .await;

    // Cached verdicts: the same member asking again and again.
    let rule = json!({"erc20": {"chain": caip2(), "contract": token_one.to_string(), "min": "1"}});
    let gate = services
        .parse_gate(&json!({"rule": rule}))
        .expect("gate")
        .expect("some");
    services
        .gate_verdicts(&gate, &[holder])
        .await
        .expect("warm");
    let mut samples = Vec::new();
    for _ in 0..20_000 {
        let start = std::time::Instant::now();
        let verdicts = services
            .gate_verdicts(&gate, &[holder])
            .await
            .expect("cached");
        samples.push(start.elapsed());
        assert!(verdicts[0].pass);
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "cached verdict: p50 {:?}, p99 {:?} over {} lookups",
        at(0.5),
        at(0.99),
        samples.len()
    );

    // Cold verdict: 10 leaves over 2 chains.
    let mut leaves = Vec::new();
    for min in 1..=5 {
        leaves.push(json!({"erc20": {"chain": caip2(), "contract": token_one.to_string(), "min": min.to_string()}}));
        leaves
            .push(json!({"erc721": {"chain": "eip155:31338", "contract": token_two.to_string()}}));
    }
    let gate = services
        .parse_gate(&json!({"rule": {"any": leaves}}))
        .expect("gate")
        .expect("some");
    let before = calls();
    let start = std::time::Instant::now();
    services
        .gate_verdicts(&gate, &[holder])
        .await
        .expect("cold");
    let cold = start.elapsed();
    let sent = calls() - before;
    println!("cold verdict, 10 leaves on 2 chains: {cold:?}, {sent} eth_call requests");
    assert_eq!(sent, 2);

    // A re-check sweep of a 1,000-member room, 2 leaves each, every verdict dropped first
    // (an hour between background sweeps, so only this one runs).
    let owner = srv.register("owner", "pw").await;
    let owner_t = owner["access_token"].as_str().expect("token").to_owned();
    let content = json!({"rule": {"any": [
        {"erc20": {"chain": caip2(), "contract": token_one.to_string(), "min": "0"}},
        {"erc721": {"chain": "eip155:31338", "contract": token_two.to_string()}}]},
        "recheck_interval_s": 3600, "on_fail": "none"});
    let room = create_room(
        &srv,
        &owner_t,
        json!({"preset": "public_chat", "initial_state": [
        {"type": GATE, "state_key": "", "content": content}]}),
    )
    .await;
    let room_id = ruma::RoomId::parse(&room).expect("room");
    for i in 0..1000u64 {
        let user = services
            .create_account(&format!("m{i}"), None, false, None)
            .await
            .expect("account");
        let address = Address::left_padding_from(&(i + 1).to_be_bytes());
        services
            .store
            .link_wallet(&user, &format!("{address:#x}"), 0)
            .await
            .expect("link");
        services
            .join(&room_id, &user, serde_json::Map::new(), &[])
            .await
            .expect("join");
    }
    let gate = services
        .room_gate(&room_id)
        .await
        .expect("gate")
        .expect("some");
    let batch = services.config.gate.batch_size as u64;
    let members: Vec<Address> = (0..1000u64)
        .map(|i| Address::left_padding_from(&(i + 1).to_be_bytes()))
        .collect();
    for _ in 0..3 {
        for address in &members {
            services
                .gate_cache
                .invalidate(*address, services.now_ms())
                .await;
        }
        let before = calls();
        let start = std::time::Instant::now();
        services.sweep_room(&room_id, &gate).await.expect("sweep");
        let took = start.elapsed();
        let sent = (calls() - before) as u64;
        let bound = (1000 * 2_u64).div_ceil(batch);
        println!(
            "sweep of 1,000 members × 2 leaves on 2 chains: {took:?}, {sent} eth_call requests (bound ⌈2000 / {batch}⌉ = {bound})"
        );
        assert!(sent <= bound, "{sent} requests");
    }
    srv.finish().await;
}

/// Any EVM chain: a fresh dev chain without Multicall3 is read through the deployless
/// multicall (one `eth_call` per batch, pinned to one block), and a chain whose Multicall3
/// lives elsewhere through the configured `multicall` address; verdicts are the same as on a
/// chain with it, and a gated room's door works on such a chain as a new user would try it.
#[tokio::test]
async fn gates_read_any_evm_chain_with_or_without_multicall3() {
    let bare = Anvil::start_without_multicall3(CHAIN_ID).await;
    let elsewhere = Anvil::start_without_multicall3(31338).await;
    let moved = Address::repeat_byte(0x3c);
    elsewhere
        .rpc(
            "anvil_setCode",
            json!([
                moved.to_string(),
                crate::anvil::artifact("Multicall3")["deployedBytecode"]
            ]),
        )
        .await;
    let (proxy_bare, proxy_moved) = (
        Proxy::start(&bare.url).await,
        Proxy::start(&elsewhere.url).await,
    );
    let (token_bare, token_moved) = (
        deploy(&bare, "TestERC20").await,
        deploy(&elsewhere, "TestERC20").await,
    );
    let holder = Key::new(131).address();
    let outsider = Key::new(132).address();
    for (anvil, token) in [(&bare, token_bare), (&elsewhere, token_moved)] {
        anvil
            .transact(
                token,
                &ITest::mint_0Call {
                    to: holder,
                    amountOrId: U256::from(10),
                }
                .abi_encode(),
            )
            .await;
        set_balance(anvil, holder, ETH).await;
    }
    let mut moved_config = chain_config(&proxy_moved.url);
    moved_config.multicall = Some(moved);
    let config = [
        (format!("eip155:{CHAIN_ID}"), chain_config(&proxy_bare.url)),
        ("eip155:31338".to_owned(), moved_config),
    ]
    .into_iter()
    .collect();
    let chains = Chains::new(&config).expect("chains");
    assert_eq!(
        chains.get(CHAIN_ID).expect("bare").multicall_mode().await,
        Ok(matrixon_chain::rpc::MulticallMode::Deployless)
    );
    assert_eq!(
        chains.get(31338).expect("moved").multicall_mode().await,
        Ok(matrixon_chain::rpc::MulticallMode::Deployed(moved))
    );
    let rule = json!({"all": [
        {"erc20": {"chain": format!("eip155:{CHAIN_ID}"), "contract": token_bare.to_string(), "min": "5"}},
        {"native": {"chain": format!("eip155:{CHAIN_ID}"), "min": "1000"}},
        {"erc20": {"chain": "eip155:31338", "contract": token_moved.to_string(), "min": "5"}},
        {"native": {"chain": "eip155:31338", "min": "1000"}},
    ]});
    let rule = matrixon_chain::gate::Rule::parse(&rule, &|_| true).expect("rule");
    let before = (
        proxy_bare.methods.lock().expect("lock").len(),
        proxy_moved.methods.lock().expect("lock").len(),
    );
    let verdicts = matrixon_chain::gate::evaluate(
        &chains,
        &rule,
        &[(holder, Scope::Own), (outsider, Scope::Own)],
        500,
    )
    .await
    .expect("verdicts");
    assert!(
        verdicts[0].pass,
        "the holder holds everything: {verdicts:?}"
    );
    assert!(!verdicts[1].pass);
    assert!(verdicts[1].leaves.iter().all(|l| !l.pass), "{verdicts:?}");
    let sent_bare: Vec<String> = proxy_bare.methods.lock().expect("lock")[before.0..].to_vec();
    let sent_moved: Vec<String> = proxy_moved.methods.lock().expect("lock")[before.1..].to_vec();
    assert_eq!(
        sent_bare,
        ["eth_call"],
        "one request to the chain without Multicall3"
    );
    assert_eq!(
        sent_moved,
        ["eth_call"],
        "one request to the chain with Multicall3 elsewhere"
    );

    // A sweep in batches of 500 calls, all at one pinned block: ⌈1,002 / 500⌉ = 3 requests
    // through Multicall3; without it each batch goes in parts of 100 calls, whose answers fit
    // the 24 KiB a contract creation may return (EIP-170): 5 + 5 + 1 requests.
    let addresses: Vec<(Address, Scope)> = (0..500u64)
        .map(|i| {
            (
                Address::left_padding_from(&(i + 1).to_be_bytes()),
                Scope::Own,
            )
        })
        .chain([(holder, Scope::Own)])
        .collect();
    let before = (proxy_bare.count("eth_call"), proxy_moved.count("eth_call"));
    let verdicts = matrixon_chain::gate::evaluate(&chains, &rule, &addresses, 500)
        .await
        .expect("sweep");
    assert!(verdicts.last().expect("holder").pass);
    assert!(verdicts[..500].iter().all(|v| !v.pass));
    assert_eq!(
        proxy_bare.count("eth_call") - before.0,
        11,
        "1,002 calls, deployless"
    );
    assert_eq!(
        proxy_moved.count("eth_call") - before.1,
        3,
        "1,002 calls through Multicall3"
    );
    let blocks: std::collections::BTreeSet<_> = verdicts.iter().map(|v| v.blocks.clone()).collect();
    assert_eq!(
        blocks.len(),
        1,
        "every batch of a chain read the same block"
    );

    // The door of a gated room on the bare chain, through the server.
    let srv =
        TestServer::start_with(&Backend::Sqlite, gated_config(&[(&caip2(), &bare.url)])).await;
    let owner = srv.register("owner", "gate password").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let room = create_room(&srv, &owner, json!({"preset": "public_chat"})).await;
    let gate = json!({"rule": {"erc20": {"chain": caip2(), "contract": token_bare.to_string(), "min": "5"}}});
    let (status, body) = set_gate(&srv, &owner, &room, &gate).await;
    assert_eq!(status, 200, "{body}");
    let verdict = check(&srv, &owner, &gate["rule"], holder).await;
    assert_eq!(verdict["pass"], true, "{verdict}");
    let verdict = check(&srv, &owner, &gate["rule"], outsider).await;
    assert_eq!(verdict["pass"], false, "{verdict}");
    srv.finish().await;
}
