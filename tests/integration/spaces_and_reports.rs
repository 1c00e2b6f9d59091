//! Spec v1.12–v1.15 parts `/versions` now claims: a space's hierarchy (v1.2, with v1.15's
//! fields), reports of events, rooms and users (r0, v1.13, v1.14) that administrators read
//! in Synapse's admin shape, and one-time keys claimed in upload order (v1.13, MSC4225).

use matrix_sdk::ruma::{
    OwnedRoomId, UInt, api::client::space::get_hierarchy, room::JoinRuleSummary,
};
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, both_backends};

both_backends!(
    a_space_lists_what_one_may_see_below_it,
    reports_reach_the_administrators,
    one_time_keys_go_in_upload_order,
);

fn token(v: &Value) -> String {
    v["access_token"].as_str().expect("token").to_owned()
}

async fn create(srv: &TestServer, token: &str, body: Value) -> String {
    let (status, room) = srv
        .post_json("/_matrix/client/v3/createRoom", Some(token), &body)
        .await;
    assert_eq!(status, 200, "{room}");
    room["room_id"].as_str().expect("room").to_owned()
}

async fn add_child(srv: &TestServer, token: &str, space: &str, child: &str, content: Value) {
    let (status, body) = srv
        .put_json(
            &format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{child}"),
            Some(token),
            &content,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The room IDs of a hierarchy answer, in order.
fn ids(body: &Value) -> Vec<String> {
    body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["room_id"].as_str().expect("id").to_owned())
        .collect()
}

async fn a_space_lists_what_one_may_see_below_it(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let space = create(
        &srv,
        &alice,
        json!({"preset": "public_chat", "name": "DAO", "creation_content": {"type": "m.space"}}),
    )
    .await;
    let general = create(
        &srv,
        &alice,
        json!({"preset": "public_chat", "name": "General"}),
    )
    .await;
    let secret = create(
        &srv,
        &alice,
        json!({"preset": "private_chat", "name": "Secret"}),
    )
    .await;
    let members = create(
        &srv,
        &alice,
        json!({"preset": "private_chat", "name": "Members", "initial_state": [{
            "type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]},
        }, {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
    )
    .await;
    let sub = create(
        &srv,
        &alice,
        json!({"preset": "public_chat", "name": "Working groups", "creation_content": {"type": "m.space"}}),
    )
    .await;
    let deep = create(
        &srv,
        &alice,
        json!({"preset": "public_chat", "name": "Treasury"}),
    )
    .await;
    let via = json!({"via": ["localhost"]});
    // `order` first (in its order), then by when they were added.
    add_child(
        &srv,
        &alice,
        &space,
        &general,
        json!({"via": ["localhost"], "order": "b", "suggested": true}),
    )
    .await;
    add_child(
        &srv,
        &alice,
        &space,
        &sub,
        json!({"via": ["localhost"], "order": "a"}),
    )
    .await;
    add_child(&srv, &alice, &space, &secret, via.clone()).await;
    add_child(&srv, &alice, &space, &members, via.clone()).await;
    // Without `via` a child does not count; a child not on this server is left out.
    add_child(&srv, &alice, &space, "!gone:elsewhere.example", via.clone()).await;
    let none = create(&srv, &alice, json!({"preset": "public_chat"})).await;
    add_child(&srv, &alice, &space, &none, json!({})).await;
    add_child(&srv, &alice, &sub, &deep, via.clone()).await;
    // A loop back to the space is walked once.
    add_child(&srv, &alice, &sub, &space, via.clone()).await;

    // Bob, not in the space: he may see what is public; joined to the space, the
    // restricted room too; never the private one.
    let path = |query: &str| format!("/_matrix/client/v1/rooms/{space}/hierarchy{query}");
    let (status, body) = srv.get(&path(""), Some(&bob)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(&body),
        vec![space.clone(), sub.clone(), deep.clone(), general.clone()]
    );
    let first = &body["rooms"][0];
    assert_eq!(first["room_type"], "m.space");
    assert_eq!(first["name"], "DAO");
    assert_eq!(first["num_joined_members"], 1);
    assert_eq!(first["room_version"], "11");
    let children: Vec<&str> = first["children_state"]
        .as_array()
        .expect("children")
        .iter()
        .map(|c| c["state_key"].as_str().expect("key"))
        .collect();
    assert!(
        children.contains(&general.as_str()) && !children.contains(&none.as_str()),
        "{first}"
    );
    assert!(
        first["children_state"][0]["origin_server_ts"].is_u64(),
        "{first}"
    );
    let (status, _) = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{space}"),
            Some(&bob),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = srv.get(&path(""), Some(&bob)).await;
    assert_eq!(
        ids(&body),
        vec![
            space.clone(),
            sub.clone(),
            deep.clone(),
            general.clone(),
            members.clone()
        ]
    );
    let restricted = &body["rooms"][4];
    assert_eq!(restricted["join_rule"], "restricted");
    assert_eq!(restricted["allowed_room_ids"], json!([space]));
    assert_eq!(restricted["encryption"], "m.megolm.v1.aes-sha2");
    // Alice, in every room, sees the private one too.
    let (_, body) = srv.get(&path(""), Some(&alice)).await;
    assert_eq!(ids(&body).len(), 6, "{body}");

    // suggested_only, max_depth, pages.
    let (_, body) = srv.get(&path("?suggested_only=true"), Some(&bob)).await;
    assert_eq!(ids(&body), vec![space.clone(), general.clone()]);
    let (_, body) = srv.get(&path("?max_depth=0"), Some(&bob)).await;
    assert_eq!(ids(&body), vec![space.clone()]);
    let mut paged = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let query = match &from {
            Some(from) => format!("?limit=2&from={from}"),
            None => "?limit=2".to_owned(),
        };
        let (status, body) = srv.get(&path(&query), Some(&bob)).await;
        assert_eq!(status, 200, "{body}");
        assert!(ids(&body).len() <= 2);
        paged.extend(ids(&body));
        match body["next_batch"].as_str() {
            Some(next) => from = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged.len(), 5, "{paged:?}");

    // matrix-sdk reads it with ruma's types.
    let client = srv.client().await;
    client
        .matrix_auth()
        .login_username("bob", "pw bob 1")
        .send()
        .await
        .expect("login");
    let mut request =
        get_hierarchy::v1::Request::new(OwnedRoomId::try_from(space.as_str()).expect("id"));
    request.limit = Some(UInt::from(10u32));
    let answer = client
        .send(request)
        .await
        .expect("matrix-sdk reads the hierarchy");
    assert_eq!(answer.rooms.len(), 5);
    assert!(matches!(
        answer.rooms[4].summary.join_rule,
        JoinRuleSummary::Restricted(_)
    ));

    // Refusals: a private root one is not in (403), a bad token (400).
    let (status, body) = srv
        .get(
            &format!("/_matrix/client/v1/rooms/{secret}/hierarchy"),
            Some(&bob),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, body) = srv.get(&path("?from=nonsense"), Some(&bob)).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );
    srv.finish().await;
}

async fn reports_reach_the_administrators(backend: Backend) {
    let srv = TestServer::start_with(&backend, |c| {
        c.rate_limits.enabled = true;
        for bucket in [
            &mut c.rate_limits.login_per_ip,
            &mut c.rate_limits.login_per_account,
            &mut c.rate_limits.register_per_ip,
        ] {
            bucket.burst = 100;
        }
        c.rate_limits.reports_per_user.burst = 9;
        c.rate_limits.reports_per_user.per_second = 0.001;
    })
    .await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let room = create(
        &srv,
        &alice,
        json!({"preset": "public_chat", "name": "Market"}),
    )
    .await;
    let (_, sent) = srv
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
            Some(&alice),
            &json!({"msgtype": "m.text", "body": "buy my token"}),
        )
        .await;
    let event = sent["event_id"].as_str().expect("event").to_owned();
    let report_event = |who: &'static str, event: String, body: Value| {
        let srv = &srv;
        let token = if who == "bob" {
            bob.clone()
        } else {
            alice.clone()
        };
        let room = room.clone();
        async move {
            srv.post_json(
                &format!("/_matrix/client/v3/rooms/{room}/report/{event}"),
                Some(&token),
                &body,
            )
            .await
        }
    };

    // An event: only by someone joined to its room, only for an event there.
    let (status, body) = report_event("bob", event.clone(), json!({"reason": "scam"})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "not joined: {body}"
    );
    srv.post_json(
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        &json!({}),
    )
    .await;
    let (status, body) = report_event("bob", "$nosuchevent".to_owned(), json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) =
        report_event("bob", event.clone(), json!({"reason": "x".repeat(1001)})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (status, body) = report_event("bob", event.clone(), json!({"reason": "scam"})).await;
    assert_eq!((status, &body), (200, &json!({})));
    // Rooms (v1.13): known ones, joined or not; users (v1.14): this server's that exist,
    // anyone elsewhere.
    let (status, _) = srv
        .post_json(
            &format!("/_matrix/client/v3/rooms/{room}/report"),
            Some(&bob),
            &json!({"reason": "spam room"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = srv
        .post_json(
            "/_matrix/client/v3/rooms/!unknown:localhost/report",
            Some(&bob),
            &json!({"reason": "?"}),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND"))
    );
    let (status, _) = srv
        .post_json(
            "/_matrix/client/v3/users/@alice:localhost/report",
            Some(&bob),
            &json!({"reason": "scammer"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = srv
        .post_json(
            "/_matrix/client/v3/users/@nobody:localhost/report",
            Some(&bob),
            &json!({"reason": "?"}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = srv
        .post_json(
            "/_matrix/client/v3/users/@someone:elsewhere.example/report",
            Some(&bob),
            &json!({"reason": "spam"}),
        )
        .await;
    assert_eq!(status, 200);
    // Bob has spent his nine (refused ones count too): the next one waits.
    let (status, body) = srv
        .post_json(
            "/_matrix/client/v3/users/@alice:localhost/report",
            Some(&bob),
            &json!({"reason": "again"}),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (429, Some("M_LIMIT_EXCEEDED")),
        "{body}"
    );

    // Administrators read event reports in Synapse's shape; others may not.
    let (status, _) = srv
        .get("/_synapse/admin/v1/event_reports", Some(&bob))
        .await;
    assert_eq!(status, 403);
    let admin = crate::gate::admin_token(&srv).await;
    let (status, body) = srv
        .get("/_synapse/admin/v1/event_reports", Some(&admin))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 1, "{body}");
    let report = &body["event_reports"][0];
    assert_eq!(report["event_id"], event.as_str());
    assert_eq!(report["room_id"], room.as_str());
    assert_eq!(report["user_id"], "@bob:localhost");
    assert_eq!(report["sender"], "@alice:localhost");
    assert_eq!(report["reason"], "scam");
    assert_eq!(report["name"], "Market");
    assert!(body.get("next_token").is_none());
    let (status, _) = srv
        .get("/_synapse/admin/v1/event_reports?limit=0", Some(&admin))
        .await;
    assert_eq!(status, 400);
    srv.finish().await;
}

async fn one_time_keys_go_in_upload_order(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = srv.register("alice", "pw alice 1").await;
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let device = alice["device_id"].as_str().expect("device").to_owned();
    let alice = token(&alice);
    // Key IDs that sort against their upload order (vodozemac's base64 counters do).
    for batch in [
        ["AAAAAz", "AAAAAy"],
        ["AAAAAx", "AAAAAw"],
        ["AAAAAv", "AAAAAu"],
    ] {
        let keys: serde_json::Map<String, Value> = batch
            .iter()
            .map(|id| (format!("curve25519:{id}"), json!(format!("key-{id}"))))
            .collect();
        let (status, body) = srv
            .post_json(
                "/_matrix/client/v3/keys/upload",
                Some(&alice),
                &json!({"one_time_keys": keys}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let mut claimed = Vec::new();
    for _ in 0..6 {
        let (status, body) = srv
            .post_json(
                "/_matrix/client/v3/keys/claim",
                Some(&bob),
                &json!({"one_time_keys": {"@alice:localhost": {device.clone(): "curve25519"}}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let keys = body["one_time_keys"]["@alice:localhost"][&device]
            .as_object()
            .expect("a key")
            .keys()
            .next()
            .expect("one")
            .clone();
        claimed.push(keys.trim_start_matches("curve25519:").to_owned());
    }
    // Each upload's keys before the next upload's (within one upload, by ID).
    assert_eq!(
        claimed,
        ["AAAAAy", "AAAAAz", "AAAAAw", "AAAAAx", "AAAAAu", "AAAAAv"]
    );
    srv.finish().await;
}
