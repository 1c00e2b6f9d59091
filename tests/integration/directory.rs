//! Finding rooms and people, and the lifecycle around rooms: the public directory, aliases,
//! the user directory, presence, timestamps, upgrades (to room version 12), knocking,
//! restricted joins, leaving, and lazy-loaded members.

use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(
    directory_aliases_people_and_presence,
    room_lifecycle_across_versions
);

fn token(v: &Value) -> String {
    v["access_token"].as_str().expect("token").to_owned()
}

async fn create(srv: &TestServer, token: &str, body: Value) -> String {
    let (status, answer) = srv
        .post_json("/_matrix/client/v3/createRoom", Some(token), &body)
        .await;
    assert_eq!(status, 200, "{answer}");
    answer["room_id"].as_str().expect("room id").to_owned()
}

async fn directory_aliases_people_and_presence(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let lounge = create(
        &srv,
        &alice,
        json!({"visibility": "public", "preset": "public_chat", "name": "DAO Lounge",
               "topic": "Talk about proposals", "room_alias_name": "lounge"}),
    )
    .await;
    let hidden = create(&srv, &alice, json!({"name": "Secret"})).await;

    // The directory lists the public room with its state, and searches it.
    let listed = srv.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(listed.0, 200, "{:?}", listed.1);
    assert_eq!(listed.1["chunk"].as_array().expect("chunk").len(), 1);
    let entry = &listed.1["chunk"][0];
    assert_eq!(entry["room_id"], lounge);
    assert_eq!(entry["name"], "DAO Lounge");
    assert_eq!(entry["canonical_alias"], "#lounge:localhost");
    assert_eq!(entry["num_joined_members"], 1);
    assert!(
        entry.get("join_rule").is_none_or(|j| j == "public"),
        "{entry}"
    );
    let search = |term: &str| {
        let body = json!({"filter": {"generic_search_term": term}});
        let srv = &srv;
        let token = alice.clone();
        async move {
            srv.post_json("/_matrix/client/v3/publicRooms", Some(&token), &body)
                .await
        }
    };
    assert_eq!(search("proposals").await.1["chunk"][0]["room_id"], lounge);
    assert_eq!(search("nothing like this").await.1["chunk"], json!([]));
    assert_error(
        &srv.get("/_matrix/client/v3/publicRooms?since=garbage", None)
            .await,
        400,
        "M_INVALID_PARAM",
    );

    // Visibility: only someone with the power may list a room.
    let visibility = format!("/_matrix/client/v3/directory/list/room/{hidden}");
    assert_eq!(srv.get(&visibility, None).await.1["visibility"], "private");
    assert_error(
        &srv.put_json(&visibility, Some(&bob), &json!({"visibility": "public"}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        srv.put_json(&visibility, Some(&alice), &json!({"visibility": "public"}))
            .await
            .0,
        200
    );
    assert_eq!(srv.get(&visibility, None).await.1["visibility"], "public");

    // Aliases: resolve, refuse duplicates, only the creator or a moderator removes one.
    let alias = "/_matrix/client/v3/directory/room/%23hideout:localhost";
    assert_eq!(
        srv.put_json(alias, Some(&alice), &json!({"room_id": hidden}))
            .await
            .0,
        200
    );
    assert_error(
        &srv.put_json(alias, Some(&alice), &json!({"room_id": lounge}))
            .await,
        409,
        "M_UNKNOWN",
    );
    // Only members point aliases at a room.
    assert_error(
        &srv.put_json(
            "/_matrix/client/v3/directory/room/%23mine:localhost",
            Some(&bob),
            &json!({"room_id": hidden}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(srv.get(alias, Some(&bob)).await.1["room_id"], hidden);
    let joined = srv
        .post_json(
            "/_matrix/client/v3/join/%23lounge:localhost",
            Some(&bob),
            &json!({}),
        )
        .await;
    assert_eq!(joined.1["room_id"], lounge, "join by alias");
    assert_error(
        &srv.request(reqwest::Method::DELETE, alias, Some(&bob), None)
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(
        srv.request(reqwest::Method::DELETE, alias, Some(&alice), None)
            .await
            .0,
        200
    );
    assert_error(&srv.get(alias, Some(&bob)).await, 404, "M_NOT_FOUND");
    assert_error(
        &srv.put_json(
            "/_matrix/client/v3/directory/room/%23x:elsewhere.example",
            Some(&alice),
            &json!({"room_id": hidden}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );

    // The user directory finds people by ID and by name.
    srv.put_json(
        "/_matrix/client/v3/profile/@bob:localhost/displayname",
        Some(&bob),
        &json!({"displayname": "Robert Tables"}),
    )
    .await;
    let found = srv
        .post_json(
            "/_matrix/client/v3/user_directory/search",
            Some(&alice),
            &json!({"search_term": "tables"}),
        )
        .await;
    assert_eq!(
        found.1["results"][0]["user_id"], "@bob:localhost",
        "{:?}",
        found.1
    );
    assert_eq!(found.1["results"][0]["display_name"], "Robert Tables");
    let by_id = srv
        .post_json(
            "/_matrix/client/v3/user_directory/search",
            Some(&alice),
            &json!({"search_term": "ali"}),
        )
        .await;
    assert_eq!(by_id.1["results"][0]["user_id"], "@alice:localhost");
    let odd = srv
        .post_json(
            "/_matrix/client/v3/user_directory/search",
            Some(&alice),
            &json!({"search_term": "%_\\"}),
        )
        .await;
    assert_eq!(odd.1["results"], json!([]), "LIKE wildcards are literal");

    // Presence: set, read, and seen in a room-mate's sync.
    let alice_since = srv
        .get("/_matrix/client/v3/sync?set_presence=offline", Some(&alice))
        .await
        .1["next_batch"]
        .as_str()
        .expect("token")
        .to_owned();
    let set = srv
        .put_json(
            "/_matrix/client/v3/presence/@bob:localhost/status",
            Some(&bob),
            &json!({"presence": "unavailable", "status_msg": "voting"}),
        )
        .await;
    assert_eq!(set.0, 200, "{:?}", set.1);
    let read = srv
        .get(
            "/_matrix/client/v3/presence/@bob:localhost/status",
            Some(&alice),
        )
        .await;
    assert_eq!(read.1["presence"], "unavailable");
    assert_eq!(read.1["status_msg"], "voting");
    let update = srv
        .get(
            &format!("/_matrix/client/v3/sync?since={alice_since}&timeout=0&set_presence=offline"),
            Some(&alice),
        )
        .await
        .1;
    let events = update["presence"]["events"].as_array().expect("presence");
    assert!(
        events
            .iter()
            .any(|e| e["sender"] == "@bob:localhost" && e["content"]["status_msg"] == "voting")
    );
    assert_error(
        &srv.put_json(
            "/_matrix/client/v3/presence/@bob:localhost/status",
            Some(&alice),
            &json!({"presence": "online"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );

    // Timestamp lookup: the room starts with its create event.
    let first = srv
        .get(
            &format!("/_matrix/client/v1/rooms/{lounge}/timestamp_to_event?ts=0&dir=f"),
            Some(&alice),
        )
        .await;
    assert_eq!(first.0, 200, "{:?}", first.1);
    let create = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{lounge}/event/{}",
                first.1["event_id"].as_str().expect("id")
            ),
            Some(&alice),
        )
        .await;
    assert_eq!(create.1["type"], "m.room.create");
    srv.finish().await;
}

async fn room_lifecycle_across_versions(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let carol = token(&srv.register("carol", "pw carol 1").await);
    let r = |room: &str, rest: &str| format!("/_matrix/client/v3/rooms/{room}/{rest}");

    // Room version 12: the room id is the create event's hash, and the creator needs no
    // power level entry to rule.
    let v12 = create(
        &srv,
        &alice,
        json!({"room_version": "12", "preset": "public_chat", "name": "New"}),
    )
    .await;
    assert!(
        !v12.contains(':'),
        "v12 room ids carry no server name: {v12}"
    );
    let levels = srv
        .get(&r(&v12, "state/m.room.power_levels/"), Some(&alice))
        .await
        .1;
    assert!(
        levels["users"].get("@alice:localhost").is_none(),
        "{levels}"
    );
    assert_eq!(
        srv.put_json(
            &r(&v12, "state/m.room.topic/"),
            Some(&alice),
            &json!({"topic": "t"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        srv.post_json(
            &format!("/_matrix/client/v3/join/{v12}"),
            Some(&bob),
            &json!({})
        )
        .await
        .0,
        200
    );
    assert_error(
        &srv.put_json(
            &r(&v12, "state/m.room.topic/"),
            Some(&bob),
            &json!({"topic": "mine"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );

    // Upgrading a v11 room to v12: tombstone, state carried over, old room read-only.
    let old = create(
        &srv,
        &alice,
        json!({"preset": "public_chat", "name": "Old name", "room_alias_name": "town"}),
    )
    .await;
    assert_eq!(
        srv.post_json(
            &format!("/_matrix/client/v3/join/{old}"),
            Some(&bob),
            &json!({})
        )
        .await
        .0,
        200
    );
    assert_error(
        &srv.post_json(
            &r(&old, "upgrade"),
            Some(&bob),
            &json!({"new_version": "12"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &srv.post_json(
            &r(&old, "upgrade"),
            Some(&alice),
            &json!({"new_version": "org.example.unknown"}),
        )
        .await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    let upgraded = srv
        .post_json(
            &r(&old, "upgrade"),
            Some(&alice),
            &json!({"new_version": "12"}),
        )
        .await;
    assert_eq!(upgraded.0, 200, "{:?}", upgraded.1);
    let new = upgraded.1["replacement_room"]
        .as_str()
        .expect("new room")
        .to_owned();
    let tombstone = srv
        .get(&r(&old, "state/m.room.tombstone/"), Some(&bob))
        .await
        .1;
    assert_eq!(tombstone["replacement_room"], new);
    assert_error(
        &srv.put_json(
            &r(&old, "send/m.room.message/b1"),
            Some(&bob),
            &json!({"msgtype": "m.text", "body": "x"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    let create_event = srv
        .get(&r(&new, "state/m.room.create/"), Some(&alice))
        .await
        .1;
    assert_eq!(create_event["predecessor"]["room_id"], old);
    assert_eq!(
        srv.get(&r(&new, "state/m.room.name/"), Some(&alice))
            .await
            .1["name"],
        "Old name"
    );
    assert_eq!(
        srv.get(
            "/_matrix/client/v3/directory/room/%23town:localhost",
            Some(&bob)
        )
        .await
        .1["room_id"],
        new,
        "the alias moved"
    );
    assert_eq!(
        srv.post_json(
            &format!("/_matrix/client/v3/join/{new}"),
            Some(&bob),
            &json!({})
        )
        .await
        .0,
        200
    );

    // Before version 12 the tombstone comes first and the new room's create event names it.
    // What members had set for the old room follows them; bans, aliases and `m.federate`
    // follow the room.
    let v10 = create(
        &srv,
        &alice,
        json!({"room_version": "10", "preset": "public_chat", "room_alias_name": "tenner",
               "creation_content": {"m.federate": false}}),
    )
    .await;
    for (token, user) in [(&alice, "alice"), (&bob, "bob")] {
        if user == "bob" {
            let joined = srv
                .post_json(
                    &format!("/_matrix/client/v3/join/{v10}"),
                    Some(token),
                    &json!({}),
                )
                .await;
            assert_eq!(joined.0, 200, "{:?}", joined.1);
        }
        let me = format!("@{user}:localhost");
        let tagged = srv
            .put_json(
                &format!("/_matrix/client/v3/user/{me}/rooms/{v10}/tags/u.work"),
                Some(token),
                &json!({"order": 0.5}),
            )
            .await;
        assert_eq!(tagged.0, 200, "{:?}", tagged.1);
        let direct = srv
            .put_json(
                &format!("/_matrix/client/v3/user/{me}/account_data/m.direct"),
                Some(token),
                &json!({"@carol:localhost": [v10]}),
            )
            .await;
        assert_eq!(direct.0, 200);
        let rule = srv
            .put_json(
                &format!("/_matrix/client/v3/pushrules/global/room/{v10}"),
                Some(token),
                &json!({"actions": ["dont_notify"]}),
            )
            .await;
        assert_eq!(rule.0, 200, "{:?}", rule.1);
    }
    let banned = srv
        .post_json(
            &r(&v10, "ban"),
            Some(&alice),
            &json!({"user_id": "@mallory:localhost", "reason": "spam"}),
        )
        .await;
    assert_eq!(banned.0, 200, "{:?}", banned.1);
    for (path, body) in [
        (r(&v10, "upgrade"), json!({"new_version": "my_bad_version"})),
        (
            "/_matrix/client/v3/createRoom".to_owned(),
            json!({"room_version": "my_bad_version"}),
        ),
    ] {
        assert_error(
            &srv.post_json(&path, Some(&alice), &body).await,
            400,
            "M_UNSUPPORTED_ROOM_VERSION",
        );
    }
    let upgraded = srv
        .post_json(
            &r(&v10, "upgrade"),
            Some(&alice),
            &json!({"new_version": "11"}),
        )
        .await;
    assert_eq!(upgraded.0, 200, "{:?}", upgraded.1);
    let v11 = upgraded.1["replacement_room"].as_str().expect("new room");
    let old_state = srv.get(&r(&v10, "state"), Some(&alice)).await.1;
    let tombstone = old_state
        .as_array()
        .expect("state")
        .iter()
        .find(|e| e["type"] == "m.room.tombstone")
        .expect("tombstone")
        .clone();
    assert_eq!(tombstone["content"]["replacement_room"], v11);
    let create_event = srv
        .get(&r(v11, "state/m.room.create/"), Some(&alice))
        .await
        .1;
    assert_eq!(
        create_event["predecessor"],
        json!({"room_id": v10, "event_id": tombstone["event_id"]})
    );
    assert_eq!(create_event["room_version"], "11");
    assert_eq!(create_event["m.federate"], false);
    assert_eq!(
        srv.get(&r(&v10, "state/m.room.canonical_alias/"), Some(&alice))
            .await
            .1,
        json!({}),
        "the old room names no alias"
    );
    assert_eq!(
        srv.get(&r(v11, "state/m.room.canonical_alias/"), Some(&alice))
            .await
            .1["alias"],
        "#tenner:localhost"
    );
    let ban = srv
        .get(
            &r(v11, "state/m.room.member/@mallory:localhost"),
            Some(&alice),
        )
        .await
        .1;
    assert_eq!(ban, json!({"membership": "ban", "reason": "spam"}));
    // The upgrader's settings moved at once; bob's when he joins the new room.
    let settings = |token: &str, user: &str| {
        let srv = &srv;
        let token = token.to_owned();
        let me = format!("@{user}:localhost");
        async move {
            let tags = srv
                .get(
                    &format!("/_matrix/client/v3/user/{me}/rooms/{v11}/tags"),
                    Some(&token),
                )
                .await
                .1;
            let direct = srv
                .get(
                    &format!("/_matrix/client/v3/user/{me}/account_data/m.direct"),
                    Some(&token),
                )
                .await
                .1;
            let rule = srv
                .get(
                    &format!("/_matrix/client/v3/pushrules/global/room/{v11}"),
                    Some(&token),
                )
                .await
                .0;
            (
                tags["tags"].get("u.work").is_some(),
                direct["@carol:localhost"].clone(),
                rule,
            )
        }
    };
    assert_eq!(
        settings(&alice, "alice").await,
        (true, json!([v10, v11]), 200)
    );
    assert_eq!(settings(&bob, "bob").await, (false, json!([v10]), 404));
    let joined = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{v11}"),
            Some(&bob),
            &json!({}),
        )
        .await;
    assert_eq!(joined.0, 200, "{:?}", joined.1);
    assert_eq!(settings(&bob, "bob").await, (true, json!([v10, v11]), 200));

    // Knocking: carol knocks on a knock room, sees it as a knock in sync, gets invited, joins.
    let knock_room = create(
        &srv,
        &alice,
        json!({"initial_state": [
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]}),
    )
    .await;
    assert_error(
        &srv.post_json(&r(&knock_room, "join"), Some(&carol), &json!({}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    let knocked = srv
        .post_json(
            &format!("/_matrix/client/v3/knock/{knock_room}"),
            Some(&carol),
            &json!({"reason": "let me in"}),
        )
        .await;
    assert_eq!(knocked.0, 200, "{:?}", knocked.1);
    let carol_sync = srv.get("/_matrix/client/v3/sync", Some(&carol)).await.1;
    assert!(
        carol_sync["rooms"]["knock"][&knock_room]["knock_state"]["events"].is_array(),
        "{carol_sync}"
    );
    assert_eq!(
        srv.post_json(
            &r(&knock_room, "invite"),
            Some(&alice),
            &json!({"user_id": "@carol:localhost"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        srv.post_json(&r(&knock_room, "join"), Some(&carol), &json!({}))
            .await
            .0,
        200
    );

    // Knocking and then leaving shows nothing of the room.
    let grace = token(&srv.register("grace", "pw grace 1").await);
    srv.post_json(
        &format!("/_matrix/client/v3/knock/{knock_room}"),
        Some(&grace),
        &json!({}),
    )
    .await;
    assert_eq!(
        srv.post_json(&r(&knock_room, "leave"), Some(&grace), &json!({}))
            .await
            .0,
        200
    );
    assert_error(
        &srv.get(&r(&knock_room, "messages?dir=b"), Some(&grace))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &srv.get(&r(&knock_room, "state"), Some(&grace)).await,
        403,
        "M_FORBIDDEN",
    );
    let grace_sync = srv
        .get(
            "/_matrix/client/v3/sync?filter=%7B%22room%22%3A%7B%22include_leave%22%3Atrue%7D%7D",
            Some(&grace),
        )
        .await
        .1;
    let left = grace_sync["rooms"]["leave"][&knock_room]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(left.len() <= 1, "only her own leave: {left:?}");

    // Restricted joins: members of the knock room may join without an invite; others not.
    let restricted = create(
        &srv,
        &alice,
        json!({"initial_state": [
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "restricted",
         "allow": [{"type": "m.room_membership", "room_id": knock_room}]}}]}),
    )
    .await;
    assert_eq!(
        srv.post_json(&r(&restricted, "join"), Some(&carol), &json!({}))
            .await
            .0,
        200
    );
    assert_error(
        &srv.post_json(&r(&restricted, "join"), Some(&bob), &json!({}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Nor by naming a vouching member himself.
    let forged =
        json!({"membership": "join", "join_authorised_via_users_server": "@alice:localhost"});
    assert_error(
        &srv.put_json(
            &r(&restricted, "state/m.room.member/@bob:localhost"),
            Some(&bob),
            &forged,
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    let member = srv
        .get(
            &r(&restricted, "state/m.room.member/@carol:localhost"),
            Some(&alice),
        )
        .await
        .1;
    assert_eq!(
        member["join_authorised_via_users_server"],
        "@alice:localhost"
    );

    // Leaving shows in the leaver's next sync; forgetting hides the room.
    let since = srv.get("/_matrix/client/v3/sync", Some(&carol)).await.1["next_batch"]
        .as_str()
        .expect("t")
        .to_owned();
    assert_eq!(
        srv.post_json(&r(&restricted, "leave"), Some(&carol), &json!({}))
            .await
            .0,
        200
    );
    let left = srv
        .get(
            &format!("/_matrix/client/v3/sync?since={since}&timeout=0"),
            Some(&carol),
        )
        .await
        .1;
    let leave_events = left["rooms"]["leave"][&restricted]["timeline"]["events"]
        .as_array()
        .expect("left room");
    assert_eq!(
        leave_events.last().expect("event")["content"]["membership"],
        "leave"
    );
    assert_eq!(
        srv.post_json(&r(&restricted, "forget"), Some(&carol), &json!({}))
            .await
            .0,
        200
    );
    assert_error(
        &srv.post_json(&r(&knock_room, "forget"), Some(&carol), &json!({}))
            .await,
        400,
        "M_UNKNOWN",
    );

    // Lazy loading: with many members, the state carries only those the timeline needs.
    let crowd = create(&srv, &alice, json!({"preset": "public_chat"})).await;
    for user in ["dan", "erin", "frank"] {
        let t = token(&srv.register(user, &format!("pw {user} 1")).await);
        assert_eq!(
            srv.post_json(
                &format!("/_matrix/client/v3/join/{crowd}"),
                Some(&t),
                &json!({})
            )
            .await
            .0,
            200
        );
    }
    assert_eq!(
        srv.post_json(
            &format!("/_matrix/client/v3/join/{crowd}"),
            Some(&bob),
            &json!({})
        )
        .await
        .0,
        200
    );
    for i in 0..5 {
        srv.put_json(
            &r(&crowd, &format!("send/m.room.message/l{i}")),
            Some(&alice),
            &json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await;
    }
    let filter = r#"{"room":{"timeline":{"limit":3},"state":{"lazy_load_members":true}}}"#;
    let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
    let lazy = srv
        .get(
            &format!("/_matrix/client/v3/sync?filter={encoded}"),
            Some(&bob),
        )
        .await
        .1;
    let state = lazy["rooms"]["join"][&crowd]["state"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let members: Vec<&str> = state
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    assert!(members.contains(&"@alice:localhost"), "{members:?}");
    assert!(
        !members.contains(&"@dan:localhost"),
        "only the members the timeline needs: {members:?}"
    );
    // Timeline filters: only messages, and nobody's but alice's.
    let filter = r#"{"room":{"timeline":{"limit":50,"types":["m.room.mess*"],"senders":["@alice:localhost"]}}}"#;
    let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
    let filtered = srv
        .get(
            &format!("/_matrix/client/v3/sync?filter={encoded}"),
            Some(&bob),
        )
        .await
        .1;
    let events = filtered["rooms"]["join"][&crowd]["timeline"]["events"]
        .as_array()
        .expect("timeline");
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "m.room.message" && e["sender"] == "@alice:localhost")
    );
    let state = filtered["rooms"]["join"][&crowd]["state"]["events"]
        .as_array()
        .expect("state");
    assert!(
        state.iter().any(|e| e["type"] == "m.room.create"),
        "the state still arrives"
    );
    let filter = r#"{"room":{"timeline":{"not_types":["m.room.message"]}}}"#;
    let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
    let no_messages = srv
        .get(
            &format!("/_matrix/client/v3/sync?filter={encoded}"),
            Some(&bob),
        )
        .await
        .1;
    let events = no_messages["rooms"]["join"][&crowd]["timeline"]["events"]
        .as_array()
        .expect("timeline");
    assert!(!events.is_empty() && events.iter().all(|e| e["type"] != "m.room.message"));

    let full = srv.get("/_matrix/client/v3/sync", Some(&bob)).await.1;
    let all_members = full["rooms"]["join"][&crowd]["timeline"]["events"]
        .as_array()
        .expect("timeline")
        .len()
        + full["rooms"]["join"][&crowd]["state"]["events"]
            .as_array()
            .map_or(0, Vec::len);
    assert!(all_members > state.len());
    srv.finish().await;
}
