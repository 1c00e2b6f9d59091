//! History visibility: what a user may read of a room's past is decided per event, by the
//! visibility and their membership at it — in `/messages`, `/event`, `/context`, `/search`
//! and the sync timeline — and a world-readable room can be read without joining.

use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(
    history_visibility_is_decided_per_event,
    erased_accounts_are_redacted_for_latecomers
);

fn token(v: &Value) -> String {
    v["access_token"].as_str().expect("token").to_owned()
}

struct Room<'a> {
    srv: &'a TestServer,
    id: String,
}

impl Room<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/_matrix/client/v3/rooms/{}/{rest}", self.id)
    }

    async fn say(&self, token: &str, body: &str) -> String {
        let (status, answer) = self
            .srv
            .put_json(
                &self.path(&format!("send/m.room.message/{}", body.replace(' ', "-"))),
                Some(token),
                &json!({"msgtype": "m.text", "body": body}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["event_id"].as_str().expect("event id").to_owned()
    }

    async fn set_visibility(&self, token: &str, visibility: &str) {
        let (status, answer) = self
            .srv
            .put_json(
                &self.path("state/m.room.history_visibility/"),
                Some(token),
                &json!({"history_visibility": visibility}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }

    /// Message bodies of a whole backward pagination, `limit` at a time, newest first.
    async fn read_back(&self, token: &str, limit: u32) -> Vec<String> {
        let mut bodies = Vec::new();
        let mut from: Option<String> = None;
        for _ in 0..100 {
            let mut path = self.path(&format!("messages?dir=b&limit={limit}"));
            if let Some(from) = &from {
                path.push_str(&format!("&from={from}"));
            }
            let (status, page) = self.srv.get(&path, Some(token)).await;
            assert_eq!(status, 200, "{page}");
            let chunk = page["chunk"].as_array().expect("chunk");
            assert!(chunk.len() <= limit as usize, "{page}");
            bodies.extend(
                chunk
                    .iter()
                    .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)),
            );
            match page["end"].as_str() {
                Some(end) => from = Some(end.to_owned()),
                None => return bodies,
            }
        }
        panic!("pagination did not end");
    }
}

async fn history_visibility_is_decided_per_event(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob_login = srv.register("bob", "pw bob 1").await;
    let bob = token(&bob_login);
    let carol = token(&srv.register("carol", "pw carol 1").await);
    let (status, created) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            &json!({"preset": "private_chat"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let room = Room {
        srv: &srv,
        id: created["room_id"].as_str().expect("room").to_owned(),
    };

    // shared → joined → invited; Bob is invited during `invited`, then joins.
    room.say(&alice, "one shared").await;
    room.set_visibility(&alice, "joined").await;
    let hidden = room.say(&alice, "two joined-only").await;
    let (_, synced) = srv
        .get("/_matrix/client/v3/sync?timeout=0", Some(&alice))
        .await;
    let at_hidden = synced["next_batch"].as_str().expect("token").to_owned();
    room.set_visibility(&alice, "invited").await;
    room.say(&alice, "three before the invite").await;
    let (status, answer) = srv
        .post_json(
            &room.path("invite"),
            Some(&alice),
            &json!({"user_id": bob_login["user_id"]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let after_invite = room.say(&alice, "four after the invite").await;
    let (status, answer) = srv
        .post_json(&room.path("join"), Some(&bob), &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    room.say(&alice, "five joined").await;

    let everything = [
        "five joined",
        "four after the invite",
        "three before the invite",
        "two joined-only",
        "one shared",
    ];
    assert_eq!(room.read_back(&alice, 100).await, everything);
    let for_bob = ["five joined", "four after the invite", "one shared"];
    assert_eq!(room.read_back(&bob, 100).await, for_bob);
    // One at a time, the pages skip what Bob may not see and still reach the start.
    assert_eq!(room.read_back(&bob, 1).await, for_bob);

    let event = |id: &str| room.path(&format!("event/{id}"));
    assert_error(
        &srv.get(&event(&hidden), Some(&bob)).await,
        404,
        "M_NOT_FOUND",
    );
    // The members as they were when Bob could not see the room: not his to read.
    let members_at = |token: &str| room.path(&format!("members?at={token}"));
    assert_error(
        &srv.get(&members_at(&at_hidden), Some(&bob)).await,
        403,
        "M_FORBIDDEN",
    );
    let (status, members) = srv.get(&members_at(&at_hidden), Some(&alice)).await;
    assert_eq!(status, 200, "{members}");
    assert_eq!(
        members["chunk"].as_array().map(Vec::len),
        Some(1),
        "Alice alone then"
    );
    assert_eq!(srv.get(&room.path("members"), Some(&bob)).await.0, 200);
    // From the hidden event's time, the nearest event Bob may see: later, and not hidden.
    let (_, hidden_event) = srv.get(&event(&hidden), Some(&alice)).await;
    let hidden_ts = hidden_event["origin_server_ts"].as_i64().expect("ts");
    let (status, nearest) = srv
        .get(
            &format!(
                "/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={hidden_ts}&dir=f",
                room.id
            ),
            Some(&bob),
        )
        .await;
    assert_eq!(status, 200, "{nearest}");
    let nearest_id = nearest["event_id"].as_str().expect("event_id");
    assert_ne!(nearest_id, hidden);
    assert!(nearest["origin_server_ts"].as_i64() >= Some(hidden_ts));
    assert_eq!(srv.get(&event(nearest_id), Some(&bob)).await.0, 200);
    assert_eq!(srv.get(&event(&hidden), Some(&alice)).await.0, 200);
    let (status, context) = srv
        .get(
            &room.path(&format!("context/{after_invite}?limit=20")),
            Some(&bob),
        )
        .await;
    assert_eq!(status, 200, "{context}");
    let before: Vec<&str> = context["events_before"]
        .as_array()
        .expect("before")
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(before, ["one shared"], "{context}");

    // The first sync shows Bob the same history.
    let (status, sync) = srv
        .get(
            "/_matrix/client/v3/sync?filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A50%7D%7D%7D",
            Some(&bob),
        )
        .await;
    assert_eq!(status, 200, "{sync}");
    let timeline: Vec<&str> = sync["rooms"]["join"][&room.id]["timeline"]["events"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(
        timeline,
        ["one shared", "four after the invite", "five joined"]
    );

    // Search finds only what Bob may read.
    let (status, found) = srv
        .post_json(
            "/_matrix/client/v3/search",
            Some(&bob),
            &json!({"search_categories": {"room_events": {"search_term": "joined"}}}),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    let results: Vec<&str> = found["search_categories"]["room_events"]["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["result"]["content"]["body"].as_str())
        .collect();
    assert_eq!(results, ["five joined"], "{found}");

    // Carol never joined: nothing to read until the room is world-readable, and then only
    // what was sent while it was.
    assert_error(
        &srv.get(&room.path("messages?dir=b"), Some(&carol)).await,
        403,
        "M_FORBIDDEN",
    );
    room.set_visibility(&alice, "world_readable").await;
    room.say(&alice, "six for the world").await;
    assert_eq!(room.read_back(&carol, 10).await, ["six for the world"]);
    assert_error(
        &srv.get(&event(&hidden), Some(&carol)).await,
        404,
        "M_NOT_FOUND",
    );
    let (status, state) = srv.get(&room.path("state"), Some(&carol)).await;
    assert_eq!(status, 200, "{state}");
    // Members see everything they saw before, and the new message.
    assert_eq!(room.read_back(&bob, 100).await[0], "six for the world");

    // Dave leaves a `joined` room and is banned later: he reads up to his own leave (which
    // he sees), not what came between it and the ban.
    let dave_login = srv.register("dave", "pw dave 1").await;
    let dave = token(&dave_login);
    let (status, created) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            &json!({"preset": "public_chat"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let second = Room {
        srv: &srv,
        id: created["room_id"].as_str().expect("room").to_owned(),
    };
    let (status, answer) = srv
        .post_json(&second.path("join"), Some(&dave), &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    second.set_visibility(&alice, "joined").await;
    second.say(&alice, "while dave is here").await;
    let (status, answer) = srv
        .post_json(&second.path("leave"), Some(&dave), &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    second.say(&alice, "after dave left").await;
    let (status, answer) = srv
        .post_json(
            &second.path("ban"),
            Some(&alice),
            &json!({"user_id": dave_login["user_id"]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    second.say(&alice, "after the ban").await;
    assert_eq!(second.read_back(&dave, 10).await, ["while dave is here"]);
    let (status, page) = srv
        .get(&second.path("messages?dir=b&limit=50"), Some(&dave))
        .await;
    assert_eq!(status, 200, "{page}");
    let memberships: Vec<&str> = page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|e| e["type"] == "m.room.member" && e["state_key"] == dave_login["user_id"])
        .filter_map(|e| e["content"]["membership"].as_str())
        .collect();
    assert_eq!(memberships, ["leave", "join"], "{page}");
    srv.finish().await;
}

/// An account deactivated with `erase: true`: its messages stay readable to those who were
/// joined when they were sent, and are redacted for everyone who came later (as Synapse) —
/// in `/messages`, `/event` and the sync timeline. Without `erase` nothing changes.
async fn erased_accounts_are_redacted_for_latecomers(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let creator = srv.register("creator", "pw creator 1").await;
    let creator_id = creator["user_id"].as_str().expect("id").to_owned();
    let creator = token(&creator);
    let member = token(&srv.register("member", "pw member 1").await);
    let joiner = token(&srv.register("joiner", "pw joiner 1").await);
    let kept = token(&srv.register("kept", "pw kept 1").await);
    let (_, created) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&creator),
            &json!({"preset": "public_chat"}),
        )
        .await;
    let room = Room {
        srv: &srv,
        id: created["room_id"].as_str().expect("room").to_owned(),
    };
    let join = |t: &str| {
        let (srv, path, t) = (
            &srv,
            format!("/_matrix/client/v3/join/{}", room.id),
            t.to_owned(),
        );
        async move { assert_eq!(srv.post_json(&path, Some(&t), &json!({})).await.0, 200) }
    };
    join(&member).await;
    let (_, kept_room) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&kept),
            &json!({"preset": "public_chat"}),
        )
        .await;
    let kept_room = Room {
        srv: &srv,
        id: kept_room["room_id"].as_str().expect("room").to_owned(),
    };
    let message = room.say(&creator, "said before you came").await;
    kept_room.say(&kept, "mine to keep").await;
    join(&joiner).await;
    let (status, _) = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{}", kept_room.id),
            Some(&joiner),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(room.read_back(&joiner, 10).await, ["said before you came"]);

    // Deactivated with erase: the joiner (who came after) sees it redacted, the member not.
    let (status, body) = srv
        .post_with_password_uia(
            "/_matrix/client/v3/account/deactivate",
            &creator,
            json!({"erase": true}),
            &creator_id,
            "pw creator 1",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(room.read_back(&member, 10).await, ["said before you came"]);
    assert_eq!(room.read_back(&joiner, 10).await, Vec::<String>::new());
    let (_, event) = srv
        .get(&room.path(&format!("event/{message}")), Some(&joiner))
        .await;
    assert_eq!(event["content"], json!({}), "{event}");
    assert_eq!(event["type"], "m.room.message");
    let (_, event) = srv
        .get(&room.path(&format!("event/{message}")), Some(&member))
        .await;
    assert_eq!(event["content"]["body"], "said before you came");
    let (_, synced) = srv.get("/_matrix/client/v3/sync", Some(&joiner)).await;
    let timeline = synced["rooms"]["join"][&room.id]["timeline"]["events"]
        .as_array()
        .expect("timeline")
        .clone();
    let shown = timeline
        .iter()
        .find(|e| e["event_id"] == json!(message))
        .expect("the message is in the joiner's timeline");
    assert_eq!(shown["content"], json!({}), "{shown}");
    // Someone deactivated without erase keeps their words.
    let (status, _) = srv
        .post_with_password_uia(
            "/_matrix/client/v3/account/deactivate",
            &kept,
            json!({}),
            "@kept:localhost",
            "pw kept 1",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(kept_room.read_back(&joiner, 10).await, ["mine to keep"]);
    srv.finish().await;
}
