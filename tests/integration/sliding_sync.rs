//! Simplified sliding sync (MSC4186), what Element X syncs with: matrix-sdk's own sliding
//! sync (rooms, their order by activity, names, invites, unread counts, a growing list as
//! Element X's room list loads it), and the protocol over raw HTTP (positions, continuing after
//! a restart, long polls, extensions, refusals).

use std::time::Duration;

use futures_util::{StreamExt, pin_mut};
use matrix_sdk::{
    Client, RoomState, SlidingSync, SlidingSyncList, SlidingSyncMode,
    ruma::{OwnedRoomId, RoomId, events::StateEventType},
};
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(
    matrix_sdk_lists_rooms_by_activity,
    a_growing_list_loads_every_room,
    positions_continue_and_changes_only,
    a_connection_survives_a_restart,
    a_long_poll_wakes_for_a_message,
    extensions_carry_to_device_receipts_typing_and_account_data,
    bad_sliding_sync_requests_are_refused,
    list_filters_pick_rooms,
    woken_long_polls_read_the_log_unless_the_rooms_change,
);

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

fn token(v: &Value) -> String {
    v["access_token"].as_str().expect("token").to_owned()
}

async fn sdk_login(srv: &TestServer, user: &str) -> Client {
    srv.register(user, "sliding password").await;
    let client = srv.client().await;
    client
        .matrix_auth()
        .login_username(user, "sliding password")
        .send()
        .await
        .expect("login");
    client
}

async fn create(srv: &TestServer, token: &str, body: Value) -> OwnedRoomId {
    let (status, room) = srv
        .post_json("/_matrix/client/v3/createRoom", Some(token), &body)
        .await;
    assert_eq!(status, 200, "{room}");
    RoomId::parse(room["room_id"].as_str().expect("room id")).expect("room id")
}

async fn say(srv: &TestServer, token: &str, room: &RoomId, body: &str) -> String {
    let txn = format!("t{}", rand::random::<u64>());
    let (status, sent) = srv
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            Some(token),
            &json!({"msgtype": "m.text", "body": body}),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    sent["event_id"].as_str().expect("event id").to_owned()
}

/// Runs the sliding sync until `done` holds (or fails after 20 rounds).
async fn sync_until(sliding: &SlidingSync, mut done: impl FnMut() -> bool) {
    let stream = sliding.sync();
    pin_mut!(stream);
    for _ in 0..20 {
        let update = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("a sliding sync answer in time")
            .expect("the stream goes on");
        update.expect("a sliding sync answer");
        if done() {
            return;
        }
    }
    panic!("sliding sync never reached the expected state");
}

fn recency(client: &Client, room: &RoomId) -> u64 {
    client
        .get_room(room)
        .and_then(|r| r.recency_stamp())
        .map(u64::from)
        .unwrap_or(0)
}

async fn matrix_sdk_lists_rooms_by_activity(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = sdk_login(&srv, "alice").await;
    let bob = srv.register("bob", "sliding password").await;
    let bob = token(&bob);
    let alice_token = alice.access_token().expect("token");
    let alpha = create(
        &srv,
        &alice_token,
        json!({"name": "Alpha", "invite": ["@bob:localhost"]}),
    )
    .await;
    let beta = create(&srv, &alice_token, json!({"name": "Beta"})).await;
    let gamma = create(&srv, &alice_token, json!({"name": "Gamma"})).await;
    let invite = create(
        &srv,
        &bob,
        json!({"name": "From Bob", "invite": ["@alice:localhost"]}),
    )
    .await;
    let (status, body) = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{alpha}"),
            Some(&bob),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    say(&srv, &alice_token, &beta, "beta is busy").await;

    let sliding = alice
        .sliding_sync("main")
        .expect("sliding sync")
        .add_list(
            SlidingSyncList::builder("all")
                .sync_mode(SlidingSyncMode::new_selective().add_range(0..=19))
                .timeline_limit(5)
                .required_state(vec![
                    (StateEventType::RoomName, String::new()),
                    (StateEventType::RoomEncryption, String::new()),
                    (StateEventType::RoomMember, "$LAZY".to_owned()),
                    (StateEventType::RoomMember, "$ME".to_owned()),
                ]),
        )
        .with_all_extensions()
        .build()
        .await
        .expect("sliding sync built");
    sync_until(&sliding, || {
        [&alpha, &beta, &gamma, &invite]
            .iter()
            .all(|r| alice.get_room(r).is_some())
    })
    .await;
    let count = sliding
        .on_list("all", |list| {
            std::future::ready(list.maximum_number_of_rooms())
        })
        .await
        .flatten();
    assert_eq!(count, Some(4), "the list counts every room");
    let room = |id: &RoomId| alice.get_room(id).expect("room");
    assert_eq!(room(&alpha).name().as_deref(), Some("Alpha"));
    assert_eq!(room(&gamma).name().as_deref(), Some("Gamma"));
    assert_eq!(room(&alpha).state(), RoomState::Joined);
    assert_eq!(room(&invite).state(), RoomState::Invited);
    assert_eq!(room(&invite).name().as_deref(), Some("From Bob"));
    // The busiest room is first; the invite, the latest arrival, is above the quiet rooms.
    assert!(recency(&alice, &beta) > recency(&alice, &alpha));
    assert!(recency(&alice, &beta) > recency(&alice, &gamma));

    // Bob speaks in Alpha: it moves to the top, with an unread message.
    say(&srv, &bob, &alpha, "hello alice").await;
    sync_until(&sliding, || {
        recency(&alice, &alpha) > recency(&alice, &beta)
            && room(&alpha).unread_notification_counts().notification_count == 1
    })
    .await;
    assert_eq!(
        room(&beta).unread_notification_counts().notification_count,
        0
    );

    // Alice accepts the invite through the SDK; the room turns joined over sliding sync.
    alice.join_room_by_id(&invite).await.expect("join");
    sync_until(&sliding, || room(&invite).state() == RoomState::Joined).await;
    srv.finish().await;
}

async fn a_growing_list_loads_every_room(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = sdk_login(&srv, "alice").await;
    let alice_token = alice.access_token().expect("token");
    let mut rooms = Vec::new();
    for i in 0..7 {
        rooms.push(create(&srv, &alice_token, json!({"name": format!("Room {i}")})).await);
    }
    // As Element X's room list: a list that grows by a batch per request until it has all.
    let sliding = alice
        .sliding_sync("room-list")
        .expect("sliding sync")
        .add_list(
            SlidingSyncList::builder("all_rooms")
                .sync_mode(SlidingSyncMode::new_growing(3))
                .timeline_limit(1)
                .required_state(vec![(StateEventType::RoomName, String::new())]),
        )
        .build()
        .await
        .expect("sliding sync built");
    sync_until(&sliding, || {
        rooms.iter().all(|r| alice.get_room(r).is_some())
    })
    .await;
    for (i, room) in rooms.iter().enumerate() {
        let name = alice.get_room(room).and_then(|r| r.name());
        assert_eq!(name, Some(format!("Room {i}")));
    }
    srv.finish().await;
}

fn list_request(pos: Option<&str>, timeline_limit: u32) -> (String, Value) {
    let path = match pos {
        Some(pos) => format!("{PATH}?pos={pos}&timeout=0"),
        None => format!("{PATH}?timeout=0"),
    };
    let body = json!({
        "conn_id": "test",
        "lists": {"all": {
            "ranges": [[0, 9]],
            "timeline_limit": timeline_limit,
            "required_state": [["m.room.name", ""], ["m.room.member", "$LAZY"]],
        }},
    });
    (path, body)
}

async fn sliding(srv: &TestServer, token: &str, pos: Option<&str>, limit: u32) -> Value {
    let (path, body) = list_request(pos, limit);
    let (status, answer) = srv.post_json(&path, Some(token), &body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

fn timeline_bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn positions_continue_and_changes_only(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "sliding password").await);
    let bob = token(&srv.register("bob", "sliding password").await);
    let busy = create(
        &srv,
        &alice,
        json!({"name": "Busy", "invite": ["@bob:localhost"]}),
    )
    .await;
    let quiet = create(&srv, &alice, json!({"name": "Quiet"})).await;
    srv.post_json(
        &format!("/_matrix/client/v3/join/{busy}"),
        Some(&bob),
        &json!({}),
    )
    .await;
    for i in 0..4 {
        say(&srv, &bob, &busy, &format!("message {i}")).await;
    }
    let first = sliding(&srv, &alice, None, 2).await;
    assert_eq!(first["lists"]["all"]["count"], 2, "{first}");
    let room = &first["rooms"][busy.as_str()];
    assert_eq!(room["initial"], true);
    assert_eq!(room["name"], "Busy");
    assert_eq!(room["limited"], true, "four messages, two shown");
    assert_eq!(timeline_bodies(room), ["message 2", "message 3"]);
    assert_eq!(room["joined_count"], 2);
    assert_eq!(room["notification_count"], 4);
    assert!(room["prev_batch"].is_string());
    // $LAZY: bob's member event comes with his messages.
    let members: Vec<&str> = room["required_state"]
        .as_array()
        .expect("required state")
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    assert!(members.contains(&"@bob:localhost"), "{room}");
    // The quiet room sorts below the busy one.
    assert!(
        first["rooms"][quiet.as_str()]["bump_stamp"].as_u64() < room["bump_stamp"].as_u64(),
        "{first}"
    );
    // The prev_batch paginates back over the messages not shown.
    let (status, older) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{busy}/messages?dir=b&limit=2&from={}",
                room["prev_batch"].as_str().unwrap_or_default()
            ),
            Some(&alice),
        )
        .await;
    assert_eq!(status, 200, "{older}");
    assert_eq!(older["chunk"][0]["content"]["body"], "message 1", "{older}");

    // Nothing happened: the same position back, no rooms.
    let pos = first["pos"].as_str().expect("pos");
    let idle = sliding(&srv, &alice, Some(pos), 2).await;
    assert!(
        idle["rooms"].as_object().is_none_or(|r| r.is_empty()),
        "{idle}"
    );
    assert_eq!(idle["pos"], pos);

    // A message in the busy room: only that room, only the new event, not initial.
    let news = say(&srv, &bob, &busy, "news").await;
    let next = sliding(&srv, &alice, Some(pos), 2).await;
    let rooms = next["rooms"].as_object().expect("rooms");
    assert_eq!(rooms.len(), 1, "{next}");
    let room = &rooms[busy.as_str()];
    assert!(room.get("initial").is_none(), "{room}");
    assert_eq!(timeline_bodies(room), ["news"]);
    assert_eq!(room["num_live"], 1);
    assert_eq!(room["notification_count"], 5);
    let next_pos = next["pos"].as_str().expect("pos");
    assert_ne!(next_pos, pos);
    // The answer was lost: the client asks again from the older position and gets it again.
    let again = sliding(&srv, &alice, Some(pos), 2).await;
    assert_eq!(timeline_bodies(&again["rooms"][busy.as_str()]), ["news"]);
    // A wider timeline is a new config: the room comes again in full.
    let again_pos = again["pos"].as_str().expect("pos");
    let wider = sliding(&srv, &alice, Some(again_pos), 3).await;
    let room = &wider["rooms"][busy.as_str()];
    assert_eq!(room["initial"], true, "{wider}");
    assert_eq!(timeline_bodies(room), ["message 2", "message 3", "news"]);

    // Read on another device: the room comes again for its counts alone.
    let (status, _) = srv
        .post_json(
            &format!("/_matrix/client/v3/rooms/{busy}/receipt/m.read/{news}"),
            Some(&alice),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let read = sliding(&srv, &alice, Some(wider["pos"].as_str().expect("pos")), 3).await;
    let room = &read["rooms"][busy.as_str()];
    assert_eq!(room["notification_count"], 0, "{read}");
    assert!(room.get("timeline").is_none(), "{room}");

    // Leaving: the room comes once more with the leave, then the list no longer has it.
    let wider_pos = read["pos"].as_str().expect("pos").to_owned();
    let (status, _) = srv
        .post_json(
            &format!("/_matrix/client/v3/rooms/{quiet}/leave"),
            Some(&alice),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let left = sliding(&srv, &alice, Some(&wider_pos), 3).await;
    let timeline = left["rooms"][quiet.as_str()]["timeline"]
        .as_array()
        .cloned();
    let last = timeline.and_then(|t| t.last().cloned()).unwrap_or_default();
    assert_eq!(last["content"]["membership"], "leave", "{left}");
    let left_room = &left["rooms"][quiet.as_str()];
    assert!(
        left_room.get("joined_count").is_none(),
        "not for someone who left: {left_room}"
    );
    let after = sliding(&srv, &alice, Some(left["pos"].as_str().expect("pos")), 3).await;
    assert_eq!(after["lists"]["all"]["count"], 1, "{after}");

    // Rejoining a room whose history only members see: it comes whole, without what was
    // said while alice was away.
    let (status, _) = srv
        .put_json(
            &format!("/_matrix/client/v3/rooms/{busy}/state/m.room.history_visibility/"),
            Some(&alice),
            &json!({"history_visibility": "joined"}),
        )
        .await;
    assert_eq!(status, 200);
    let after = sliding(&srv, &alice, Some(after["pos"].as_str().expect("pos")), 3).await;
    let after_pos = after["pos"].as_str().expect("pos").to_owned();
    let (status, _) = srv
        .post_json(
            &format!("/_matrix/client/v3/rooms/{busy}/leave"),
            Some(&alice),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let gone = sliding(&srv, &alice, Some(&after_pos), 3).await;
    say(&srv, &bob, &busy, "while alice is away").await;
    let (status, _) = srv
        .post_json(
            &format!("/_matrix/client/v3/rooms/{busy}/invite"),
            Some(&bob),
            &json!({"user_id": "@alice:localhost"}),
        )
        .await;
    assert_eq!(status, 200);
    srv.post_json(
        &format!("/_matrix/client/v3/join/{busy}"),
        Some(&alice),
        &json!({}),
    )
    .await;
    let back = sliding(&srv, &alice, Some(gone["pos"].as_str().expect("pos")), 3).await;
    let room = &back["rooms"][busy.as_str()];
    assert_eq!(room["initial"], true, "{back}");
    assert!(
        !timeline_bodies(room)
            .iter()
            .any(|b| b == "while alice is away"),
        "{room}"
    );
    srv.finish().await;
}

async fn a_connection_survives_a_restart(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "sliding password").await);
    let room = create(&srv, &alice, json!({"name": "Kept"})).await;
    say(&srv, &alice, &room, "before").await;
    let first = sliding(&srv, &alice, None, 5).await;
    let pos = first["pos"].as_str().expect("pos").to_owned();
    let db = srv.stop().await;
    let config = crate::harness::test_config(&db.url);
    let srv = TestServer::start_on(db, config).await;
    say(&srv, &alice, &room, "after").await;
    let next = sliding(&srv, &alice, Some(&pos), 5).await;
    let kept = &next["rooms"][room.as_str()];
    assert!(
        kept.get("initial").is_none(),
        "continued, not restarted: {next}"
    );
    assert_eq!(timeline_bodies(kept), ["after"]);
    srv.finish().await;
}

async fn a_long_poll_wakes_for_a_message(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "sliding password").await);
    let bob = token(&srv.register("bob", "sliding password").await);
    let room = create(&srv, &alice, json!({"invite": ["@bob:localhost"]})).await;
    srv.post_json(
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        &json!({}),
    )
    .await;
    let first = sliding(&srv, &alice, None, 5).await;
    let pos = first["pos"].as_str().expect("pos").to_owned();
    let (_, body) = list_request(None, 5);
    let url = srv.url(&format!("{PATH}?pos={pos}&timeout=30000"));
    let waiting = tokio::spawn({
        let alice = alice.clone();
        async move {
            let started = std::time::Instant::now();
            let answer: Value = reqwest::Client::new()
                .post(url)
                .bearer_auth(alice)
                .json(&body)
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("json");
            (started.elapsed(), answer)
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    say(&srv, &bob, &room, "wake up").await;
    let (waited, answer) = waiting.await.expect("task");
    assert!(
        waited < Duration::from_secs(25),
        "woken by the message, not the timeout"
    );
    assert_eq!(
        timeline_bodies(&answer["rooms"][room.as_str()]),
        ["wake up"],
        "{answer}"
    );
    srv.finish().await;
}

async fn extensions_carry_to_device_receipts_typing_and_account_data(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice_login = srv.register("alice", "sliding password").await;
    let alice = token(&alice_login);
    let alice_device = alice_login["device_id"]
        .as_str()
        .expect("device")
        .to_owned();
    let bob = token(&srv.register("bob", "sliding password").await);
    let room = create(&srv, &alice, json!({"invite": ["@bob:localhost"]})).await;
    srv.post_json(
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        &json!({}),
    )
    .await;
    let event = say(&srv, &bob, &room, "read me").await;
    let extensions = json!({
        "to_device": {"enabled": true},
        "e2ee": {"enabled": true},
        "account_data": {"enabled": true},
        "receipts": {"enabled": true},
        "typing": {"enabled": true},
    });
    let request = |pos: Option<&str>, since: Option<&str>| {
        let (path, mut body) = list_request(pos, 5);
        body["extensions"] = extensions.clone();
        if let Some(since) = since {
            body["extensions"]["to_device"]["since"] = json!(since);
        }
        (path, body)
    };
    let (path, body) = request(None, None);
    let (status, first) = srv.post_json(&path, Some(&alice), &body).await;
    assert_eq!(status, 200, "{first}");
    let ext = &first["extensions"];
    assert!(
        ext["account_data"]["global"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["type"] == "m.push_rules")),
        "push rules come first: {first}"
    );
    assert!(
        ext["e2ee"]["device_one_time_keys_count"].is_object(),
        "{first}"
    );
    let next_batch = ext["to_device"]["next_batch"]
        .as_str()
        .expect("next batch")
        .to_owned();

    // Bob sends alice's device a to-device message, reads, types; alice tags the room.
    srv.put_json(
        "/_matrix/client/v3/sendToDevice/m.test/t1",
        Some(&bob),
        &json!({"messages": {"@alice:localhost": {alice_device.as_str(): {"hi": 1}}}}),
    )
    .await;
    srv.post_json(
        &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"),
        Some(&bob),
        &json!({}),
    )
    .await;
    srv.put_json(
        &format!("/_matrix/client/v3/rooms/{room}/typing/@bob:localhost"),
        Some(&bob),
        &json!({"typing": true, "timeout": 30000}),
    )
    .await;
    srv.put_json(
        &format!("/_matrix/client/v3/user/@alice:localhost/rooms/{room}/tags/u.work"),
        Some(&alice),
        &json!({}),
    )
    .await;
    let pos = first["pos"].as_str().expect("pos");
    let (path, body) = request(Some(pos), Some(&next_batch));
    let (status, next) = srv.post_json(&path, Some(&alice), &body).await;
    assert_eq!(status, 200, "{next}");
    let ext = &next["extensions"];
    assert_eq!(ext["to_device"]["events"][0]["content"]["hi"], 1, "{next}");
    assert_eq!(ext["to_device"]["events"][0]["sender"], "@bob:localhost");
    let receipts = &ext["receipts"]["rooms"][room.as_str()]["content"];
    assert!(
        receipts[&event]["m.read"]["@bob:localhost"].is_object(),
        "{next}"
    );
    assert_eq!(
        ext["typing"]["rooms"][room.as_str()]["content"]["user_ids"],
        json!(["@bob:localhost"]),
        "{next}"
    );
    let tags = &ext["account_data"]["rooms"][room.as_str()];
    assert!(
        tags.as_array()
            .is_some_and(|a| a.iter().any(|e| e["type"] == "m.tag")),
        "{next}"
    );
    // Acknowledged by the next request's since: not delivered again.
    let delivered = ext["to_device"]["next_batch"]
        .as_str()
        .expect("next batch")
        .to_owned();
    let next_pos = next["pos"].as_str().expect("pos");
    let (path, body) = request(Some(next_pos), Some(&delivered));
    let (status, third) = srv.post_json(&path, Some(&alice), &body).await;
    assert_eq!(status, 200, "{third}");
    assert!(
        third["extensions"]["to_device"]["events"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{third}"
    );
    srv.finish().await;
}

async fn bad_sliding_sync_requests_are_refused(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let (status, versions) = srv.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        versions["unstable_features"]["org.matrix.simplified_msc3575"], true,
        "clients look for it here: {versions}"
    );
    let alice_login = srv.register("alice", "sliding password").await;
    let alice = token(&alice_login);
    let other_device = token(&srv.login("alice", "sliding password").await);
    create(&srv, &alice, json!({"name": "Mine"})).await;
    let first = sliding(&srv, &alice, None, 5).await;
    let pos = first["pos"].as_str().expect("pos");

    let (path, body) = list_request(Some("nonsense"), 5);
    let refused = srv.post_json(&path, Some(&alice), &body).await;
    assert_error(&refused, 400, "M_UNKNOWN_POS");
    // A position belongs to its device and connection.
    let (path, body) = list_request(Some(pos), 5);
    let refused = srv.post_json(&path, Some(&other_device), &body).await;
    assert_error(&refused, 400, "M_UNKNOWN_POS");
    let (path, mut body) = list_request(Some(pos), 5);
    body["conn_id"] = json!("another");
    let refused = srv.post_json(&path, Some(&alice), &body).await;
    assert_error(&refused, 400, "M_UNKNOWN_POS");
    // The position still works for its own connection.
    sliding(&srv, &alice, Some(pos), 5).await;

    let (path, mut body) = list_request(None, 5);
    body["conn_id"] = json!("x".repeat(65));
    let refused = srv.post_json(&path, Some(&alice), &body).await;
    assert_error(&refused, 400, "M_INVALID_PARAM");
    let (path, mut body) = list_request(None, 5);
    body["extensions"] = json!({"to_device": {"enabled": true, "since": "yesterday"}});
    let refused = srv.post_json(&path, Some(&alice), &body).await;
    assert_error(&refused, 400, "M_INVALID_PARAM");
    let (path, mut body) = list_request(None, 5);
    body["lists"]["all"]["ranges"] = json!("everything");
    let refused = srv.post_json(&path, Some(&alice), &body).await;
    assert_error(&refused, 400, "M_BAD_JSON");
    // Thousands of ranges: capped, not obeyed.
    let (path, mut body) = list_request(None, 5);
    body["lists"]["all"]["ranges"] = json!(vec![[0, 9999]; 5000]);
    let (status, capped) = srv.post_json(&path, Some(&alice), &body).await;
    assert_eq!(status, 200, "{capped}");
    // A huge range and timeline limit are capped, not obeyed.
    let (path, mut body) = list_request(None, 5);
    body["lists"]["all"]["ranges"] = json!([[0, u32::MAX]]);
    body["lists"]["all"]["timeline_limit"] = json!(u32::MAX);
    let (status, capped) = srv.post_json(&path, Some(&alice), &body).await;
    assert_eq!(status, 200, "{capped}");
    let refused = srv
        .post_json(&format!("{PATH}?timeout=0"), None, &json!({}))
        .await;
    assert_error(&refused, 401, "M_MISSING_TOKEN");
    srv.finish().await;
}

async fn list_filters_pick_rooms(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "sliding password").await);
    let bob = token(&srv.register("bob", "sliding password").await);
    let plain = create(&srv, &alice, json!({"name": "Plain"})).await;
    let secret = create(
        &srv,
        &alice,
        json!({"name": "Secret", "initial_state": [{
            "type": "m.room.encryption", "state_key": "",
            "content": {"algorithm": "m.megolm.v1.aes-sha2"},
        }]}),
    )
    .await;
    let space = create(
        &srv,
        &alice,
        json!({"name": "Space", "creation_content": {"type": "m.space"}}),
    )
    .await;
    let (status, _) = srv
        .put_json(
            &format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{plain}"),
            Some(&alice),
            &json!({"via": ["localhost"]}),
        )
        .await;
    assert_eq!(status, 200);
    let dm = create(
        &srv,
        &bob,
        json!({"is_direct": true, "invite": ["@alice:localhost"]}),
    )
    .await;
    let (status, _) = srv
        .put_json(
            "/_matrix/client/v3/user/@alice:localhost/account_data/m.direct",
            Some(&alice),
            &json!({"@bob:localhost": [dm.as_str()]}),
        )
        .await;
    assert_eq!(status, 200);
    let lists = json!({
        "dms": {"ranges": [[0, 9]], "timeline_limit": 1, "filters": {"is_dm": true}},
        "invites": {"ranges": [[0, 9]], "timeline_limit": 1, "filters": {"is_invite": true}},
        "encrypted": {"ranges": [[0, 9]], "timeline_limit": 1, "filters": {"is_encrypted": true}},
        "spaces": {"ranges": [[0, 9]], "timeline_limit": 1, "filters": {"room_types": ["m.space"]}},
        "not_spaces": {"ranges": [[0, 9]], "timeline_limit": 1, "filters": {"not_room_types": ["m.space"], "is_invite": false}},
        "in_space": {"ranges": [[0, 9]], "timeline_limit": 1, "filters": {"spaces": [space.as_str()]}},
    });
    let (status, answer) = srv
        .post_json(
            &format!("{PATH}?timeout=0"),
            Some(&alice),
            &json!({"lists": lists}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let count = |list: &str| answer["lists"][list]["count"].as_u64();
    assert_eq!(count("dms"), Some(1), "{answer}");
    assert_eq!(count("invites"), Some(1));
    assert_eq!(count("encrypted"), Some(1));
    assert_eq!(count("spaces"), Some(1));
    assert_eq!(count("not_spaces"), Some(2), "plain and secret");
    assert_eq!(count("in_space"), Some(1), "the space's one child");
    assert_eq!(answer["rooms"][dm.as_str()]["is_dm"], true, "{answer}");
    assert!(answer["rooms"][dm.as_str()]["invite_state"].is_array());
    assert_eq!(answer["rooms"][secret.as_str()]["name"], "Secret");
    // A space one is not in does not say which of one's rooms are its children.
    let (status, answer) = srv
        .post_json(
            &format!("{PATH}?timeout=0"),
            Some(&bob),
            &json!({"lists": {"in_space": {"ranges": [[0, 9]], "timeline_limit": 1, "filters": {"spaces": [space.as_str()]}}}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["lists"]["in_space"]["count"], 0);
    let refused = srv
        .post_json(
            &format!("{PATH}?timeout=0"),
            Some(&alice),
            &json!({"lists": {"x": {"ranges": [[0, 9]], "timeline_limit": 1, "filters": {"spaces": ["not a room"]}}}}),
        )
        .await;
    assert_error(&refused, 400, "M_BAD_JSON");
    srv.finish().await;
}

/// A long poll from `pos` with `body`, answered when something wakes it.
fn long_poll(
    srv: &TestServer,
    token: &str,
    pos: &str,
    body: Value,
) -> tokio::task::JoinHandle<Value> {
    let url = srv.url(&format!("{PATH}?pos={pos}&timeout=30000"));
    let token = token.to_owned();
    tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    })
}

/// How many woken long polls were answered each way (`log` or `full`).
async fn woken(srv: &TestServer, answer: &str) -> u64 {
    let metrics = srv.metrics().await;
    let line = format!("matrixon_sync_woken_total{{answer=\"{answer}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A long poll woken by messages alone is moved on from the shared log of recent events (no
/// re-read of the user's rooms, as a woken `/sync`); one woken by a change to the user's own
/// rooms (an invite) or to what the filters read (encryption turned on) reads them again —
/// and each answer is what a fresh connection would have been told.
async fn woken_long_polls_read_the_log_unless_the_rooms_change(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "sliding password").await);
    let bob = token(&srv.register("bob", "sliding password").await);
    let room = create(
        &srv,
        &alice,
        json!({"name": "Plain", "invite": ["@bob:localhost"]}),
    )
    .await;
    srv.post_json(
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        &json!({}),
    )
    .await;
    let lists = json!({
        "conn_id": "woken",
        "lists": {
            "all": {"ranges": [[0, 9]], "timeline_limit": 5, "required_state": [["m.room.name", ""]]},
            "encrypted": {"ranges": [[0, 9]], "timeline_limit": 1, "required_state": [],
                "filters": {"is_encrypted": true}},
        },
    });
    let (status, first) = srv
        .post_json(&format!("{PATH}?timeout=0"), Some(&alice), &lists)
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["lists"]["encrypted"]["count"], 0, "{first}");
    let mut pos = first["pos"].as_str().expect("pos").to_owned();
    let settle = || tokio::time::sleep(Duration::from_millis(400));

    // A message: from the log.
    let waiting = long_poll(&srv, &alice, &pos, lists.clone());
    settle().await;
    say(&srv, &bob, &room, "one").await;
    let answer = waiting.await.expect("task");
    assert_eq!(
        timeline_bodies(&answer["rooms"][room.as_str()]),
        ["one"],
        "{answer}"
    );
    assert_eq!(
        (woken(&srv, "log").await, woken(&srv, "full").await),
        (1, 0)
    );
    pos = answer["pos"].as_str().expect("pos").to_owned();

    // An invite to another room: alice's rooms changed, so they are read again.
    let other = create(&srv, &bob, json!({"name": "Bob's"})).await;
    let waiting = long_poll(&srv, &alice, &pos, lists.clone());
    settle().await;
    srv.post_json(
        &format!("/_matrix/client/v3/rooms/{other}/invite"),
        Some(&bob),
        &json!({"user_id": "@alice:localhost"}),
    )
    .await;
    let answer = waiting.await.expect("task");
    assert_eq!(answer["lists"]["all"]["count"], 2, "{answer}");
    assert!(
        answer["rooms"][other.as_str()]["invite_state"].is_array(),
        "{answer}"
    );
    assert_eq!(woken(&srv, "full").await, 1);
    pos = answer["pos"].as_str().expect("pos").to_owned();

    // Encryption turned on: the encrypted list now holds the room.
    let waiting = long_poll(&srv, &alice, &pos, lists.clone());
    settle().await;
    let (status, _) = srv
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.encryption/"),
            Some(&alice),
            &json!({"algorithm": "m.megolm.v1.aes-sha2"}),
        )
        .await;
    assert_eq!(status, 200);
    let answer = waiting.await.expect("task");
    assert_eq!(answer["lists"]["encrypted"]["count"], 1, "{answer}");
    assert_eq!(woken(&srv, "full").await, 2);
    pos = answer["pos"].as_str().expect("pos").to_owned();

    // Messages again: from the log, in order, across two wake-ups of one poll or two polls.
    for body in ["two", "three"] {
        let waiting = long_poll(&srv, &alice, &pos, lists.clone());
        settle().await;
        say(&srv, &bob, &room, body).await;
        let answer = waiting.await.expect("task");
        assert_eq!(
            timeline_bodies(&answer["rooms"][room.as_str()]),
            [body],
            "{answer}"
        );
        pos = answer["pos"].as_str().expect("pos").to_owned();
    }
    assert_eq!(woken(&srv, "log").await, 3);
    // What the connection was told matches a fresh one: the room order by activity.
    let (_, fresh) = srv
        .post_json(
            &format!("{PATH}?timeout=0"),
            Some(&alice),
            &json!({
                "conn_id": "fresh", "lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 1}},
            }),
        )
        .await;
    assert_eq!(fresh["lists"]["all"]["count"], 2);
    srv.finish().await;
}
