//! Push with a real push gateway (an HTTP listener in the test): notifications with counts
//! and tweaks, rules that stop them, unread counts in sync, `/notifications`, retries, and
//! pushers removed when their gateway rejects them.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, routing::post};
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(
    push_gateway_gets_mentions_with_counts_until_rules_say_no,
    pushers_and_rules_refuse_bad_input,
    push_rule_paths_accept_what_synapse_accepts,
    unread_counts_never_lag_the_timeline,
    old_notifications_go_and_unread_ones_still_count,
    member_pushes_say_the_membership_and_aliases_name_rooms,
    pushers_go_with_the_device_that_set_them,
);

/// What the gateway saw, and how it answers: fail the first `failures` requests with 500,
/// then reject `reject` push keys.
#[derive(Default)]
pub(crate) struct Gateway {
    seen: Mutex<Vec<Value>>,
    failures: AtomicUsize,
    reject: Mutex<Vec<String>>,
}

async fn notify(
    State(gw): State<Arc<Gateway>>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if gw.failures.load(Ordering::SeqCst) > 0 {
        gw.failures.fetch_sub(1, Ordering::SeqCst);
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "try later").into_response();
    }
    gw.seen.lock().expect("lock").push(body);
    let rejected = gw.reject.lock().expect("lock").clone();
    Json(json!({ "rejected": rejected })).into_response()
}

pub(crate) async fn gateway() -> (Arc<Gateway>, String) {
    let gw = Arc::new(Gateway::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/_matrix/push/v1/notify",
        listener.local_addr().expect("addr")
    );
    let app = Router::new()
        .route("/_matrix/push/v1/notify", post(notify))
        .with_state(gw.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (gw, url)
}

impl Gateway {
    /// Waits for the `n`th notification (1-based).
    async fn nth(&self, n: usize) -> Value {
        for _ in 0..100 {
            if let Some(found) = self.seen.lock().expect("lock").get(n - 1) {
                return found.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway never got notification {n}");
    }
    pub(crate) fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

fn token(v: &Value) -> String {
    v["access_token"].as_str().expect("token").to_owned()
}

async fn send(srv: &TestServer, token: &str, room: &str, txn: &str, content: Value) -> String {
    let (status, body) = srv
        .request(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            Some(token),
            Some(content.to_string().into_bytes()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().expect("event id").to_owned()
}

async fn put(srv: &TestServer, token: &str, path: &str, body: Value) -> (u16, Value) {
    srv.request(
        reqwest::Method::PUT,
        path,
        Some(token),
        Some(body.to_string().into_bytes()),
    )
    .await
}

async fn counts(srv: &TestServer, token: &str, room: &str) -> (u64, u64) {
    let (status, sync) = srv
        .get("/_matrix/client/v3/sync?timeout=0", Some(token))
        .await;
    assert_eq!(status, 200);
    let unread = &sync["rooms"]["join"][room]["unread_notifications"];
    (
        unread["notification_count"].as_u64().unwrap_or(0),
        unread["highlight_count"].as_u64().unwrap_or(0),
    )
}

/// A server allowed to push to a fresh local gateway: `(gateway, its url, server)`.
async fn server_with_gateway(backend: &Backend) -> (Arc<Gateway>, String, TestServer) {
    let (gw, url) = gateway().await;
    let host = url::Url::parse(&url).expect("url");
    let allowed = format!("127.0.0.1:{}", host.port().expect("port"));
    let srv = TestServer::start_with(backend, move |c| c.push.gateway_allow = vec![allowed]).await;
    (gw, url, srv)
}

fn pusher(url: &str, pushkey: &str) -> Value {
    json!({
        "kind": "http", "app_id": "io.matrixon.test", "pushkey": pushkey,
        "app_display_name": "Test", "device_display_name": "Phone", "lang": "en",
        "data": {"url": url, "custom": "kept"},
    })
}

async fn push_gateway_gets_mentions_with_counts_until_rules_say_no(backend: Backend) {
    let (gw, url, srv) = server_with_gateway(&backend).await;
    let alice = token(&srv.register("alice", "push password").await);
    let bob = token(&srv.register("bob", "push password").await);
    let (_, room) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            &json!({"preset": "trusted_private_chat", "invite": ["@bob:localhost"], "name": "Pushy"}),
        )
        .await;
    let room = room["room_id"].as_str().expect("room").to_owned();
    let joined = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&bob),
            &json!({}),
        )
        .await;
    assert_eq!(joined.0, 200);
    let (status, _) = srv
        .post_json(
            "/_matrix/client/v3/pushers/set",
            Some(&bob),
            &pusher(&url, "bob-phone"),
        )
        .await;
    assert_eq!(status, 200);

    // A plain message: pushed with the counts; no highlight.
    let first = send(
        &srv,
        &alice,
        &room,
        "t1",
        json!({"msgtype": "m.text", "body": "hello"}),
    )
    .await;
    let n = gw.nth(1).await["notification"].clone();
    assert_eq!(n["event_id"], first.as_str());
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["sender"], "@alice:localhost");
    assert_eq!(n["room_name"], "Pushy");
    assert_eq!(n["content"]["body"], "hello");
    assert_eq!(n["counts"]["unread"], 1);
    assert_eq!(n["devices"][0]["pushkey"], "bob-phone");
    assert_eq!(
        n["devices"][0]["data"],
        json!({"custom": "kept"}),
        "data without the url"
    );
    assert_eq!(n["devices"][0]["tweaks"]["sound"], "default");
    assert!(
        n["devices"][0]["tweaks"]
            .get("highlight")
            .is_none_or(|h| h == false),
        "{n}"
    );
    assert_eq!(counts(&srv, &bob, &room).await, (1, 0));

    // A mention highlights.
    let mention = send(
        &srv,
        &alice,
        &room,
        "t2",
        json!({"msgtype": "m.text", "body": "bob: look", "m.mentions": {"user_ids": ["@bob:localhost"]}}),
    )
    .await;
    let n = gw.nth(2).await["notification"].clone();
    assert_eq!(n["event_id"], mention.as_str());
    assert_eq!(n["prio"], "high");
    assert_eq!(n["devices"][0]["tweaks"]["highlight"], true);
    assert_eq!(n["counts"]["unread"], 2);
    assert_eq!(counts(&srv, &bob, &room).await, (2, 1));

    // /notifications lists both, newest first, after the invite; only=highlight just the
    // mention.
    let (_, listed) = srv
        .get("/_matrix/client/v3/notifications", Some(&bob))
        .await;
    let listed = listed["notifications"].as_array().expect("list").clone();
    assert!(
        listed
            .iter()
            .all(|n| n.as_object().is_some_and(|n| n.contains_key("profile_tag"))),
        "every key Synapse writes: {listed:?}"
    );
    let ids: Vec<&str> = listed
        .iter()
        .map(|n| n["event"]["event_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids[..2], [mention.as_str(), first.as_str()]);
    assert_eq!(
        listed[2]["event"]["type"], "m.room.member",
        "the invite notified Bob"
    );
    assert_eq!(listed[2]["event"]["content"]["membership"], "invite");
    assert_eq!(listed.len(), 3);
    let (_, highlights) = srv
        .get(
            "/_matrix/client/v3/notifications?only=highlight",
            Some(&bob),
        )
        .await;
    assert_eq!(
        highlights["notifications"].as_array().map(Vec::len),
        Some(1)
    );

    // Disabled rules stop plain messages; the mention rule still fires.
    for rule in [".m.rule.room_one_to_one", ".m.rule.message"] {
        let (status, body) = put(
            &srv,
            &bob,
            &format!("/_matrix/client/v3/pushrules/global/underride/{rule}/enabled"),
            json!({"enabled": false}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    send(
        &srv,
        &alice,
        &room,
        "t3",
        json!({"msgtype": "m.text", "body": "quiet"}),
    )
    .await;
    let loud = send(
        &srv,
        &alice,
        &room,
        "t4",
        json!({"msgtype": "m.text", "body": "bob!", "m.mentions": {"user_ids": ["@bob:localhost"]}}),
    )
    .await;
    let n = gw.nth(3).await["notification"].clone();
    assert_eq!(
        n["event_id"],
        loud.as_str(),
        "the quiet message was not pushed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.count(), 3);
    assert_eq!(counts(&srv, &bob, &room).await, (3, 2));

    // Reading the room resets its counts.
    let (status, _) = srv
        .post_json(
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{loud}"),
            Some(&bob),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(counts(&srv, &bob, &room).await, (0, 0));
    // …and the phone hears the badge drop to zero: counts, no event.
    let badge = gw.nth(4).await["notification"].clone();
    assert_eq!(badge["counts"]["unread"], 0, "{badge}");
    assert_eq!(badge["id"], "", "{badge}");
    assert!(badge.get("event_id").is_none(), "{badge}");
    assert_eq!(badge["devices"][0]["pushkey"], "bob-phone");

    // A gateway that fails first is retried; one that rejects the push key loses the pusher.
    gw.failures.store(2, Ordering::SeqCst);
    *gw.reject.lock().expect("lock") = vec!["bob-phone".into()];
    send(
        &srv,
        &alice,
        &room,
        "t5",
        json!({"msgtype": "m.text", "body": "again", "m.mentions": {"user_ids": ["@bob:localhost"]}}),
    )
    .await;
    gw.nth(5).await;
    let mut gone = false;
    for _ in 0..50 {
        let (_, list) = srv.get("/_matrix/client/v3/pushers", Some(&bob)).await;
        if list["pushers"].as_array().is_some_and(Vec::is_empty) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "a rejected pusher is removed");
    srv.finish().await;
}

async fn pushers_and_rules_refuse_bad_input(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let bob = token(&srv.register("bob", "push password").await);
    let set = |body: Value| {
        let bob = bob.clone();
        let srv = &srv;
        async move {
            srv.post_json("/_matrix/client/v3/pushers/set", Some(&bob), &body)
                .await
        }
    };
    let good = pusher("https://push.example.org/_matrix/push/v1/notify", "k1");
    let mut wrong_path = good.clone();
    wrong_path["data"]["url"] = json!("https://push.example.org/notify");
    assert_error(&set(wrong_path).await, 400, "M_INVALID_PARAM");
    let mut email = good.clone();
    email["kind"] = json!("email");
    assert_error(&set(email).await, 400, "M_INVALID_PARAM");
    let mut missing = good.clone();
    missing.as_object_mut().expect("object").remove("lang");
    assert_error(&set(missing).await, 400, "M_MISSING_PARAM");
    assert_error(&set(json!({"append": "yes"})).await, 400, "M_BAD_JSON");
    let (_, list) = srv.get("/_matrix/client/v3/pushers", Some(&bob)).await;
    assert_eq!(list["pushers"], json!([]), "nothing stored");
    assert_eq!(set(good.clone()).await.0, 200);
    let (_, list) = srv.get("/_matrix/client/v3/pushers", Some(&bob)).await;
    assert_eq!(list["pushers"][0]["pushkey"], "k1");
    let deleted = set(json!({"kind": null, "app_id": "io.matrixon.test", "pushkey": "k1"})).await;
    assert_eq!(deleted.0, 200);
    let (_, list) = srv.get("/_matrix/client/v3/pushers", Some(&bob)).await;
    assert_eq!(list["pushers"], json!([]));

    // Rules: the spec's defaults, a rule of one's own, and refusals.
    let (status, all) = srv.get("/_matrix/client/v3/pushrules/", Some(&bob)).await;
    assert_eq!(status, 200);
    let overrides: Vec<&str> = all["global"]["override"]
        .as_array()
        .expect("override")
        .iter()
        .map(|r| r["rule_id"].as_str().expect("id"))
        .collect();
    assert!(
        overrides.contains(&".m.rule.master") && overrides.contains(&".m.rule.is_user_mention")
    );
    let (status, body) = put(
        &srv,
        &bob,
        "/_matrix/client/v3/pushrules/global/content/cats",
        json!({"pattern": "cat*", "actions": ["notify", {"set_tweak": "highlight"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, rule) = srv
        .get(
            "/_matrix/client/v3/pushrules/global/content/cats",
            Some(&bob),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(rule["pattern"], "cat*");
    let (_, sync) = srv
        .get("/_matrix/client/v3/sync?timeout=0", Some(&bob))
        .await;
    let rules_event = sync["account_data"]["events"]
        .as_array()
        .expect("account data")
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .expect("push rules in sync")
        .clone();
    assert!(
        rules_event["content"]["global"]["content"]
            .as_array()
            .expect("content rules")
            .iter()
            .any(|r| r["rule_id"] == "cats")
    );
    assert_error(
        &put(
            &srv,
            &bob,
            "/_matrix/client/v3/pushrules/global/content/.m.mine",
            json!({"pattern": "x", "actions": []}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &srv.get(
            "/_matrix/client/v3/pushrules/global/override/nope",
            Some(&bob),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &put(
            &srv,
            &bob,
            "/_matrix/client/v3/pushrules/global/override/nope/enabled",
            json!({"enabled": true}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    let (status, _) = srv
        .request(
            reqwest::Method::DELETE,
            "/_matrix/client/v3/pushrules/global/override/.m.rule.master",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = srv
        .request(
            reqwest::Method::DELETE,
            "/_matrix/client/v3/pushrules/global/content/cats",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_error(
        &srv.get("/_matrix/client/v3/notifications?from=abc", Some(&bob))
            .await,
        400,
        "M_INVALID_PARAM",
    );

    // A pusher aimed at a private address (not in push.gateway_allow) gets nothing: a
    // pusher cannot make the server POST into its own network.
    let (gw, url) = gateway().await;
    assert_eq!(set(pusher(&url, "internal")).await.0, 200);
    let alice = token(&srv.register("alice", "push password").await);
    let (_, room) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            &json!({"preset": "public_chat"}),
        )
        .await;
    let room = room["room_id"].as_str().expect("room").to_owned();
    srv.post_json(
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        &json!({}),
    )
    .await;
    send(
        &srv,
        &alice,
        &room,
        "x1",
        json!({"msgtype": "m.text", "body": "hi"}),
    )
    .await;
    let (_, listed) = srv
        .get("/_matrix/client/v3/notifications", Some(&bob))
        .await;
    assert_eq!(
        listed["notifications"].as_array().map(Vec::len),
        Some(1),
        "notified…"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gw.count(), 0, "…but never pushed to a private address");
    srv.finish().await;
}

/// The push-rule paths as Synapse reads them (and SyTest sends them): room and sender rule
/// ids that are any string, trailing slashes that list a kind, and 400 `M_UNRECOGNIZED`
/// for paths that name nothing.
async fn push_rule_paths_accept_what_synapse_accepts(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let bob = token(&srv.register("bob", "push password").await);
    let rules = "/_matrix/client/v3/pushrules";
    let delete = |path: String| {
        let bob = bob.clone();
        let srv = &srv;
        async move {
            srv.request(reqwest::Method::DELETE, &path, Some(&bob), None)
                .await
        }
    };

    // A room rule whose id is no room ID: created, read back, disabled, changed, deleted.
    let spam = format!("{rules}/global/room/%23spam:example.com");
    let (status, body) = put(&srv, &bob, &spam, json!({"actions": ["notify"]})).await;
    assert_eq!(status, 200, "{body}");
    let (status, rule) = srv.get(&spam, Some(&bob)).await;
    assert_eq!(status, 200, "{rule}");
    assert_eq!(
        rule,
        json!({"rule_id": "#spam:example.com", "actions": ["notify"], "enabled": true, "default": false})
    );
    // One with a real room ID goes after it, and is what pushes are decided with.
    let (status, body) = put(
        &srv,
        &bob,
        &format!("{rules}/global/room/!real:localhost?after=%23spam:example.com"),
        json!({"actions": []}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, list) = srv.get(&format!("{rules}/global/room/"), Some(&bob)).await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list
        .as_array()
        .expect("room rules")
        .iter()
        .map(|r| r["rule_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["#spam:example.com", "!real:localhost"]);
    let (_, all) = srv.get(&format!("{rules}/"), Some(&bob)).await;
    assert_eq!(all["global"]["room"], list, "the whole ruleset agrees");
    let (_, sync) = srv
        .get("/_matrix/client/v3/sync?timeout=0", Some(&bob))
        .await;
    let synced = sync["account_data"]["events"]
        .as_array()
        .expect("account data")
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .expect("push rules in sync")
        .clone();
    assert_eq!(
        synced["content"]["global"]["room"][0]["rule_id"],
        "!real:localhost"
    );
    let (status, body) = put(
        &srv,
        &bob,
        &format!("{spam}/enabled"),
        json!({"enabled": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, enabled) = srv.get(&format!("{spam}/enabled"), Some(&bob)).await;
    assert_eq!(status, 200);
    assert_eq!(enabled, json!({"enabled": false}));
    let actions = json!(["notify", {"set_tweak": "sound", "value": "default"}]);
    let (status, body) = put(
        &srv,
        &bob,
        &format!("{spam}/actions"),
        json!({ "actions": actions.clone() }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, got) = srv.get(&format!("{spam}/actions"), Some(&bob)).await;
    assert_eq!(status, 200);
    assert_eq!(got, json!({ "actions": actions }));
    let (_, rule) = srv.get(&spam, Some(&bob)).await;
    assert_eq!(rule["enabled"], false, "changing actions keeps it disabled");
    assert_eq!(delete(spam.clone()).await.0, 200);
    assert_error(&srv.get(&spam, Some(&bob)).await, 404, "M_NOT_FOUND");
    assert_error(&delete(spam.clone()).await, 404, "M_NOT_FOUND");
    let (_, list) = srv.get(&format!("{rules}/global/room/"), Some(&bob)).await;
    assert_eq!(list[0]["rule_id"], "!real:localhost");
    assert_eq!(list.as_array().map(Vec::len), Some(1));

    // Sender rules, and the other kinds listed with a trailing slash (r0 too).
    let (status, body) = put(
        &srv,
        &bob,
        &format!("{rules}/global/sender/%40carol:example.com"),
        json!({"actions": ["dont_notify"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = put(
        &srv,
        &bob,
        &format!("{rules}/global/content/cats"),
        json!({"pattern": "cat*", "actions": ["notify"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, list) = srv
        .get("/_matrix/client/r0/pushrules/global/sender/", Some(&bob))
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list[0]["rule_id"], "@carol:example.com");
    assert_eq!(list[0]["actions"], json!(["dont_notify"]));
    let (status, list) = srv
        .get(&format!("{rules}/global/content/"), Some(&bob))
        .await;
    assert_eq!(status, 200, "{list}");
    assert!(
        list.as_array()
            .expect("content rules")
            .iter()
            .any(|r| r["rule_id"] == "cats" && r["pattern"] == "cat*")
    );
    for kind in ["override", "underride"] {
        let (status, list) = srv
            .get(&format!("{rules}/global/{kind}/"), Some(&bob))
            .await;
        assert_eq!(status, 200, "{kind}: {list}");
        assert!(list.is_array(), "{kind}: {list}");
    }
    let (status, global) = srv.get(&format!("{rules}/global/"), Some(&bob)).await;
    assert_eq!(status, 200);
    assert_eq!(global["sender"][0]["rule_id"], "@carol:example.com");

    // Paths that name nothing.
    for path in [
        "/",
        "/not_a_scope/room/%23spam:example.com",
        "/global",
        "/global/room",
        "/global/room/",
        "/global/not_a_template/foo",
        "/global/override/.m.rule.master/not_an_attr",
    ] {
        let response = put(
            &srv,
            &bob,
            &format!("{rules}{path}"),
            json!({"actions": ["notify"], "enabled": true}),
        )
        .await;
        assert_error(&response, 400, "M_UNRECOGNIZED");
    }
    for path in [
        "/global",
        "/global/room",
        "/not_a_scope/",
        "/global/not_a_template/",
        "/global/override/.m.rule.master/not_an_attr",
    ] {
        assert_error(
            &srv.get(&format!("{rules}{path}"), Some(&bob)).await,
            400,
            "M_UNRECOGNIZED",
        );
    }
    assert_error(
        &delete(format!("{rules}/global/room/!real:localhost/enabled")).await,
        400,
        "M_UNRECOGNIZED",
    );
    // Without the trailing slash there is no such endpoint at all, as with Synapse.
    assert_eq!(srv.get(rules, Some(&bob)).await.0, 404);

    // Bodies and rule ids Synapse refuses.
    for (path, body, errcode) in [
        (
            "/global/room/%23fo%5Co:example.com",
            json!({"actions": ["notify"]}),
            "M_INVALID_PARAM",
        ),
        (
            "/global/override/my_id",
            json!({"actions": []}),
            "M_MISSING_PARAM",
        ),
        (
            "/global/underride/my_id",
            json!({"conditions": [{}], "actions": []}),
            "M_BAD_JSON",
        ),
        (
            "/global/content/my_id",
            json!({"actions": []}),
            "M_MISSING_PARAM",
        ),
        (
            "/global/room/%23my_room:example.com",
            json!({}),
            "M_MISSING_PARAM",
        ),
        (
            "/global/room/%23my_room:example.com",
            json!({"actions": ["not_an_action"]}),
            "M_BAD_JSON",
        ),
        (
            "/global/override/.m.rule.master/enabled",
            json!({"enabled": "not a boolean"}),
            "M_BAD_JSON",
        ),
    ] {
        let response = put(&srv, &bob, &format!("{rules}{path}"), body).await;
        assert_error(&response, 400, errcode);
    }
    assert_error(
        &put(
            &srv,
            &bob,
            &format!("{rules}/global/room/%23late:example.com?before=%23nowhere:example.com"),
            json!({"actions": []}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    srv.finish().await;
}

/// Messages in two rooms at once, a reader syncing meanwhile: an answer that shows a room's
/// messages never counts fewer unread than it has shown (each event's notifications are
/// stored with it, not after — a sync woken by the other room could otherwise show an event
/// before its count, and keep the stale count until the room changed again).
async fn unread_counts_never_lag_the_timeline(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "push password").await);
    let carol = token(&srv.register("carol", "push password").await);
    let bob = token(&srv.register("bob", "push password").await);
    let mut rooms = Vec::new();
    for sender in [&alice, &carol] {
        let (_, room) = srv
            .post_json(
                "/_matrix/client/v3/createRoom",
                Some(sender),
                &json!({"preset": "public_chat"}),
            )
            .await;
        let room = room["room_id"].as_str().expect("room").to_owned();
        let (status, _) = srv
            .post_json(
                &format!("/_matrix/client/v3/join/{room}"),
                Some(&bob),
                &json!({}),
            )
            .await;
        assert_eq!(status, 200);
        rooms.push(room);
    }
    let (_, first) = srv
        .get("/_matrix/client/v3/sync?timeout=0", Some(&bob))
        .await;
    let mut since = first["next_batch"].as_str().expect("next_batch").to_owned();

    const EACH: usize = 25;
    let senders: Vec<_> = [(&alice, &rooms[0]), (&carol, &rooms[1])]
        .into_iter()
        .map(|(sender, room)| {
            let (srv_base, sender, room) = (srv.base.clone(), sender.clone(), room.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for i in 0..EACH {
                    let sent = http
                        .put(format!(
                            "{srv_base}/_matrix/client/v3/rooms/{room}/send/m.room.message/c{i}"
                        ))
                        .bearer_auth(&sender)
                        .json(&json!({"msgtype": "m.text", "body": format!("m{i}")}))
                        .send()
                        .await
                        .expect("send");
                    assert_eq!(sent.status(), 200);
                }
            })
        })
        .collect();

    // Per room: messages shown so far, and the count the latest answer gave.
    let mut shown = [0u64; 2];
    let mut count = [0u64; 2];
    while shown.iter().any(|&n| n < EACH as u64) {
        let (status, sync) = srv
            .get(
                &format!("/_matrix/client/v3/sync?since={since}&timeout=5000"),
                Some(&bob),
            )
            .await;
        assert_eq!(status, 200, "{sync}");
        for (i, room) in rooms.iter().enumerate() {
            let joined = &sync["rooms"]["join"][room];
            if joined.is_null() {
                continue;
            }
            shown[i] += joined["timeline"]["events"].as_array().map_or(0, |events| {
                events
                    .iter()
                    .filter(|e| e["type"] == "m.room.message")
                    .count() as u64
            });
            if let Some(n) = joined["unread_notifications"]["notification_count"].as_u64() {
                count[i] = n;
            }
            assert!(
                count[i] >= shown[i],
                "room {i}: {} messages shown, {} counted unread",
                shown[i],
                count[i]
            );
        }
        since = sync["next_batch"].as_str().expect("next_batch").to_owned();
    }
    for sender in senders {
        sender.await.expect("sender");
    }
    assert_eq!(count, [EACH as u64; 2], "every message counted once shown");
    srv.finish().await;
}

/// Notifications older than the retention go when read, or when their user left the room;
/// unread ones are folded into a count per user and room that the unread counts go on
/// showing until a receipt passes them all; nothing recent goes.
async fn old_notifications_go_and_unread_ones_still_count(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let services = &srv.server.as_ref().expect("running").services;
    let alice = token(&srv.register("alice", "prune password").await);
    let bob = token(&srv.register("bob", "prune password").await);
    let carol = token(&srv.register("carol", "prune password").await);
    let dave = token(&srv.register("dave", "prune password").await);
    let (_, room) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            &json!({"preset": "public_chat"}),
        )
        .await;
    let room = room["room_id"].as_str().expect("room").to_owned();
    for who in [&bob, &carol, &dave] {
        let joined = srv
            .post_json(
                &format!("/_matrix/client/v3/join/{room}"),
                Some(who),
                &json!({}),
            )
            .await;
        assert_eq!(joined.0, 200, "{}", joined.1);
    }
    let mut sent = Vec::new();
    for i in 0..3 {
        let mut body = json!({"msgtype": "m.text", "body": format!("news {i}")});
        if i == 1 {
            body["m.mentions"] = json!({"user_ids": ["@carol:localhost"]});
        }
        sent.push(send(&srv, &alice, &room, &format!("p{i}"), body).await);
    }
    let read = |who: String, event: String| {
        let (srv, room) = (&srv, &room);
        async move {
            let (status, body) = srv
                .post_json(
                    &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"),
                    Some(&who),
                    &json!({}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    // Bob reads the first two; Carol reads nothing; Dave leaves.
    read(bob.clone(), sent[1].clone()).await;
    let left = srv
        .post_json(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&dave),
            &json!({}),
        )
        .await;
    assert_eq!(left.0, 200);
    let listed = |token: String| {
        let srv = &srv;
        async move {
            let (status, body) = srv
                .get("/_matrix/client/v3/notifications", Some(&token))
                .await;
            assert_eq!(status, 200, "{body}");
            body["notifications"]
                .as_array()
                .expect("list")
                .iter()
                .map(|n| n["event"]["event_id"].as_str().expect("id").to_owned())
                .collect::<Vec<_>>()
        }
    };
    let all: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(listed(bob.clone()).await, all);
    assert_eq!(listed(dave.clone()).await, all);

    // Nothing is old yet.
    assert_eq!(services.prune_notifications().await.expect("prune"), 0);
    assert_eq!(listed(bob.clone()).await, all);

    let month = Duration::from_secs(31 * 24 * 3600);
    srv.clock.advance(month);
    assert_eq!(
        services.prune_notifications().await.expect("prune"),
        9,
        "Bob's two read ones and Dave's three deleted; Bob's unread one and Carol's three folded"
    );
    for who in [&bob, &carol, &dave] {
        assert!(listed(who.clone()).await.is_empty());
    }
    assert_eq!(counts(&srv, &bob, &room).await, (1, 0));
    assert_eq!(
        counts(&srv, &carol, &room).await,
        (3, 1),
        "folded, still counted"
    );
    assert_eq!(services.prune_notifications().await.expect("prune"), 0);
    assert_eq!(counts(&srv, &carol, &room).await, (3, 1));

    // A receipt among the folded ones leaves them all counted; one past them reads them.
    read(carol.clone(), sent[0].clone()).await;
    assert_eq!(counts(&srv, &carol, &room).await, (3, 1));
    read(bob.clone(), sent[2].clone()).await;
    assert_eq!(counts(&srv, &bob, &room).await, (0, 0));

    let body = json!({"msgtype": "m.text", "body": "later"});
    sent.push(send(&srv, &alice, &room, "p3", body).await);
    assert_eq!(counts(&srv, &bob, &room).await, (1, 0));
    assert_eq!(counts(&srv, &carol, &room).await, (4, 1));
    srv.clock.advance(month);
    assert_eq!(services.prune_notifications().await.expect("prune"), 2);
    // Bob had read his summary: the new one replaces it; Carol's grows.
    assert_eq!(counts(&srv, &bob, &room).await, (1, 0));
    assert_eq!(counts(&srv, &carol, &room).await, (4, 1));

    read(bob.clone(), sent[3].clone()).await;
    read(carol.clone(), sent[3].clone()).await;
    assert_eq!(
        services.prune_notifications().await.expect("prune"),
        2,
        "both summaries, read past"
    );
    let body = json!({"msgtype": "m.text", "body": "latest"});
    send(&srv, &alice, &room, "p4", body).await;
    assert_eq!(counts(&srv, &bob, &room).await, (1, 0));
    assert_eq!(counts(&srv, &carol, &room).await, (1, 0));
    srv.finish().await;
}

/// What Synapse puts in a push that SyTest's and Sygnal's readers look for: the membership of a
/// member event, and the room's canonical alias as its name when it has no name.
async fn member_pushes_say_the_membership_and_aliases_name_rooms(backend: Backend) {
    let (gw, url, srv) = server_with_gateway(&backend).await;
    let alice = token(&srv.register("alice", "push password").await);
    let bob = token(&srv.register("bob", "push password").await);
    let (status, _) = srv
        .post_json(
            "/_matrix/client/v3/pushers/set",
            Some(&bob),
            &pusher(&url, "bob-phone"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, room) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            &json!({"room_alias_name": "nameless", "invite": ["@bob:localhost"]}),
        )
        .await;
    assert_eq!(status, 200, "{room}");
    let room = room["room_id"].as_str().expect("room").to_owned();

    let invite = gw.nth(1).await["notification"].clone();
    assert_eq!(invite["type"], "m.room.member", "{invite}");
    assert_eq!(invite["membership"], "invite", "{invite}");
    assert_eq!(invite["user_is_target"], true, "{invite}");
    assert_eq!(invite["room_name"], "#nameless:localhost", "{invite}");

    let joined = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&bob),
            &json!({}),
        )
        .await;
    assert_eq!(joined.0, 200);
    send(
        &srv,
        &alice,
        &room,
        "m1",
        json!({"msgtype": "m.text", "body": "hi"}),
    )
    .await;
    let message = gw.nth(2).await["notification"].clone();
    assert_eq!(message["room_name"], "#nameless:localhost", "{message}");
    assert!(message.get("membership").is_none(), "{message}");

    // A name in the body of a message without `m.mentions` (bridges, bots, older clients)
    // mentions, as on Synapse; with `m.mentions` only the list counts.
    send(
        &srv,
        &alice,
        &room,
        "m2",
        json!({"msgtype": "m.text", "body": "bob: are you there?"}),
    )
    .await;
    let named = gw.nth(3).await["notification"].clone();
    assert_eq!(named["prio"], "high", "{named}");
    assert_eq!(named["devices"][0]["tweaks"]["highlight"], true, "{named}");
    send(
        &srv,
        &alice,
        &room,
        "m3",
        json!({"msgtype": "m.text", "body": "quoting bob", "m.mentions": {}}),
    )
    .await;
    let quoted = gw.nth(4).await["notification"].clone();
    assert_eq!(quoted["prio"], "low", "{quoted}");
    srv.finish().await;
}

/// A logged-out phone hears nothing more: pushers belong to the device that set them, and go
/// when it is logged out or deleted, and when a password change logs the other devices out.
async fn pushers_go_with_the_device_that_set_them(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let laptop = token(&srv.register("bob", "push password").await);
    let phone = token(&srv.login("bob", "push password").await);
    let tablet = token(&srv.login("bob", "push password").await);
    for (device, key) in [(&laptop, "laptop"), (&phone, "phone"), (&tablet, "tablet")] {
        let url = "https://push.example.org/_matrix/push/v1/notify";
        let set = srv
            .post_json(
                "/_matrix/client/v3/pushers/set",
                Some(device),
                &pusher(url, key),
            )
            .await;
        assert_eq!(set.0, 200, "{:?}", set.1);
    }
    let keys = || async {
        let (_, list) = srv.get("/_matrix/client/v3/pushers", Some(&laptop)).await;
        let mut keys: Vec<String> = list["pushers"]
            .as_array()
            .expect("pushers")
            .iter()
            .map(|p| p["pushkey"].as_str().expect("key").to_owned())
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(keys().await, ["laptop", "phone", "tablet"]);

    let out = srv
        .post_json("/_matrix/client/v3/logout", Some(&tablet), &json!({}))
        .await;
    assert_eq!(out.0, 200);
    assert_eq!(keys().await, ["laptop", "phone"]);

    // A password change that keeps other devices logged in keeps their pushers…
    let kept = srv
        .post_with_password_uia(
            "/_matrix/client/v3/account/password",
            &laptop,
            json!({"new_password": "push password 2", "logout_devices": false}),
            "bob",
            "push password",
        )
        .await;
    assert_eq!(kept.0, 200, "{:?}", kept.1);
    assert_eq!(keys().await, ["laptop", "phone"]);
    // …and one that logs them out takes theirs, not the laptop's own.
    let changed = srv
        .post_with_password_uia(
            "/_matrix/client/v3/account/password",
            &laptop,
            json!({"new_password": "push password 3"}),
            "bob",
            "push password 2",
        )
        .await;
    assert_eq!(changed.0, 200, "{:?}", changed.1);
    assert_eq!(keys().await, ["laptop"]);
    assert_eq!(
        srv.get("/_matrix/client/v3/pushers", Some(&phone)).await.0,
        401
    );
    srv.finish().await;
}
