//! Attacks from the adversarial review of sync, push, events, kicks, deactivation and
//! unauthenticated endpoints, each as it was reproduced: every one failed before its fix.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{
    anvil::{Key, hung_endpoint},
    harness::{Backend, TestServer, assert_error, both_backends},
    wallet::signed_message,
};

both_backends!(
    a_sync_filter_cannot_freeze_the_server,
    events_over_the_limits_are_413,
    kicks_need_someone_to_kick,
    deactivated_accounts_leave_and_free_their_wallets,
);

fn token(v: &Value) -> String {
    v["access_token"].as_str().expect("token").to_owned()
}

async fn create_room(srv: &TestServer, token: &str, body: Value) -> String {
    let (status, created) = srv
        .post_json("/_matrix/client/v3/createRoom", Some(token), &body)
        .await;
    assert_eq!(status, 200, "{created}");
    created["room_id"].as_str().expect("room id").to_owned()
}

async fn put(srv: &TestServer, token: &str, path: &str, body: &Value) -> (u16, Value) {
    srv.put_json(path, Some(token), body).await
}

fn encoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn membership(srv: &TestServer, token: &str, room: &str, user: &str) -> Value {
    srv.get(
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}"),
        Some(token),
    )
    .await
    .1["membership"]
        .clone()
}

/// The backtracking glob matcher took 15.5 s per sync on this filter and a 40-character
/// event type, on a runtime thread; filters are now bounded and matched in linear time.
async fn a_sync_filter_cannot_freeze_the_server(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw").await);
    let room = create_room(&srv, &alice, json!({})).await;
    let kind = "a".repeat(40);
    for txn in 0..5 {
        let (status, body) = put(
            &srv,
            &alice,
            &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/t{txn}"),
            &json!({"body": "x"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let filter = json!({"room": {"timeline": {"types": ["*a*a*a*a*a*a*a*a*a*a*b"]}}});
    let path = format!(
        "/_matrix/client/v3/sync?timeout=0&filter={}",
        encoded(&filter.to_string())
    );
    let started = Instant::now();
    let syncs = futures_util::future::join_all((0..2).map(|_| srv.get(&path, Some(&alice))));
    let (syncs, versions) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(syncs, srv.get("/_matrix/client/versions", None))
    })
    .await
    .expect("two adversarial syncs and /versions answer within 10 s");
    assert_eq!(versions.0, 200);
    for (status, body) in syncs {
        assert_eq!(status, 200, "{body}");
        let events = &body["rooms"]["join"][&room]["timeline"]["events"];
        assert!(
            events.as_array().is_none_or(Vec::is_empty),
            "nothing matches: {events}"
        );
    }
    println!("two adversarial syncs took {:?}", started.elapsed());

    // A pattern that does match still does.
    let filter = json!({"room": {"timeline": {"types": ["a*a"]}}});
    let (status, body) = srv
        .get(
            &format!(
                "/_matrix/client/v3/sync?timeout=0&filter={}",
                encoded(&filter.to_string())
            ),
            Some(&alice),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let events = body["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .expect("events")
        .clone();
    assert_eq!(events.len(), 5, "{events:?}");

    // Filters are bounded, inline or uploaded, and an inline one that is not JSON is 400.
    let many: Vec<String> = (0..101).map(|i| format!("t{i}.*")).collect();
    let too_many = json!({"room": {"timeline": {"not_types": many}}});
    let inline = |f: &Value| {
        format!(
            "/_matrix/client/v3/sync?timeout=0&filter={}",
            encoded(&f.to_string())
        )
    };
    assert_error(
        &srv.get(&inline(&too_many), Some(&alice)).await,
        400,
        "M_BAD_JSON",
    );
    let long = json!({"room": {"state": {"types": ["*".repeat(256)]}}});
    assert_error(
        &srv.post_json(
            "/_matrix/client/v3/user/@alice:localhost/filter",
            Some(&alice),
            &long,
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &srv.get(
            &format!(
                "/_matrix/client/v3/sync?timeout=0&filter={}",
                encoded("{bad")
            ),
            Some(&alice),
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &srv.get(
            "/_matrix/client/v3/sync?timeout=0&filter=4242",
            Some(&alice),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    srv.finish().await;
}

/// ruma's PDU size error was a 500 (and an ERROR line any user could repeat); event types
/// and state keys over 255 bytes were taken.
async fn events_over_the_limits_are_413(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw").await);
    let room = create_room(&srv, &alice, json!({})).await;
    let send = |kind: String, txn: &'static str, body: Value| {
        let (srv, alice, room) = (&srv, alice.clone(), room.clone());
        async move {
            put(
                srv,
                &alice,
                &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"),
                &body,
            )
            .await
        }
    };
    let huge = json!({"msgtype": "m.text", "body": "x".repeat(65_000)});
    assert_error(
        &send("m.room.message".into(), "t1", huge).await,
        413,
        "M_TOO_LARGE",
    );
    let near = json!({"msgtype": "m.text", "body": "x".repeat(64_000)});
    assert_eq!(send("m.room.message".into(), "t2", near).await.0, 200);
    assert_error(
        &send("x".repeat(256), "t3", json!({})).await,
        413,
        "M_TOO_LARGE",
    );
    assert_eq!(send("x".repeat(255), "t4", json!({})).await.0, 200);
    assert_error(
        &put(
            &srv,
            &alice,
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/io.example.s/{}",
                "k".repeat(256)
            ),
            &json!({}),
        )
        .await,
        413,
        "M_TOO_LARGE",
    );
    srv.finish().await;
}

/// Kicking a banned user answered 200 and lifted the ban; kicking someone who left or never
/// came answered 200 too. Synapse refuses all three with 403.
async fn kicks_need_someone_to_kick(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw").await);
    let bob = token(&srv.register("bob", "pw").await);
    srv.register("carol", "pw").await;
    srv.register("dan", "pw").await;
    let room = create_room(&srv, &alice, json!({"preset": "public_chat"})).await;
    let action = |what: &'static str, user: &'static str| {
        let (srv, alice, room) = (&srv, alice.clone(), room.clone());
        async move {
            srv.post_json(
                &format!("/_matrix/client/v3/rooms/{room}/{what}"),
                Some(&alice),
                &json!({"user_id": user, "reason": "test"}),
            )
            .await
        }
    };
    let join = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&bob),
            &json!({}),
        )
        .await;
    assert_eq!(join.0, 200, "{:?}", join.1);
    assert_eq!(action("ban", "@bob:localhost").await.0, 200);
    assert_error(&action("kick", "@bob:localhost").await, 403, "M_FORBIDDEN");
    assert_eq!(
        membership(&srv, &alice, &room, "@bob:localhost").await,
        "ban",
        "the ban stands"
    );
    // Never in the room: nothing to kick.
    assert_error(
        &action("kick", "@carol:localhost").await,
        403,
        "M_FORBIDDEN",
    );
    // Invited users can be kicked (the invite is withdrawn); then there is nothing left.
    assert_eq!(action("invite", "@dan:localhost").await.0, 200);
    assert_eq!(action("kick", "@dan:localhost").await.0, 200);
    assert_eq!(
        membership(&srv, &alice, &room, "@dan:localhost").await,
        "leave"
    );
    assert_error(&action("kick", "@dan:localhost").await, 403, "M_FORBIDDEN");
    srv.finish().await;
}

/// Deactivated accounts stayed joined and kept their wallets, which could then never sign
/// in or be linked again. Now they leave every room (invites rejected, knocks withdrawn) and
/// their wallets and pushers go.
async fn deactivated_accounts_leave_and_free_their_wallets(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw").await);
    let erin = token(&srv.register("erin", "erin pw").await);
    let frank = token(&srv.register("frank", "frank pw").await);
    let joined = create_room(&srv, &alice, json!({"preset": "public_chat"})).await;
    let invited = create_room(&srv, &alice, json!({"invite": ["@erin:localhost"]})).await;
    let knocked = create_room(&srv, &alice, json!({"room_version": "11"})).await;
    let (status, body) = put(
        &srv,
        &alice,
        &format!("/_matrix/client/v3/rooms/{knocked}/state/m.room.join_rules/"),
        &json!({"join_rule": "knock"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        srv.post_json(
            &format!("/_matrix/client/v3/join/{joined}"),
            Some(&erin),
            &json!({})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        srv.post_json(
            &format!("/_matrix/client/v3/knock/{knocked}"),
            Some(&erin),
            &json!({})
        )
        .await
        .0,
        200
    );
    // Erin links a wallet and a pusher.
    let key = Key::new(91);
    let (text, signature) = signed_message(&srv, &key).await;
    let linked = srv
        .post_with_password_uia(
            "/_matrix/client/unstable/io.matrixon/wallets",
            &erin,
            json!({"message": text, "signature": signature}),
            "erin",
            "erin pw",
        )
        .await;
    assert_eq!(linked.0, 200, "{:?}", linked.1);
    let pusher = json!({
        "kind": "http", "app_id": "io.matrixon.test", "pushkey": "erin",
        "app_display_name": "T", "device_display_name": "D", "lang": "en",
        "data": {"url": "https://push.example/_matrix/push/v1/notify"},
    });
    let set = srv
        .post_json("/_matrix/client/v3/pushers/set", Some(&erin), &pusher)
        .await;
    assert_eq!(set.0, 200, "{:?}", set.1);

    let gone = srv
        .post_with_password_uia(
            "/_matrix/client/v3/account/deactivate",
            &erin,
            json!({}),
            "erin",
            "erin pw",
        )
        .await;
    assert_eq!(gone.0, 200, "{:?}", gone.1);
    for (room, was) in [(&joined, "join"), (&invited, "invite"), (&knocked, "knock")] {
        assert_eq!(
            membership(&srv, &alice, room, "@erin:localhost").await,
            "leave",
            "erin's {was} in {room} ended"
        );
    }
    let services = &srv.server.as_ref().expect("running").services;
    assert!(
        services
            .store
            .pushers("@erin:localhost")
            .await
            .expect("pushers")
            .is_empty(),
        "no pushes for a deactivated account"
    );
    // The wallet is free: another account links it.
    let (text, signature) = signed_message(&srv, &key).await;
    let relinked = srv
        .post_with_password_uia(
            "/_matrix/client/unstable/io.matrixon/wallets",
            &frank,
            json!({"message": text, "signature": signature}),
            "frank",
            "frank pw",
        )
        .await;
    assert_eq!(relinked.0, 200, "{:?}", relinked.1);
    srv.finish().await;
}

/// One account with 20 pushers on a gateway that accepts and never answers delayed another
/// user's push from 0.01 s to 56 s: deliveries ran one after another, holding a global slot
/// through every retry. Each now has its own lanes, and the dead gateway is paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_cannot_delay_everyones_push() {
    let hung = hung_endpoint().await;
    let (live_gw, live) = crate::push::gateway().await;
    let srv = TestServer::start_with(&Backend::Sqlite, |c| {
        c.push.gateway_allow = vec!["127.0.0.1".into()];
    })
    .await;
    let sender = token(&srv.register("sender", "pw").await);
    // Named so that the flood's deliveries come first.
    let flood = token(&srv.register("aaa-flood", "pw").await);
    let victim = token(&srv.register("zzz-victim", "pw").await);
    let room = create_room(&srv, &sender, json!({"preset": "public_chat"})).await;
    for member in [&flood, &victim] {
        let joined = srv
            .post_json(
                &format!("/_matrix/client/v3/join/{room}"),
                Some(member),
                &json!({}),
            )
            .await;
        assert_eq!(joined.0, 200, "{:?}", joined.1);
    }
    let pusher = |url: &str, key: String| {
        json!({
            "kind": "http", "app_id": "io.matrixon.test", "pushkey": key,
            "app_display_name": "T", "device_display_name": "D", "lang": "en",
            "data": {"url": url},
        })
    };
    let dead = format!("{hung}/_matrix/push/v1/notify");
    for i in 0..20 {
        let set = srv
            .post_json(
                "/_matrix/client/v3/pushers/set",
                Some(&flood),
                &pusher(&dead, format!("k{i}")),
            )
            .await;
        assert_eq!(set.0, 200, "{:?}", set.1);
    }
    let set = srv
        .post_json(
            "/_matrix/client/v3/pushers/set",
            Some(&victim),
            &pusher(&live, "victim".into()),
        )
        .await;
    assert_eq!(set.0, 200, "{:?}", set.1);

    for txn in ["m1", "m2"] {
        let started = Instant::now();
        let before = live_gw.count();
        let sent = put(
            &srv,
            &sender,
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            &json!({"msgtype": "m.text", "body": "hello"}),
        )
        .await;
        assert_eq!(sent.0, 200, "{:?}", sent.1);
        let mut arrived = None;
        for _ in 0..100 {
            if live_gw.count() > before {
                arrived = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let arrived = arrived.expect("the victim's push arrived within 5 s");
        println!("{txn}: the victim's push arrived after {arrived:?}");
    }
    srv.finish().await;
}

/// `GET /_synapse/admin/v1/register` stored a nonce per call, unauthenticated, never pruned
/// (3,000 rows in 2.9 s). It is rate-limited now, and expired nonces go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_secret_nonces_are_limited_and_pruned() {
    let srv = TestServer::start_with(&Backend::Sqlite, |c| {
        c.rate_limits.enabled = true;
    })
    .await;
    let path = "/_synapse/admin/v1/register";
    let burst = srv
        .server
        .as_ref()
        .expect("running")
        .services
        .config
        .rate_limits
        .register_per_ip
        .burst;
    for _ in 0..burst {
        assert_eq!(srv.get(path, None).await.0, 200);
    }
    assert_error(&srv.get(path, None).await, 429, "M_LIMIT_EXCEEDED");
    let services = &srv.server.as_ref().expect("running").services;
    assert_eq!(
        services.prune_expired().await.expect("prune"),
        0,
        "fresh nonces stay"
    );
    srv.clock.advance(Duration::from_secs(61));
    assert!(
        services.prune_expired().await.expect("prune") >= u64::from(burst),
        "expired nonces go"
    );
    srv.finish().await;
}

/// matrix-nio joins with `POST /join/{room}` and no body or content type: that answered
/// 400 `M_BAD_JSON` ("EOF while parsing a value"), so every later step of a bot failed.
/// An empty POST body is now the empty object Synapse takes it for; one that is needed
/// still says what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_post_bodies_are_empty_objects() {
    let srv = TestServer::start(&Backend::Sqlite).await;
    let alice = token(&srv.register("alice", "pw").await);
    let bot = token(&srv.register("bot", "pw").await);
    let room = create_room(&srv, &alice, json!({"preset": "public_chat"})).await;
    let empty = |path: String| {
        let (srv, bot) = (&srv, bot.clone());
        async move {
            let response = srv
                .http
                .post(srv.url(&path))
                .bearer_auth(&bot)
                .send()
                .await
                .expect("sent");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    let joined = empty(format!("/_matrix/client/v3/join/{room}")).await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    assert_eq!(joined.1["room_id"], room.as_str());
    let left = empty(format!("/_matrix/client/v3/rooms/{room}/leave")).await;
    assert_eq!(left.0, 200, "{}", left.1);
    let rejoined = empty(format!("/_matrix/client/r0/rooms/{room}/join")).await;
    assert_eq!(rejoined.0, 200, "{}", rejoined.1);
    // Where a field is required, an empty body is still refused, naming it.
    let invite = empty(format!("/_matrix/client/v3/rooms/{room}/invite")).await;
    assert_eq!(invite.0, 400, "{}", invite.1);
    srv.finish().await;
}
