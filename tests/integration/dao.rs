//! DAO rooms on anvil with real tokens: roles that follow holdings (promoted on join,
//! demoted and promoted as tokens move, in one power-levels event, never touching levels set
//! by hand above the roles or administrators), read-only members, malformed roles refused
//! with nothing changed, `unlock` leaves (Unlock Protocol keys that expire), and paid access
//! (payments found in logs or submitted by hash, bad ones refused, lapses kicked on time).

use std::time::Duration;

use alloy::{
    primitives::{Address, U256},
    sol_types::SolCall,
};
use serde_json::{Value, json};

use crate::{
    anvil::{Anvil, Key},
    gate::{
        GATE, admin_token, audit, caip2, create_room, deploy, gated_config, join, wait_membership,
    },
    harness::{Backend, TestServer, assert_error, both_backends},
    wallet::wallet_session,
};

both_backends!(roles_follow_holdings);

alloy::sol! {
    interface IDao {
        function mint(address to, uint256 amountOrId) external;
        function transfer(address to, uint256 amount) external returns (bool);
        function purchase(address recipient, uint256 duration) external;
    }
}

const ROLES: &str = "io.matrixon.room.roles";

async fn set_roles(srv: &TestServer, token: &str, room: &str, content: &Value) -> (u16, Value) {
    srv.put_json(
        &format!("/_matrix/client/v3/rooms/{room}/state/{ROLES}/"),
        Some(token),
        content,
    )
    .await
}

async fn power_levels(srv: &TestServer, token: &str, room: &str) -> Value {
    let (status, levels) = srv
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            Some(token),
        )
        .await;
    assert_eq!(status, 200, "{levels}");
    levels
}

/// Waits until `user`'s entry in the room's power levels is `expected` (`Null`: none).
async fn wait_level(srv: &TestServer, token: &str, room: &str, user: &str, expected: &Value) {
    let mut last = Value::Null;
    for _ in 0..150 {
        last = power_levels(srv, token, room).await;
        if last["users"][user] == *expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{user} in {room}: expected level {expected}, last {last}");
}

/// The power-levels events of the room, oldest first.
async fn power_level_events(srv: &TestServer, token: &str, room: &str) -> Vec<Value> {
    let filter = json!({"types": ["m.room.power_levels"]}).to_string();
    let (status, page) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100&filter={}",
                urlencoding(&filter)
            ),
            Some(token),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let mut events = page["chunk"].as_array().expect("chunk").clone();
    events.reverse();
    events
}

fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `from` sends `amount` of the ERC-20 `token` to `to`, as its wallet would.
async fn transfer(anvil: &Anvil, from: &Key, token: Address, to: Address, amount: U256) {
    let call = IDao::transferCall { to, amount }.abi_encode();
    anvil.transact_as(from.address(), token, &call).await;
}

async fn send_text(srv: &TestServer, token: &str, room: &str, txn: &str) -> (u16, Value) {
    srv.put_json(
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(token),
        &json!({"msgtype": "m.text", "body": "gm"}),
    )
    .await
}

/// Whether matrix-sdk, synced, lets `client`'s user post in `room` (its reading of the
/// power-levels events the roles bot sends).
async fn sdk_may_post(client: &matrix_sdk::Client, room: &str) -> bool {
    client
        .sync_once(matrix_sdk::config::SyncSettings::default().timeout(Duration::from_millis(0)))
        .await
        .expect("sync");
    let room = client
        .get_room(&ruma::RoomId::parse(room).expect("room id"))
        .expect("joined room");
    let user = client.user_id().expect("signed in").to_owned();
    room.power_levels()
        .await
        .expect("power levels")
        .user_can_send_message(&user, ruma::events::MessageLikeEventType::RoomMessage)
}

/// Roles on both backends, and on both kinds of chain: SQLite reads through Multicall3,
/// PostgreSQL a fresh chain without it.
async fn roles_follow_holdings(backend: Backend) {
    let anvil = match backend {
        Backend::Sqlite => Anvil::start().await,
        _ => Anvil::start_without_multicall3(crate::anvil::CHAIN_ID).await,
    };
    let srv = TestServer::start_with(&backend, gated_config(&[(&caip2(), &anvil.url)])).await;
    let chain = caip2();
    let token = deploy(&anvil, "TestERC20").await;
    let nft = deploy(&anvil, "TestERC721").await;
    let keys: Vec<Key> = (121..=124).map(Key::new).collect();
    let mut sessions = Vec::new();
    for key in &keys {
        sessions.push(wallet_session(&srv, key).await);
    }
    let [
        (alice, alice_t),
        (bob, bob_t),
        (carol, carol_t),
        (dave, dave_t),
    ] = <[(String, String); 4]>::try_from(sessions).expect("four");
    let hundred = U256::from(100u64) * U256::from(10u64).pow(U256::from(18u64));
    let mint = |to: Address, amount: U256| {
        IDao::mintCall {
            to,
            amountOrId: amount,
        }
        .abi_encode()
    };
    anvil
        .transact(token, &mint(keys[0].address(), hundred))
        .await;
    anvil
        .transact(nft, &mint(keys[2].address(), U256::from(7)))
        .await;
    let owner = srv.register("owner", "pw").await;
    let owner_t = owner["access_token"].as_str().expect("token").to_owned();
    let owner_id = owner["user_id"].as_str().expect("user").to_owned();
    let moderator = srv.register("moderator", "pw").await;
    let moderator_t = moderator["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let moderator_id = moderator["user_id"].as_str().expect("user").to_owned();
    let admin = admin_token(&srv).await;

    // An announcement room: posting takes 50.
    let room = create_room(
        &srv,
        &owner_t,
        json!({"preset": "public_chat", "power_level_content_override": {
            "events_default": 50, "users": {owner_id.clone(): 100, moderator_id.clone(): 50}}}),
    )
    .await;
    assert_eq!(join(&srv, &moderator_t, &room).await.0, 200);
    let erc20 = json!({"erc20": {"chain": chain, "contract": token.to_string(), "min": hundred.to_string()}});
    let erc721 = json!({"erc721": {"chain": chain, "contract": nft.to_string()}});
    let roles = json!({"roles": [
        {"rule": erc721, "power_level": 60},
        {"rule": erc20, "power_level": 50},
    ]});

    // Bad input is refused with the reason, and nothing changes.
    let malformed = [
        (json!({"roles": []}), "roles"),
        (
            json!({"roles": [{"rule": {"erc20": {"chain": chain, "contract": token.to_string(), "min": "1e18"}}, "power_level": 50}]}),
            "roles[0].rule.erc20.min",
        ),
        (
            json!({"roles": [{"rule": erc721, "power_level": 50.5}]}),
            "roles[0].power_level",
        ),
        (
            json!({"roles": [{"rule": erc721, "power_level": 50}, {"rule": erc20, "power_level": 100}]}),
            "roles[1].power_level",
        ),
        (
            json!({"roles": [{"rule": erc721, "power_level": 50, "colour": "red"}]}),
            "roles[0]",
        ),
        (json!({"roles": [{"rule": erc721}]}), "roles[0]"),
    ];
    for (content, path) in malformed {
        let refused = set_roles(&srv, &owner_t, &room, &content).await;
        assert_error(&refused, 400, "M_BAD_JSON");
        assert!(
            refused.1["error"].as_str().expect("error").contains(path),
            "{path}: {}",
            refused.1
        );
    }
    let refused = srv
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room}/state/{ROLES}/other"),
            Some(&owner_t),
            &roles,
        )
        .await;
    assert_error(&refused, 400, "M_BAD_JSON");
    // A moderator may send state (50) but not change power levels (100).
    let refused = set_roles(&srv, &moderator_t, &room, &roles).await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    assert_eq!(
        srv.get(
            &format!("/_matrix/client/v3/rooms/{room}/state/{ROLES}/"),
            Some(&owner_t)
        )
        .await
        .0,
        404
    );
    // Nobody may register the name the server's bots use.
    let taken = srv
        .post_json(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "_matrixon_roles_0011223344556677", "password": "pw",
                    "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_error(&taken, 400, "M_EXCLUSIVE");

    let (status, body) = set_roles(&srv, &owner_t, &room, &roles).await;
    assert_eq!(status, 200, "{body}");
    // The room's roles bot joins and is raised to the level that changes power levels.
    let levels = {
        let mut found = None;
        for _ in 0..100 {
            let levels = power_levels(&srv, &owner_t, &room).await;
            if let Some((bot, level)) = levels["users"]
                .as_object()
                .expect("users")
                .iter()
                .find(|(u, _)| u.starts_with("@_matrixon_roles_"))
            {
                assert_eq!(level, 100, "{levels}");
                found = Some(bot.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found.expect("the roles bot has its level")
    };
    let bot = levels;
    wait_membership(&srv, &owner_t, &room, &bot, "join", 10).await;

    // Holders are promoted when they join; someone holding nothing stays read-only.
    for t in [&alice_t, &bob_t, &carol_t, &dave_t] {
        assert_eq!(join(&srv, t, &room).await.0, 200);
    }
    wait_level(&srv, &owner_t, &room, &alice, &json!(50)).await;
    wait_level(&srv, &owner_t, &room, &carol, &json!(60)).await;
    assert_eq!(send_text(&srv, &alice_t, &room, "a1").await.0, 200);
    assert_error(
        &send_text(&srv, &bob_t, &room, "b1").await,
        403,
        "M_FORBIDDEN",
    );
    // matrix-sdk reads the bot's power levels the same way.
    let bob_sdk = crate::wallet::sdk_wallet_client(&srv, &keys[1]).await;
    assert!(
        !sdk_may_post(&bob_sdk, &room).await,
        "bob holds nothing yet"
    );
    // A level set by hand above the roles' range is left alone, holdings or not.
    let mut levels = power_levels(&srv, &owner_t, &room).await;
    levels["users"][&dave] = json!(75);
    let (status, body) = srv
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            Some(&owner_t),
            &levels,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Alice sells to Bob: within seconds both change, in one power-levels event by the bot.
    let before = power_level_events(&srv, &owner_t, &room).await.len();
    transfer(&anvil, &keys[0], token, keys[1].address(), hundred).await;
    wait_level(&srv, &owner_t, &room, &bob, &json!(50)).await;
    let levels = power_levels(&srv, &owner_t, &room).await;
    assert_eq!(levels["users"][&alice], Value::Null, "{levels}");
    let events = power_level_events(&srv, &owner_t, &room).await;
    assert_eq!(events.len(), before + 1, "one event for both changes");
    assert_eq!(events.last().expect("event")["sender"], bot);
    assert_eq!(send_text(&srv, &bob_t, &room, "b2").await.0, 200);
    assert!(
        sdk_may_post(&bob_sdk, &room).await,
        "bob holds the tokens now"
    );
    assert_error(
        &send_text(&srv, &alice_t, &room, "a2").await,
        403,
        "M_FORBIDDEN",
    );
    // Administrators, the moderator set by hand (50, in the range, no tokens: the roles
    // decide it) and Dave's hand-set level.
    assert_eq!(levels["users"][&owner_id], 100);
    assert_eq!(levels["users"][&dave], 75);
    assert_eq!(levels["users"][&moderator_id], Value::Null, "{levels}");
    let entries = audit(&srv, &admin, &room).await;
    assert!(
        entries
            .iter()
            .any(|e| e["decision"] == "role" && e["user_id"] == bob && e["detail"]["to"] == 50),
        "{entries:?}"
    );

    // Once changing power levels takes only 60, the 60 role would make administrators: it
    // is no longer applied, and a holder of both gets the next role's 50.
    let erin_key = Key::new(125);
    anvil
        .transact(nft, &mint(erin_key.address(), U256::from(8)))
        .await;
    anvil
        .transact(token, &mint(erin_key.address(), hundred))
        .await;
    let (erin, erin_t) = wallet_session(&srv, &erin_key).await;
    let mut levels = power_levels(&srv, &owner_t, &room).await;
    levels["events"]["m.room.power_levels"] = json!(60);
    let (status, body) = srv
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            Some(&owner_t),
            &levels,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(join(&srv, &erin_t, &room).await.0, 200);
    wait_level(&srv, &owner_t, &room, &erin, &json!(50)).await;

    // Removing the roles leaves the levels as they are.
    assert_eq!(set_roles(&srv, &owner_t, &room, &json!({})).await.0, 200);
    transfer(&anvil, &keys[1], token, keys[0].address(), hundred).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let levels = power_levels(&srv, &owner_t, &room).await;
    assert_eq!(levels["users"][&bob], 50, "{levels}");
    assert_eq!(levels["users"][&alice], Value::Null, "{levels}");
    srv.finish().await;
}

/// `unlock` leaves, on a fresh chain without Multicall3: a valid key of an Unlock Protocol
/// lock opens the door; without one the refusal says so; a key that expires gets its holder
/// removed at the next re-check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_keys_open_the_door_until_they_expire() {
    let anvil = Anvil::start_without_multicall3(crate::anvil::CHAIN_ID).await;
    let srv =
        TestServer::start_with(&Backend::Sqlite, gated_config(&[(&caip2(), &anvil.url)])).await;
    let lock = deploy(&anvil, "TestLock").await;
    let member = Key::new(131);
    let outsider = Key::new(132);
    let (member_id, member_t) = wallet_session(&srv, &member).await;
    let (_, outsider_t) = wallet_session(&srv, &outsider).await;
    anvil
        .transact(
            lock,
            &IDao::purchaseCall {
                recipient: member.address(),
                duration: U256::from(3_600),
            }
            .abi_encode(),
        )
        .await;
    let owner = srv.register("owner", "pw").await;
    let owner_t = owner["access_token"].as_str().expect("token").to_owned();
    let room = create_room(
        &srv,
        &owner_t,
        json!({"preset": "public_chat", "initial_state": [
        {"type": GATE, "state_key": "", "content": {
            "rule": {"unlock": {"chain": caip2(), "lock": lock.to_string()}},
            "recheck_interval_s": 60}}]}),
    )
    .await;
    assert_eq!(join(&srv, &member_t, &room).await.0, 200);
    let refused = join(&srv, &outsider_t, &room).await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    let failing = &refused.1["io.matrixon.gate"]["failing"][0];
    assert_eq!(failing["path"], "unlock", "{}", refused.1);
    assert_eq!(failing["value"], "no valid key", "{}", refused.1);
    // An unknown field in the leaf is refused.
    let bad = srv
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room}/state/{GATE}/"),
            Some(&owner_t),
            &json!({"rule": {"unlock": {"chain": caip2(), "lock": lock.to_string(), "network": 1}}}),
        )
        .await;
    assert_error(&bad, 400, "M_BAD_JSON");

    // The key expires on chain; the next re-check removes its holder.
    anvil.rpc("evm_increaseTime", json!([3_601])).await;
    anvil.rpc("evm_mine", json!([])).await;
    srv.clock.advance(Duration::from_secs(61));
    let kicked = wait_membership(&srv, &owner_t, &room, &member_id, "leave", 15).await;
    assert!(
        kicked["reason"]
            .as_str()
            .expect("reason")
            .contains("unlock"),
        "{kicked}"
    );
    srv.finish().await;
}

/// Sends a transaction as `from` (impersonated and funded), mined at once; its hash.
async fn send_as(anvil: &Anvil, from: Address, to: Address, wei: u128, data: &[u8]) -> String {
    anvil
        .rpc("anvil_impersonateAccount", json!([from.to_string()]))
        .await;
    anvil
        .rpc(
            "anvil_setBalance",
            json!([from.to_string(), "0x56bc75e2d63100000"]),
        )
        .await;
    let tx = json!([{"from": from.to_string(), "to": to.to_string(), "value": format!("{wei:#x}"),
        "data": alloy::primitives::Bytes::copy_from_slice(data).to_string(), "gas": "0x100000"}]);
    anvil
        .rpc("eth_sendTransaction", tx)
        .await
        .as_str()
        .expect("hash")
        .to_owned()
}

async fn pay(srv: &TestServer, token: &str, room: &str, tx: &str) -> (u16, Value) {
    srv.post_json(
        "/_matrix/client/unstable/io.matrixon/gate/pay",
        Some(token),
        &json!({"room_id": room, "tx_hash": tx}),
    )
    .await
}

async fn dry_run(srv: &TestServer, token: &str, room: &str, address: Address) -> Value {
    let (status, body) = srv
        .post_json(
            "/_matrix/client/unstable/io.matrixon/gate/check",
            Some(token),
            &json!({"room_id": room, "address": address.to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Paid access: a payment in a token found in its transfer logs, one in the coin submitted
/// by hash (after its confirmations), bad submissions refused with the reason and nothing
/// recorded, and a payment's lapse kicking its payer at that moment, not at the next
/// interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_open_the_door_for_their_period() {
    let anvil = Anvil::start().await;
    let chains = gated_config(&[(&caip2(), &anvil.url)]);
    let srv = TestServer::start_with(&Backend::Sqlite, |config| {
        chains(config);
        config.gate.payment_confirmations = 2;
    })
    .await;
    let chain = caip2();
    let token = deploy(&anvil, "TestERC20").await;
    let treasury = Key::new(140).address();
    let (member, outsider, stranger) = (Key::new(141), Key::new(142), Key::new(143));
    let (member_id, member_t) = wallet_session(&srv, &member).await;
    let (outsider_id, outsider_t) = wallet_session(&srv, &outsider).await;
    let (_, stranger_t) = wallet_session(&srv, &stranger).await;
    let ten = U256::from(10u64) * U256::from(10u64).pow(U256::from(18u64));
    anvil
        .transact(
            token,
            &IDao::mintCall {
                to: member.address(),
                amountOrId: ten,
            }
            .abi_encode(),
        )
        .await;
    let eth = 1_000_000_000_000_000_000u128;
    let owner = srv.register("owner", "pw").await;
    let owner_t = owner["access_token"].as_str().expect("token").to_owned();
    let rule = json!({"any": [
        {"paid": {"chain": chain, "token": token.to_string(), "recipient": treasury.to_string(),
                  "amount": ten.to_string(), "period_s": 86_400}},
        {"paid": {"chain": chain, "recipient": treasury.to_string(), "amount": eth.to_string(),
                  "period_s": 3_600}},
    ]});
    let room = create_room(&srv, &owner_t, json!({"preset": "public_chat", "initial_state": [
        {"type": GATE, "state_key": "", "content": {"rule": rule, "recheck_interval_s": 172_800}}]}))
    .await;
    let refused = join(&srv, &member_t, &room).await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    assert!(
        refused.1["error"].as_str().expect("error").contains("paid"),
        "{}",
        refused.1
    );
    // Malformed leaves are refused.
    for (leaf, path) in [
        (
            json!({"chain": chain, "recipient": treasury.to_string(), "amount": "0", "period_s": 60}),
            "paid.amount",
        ),
        (
            json!({"chain": chain, "recipient": treasury.to_string(), "amount": "1", "period_s": 0}),
            "paid.period_s",
        ),
        (
            json!({"chain": chain, "recipient": "0x1234", "amount": "1", "period_s": 60}),
            "paid.recipient",
        ),
    ] {
        let bad = srv
            .put_json(
                &format!("/_matrix/client/v3/rooms/{room}/state/{GATE}/"),
                Some(&owner_t),
                &json!({"rule": {"paid": leaf}}),
            )
            .await;
        assert_error(&bad, 400, "M_BAD_JSON");
        assert!(
            bad.1["error"].as_str().expect("error").contains(path),
            "{path}: {}",
            bad.1
        );
    }

    // A token payment is found in the token's transfer logs (read from the block the server
    // first saw when the room got its rule), and counted once it has its confirmations.
    tokio::time::sleep(Duration::from_millis(500)).await;
    send_as(
        &anvil,
        member.address(),
        token,
        0,
        &IDao::transferCall {
            to: treasury,
            amount: ten,
        }
        .abi_encode(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_error(&join(&srv, &member_t, &room).await, 403, "M_FORBIDDEN");
    anvil.rpc("evm_mine", json!([])).await;
    let mut joined = join(&srv, &member_t, &room).await;
    for _ in 0..100 {
        if joined.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        joined = join(&srv, &member_t, &room).await;
    }
    assert_eq!(joined.0, 200, "{}", joined.1);
    let verdict = dry_run(&srv, &member_t, &room, member.address()).await;
    assert_eq!(verdict["pass"], true, "{verdict}");
    let expires = verdict["addresses"][0]["expires_at"]
        .as_u64()
        .expect("expires_at");
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis(),
    )
    .expect("time");
    assert!(
        expires > now + 86_000_000 && expires <= now + 86_400_000 + 60_000,
        "{verdict}"
    );

    // Bad submissions: refused with the reason, nothing recorded.
    let elsewhere = send_as(
        &anvil,
        outsider.address(),
        Key::new(150).address(),
        eth,
        &[],
    )
    .await;
    let too_small = send_as(&anvil, outsider.address(), treasury, eth / 2, &[]).await;
    let reverted = send_as(
        &anvil,
        outsider.address(),
        token,
        0,
        &IDao::transferCall {
            to: treasury,
            amount: ten,
        }
        .abi_encode(),
    )
    .await;
    let by_stranger = send_as(&anvil, stranger.address(), treasury, eth, &[]).await;
    anvil.rpc("evm_mine", json!([])).await;
    for (tx, status, errcode, says) in [
        (elsewhere.as_str(), 400, "M_INVALID_PARAM", "not"),
        (too_small.as_str(), 400, "M_INVALID_PARAM", "less than"),
        (reverted.as_str(), 400, "M_INVALID_PARAM", "reverted"),
        (
            by_stranger.as_str(),
            400,
            "M_INVALID_PARAM",
            "not one of your linked wallets",
        ),
        ("0x1234", 400, "M_INVALID_PARAM", "transaction hash"),
        (
            "0x00000000000000000000000000000000000000000000000000000000000000aa",
            404,
            "M_NOT_FOUND",
            "No mined transaction",
        ),
    ] {
        let refused = pay(&srv, &outsider_t, &room, tx).await;
        assert_error(&refused, status, errcode);
        assert!(
            refused.1["error"].as_str().expect("error").contains(says),
            "{says}: {}",
            refused.1
        );
    }
    assert_error(&join(&srv, &outsider_t, &room).await, 403, "M_FORBIDDEN");
    assert_eq!(
        dry_run(&srv, &stranger_t, &room, stranger.address()).await["pass"],
        false,
        "a refused submission records nothing"
    );

    // A coin payment submitted by hash: too fresh first, then counted for its period.
    let paid = send_as(&anvil, outsider.address(), treasury, eth, &[]).await;
    let early = pay(&srv, &outsider_t, &room, &paid).await;
    assert_error(&early, 400, "M_INVALID_PARAM");
    assert!(
        early.1["error"]
            .as_str()
            .expect("error")
            .contains("1 of the 2 confirmations"),
        "{}",
        early.1
    );
    anvil.rpc("evm_mine", json!([])).await;
    let (status, body) = pay(&srv, &outsider_t, &room, &paid).await;
    assert_eq!(status, 200, "{body}");
    let expires = body["payments"][0]["expires_at"]
        .as_u64()
        .expect("expires_at");
    assert_eq!(
        expires,
        body["payments"][0]["paid_at"].as_u64().expect("paid_at") + 3_600_000,
        "{body}"
    );
    assert_eq!(
        pay(&srv, &outsider_t, &room, &paid).await.0,
        200,
        "again is fine"
    );
    assert_eq!(join(&srv, &outsider_t, &room).await.0, 200);
    // Without a gate asking for payment there is nothing to pay.
    let plain = create_room(&srv, &owner_t, json!({"preset": "public_chat"})).await;
    assert_error(
        &pay(&srv, &outsider_t, &plain, &paid).await,
        400,
        "M_INVALID_PARAM",
    );

    // The coin payment lapses after an hour: its payer is removed then, although the room's
    // interval is two days; the token payer stays.
    srv.clock.advance(Duration::from_secs(3_660));
    let kicked = wait_membership(&srv, &owner_t, &room, &outsider_id, "leave", 15).await;
    assert!(
        kicked["reason"].as_str().expect("reason").contains("paid"),
        "{kicked}"
    );
    assert_eq!(
        crate::gate::membership(&srv, &owner_t, &room, &member_id).await["membership"],
        "join"
    );
    srv.finish().await;
}

/// The gate page in headless Chromium with an injected wallet: the rule in words (token name
/// and symbol from the chain, the recipient's ENS name), an outsider shown exactly what is
/// missing, a holder joining in one step (SIWE, join, and the link to open the room), and a
/// paid member shown when their access lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_page_explains_checks_and_joins() {
    use crate::{
        anvil::EnsFixture,
        sso::{settle, sign_request},
        webdriver::Browser,
    };
    let anvil = Anvil::start().await;
    let ens = EnsFixture::new(&anvil).await;
    let treasury = Key::new(160);
    ens.register("eth", "treasury", treasury.address(), &[], &[])
        .await;
    ens.primary(treasury.address(), "treasury.eth").await;
    let chains = gated_config(&[(&caip2(), &anvil.url)]);
    let srv = TestServer::start_with(&Backend::Sqlite, |config| {
        chains(config);
        config.names.ens_chain = caip2();
        config.gate.payment_confirmations = 1;
    })
    .await;
    let token = deploy(&anvil, "TestERC20").await;
    let (holder, outsider, payer) = (Key::new(161), Key::new(162), Key::new(163));
    let hundred = U256::from(100u64) * U256::from(10u64).pow(U256::from(18u64));
    anvil
        .transact(
            token,
            &IDao::mintCall {
                to: holder.address(),
                amountOrId: hundred,
            }
            .abi_encode(),
        )
        .await;
    let owner = srv.register("owner", "pw").await;
    let owner_t = owner["access_token"].as_str().expect("token").to_owned();
    let cent = "10000000000000000";
    let rule = json!({"any": [
        {"erc20": {"chain": caip2(), "contract": token.to_string(), "min": hundred.to_string()}},
        {"paid": {"chain": caip2(), "recipient": treasury.address().to_string(), "amount": cent,
                  "period_s": 2_592_000}},
    ]});
    let room = create_room(
        &srv,
        &owner_t,
        json!({"preset": "public_chat", "name": "DAO lounge",
        "room_alias_name": "dao", "initial_state": [
        {"type": GATE, "state_key": "", "content": {"rule": rule}}]}),
    )
    .await;

    let public = srv.base.replace("127.0.0.1", "localhost");
    let page = format!("{public}/_matrix/client/unstable/io.matrixon/gate/page/%23dao:localhost");
    let browser = Browser::start().await;
    browser.goto(&page).await;
    browser.wait_text("#title", "DAO lounge").await;
    browser
        .wait_text("#rule", "Hold at least 100 MXT (Matrixon Test Token)")
        .await;
    browser
        .wait_text("#rule", "Pay at least 0.01 of the coin to treasury.eth")
        .await;
    browser
        .wait_text("#rule", "a payment counts for 30 days")
        .await;
    browser.screenshot("gate-rule").await;

    // An outsider sees exactly what is missing, and no way to join.
    connect_and_check(&browser, &page, &outsider).await;
    browser
        .wait_text("#verdict", "does not meet the room's rule")
        .await;
    let verdict = browser
        .wait_text("#verdict", "Hold at least 100 MXT (Matrixon Test Token) on")
        .await;
    assert!(
        verdict.contains("this wallet holds 0. Get it into this wallet"),
        "{verdict}"
    );
    assert!(
        verdict.contains("this wallet: no payment within the period. Pay from this wallet"),
        "{verdict}"
    );
    assert_eq!(
        browser
            .execute("return document.getElementById('join').hidden;", Vec::new())
            .await,
        true
    );
    browser.screenshot("gate-outsider").await;

    // A holder checks, signs in with the wallet and joins in one step.
    connect_and_check(&browser, &page, &holder).await;
    browser.wait_text("#verdict", "meets the room's rule").await;
    browser.click("#join").await;
    let (id, text) = sign_request(&browser).await;
    settle(&browser, id, &holder, &text).await;
    let holder_id = format!("@{:#x}:localhost", holder.address());
    browser
        .wait_text("#status", &format!("You joined as {holder_id}"))
        .await;
    let open = browser
        .execute("return document.getElementById('open').href;", Vec::new())
        .await;
    assert_eq!(open, "https://matrix.to/#/#dao:localhost");
    assert_eq!(
        crate::gate::membership(&srv, &owner_t, &room, &holder_id).await["membership"],
        "join"
    );
    browser.screenshot("gate-joined").await;

    // A paid member is told when their access lapses.
    let (_, payer_t) = wallet_session(&srv, &payer).await;
    let paid = send_as(
        &anvil,
        payer.address(),
        treasury.address(),
        10_000_000_000_000_000,
        &[],
    )
    .await;
    let (status, body) = pay(&srv, &payer_t, &room, &paid).await;
    assert_eq!(status, 200, "{body}");
    let lapses = body["payments"][0]["expires_at"]
        .as_i64()
        .expect("expires_at");
    let shown = utc_minute(lapses);
    connect_and_check(&browser, &page, &payer).await;
    browser
        .wait_text("#verdict", &format!("Your paid access lasts until {shown}"))
        .await;
    browser.screenshot("gate-paid").await;
    browser.quit().await;

    // Rooms nobody may preview are not described.
    let private = create_room(&srv, &owner_t, json!({"preset": "private_chat"})).await;
    let (status, _) = srv
        .get(
            &format!("/_matrix/client/unstable/io.matrixon/gate/room/{private}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let bad = srv
        .post_json(
            &format!("/_matrix/client/unstable/io.matrixon/gate/room/{room}/check"),
            None,
            &json!({"address": "0x1234"}),
        )
        .await;
    assert_error(&bad, 400, "M_INVALID_PARAM");
    srv.finish().await;
}

/// Opens the gate page, lets it finish looking for wallets, announces `key`'s wallet and
/// checks it.
async fn connect_and_check(browser: &crate::webdriver::Browser, page: &str, key: &Key) {
    use crate::sso::{INJECT_WALLET, READY};
    browser.goto(page).await;
    browser.wait_for("the page", READY).await;
    // The page has stopped looking for wallets (the list is drawn again when it does).
    browser.wait_text("#status", "No Ethereum wallet").await;
    browser.wait_text("#rule", "MXT").await;
    browser
        .execute(
            INJECT_WALLET,
            vec![json!(key.address().to_string()), json!("0x1")],
        )
        .await;
    browser.wait_text("#wallets", "Test Wallet").await;
    browser.click("#wallets button").await;
}

/// `YYYY-MM-DD HH:MM UTC` of a time in ms, as the page writes it.
fn utc_minute(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).expect("a time");
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}
