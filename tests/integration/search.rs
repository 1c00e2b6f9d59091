//! Room tags and message search.

use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(tags_and_message_search);

async fn tags_and_message_search(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let token = |v: &Value| v["access_token"].as_str().expect("token").to_owned();
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let mut rooms = Vec::new();
    for name in ["one", "two"] {
        let (_, room) = srv
            .post_json(
                "/_matrix/client/v3/createRoom",
                Some(&alice),
                &json!({"name": name}),
            )
            .await;
        rooms.push(room["room_id"].as_str().expect("room").to_owned());
    }
    let (_, secret) = srv
        .post_json("/_matrix/client/v3/createRoom", Some(&bob), &json!({}))
        .await;
    let secret = secret["room_id"].as_str().expect("room").to_owned();

    // Tags: set, read, remove; someone else's are off limits.
    let tag = format!(
        "/_matrix/client/v3/user/@alice:localhost/rooms/{}/tags/m.favourite",
        rooms[0]
    );
    assert_eq!(
        srv.put_json(&tag, Some(&alice), &json!({"order": 0.25}))
            .await
            .0,
        200
    );
    let tags = format!(
        "/_matrix/client/v3/user/@alice:localhost/rooms/{}/tags",
        rooms[0]
    );
    assert_eq!(
        srv.get(&tags, Some(&alice)).await.1["tags"]["m.favourite"]["order"],
        0.25
    );
    assert_error(&srv.get(&tags, Some(&bob)).await, 403, "M_FORBIDDEN");
    assert_eq!(
        srv.request(reqwest::Method::DELETE, &tag, Some(&alice), None)
            .await
            .0,
        200
    );
    assert_eq!(srv.get(&tags, Some(&alice)).await.1["tags"], json!({}));

    // Search finds message bodies (any case) in the user's rooms only, newest first, paged.
    for (i, body) in [
        "The DAO vote is open",
        "lunch?",
        "Vote closes friday",
        "VOTE results",
    ]
    .iter()
    .enumerate()
    {
        let room = &rooms[i % 2];
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/s{i}");
        assert_eq!(
            srv.put_json(
                &path,
                Some(&alice),
                &json!({"msgtype": "m.text", "body": body})
            )
            .await
            .0,
            200
        );
    }
    let path = format!("/_matrix/client/v3/rooms/{secret}/send/m.room.message/x");
    srv.put_json(
        &path,
        Some(&bob),
        &json!({"msgtype": "m.text", "body": "secret vote"}),
    )
    .await;
    let search = |body: Value| {
        let srv = &srv;
        let alice = alice.clone();
        async move {
            srv.post_json("/_matrix/client/v3/search", Some(&alice), &body)
                .await
        }
    };
    let found = search(json!({"search_categories": {"room_events": {"search_term": "vote", "filter": {"limit": 2}}}})).await;
    assert_eq!(found.0, 200, "{:?}", found.1);
    let page = &found.1["search_categories"]["room_events"];
    let bodies: Vec<&str> = page["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["result"]["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["VOTE results", "Vote closes friday"]);
    let next = page["next_batch"].as_str().expect("more").to_owned();
    let rest = srv
        .post_json(
            &format!("/_matrix/client/v3/search?next_batch={next}"),
            Some(&alice),
            &json!({"search_categories": {"room_events": {"search_term": "vote", "filter": {"limit": 2}}}}),
        )
        .await;
    let rest = &rest.1["search_categories"]["room_events"]["results"];
    assert_eq!(rest.as_array().expect("results").len(), 1);
    assert_eq!(rest[0]["result"]["content"]["body"], "The DAO vote is open");
    let in_one = search(json!({"search_categories": {"room_events": {"search_term": "vote", "filter": {"rooms": [rooms[1]]}}}})).await;
    assert_eq!(
        in_one.1["search_categories"]["room_events"]["results"]
            .as_array()
            .expect("r")
            .len(),
        1
    );
    assert_error(
        &search(json!({"search_categories": {"room_events": {"search_term": "   "}}})).await,
        400,
        "M_BAD_JSON",
    );
    srv.finish().await;
}
