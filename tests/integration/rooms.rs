//! Rooms with real clients: create, invite, join, talk, sync, paginate; and every refused
//! transition refused with `M_FORBIDDEN` and nothing stored.

use std::time::Duration;

use matrix_sdk::{
    Client,
    config::SyncSettings,
    room::MessagesOptions,
    ruma::{
        OwnedRoomId,
        api::client::room::create_room,
        events::{
            AnySyncMessageLikeEvent, AnySyncTimelineEvent, room::message::RoomMessageEventContent,
        },
    },
};
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(
    lazy_loading_sends_each_member_once_unless_asked,
    sdk_clients_talk_in_a_room,
    forbidden_transitions_change_nothing,
    sync_waits_then_wakes_and_tokens_never_skip,
    random_interleavings_of_sends_and_syncs_never_skip_or_repeat,
    sends_are_idempotent_per_device_and_transaction,
);

async fn sdk_login(srv: &TestServer, user: &str) -> Client {
    srv.register(user, "room password").await;
    let client = srv.client().await;
    client
        .matrix_auth()
        .login_username(user, "room password")
        .send()
        .await
        .expect("login");
    client
}

/// Message bodies of a room's timeline as the client reads it back with `/messages`.
pub(crate) async fn history(client: &Client, room_id: &OwnedRoomId) -> Vec<String> {
    let room = client.get_room(room_id).expect("room known to the client");
    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut options = MessagesOptions::backward();
        options.limit = 7u32.into();
        options.from = from.clone();
        let page = room.messages(options).await.expect("messages");
        for event in &page.chunk {
            let raw = event.raw().json().get();
            let value: Value = serde_json::from_str(raw).expect("json");
            if value["type"] == "m.room.message" {
                bodies.push(value["content"]["body"].as_str().unwrap_or("?").to_owned());
            }
        }
        match page.end {
            Some(end) => from = Some(end),
            None => break,
        }
    }
    bodies.reverse();
    bodies
}

async fn sdk_clients_talk_in_a_room(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = sdk_login(&srv, "alice").await;
    let bob = sdk_login(&srv, "bob").await;

    let mut request = create_room::v3::Request::new();
    request.name = Some("Planning".to_owned());
    request.topic = Some("What we do next".to_owned());
    request.invite = vec![bob.user_id().expect("bob").to_owned()];
    let room = alice.create_room(request).await.expect("create room");
    let room_id = room.room_id().to_owned();

    bob.sync_once(SyncSettings::default())
        .await
        .expect("bob syncs");
    let invited = bob.get_room(&room_id).expect("bob sees the invite");
    assert_eq!(invited.state(), matrix_sdk::RoomState::Invited);
    invited.join().await.expect("bob joins");

    // 100 messages, both ways, in a known order.
    let mut sent = Vec::new();
    alice
        .sync_once(SyncSettings::default())
        .await
        .expect("alice syncs");
    bob.sync_once(SyncSettings::default())
        .await
        .expect("bob syncs");
    let alice_room = alice.get_room(&room_id).expect("alice's room");
    let bob_room = bob.get_room(&room_id).expect("bob's room");
    for i in 0..100 {
        let (room, who) = if i % 3 == 0 {
            (&bob_room, "bob")
        } else {
            (&alice_room, "alice")
        };
        let body = format!("{who} #{i}");
        room.send(RoomMessageEventContent::text_plain(&body))
            .await
            .expect("send");
        sent.push(body);
    }

    // Each client syncs the conversation in order.
    for client in [&alice, &bob] {
        let settings = SyncSettings::default().timeout(Duration::from_secs(0));
        let response = client.sync_once(settings).await.expect("sync");
        let joined = &response.rooms.joined[&room_id];
        let bodies: Vec<String> = joined
            .timeline
            .events
            .iter()
            .filter_map(|e| match e.raw().deserialize().ok()? {
                AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(m)) => {
                    Some(m.as_original()?.content.body().to_owned())
                }
                _ => None,
            })
            .collect();
        assert!(!bodies.is_empty());
        assert_eq!(
            bodies,
            sent[sent.len() - bodies.len()..],
            "sync timeline in order"
        );
        // And the whole history back-paginates, in order, with nothing missing.
        assert_eq!(history(client, &room_id).await, sent);
    }

    // The room's state as clients see it.
    let members = alice_room
        .members(matrix_sdk::RoomMemberships::JOIN)
        .await
        .expect("members");
    assert_eq!(members.len(), 2);
    assert_eq!(alice_room.name().as_deref(), Some("Planning"));
    srv.finish().await;
}

/// Raw HTTP helpers for the refusal checks.
async fn create(srv: &TestServer, token: &str, body: Value) -> String {
    let (status, answer) = srv
        .post_json("/_matrix/client/v3/createRoom", Some(token), &body)
        .await;
    assert_eq!(status, 200, "{answer}");
    answer["room_id"].as_str().expect("room id").to_owned()
}

async fn put(srv: &TestServer, token: &str, path: &str, body: &Value) -> (u16, Value) {
    srv.request(
        reqwest::Method::PUT,
        path,
        Some(token),
        Some(serde_json::to_vec(body).expect("json")),
    )
    .await
}

async fn event_count(srv: &TestServer, token: &str, room: &str) -> usize {
    let (status, page) = srv
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1000"),
            Some(token),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["chunk"].as_array().expect("chunk").len()
}

async fn forbidden_transitions_change_nothing(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let token = |v: &Value| v["access_token"].as_str().expect("token").to_owned();
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let carol = token(&srv.register("carol", "pw carol 1").await);
    let room = create(
        &srv,
        &alice,
        json!({"name": "Private", "invite": ["@bob:localhost"]}),
    )
    .await;
    let r = |path: &str| format!("/_matrix/client/v3/rooms/{room}/{path}");

    // Carol was not invited: an invite-only room refuses her.
    let before = event_count(&srv, &alice, &room).await;
    assert_error(
        &srv.post_json(&r("join"), Some(&carol), &json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &srv.post_json(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&carol),
            &json!({}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // Nor can she read, send, or invite herself in.
    assert_error(
        &srv.get(&r("messages?dir=b"), Some(&carol)).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &put(
            &srv,
            &carol,
            &r("send/m.room.message/c1"),
            &json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &srv.post_json(
            &r("invite"),
            Some(&carol),
            &json!({"user_id": "@carol:localhost"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );

    // Bob joins; with power 0 he cannot kick, ban, rename above his level or raise himself.
    assert_eq!(
        srv.post_json(&r("join"), Some(&bob), &json!({})).await.0,
        200
    );
    let after_join = event_count(&srv, &alice, &room).await;
    assert_eq!(after_join, before + 1);
    assert_error(
        &srv.post_json(
            &r("kick"),
            Some(&bob),
            &json!({"user_id": "@alice:localhost"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &srv.post_json(
            &r("ban"),
            Some(&bob),
            &json!({"user_id": "@alice:localhost"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    let raise = json!({"users": {"@alice:localhost": 100, "@bob:localhost": 100}});
    let refused = put(&srv, &bob, &r("state/m.room.power_levels/"), &raise).await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    assert!(
        refused.1["error"]
            .as_str()
            .unwrap_or_default()
            .contains("power"),
        "the refusal says why: {}",
        refused.1
    );
    assert_error(
        &put(
            &srv,
            &bob,
            &r("state/m.room.name/"),
            &json!({"name": "Mine"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // Alice may not lift herself above 100 either, nor demote to above her own level.
    assert_error(
        &put(
            &srv,
            &alice,
            &r("state/m.room.power_levels/"),
            &json!({"users": {"@alice:localhost": 101}}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        event_count(&srv, &alice, &room).await,
        after_join,
        "nothing was stored"
    );

    // Banned, Bob can no longer send, and cannot rejoin.
    assert_eq!(
        srv.post_json(
            &r("ban"),
            Some(&alice),
            &json!({"user_id": "@bob:localhost", "reason": "spam"})
        )
        .await
        .0,
        200
    );
    assert_error(
        &put(
            &srv,
            &bob,
            &r("send/m.room.message/b1"),
            &json!({"msgtype": "m.text", "body": "x"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &srv.post_json(&r("join"), Some(&bob), &json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    // Unban needs a ban; an unknown room is 404; bad content is M_BAD_JSON.
    assert_error(
        &srv.post_json(
            &r("unban"),
            Some(&alice),
            &json!({"user_id": "@carol:localhost"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &srv.post_json(
            "/_matrix/client/v3/rooms/!nope:localhost/join",
            Some(&carol),
            &json!({}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &put(
            &srv,
            &alice,
            &r("send/m.room.message/a1"),
            &json!({"body": 1.5}),
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &srv.post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            &json!({"room_version": "1000"}),
        )
        .await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    srv.finish().await;
}

async fn sync_waits_then_wakes_and_tokens_never_skip(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let token = |v: &Value| v["access_token"].as_str().expect("token").to_owned();
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let room = create(&srv, &alice, json!({"preset": "public_chat"})).await;
    assert_eq!(
        srv.post_json(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&bob),
            &json!({})
        )
        .await
        .0,
        200
    );
    let (status, initial) = srv.get("/_matrix/client/v3/sync", Some(&bob)).await;
    assert_eq!(status, 200, "{initial}");
    let mut since = initial["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    // Few events: the whole room fits the timeline, which starts at its creation.
    let timeline = initial["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .expect("timeline");
    assert_eq!(timeline[0]["type"], "m.room.create");
    assert_ne!(initial["rooms"]["join"][&room]["timeline"]["limited"], true);

    // A waiting sync returns as soon as a message arrives.
    let waiting = {
        let http = srv.http.clone();
        let url = srv.url(&format!(
            "/_matrix/client/v3/sync?since={since}&timeout=20000"
        ));
        let bob = bob.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let body: Value = http
                .get(url)
                .bearer_auth(bob)
                .send()
                .await
                .expect("sync")
                .json()
                .await
                .expect("json");
            (started.elapsed(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = put(
        &srv,
        &alice,
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/w1"),
        &json!({"msgtype": "m.text", "body": "wake up"}),
    )
    .await;
    assert_eq!(sent.0, 200, "{:?}", sent.1);
    let (elapsed, woke) = waiting.await.expect("task");
    assert!(
        elapsed < Duration::from_secs(15),
        "returned by the wake-up, not the timeout"
    );
    let events = woke["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["content"]["body"], "wake up");
    assert_eq!(events[0]["event_id"], sent.1["event_id"]);
    assert_eq!(
        woke["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 1,
        "{woke}"
    );
    // Woken by the message alone, the sync was answered from the shared log of recent events.
    let metrics = srv.metrics().await;
    assert!(
        metrics.contains(r#"matrixon_sync_woken_total{answer="log"} 1"#),
        "{metrics}"
    );

    // Interleaved sends and syncs: every event exactly once, in order.
    since = woke["next_batch"].as_str().expect("next").to_owned();
    let mut seen = vec![
        events[0]["content"]["body"]
            .as_str()
            .expect("body")
            .to_owned(),
    ];
    let mut expected = seen.clone();
    let mut n = 0;
    for round in 0..12 {
        for _ in 0..(round % 4) {
            n += 1;
            let body = format!("m{n}");
            let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{n}");
            assert_eq!(
                put(
                    &srv,
                    &alice,
                    &path,
                    &json!({"msgtype": "m.text", "body": body})
                )
                .await
                .0,
                200
            );
            expected.push(body);
        }
        let filter = r#"{"room":{"timeline":{"limit":50}}}"#;
        let path = format!(
            "/_matrix/client/v3/sync?since={since}&timeout=0&filter={}",
            url::form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>()
        );
        let (status, body) = srv.get(&path, Some(&bob)).await;
        assert_eq!(status, 200, "{body}");
        if let Some(events) = body["rooms"]["join"][&room]["timeline"]["events"].as_array() {
            seen.extend(
                events
                    .iter()
                    .map(|e| e["content"]["body"].as_str().unwrap_or("?").to_owned()),
            );
        }
        since = body["next_batch"].as_str().expect("next").to_owned();
    }
    assert_eq!(seen, expected);

    // A bad token is a clear error.
    assert_error(
        &srv.get("/_matrix/client/v3/sync?since=garbage", Some(&bob))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    srv.finish().await;
}

async fn sends_are_idempotent_per_device_and_transaction(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = srv.register("alice", "pw alice 1").await["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    let other_device = srv.login("alice", "pw alice 1").await["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    let room = create(&srv, &alice, json!({})).await;
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/same");
    let body = json!({"msgtype": "m.text", "body": "once"});
    let first = put(&srv, &alice, &path, &body).await;
    let again = put(&srv, &alice, &path, &body).await;
    assert_eq!(first.0, 200);
    assert_eq!(first.1["event_id"], again.1["event_id"]);
    let elsewhere = put(&srv, &other_device, &path, &body).await;
    assert_ne!(
        elsewhere.1["event_id"], first.1["event_id"],
        "another device, another event"
    );
    // The sending device sees its transaction id; the other device does not.
    let event_path = format!(
        "/_matrix/client/v3/rooms/{room}/event/{}",
        first.1["event_id"].as_str().expect("id")
    );
    let mine = srv.get(&event_path, Some(&alice)).await.1;
    assert_eq!(mine["unsigned"]["transaction_id"], "same");
    let theirs = srv.get(&event_path, Some(&other_device)).await.1;
    assert!(theirs["unsigned"].get("transaction_id").is_none());
    srv.finish().await;
}

/// Lazy loading: an incremental sync brings the member events of the timeline's senders the
/// device has not been sent yet (even when they did not change), not again afterwards unless
/// `include_redundant_members` asks for them.
async fn lazy_loading_sends_each_member_once_unless_asked(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let token = |body: Value| body["access_token"].as_str().expect("token").to_owned();
    let alice = token(srv.register("alice", "pw alice 1").await);
    let bob = token(srv.register("bob", "pw bob 12").await);
    let carol = token(srv.register("carol", "pw carol 1").await);
    let room = create(&srv, &alice, json!({"preset": "public_chat"})).await;
    for t in [&bob, &carol] {
        let path = format!("/_matrix/client/v3/join/{room}");
        assert_eq!(srv.post_json(&path, Some(t), &json!({})).await.0, 200);
    }
    let mut n = 0;
    let mut say = async |who: &str| {
        n += 1;
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/l{n}");
        let status = put(
            &srv,
            who,
            &path,
            &json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await
        .0;
        assert_eq!(status, 200);
    };
    say(&alice).await;
    let sync = |since: Option<String>, redundant: bool| {
        let (srv, bob, room) = (&srv, bob.clone(), room.clone());
        async move {
            let filter = json!({"room": {"timeline": {"limit": 1},
                "state": {"lazy_load_members": true, "include_redundant_members": redundant}}});
            let filter: String =
                url::form_urlencoded::byte_serialize(filter.to_string().as_bytes()).collect();
            let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
            let path = format!("/_matrix/client/v3/sync?timeout=0&filter={filter}{since}");
            let (status, body) = srv.get(&path, Some(&bob)).await;
            assert_eq!(status, 200, "{body}");
            let members: Vec<String> = body["rooms"]["join"][&room]["state"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["type"] == "m.room.member")
                .map(|e| e["state_key"].as_str().unwrap_or("?").to_owned())
                .collect();
            (
                body["next_batch"].as_str().expect("next").to_owned(),
                members,
            )
        }
    };
    let (since, members) = sync(None, false).await;
    assert!(
        members.contains(&"@alice:localhost".to_owned()),
        "{members:?}"
    );
    assert!(
        !members.contains(&"@carol:localhost".to_owned()),
        "only the timeline's senders"
    );
    // Carol speaks: her member event has not changed, but this device never got it.
    say(&carol).await;
    let (since, members) = sync(Some(since), false).await;
    assert_eq!(members, ["@carol:localhost"]);
    // Again: already sent, so not again…
    say(&carol).await;
    let (since, members) = sync(Some(since), false).await;
    assert!(members.is_empty(), "{members:?}");
    // …unless the client asks for redundant members.
    say(&carol).await;
    let (_, members) = sync(Some(since), true).await;
    assert!(
        members.contains(&"@carol:localhost".to_owned()),
        "{members:?}"
    );
    // The user's own is sent on a fresh start only (as Synapse; SyTest checks it).
    assert!(
        !members.contains(&"@bob:localhost".to_owned()),
        "not the user's own: {members:?}"
    );
    srv.finish().await;
}

/// Property-style: three senders send at random moments while a reader syncs (long-polls
/// with random timeouts and limits) concurrently. Whatever the interleaving, the reader sees
/// every message exactly once, in the room's order. The seed is printed;
/// `MATRIXON_TEST_SEED=<n>` replays one.
async fn random_interleavings_of_sends_and_syncs_never_skip_or_repeat(backend: Backend) {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    let seed: u64 = std::env::var("MATRIXON_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen());
    println!("random interleavings: MATRIXON_TEST_SEED={seed}");
    let srv = TestServer::start(&backend).await;
    let token = |v: &Value| v["access_token"].as_str().expect("token").to_owned();
    let senders: Vec<String> = vec![
        token(&srv.register("s1", "pw sender 1").await),
        token(&srv.register("s2", "pw sender 2").await),
        token(&srv.register("s3", "pw sender 3").await),
    ];
    let reader = token(&srv.register("reader", "pw reader 1").await);
    let room = create(&srv, &senders[0], json!({"preset": "public_chat"})).await;
    for t in senders.iter().skip(1).chain([&reader]) {
        let joined = srv
            .post_json(
                &format!("/_matrix/client/v3/join/{room}"),
                Some(t),
                &json!({}),
            )
            .await;
        assert_eq!(joined.0, 200);
    }
    let (_, initial) = srv.get("/_matrix/client/v3/sync", Some(&reader)).await;
    let since = initial["next_batch"].as_str().expect("next").to_owned();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut tasks = Vec::new();
    for (i, sender) in senders.iter().enumerate() {
        let (http, base, sender, room) =
            (srv.http.clone(), srv.url(""), sender.clone(), room.clone());
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for n in 0..rng.gen_range(10..25) {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..30))).await;
                let body = format!("s{i}-{n}");
                let url = format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/r{n}");
                let status = http
                    .put(url)
                    .bearer_auth(&sender)
                    .json(&json!({"msgtype": "m.text", "body": body}))
                    .send()
                    .await
                    .expect("send")
                    .status();
                assert_eq!(status, 200);
                sent.push(body);
            }
            sent
        }));
    }
    let reading = {
        let (http, base, reader, room, done) = (
            srv.http.clone(),
            srv.url(""),
            reader.clone(),
            room.clone(),
            done.clone(),
        );
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        tokio::spawn(async move {
            let mut since = since;
            let mut seen: Vec<String> = Vec::new();
            let mut quiet_after_done = 0;
            let mut gaps = 0;
            loop {
                // Sometimes the reader falls behind, so some timelines come back limited.
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..120))).await;
                let limit = rng.gen_range(1..5);
                let timeout = rng.gen_range(0..200);
                let filter = format!(r#"{{"room":{{"timeline":{{"limit":{limit}}}}}}}"#);
                let url = format!(
                    "{base}/_matrix/client/v3/sync?since={since}&timeout={timeout}&filter={}",
                    url::form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>()
                );
                let body: Value = http
                    .get(url)
                    .bearer_auth(&reader)
                    .send()
                    .await
                    .expect("sync")
                    .json()
                    .await
                    .expect("json");
                let timeline = &body["rooms"]["join"][&room]["timeline"];
                let mut events: Vec<String> = timeline["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| e["type"] == "m.room.message")
                    .map(|e| e["content"]["body"].as_str().unwrap_or("?").to_owned())
                    .collect();
                // A limited timeline has a gap: the reader fills it from `prev_batch` back to
                // where it was, as clients do.
                if timeline["limited"] == true {
                    gaps += 1;
                    let mut from = timeline["prev_batch"]
                        .as_str()
                        .expect("prev_batch")
                        .to_owned();
                    let mut earlier = Vec::new();
                    loop {
                        let url = format!(
                            "{base}/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=3&from={from}&to={since}"
                        );
                        let page: Value = http
                            .get(url)
                            .bearer_auth(&reader)
                            .send()
                            .await
                            .expect("messages")
                            .json()
                            .await
                            .expect("json");
                        for e in page["chunk"].as_array().into_iter().flatten() {
                            if e["type"] == "m.room.message" {
                                earlier
                                    .push(e["content"]["body"].as_str().unwrap_or("?").to_owned());
                            }
                        }
                        match page["end"].as_str() {
                            Some(end)
                                if page["chunk"].as_array().is_some_and(|c| !c.is_empty()) =>
                            {
                                from = end.to_owned()
                            }
                            _ => break,
                        }
                    }
                    earlier.reverse();
                    earlier.append(&mut events);
                    events = earlier;
                }
                let got_any = !events.is_empty();
                seen.append(&mut events);
                since = body["next_batch"].as_str().expect("next").to_owned();
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    quiet_after_done = if got_any { 0 } else { quiet_after_done + 1 };
                    if quiet_after_done >= 2 {
                        println!("{} messages read, {gaps} gaps filled", seen.len());
                        return seen;
                    }
                }
            }
        })
    };
    let mut sent_per_sender = Vec::new();
    for task in tasks {
        sent_per_sender.push(task.await.expect("sender"));
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reading.await.expect("reader");

    // Exactly once each…
    let mut sorted = seen.clone();
    sorted.sort();
    let mut all: Vec<String> = sent_per_sender.iter().flatten().cloned().collect();
    all.sort();
    assert_eq!(sorted, all, "seed {seed}: every message exactly once");
    // …in the room's order (which keeps each sender's order)…
    let (_, page) = srv
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1000"),
            Some(&reader),
        )
        .await;
    let mut order: Vec<String> = page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or("?").to_owned())
        .collect();
    order.reverse();
    assert_eq!(seen, order, "seed {seed}: in the room's order");
    for sent in &sent_per_sender {
        let positions: Vec<usize> = sent
            .iter()
            .map(|b| seen.iter().position(|s| s == b).expect("seen"))
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: a sender's order kept"
        );
    }
    srv.finish().await;
}
