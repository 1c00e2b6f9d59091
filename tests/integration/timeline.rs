//! What happens around messages: edits, reactions, redactions, threads (bundled into the
//! events clients read), typing, read receipts and unread counts, profile changes.

use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(
    relations_redactions_and_threads,
    typing_receipts_and_profiles
);

struct Room<'a> {
    srv: &'a TestServer,
    id: String,
    txn: std::cell::Cell<u32>,
}

impl Room<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/_matrix/client/v3/rooms/{}/{rest}", self.id)
    }

    async fn send(&self, token: &str, kind: &str, content: Value) -> String {
        self.txn.set(self.txn.get() + 1);
        let path = self.path(&format!("send/{kind}/t{}", self.txn.get()));
        let (status, body) = self
            .srv
            .request(
                reqwest::Method::PUT,
                &path,
                Some(token),
                Some(content.to_string().into_bytes()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["event_id"].as_str().expect("event id").to_owned()
    }

    async fn event(&self, token: &str, event_id: &str) -> Value {
        let (status, body) = self
            .srv
            .get(&self.path(&format!("event/{event_id}")), Some(token))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

async fn setup(srv: &TestServer) -> (String, String, String) {
    let token = |v: &Value| v["access_token"].as_str().expect("token").to_owned();
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let (status, room) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            &json!({"preset": "public_chat"}),
        )
        .await;
    assert_eq!(status, 200, "{room}");
    let room_id = room["room_id"].as_str().expect("room").to_owned();
    let joined = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{room_id}"),
            Some(&bob),
            &json!({}),
        )
        .await;
    assert_eq!(joined.0, 200, "{:?}", joined.1);
    (alice, bob, room_id)
}

async fn relations_redactions_and_threads(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let (alice, bob, id) = setup(&srv).await;
    let room = Room {
        srv: &srv,
        id,
        txn: Default::default(),
    };
    let text = |body: &str| json!({"msgtype": "m.text", "body": body});

    // An edit by the sender is bundled into the original.
    let hello = room.send(&alice, "m.room.message", text("hello")).await;
    let edit = room
        .send(
            &alice,
            "m.room.message",
            json!({
                "msgtype": "m.text", "body": "* hello!",
                "m.new_content": {"msgtype": "m.text", "body": "hello!"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": hello},
            }),
        )
        .await;
    let original = room.event(&bob, &hello).await;
    assert_eq!(
        original["unsigned"]["m.relations"]["m.replace"]["event_id"],
        edit
    );
    // An "edit" by someone else is not.
    room.send(
        &bob,
        "m.room.message",
        json!({
            "msgtype": "m.text", "body": "* hijacked",
            "m.new_content": {"msgtype": "m.text", "body": "hijacked"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": hello},
        }),
    )
    .await;
    assert_eq!(
        room.event(&bob, &hello).await["unsigned"]["m.relations"]["m.replace"]["event_id"],
        edit
    );

    // A reaction, listed by /relations.
    let reaction = room
        .send(
            &bob,
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": hello, "key": "👍"}}),
        )
        .await;
    let listed = srv
        .get(
            &format!(
                "/_matrix/client/v1/rooms/{}/relations/{hello}/m.annotation",
                room.id
            ),
            Some(&alice),
        )
        .await;
    assert_eq!(listed.0, 200, "{:?}", listed.1);
    let chunk = listed.1["chunk"].as_array().expect("chunk");
    assert_eq!(chunk.len(), 1);
    assert_eq!(chunk[0]["event_id"], reaction);
    assert_eq!(chunk[0]["content"]["m.relates_to"]["key"], "👍");

    // Thread replies: summarised on the root, listed by /threads, paginated by /relations.
    let first = room
        .send(
            &bob,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "in thread 1",
            "m.relates_to": {"rel_type": "m.thread", "event_id": hello}}),
        )
        .await;
    let second = room
        .send(
            &alice,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "in thread 2",
            "m.relates_to": {"rel_type": "m.thread", "event_id": hello}}),
        )
        .await;
    let root = room.event(&bob, &hello).await;
    let thread = &root["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["count"], 2);
    assert_eq!(thread["latest_event"]["event_id"], second);
    assert_eq!(thread["current_user_participated"], true);
    let threads = srv
        .get(
            &format!("/_matrix/client/v1/rooms/{}/threads", room.id),
            Some(&bob),
        )
        .await;
    assert_eq!(threads.0, 200, "{:?}", threads.1);
    assert_eq!(threads.1["chunk"][0]["event_id"], hello);
    // Nine newer threads Bob took no part in: his own page still finds the one he did,
    // however far back, and says there is no more.
    for n in 0..9 {
        let other = room
            .send(
                &alice,
                "m.room.message",
                json!({"msgtype": "m.text", "body": format!("root {n}")}),
            )
            .await;
        room.send(
            &alice,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "reply",
            "m.relates_to": {"rel_type": "m.thread", "event_id": other}}),
        )
        .await;
    }
    let mine = srv
        .get(
            &format!(
                "/_matrix/client/v1/rooms/{}/threads?include=participated&limit=1",
                room.id
            ),
            Some(&bob),
        )
        .await;
    assert_eq!(mine.0, 200, "{:?}", mine.1);
    assert_eq!(
        mine.1["chunk"].as_array().map(Vec::len),
        Some(1),
        "{}",
        mine.1
    );
    assert_eq!(mine.1["chunk"][0]["event_id"], hello);
    assert!(mine.1.get("next_batch").is_none(), "{}", mine.1);
    // All ten, a page of four at a time: newest first, each once.
    let mut all = Vec::new();
    let mut from = String::new();
    loop {
        let (status, page) = srv
            .get(
                &format!("/_matrix/client/v1/rooms/{}/threads?limit=4{from}", room.id),
                Some(&bob),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        all.extend(
            page["chunk"]
                .as_array()
                .expect("chunk")
                .iter()
                .map(|r| r["event_id"].clone()),
        );
        match page["next_batch"].as_str() {
            Some(next) => from = format!("&from={next}"),
            None => break,
        }
    }
    assert_eq!(all.len(), 10, "{all:?}");
    assert_eq!(all.last(), Some(&json!(hello)), "the oldest thread last");
    let page = srv
        .get(
            &format!(
                "/_matrix/client/v1/rooms/{}/relations/{hello}/m.thread?limit=1",
                room.id
            ),
            Some(&bob),
        )
        .await;
    assert_eq!(page.1["chunk"][0]["event_id"], second, "newest first");
    let next = page.1["next_batch"].as_str().expect("more").to_owned();
    let page = srv
        .get(
            &format!(
                "/_matrix/client/v1/rooms/{}/relations/{hello}/m.thread?limit=1&from={next}",
                room.id
            ),
            Some(&bob),
        )
        .await;
    assert_eq!(page.1["chunk"][0]["event_id"], first);
    assert!(page.1.get("next_batch").is_none_or(Value::is_null));

    // Redaction: bob (power 0) cannot redact alice's message; alice (100) can redact his
    // reaction, whose content is then gone and which says why.
    let redact = |token: String, target: String, txn: &str| {
        let path = room.path(&format!("redact/{target}/{txn}"));
        let srv = &srv;
        async move {
            srv.request(
                reqwest::Method::PUT,
                &path,
                Some(&token),
                Some(br#"{"reason":"no"}"#.to_vec()),
            )
            .await
        }
    };
    assert_error(
        &redact(bob.clone(), hello.clone(), "r1").await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(room.event(&alice, &hello).await["content"]["body"], "hello");
    let redacted = redact(alice.clone(), reaction.clone(), "r2").await;
    assert_eq!(redacted.0, 200, "{:?}", redacted.1);
    let gone = room.event(&bob, &reaction).await;
    assert_eq!(gone["content"], json!({}));
    assert_eq!(
        gone["unsigned"]["redacted_because"]["event_id"],
        redacted.1["event_id"]
    );
    assert_eq!(
        gone["unsigned"]["redacted_because"]["sender"],
        "@alice:localhost"
    );
    let listed = srv
        .get(
            &format!(
                "/_matrix/client/v1/rooms/{}/relations/{hello}/m.annotation",
                room.id
            ),
            Some(&alice),
        )
        .await;
    assert_eq!(
        listed.1["chunk"][0]["content"],
        json!({}),
        "listed, but redacted"
    );
    // A thread reply pointing into another room counts nowhere.
    let (_, elsewhere) = srv
        .post_json("/_matrix/client/v3/createRoom", Some(&bob), &json!({}))
        .await;
    let elsewhere = elsewhere["room_id"].as_str().expect("room").to_owned();
    let stray = srv
        .put_json(
            &format!("/_matrix/client/v3/rooms/{elsewhere}/send/m.room.message/x1"),
            Some(&bob),
            &json!({"msgtype": "m.text", "body": "sneaky",
                    "m.relates_to": {"rel_type": "m.thread", "event_id": hello}}),
        )
        .await;
    assert_eq!(stray.0, 200);
    assert_eq!(
        room.event(&bob, &hello).await["unsigned"]["m.relations"]["m.thread"]["count"],
        2
    );
    let threads = srv
        .get(
            &format!("/_matrix/client/v1/rooms/{elsewhere}/threads"),
            Some(&bob),
        )
        .await;
    assert_eq!(threads.1["chunk"], json!([]));
    // NUL characters are refused, not stored.
    assert_error(
        &srv.put_json(
            &room.path("send/m.room.message/nul"),
            Some(&bob),
            &json!({"body": "a\u{0}b"}),
        )
        .await,
        400,
        "M_BAD_JSON",
    );

    // Redacting your own message works at power 0.
    let own = room.send(&bob, "m.room.message", text("oops")).await;
    assert_eq!(redact(bob.clone(), own, "r3").await.0, 200);
    srv.finish().await;
}

async fn typing_receipts_and_profiles(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let (alice, bob, id) = setup(&srv).await;
    let room = Room {
        srv: &srv,
        id,
        txn: Default::default(),
    };
    let sync = |token: String, since: Option<String>| {
        let srv = &srv;
        async move {
            let path = match since {
                Some(since) => format!("/_matrix/client/v3/sync?since={since}&timeout=0"),
                None => "/_matrix/client/v3/sync".to_owned(),
            };
            let (status, body) = srv.get(&path, Some(&token)).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let first = sync(alice.clone(), None).await;
    let since = first["next_batch"].as_str().expect("token").to_owned();

    // Bob types: alice's next sync says so; then he stops.
    let typing = room.path("typing/@bob:localhost");

    assert_eq!(
        srv.put_json(
            &typing,
            Some(&bob),
            &json!({"typing": true, "timeout": 30000})
        )
        .await
        .0,
        200
    );
    let update = sync(alice.clone(), Some(since)).await;
    let ephemeral = &update["rooms"]["join"][&room.id]["ephemeral"]["events"];
    assert_eq!(ephemeral[0]["type"], "m.typing");
    assert_eq!(
        ephemeral[0]["content"]["user_ids"],
        json!(["@bob:localhost"])
    );
    assert_error(
        &srv.put_json(
            &typing,
            Some(&alice),
            &json!({"typing": true, "timeout": 1000}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    let since = update["next_batch"].as_str().expect("token").to_owned();
    assert_eq!(
        srv.put_json(&typing, Some(&bob), &json!({"typing": false}))
            .await
            .0,
        200
    );
    let update = sync(alice.clone(), Some(since)).await;
    let ephemeral = &update["rooms"]["join"][&room.id]["ephemeral"]["events"];
    assert_eq!(ephemeral[0]["content"]["user_ids"], json!([]));
    let since = update["next_batch"].as_str().expect("token").to_owned();

    // Unread counts follow bob's read receipt; alice sees the public receipt, not a private one.
    let bob_before = sync(bob.clone(), None).await;
    let bob_since = bob_before["next_batch"].as_str().expect("token").to_owned();
    let mut last = String::new();
    for i in 0..3 {
        last = room
            .send(
                &alice,
                "m.room.message",
                json!({"msgtype": "m.text", "body": format!("n{i}")}),
            )
            .await;
    }
    let bob_sync = sync(bob.clone(), Some(bob_since)).await;
    assert_eq!(
        bob_sync["rooms"]["join"][&room.id]["unread_notifications"]["notification_count"],
        3
    );
    let bob_since = bob_sync["next_batch"].as_str().expect("token").to_owned();
    let receipt = srv
        .post_json(
            &room.path(&format!("receipt/m.read/{last}")),
            Some(&bob),
            &json!({}),
        )
        .await;
    assert_eq!(receipt.0, 200, "{:?}", receipt.1);
    let bob_sync = sync(bob.clone(), Some(bob_since)).await;
    assert_eq!(
        bob_sync["rooms"]["join"][&room.id]["unread_notifications"]["notification_count"],
        0
    );
    let update = sync(alice.clone(), Some(since)).await;
    let events = update["rooms"]["join"][&room.id]["ephemeral"]["events"]
        .as_array()
        .expect("ephemeral");
    let receipt = events
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .expect("receipt");
    assert!(receipt["content"][&last]["m.read"]["@bob:localhost"]["ts"].is_number());
    let since = update["next_batch"].as_str().expect("token").to_owned();
    let private = srv
        .post_json(
            &room.path("read_markers"),
            Some(&bob),
            &json!({"m.fully_read": last, "m.read.private": last}),
        )
        .await;
    assert_eq!(private.0, 200, "{:?}", private.1);
    let update = sync(alice.clone(), Some(since)).await;
    assert!(
        update["rooms"]["join"][&room.id]["ephemeral"].is_null(),
        "{update}"
    );
    assert_error(
        &srv.post_json(&room.path("receipt/m.read/$nope"), Some(&bob), &json!({}))
            .await,
        404,
        "M_NOT_FOUND",
    );

    // Profiles: bob's new name reaches the room's member event.
    let name = srv
        .put_json(
            "/_matrix/client/v3/profile/@bob:localhost/displayname",
            Some(&bob),
            &json!({"displayname": "Bobby"}),
        )
        .await;
    assert_eq!(name.0, 200, "{:?}", name.1);
    let member = srv
        .get(
            &room.path("state/m.room.member/@bob:localhost"),
            Some(&alice),
        )
        .await;
    assert_eq!(member.1["displayname"], "Bobby");
    let profile = srv
        .get("/_matrix/client/v3/profile/@bob:localhost", Some(&alice))
        .await;
    assert_eq!(profile.1["displayname"], "Bobby");
    assert_error(
        &srv.put_json(
            "/_matrix/client/v3/profile/@bob:localhost/displayname",
            Some(&alice),
            &json!({"displayname": "x"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &srv.get("/_matrix/client/v3/profile/@nobody:localhost", Some(&alice))
            .await,
        404,
        "M_NOT_FOUND",
    );
    // Any avatar URL is taken, as Synapse takes it (clients load only mxc:// ones), up to
    // 1,000 bytes and without control characters.
    let (status, _) = srv
        .put_json(
            "/_matrix/client/v3/profile/@bob:localhost/avatar_url",
            Some(&bob),
            &json!({"avatar_url": "https://not-mxc.example/bob.png"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, profile) = srv
        .get("/_matrix/client/v3/profile/@bob:localhost", Some(&alice))
        .await;
    assert_eq!(profile["avatar_url"], "https://not-mxc.example/bob.png");
    for bad in ["x".repeat(1001), "mxc://a/b\u{0}".to_owned()] {
        assert_error(
            &srv.put_json(
                "/_matrix/client/v3/profile/@bob:localhost/avatar_url",
                Some(&bob),
                &json!({ "avatar_url": bad }),
            )
            .await,
            400,
            "M_BAD_JSON",
        );
    }
    let (_, profile) = srv
        .get("/_matrix/client/v3/profile/@bob:localhost", Some(&alice))
        .await;
    assert_eq!(profile["avatar_url"], "https://not-mxc.example/bob.png");
    srv.finish().await;
}
