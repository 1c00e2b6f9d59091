//! What other clients and servers send and expect, beyond matrix-sdk: every stable room
//! version, state paths without a state key, the shapes of devices, UIA challenges,
//! `/versions` and `/capabilities` that other libraries validate, guests, the legacy
//! endpoints still called (`/events`, `/initialSync`), OpenID tokens for widgets, 3PIDs.

use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(
    the_default_room_version_is_configurable,
    every_stable_room_version_creates_joins_and_redacts,
    discovery_announces_what_exists,
    responses_have_the_fields_client_schemas_require,
    guests_read_and_join_only_where_rooms_let_them,
    legacy_endpoints_still_answer,
    widgets_and_settings_get_honest_answers,
    sync_filters_shape_every_section,
    user_directory_lists_only_people_one_may_find,
    new_devices_reach_everyones_device_lists,
    deleting_an_alias_takes_it_out_of_the_canonical_alias,
    ignored_users_are_not_heard,
    joins_keep_the_content_they_carry,
    guests_upgrade_to_full_accounts,
    presence_reaches_new_room_mates,
    rooms_joined_or_left_since_the_last_sync,
    world_readable_rooms_can_be_followed_without_joining,
    context_lazy_loads_members,
    gaps_and_absences_do_not_hide_membership,
);

fn token(v: &Value) -> String {
    v["access_token"].as_str().expect("token").to_owned()
}

async fn every_stable_room_version_creates_joins_and_redacts(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    for version in 1..=12 {
        let version = version.to_string();
        let created = srv
            .post_json(
                "/_matrix/client/v3/createRoom",
                Some(&alice),
                &json!({"room_version": version, "preset": "public_chat"}),
            )
            .await;
        assert_eq!(created.0, 200, "v{version}: {:?}", created.1);
        let room = created.1["room_id"].as_str().expect("room id").to_owned();
        let r = |rest: &str| format!("/_matrix/client/v3/rooms/{room}/{rest}");
        let joined = srv
            .post_json(
                &format!("/_matrix/client/v3/join/{room}"),
                Some(&bob),
                &json!({}),
            )
            .await;
        assert_eq!(joined.0, 200, "v{version}: {:?}", joined.1);

        // A state event with an empty key, addressed without the trailing slash.
        let named = srv
            .put_json(
                &r("state/m.room.name"),
                Some(&alice),
                &json!({"name": format!("v{version}")}),
            )
            .await;
        assert_eq!(named.0, 200, "v{version}: {:?}", named.1);
        let name = srv.get(&r("state/m.room.name"), Some(&bob)).await;
        assert_eq!(name.1, json!({"name": format!("v{version}")}), "v{version}");
        assert_eq!(
            srv.get(&r("state/m.room.name/"), Some(&bob)).await.1,
            name.1
        );

        // The same transaction id in every room: each is a new event, not a retry.
        let sent = srv
            .put_json(
                &r("send/m.room.message/t1"),
                Some(&alice),
                &json!({"msgtype": "m.text", "body": "hello"}),
            )
            .await;
        assert_eq!(sent.0, 200, "v{version}: {:?}", sent.1);
        let event_id = sent.1["event_id"].as_str().expect("event id").to_owned();
        // Versions 1 and 2 name events `$opaque:server`; later ones by their hash.
        let opaque = event_id.contains(':');
        assert_eq!(
            opaque,
            version == "1" || version == "2",
            "v{version}: {event_id}"
        );
        let encoded: String = url::form_urlencoded::byte_serialize(event_id.as_bytes()).collect();
        let seen = srv.get(&r(&format!("event/{encoded}")), Some(&bob)).await;
        assert_eq!(seen.0, 200, "v{version}: {:?}", seen.1);
        assert_eq!(seen.1["content"]["body"], "hello");
        let redacted = srv
            .put_json(
                &r(&format!("redact/{encoded}/t2")),
                Some(&alice),
                &json!({}),
            )
            .await;
        assert_eq!(redacted.0, 200, "v{version}: {:?}", redacted.1);
        let seen = srv.get(&r(&format!("event/{encoded}")), Some(&bob)).await;
        assert_eq!(seen.1["content"], json!({}), "v{version}: {:?}", seen.1);

        // A member can still be kicked and banned by the old versions' auth rules.
        let kicked = srv
            .post_json(
                &r("kick"),
                Some(&alice),
                &json!({"user_id": "@bob:localhost"}),
            )
            .await;
        assert_eq!(kicked.0, 200, "v{version}: {:?}", kicked.1);
        let refused = srv
            .put_json(
                &r("send/m.room.message/t3"),
                Some(&bob),
                &json!({"body": "x"}),
            )
            .await;
        assert_eq!(refused.0, 403, "v{version}: {:?}", refused.1);
    }
    srv.finish().await;
}

async fn discovery_announces_what_exists(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let versions = srv.get("/_matrix/client/versions", None).await;
    let list = versions.1["versions"].as_array().expect("versions").clone();
    // v1.11 is authenticated media: Element loads images only once it is announced.
    for v in ["r0.6.1", "v1.5", "v1.11"] {
        assert!(list.contains(&json!(v)), "{v} missing from {list:?}");
    }
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let caps = srv
        .get("/_matrix/client/v3/capabilities", Some(&alice))
        .await;
    let room_versions = &caps.1["capabilities"]["m.room_versions"];
    assert_eq!(room_versions["default"], "11", "{caps:?}");
    for v in 1..=12 {
        assert_eq!(
            room_versions["available"][v.to_string()],
            "stable",
            "{caps:?}"
        );
    }
    srv.finish().await;
}

async fn responses_have_the_fields_client_schemas_require(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    // matrix-nio's schema wants `params` in every UIA challenge.
    let challenge = srv
        .post_json(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "carol", "password": "pw carol 1"}),
        )
        .await;
    assert_eq!(challenge.0, 401);
    assert_eq!(challenge.1["params"], json!({}), "{:?}", challenge.1);
    // …and every key of a device, `null` when unknown (the registration's device has not
    // been used yet).
    let carol = srv.register("carol", "pw carol 1").await;
    let devices = srv
        .get("/_matrix/client/v3/devices", Some(&token(&carol)))
        .await;
    assert_eq!(devices.0, 200);
    let device = &devices.1["devices"][0];
    for key in ["device_id", "display_name", "last_seen_ip", "last_seen_ts"] {
        let fields = device.as_object().expect("object");
        assert!(fields.contains_key(key), "{key} missing: {device}");
    }
    let id = device["device_id"].as_str().expect("id");
    let one = srv
        .get(
            &format!("/_matrix/client/v3/devices/{id}"),
            Some(&token(&carol)),
        )
        .await;
    assert_eq!(one.1["device_id"], id);
    assert!(
        one.1
            .as_object()
            .expect("object")
            .contains_key("last_seen_ts")
    );

    // A UIA password stage in the pre-r0 form (`user` rather than `identifier`).
    let second = srv.login("carol", "pw carol 1").await;
    let device = second["device_id"].as_str().expect("device");
    let path = format!("/_matrix/client/v3/devices/{device}");
    let challenge = srv
        .request(
            reqwest::Method::DELETE,
            &path,
            Some(&token(&carol)),
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(challenge.0, 401, "{:?}", challenge.1);
    let body = json!({"auth": {
        "type": "m.login.password", "user": "carol", "password": "pw carol 1",
        "session": challenge.1["session"],
    }});
    let deleted = srv
        .request(
            reqwest::Method::DELETE,
            &path,
            Some(&token(&carol)),
            Some(serde_json::to_vec(&body).expect("json")),
        )
        .await;
    assert_eq!(deleted.0, 200, "{:?}", deleted.1);
    srv.finish().await;
}

async fn create_room(srv: &TestServer, token: &str, body: Value) -> String {
    let created = srv
        .post_json("/_matrix/client/v3/createRoom", Some(token), &body)
        .await;
    assert_eq!(created.0, 200, "{:?}", created.1);
    created.1["room_id"].as_str().expect("room id").to_owned()
}

async fn guests_read_and_join_only_where_rooms_let_them(backend: Backend) {
    let srv = TestServer::start_with(&backend, |c| c.registration.guest_access = true).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let room = create_room(
        &srv,
        &alice,
        json!({"preset": "public_chat", "initial_state": [{
            "type": "m.room.history_visibility", "state_key": "",
            "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    let r = |rest: &str| format!("/_matrix/client/v3/rooms/{room}/{rest}");
    srv.put_json(
        &r("send/m.room.message/1"),
        Some(&alice),
        &json!({"body": "hi"}),
    )
    .await;

    // Guests need no password and no UIA, and get numeric ids.
    let guest = srv
        .post_json("/_matrix/client/v3/register?kind=guest", None, &json!({}))
        .await;
    assert_eq!(guest.0, 200, "{:?}", guest.1);
    let guest_id = guest.1["user_id"].as_str().expect("user id").to_owned();
    assert!(
        guest_id[1..]
            .split(':')
            .next()
            .expect("localpart")
            .bytes()
            .all(|b| b.is_ascii_digit())
    );
    let guest = token(&guest.1);

    // A world-readable room can be read without joining…
    let peek = srv.get(&r("initialSync"), Some(&guest)).await;
    assert_eq!(peek.0, 200, "{:?}", peek.1);
    assert!(
        peek.1["messages"]["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .any(|e| e["content"]["body"] == "hi"),
        "{:?}",
        peek.1
    );
    // …but not joined until its guest access says so.
    let join = format!("/_matrix/client/v3/join/{room}");
    let refused = srv.post_json(&join, Some(&guest), &json!({})).await;
    assert_error(&refused, 403, "M_GUEST_ACCESS_FORBIDDEN");
    srv.put_json(
        &r("state/m.room.guest_access"),
        Some(&alice),
        &json!({"guest_access": "can_join"}),
    )
    .await;
    assert_eq!(srv.post_json(&join, Some(&guest), &json!({})).await.0, 200);
    let sent = srv
        .put_json(
            &r("send/m.room.message/2"),
            Some(&guest),
            &json!({"body": "guest here"}),
        )
        .await;
    assert_eq!(sent.0, 200, "{:?}", sent.1);
    let named = srv
        .put_json(
            &format!("/_matrix/client/v3/profile/{guest_id}/displayname"),
            Some(&guest),
            &json!({"displayname": "Visitor"}),
        )
        .await;
    assert_eq!(named.0, 200, "{:?}", named.1);

    // What guests may not do.
    let refused = [
        srv.get("/_matrix/client/v3/events?timeout=30000", Some(&guest))
            .await,
        srv.post_json("/_matrix/client/v3/createRoom", Some(&guest), &json!({}))
            .await,
        srv.get("/_matrix/client/v3/devices", Some(&guest)).await,
        srv.post_json(
            &r("invite"),
            Some(&guest),
            &json!({"user_id": "@alice:localhost"}),
        )
        .await,
    ];
    for response in &refused {
        assert_error(response, 403, "M_GUEST_ACCESS_FORBIDDEN");
    }

    // Revoking guest access removes the guests.
    srv.put_json(
        &r("state/m.room.guest_access"),
        Some(&alice),
        &json!({"guest_access": "forbidden"}),
    )
    .await;
    let member = srv
        .get(&r(&format!("state/m.room.member/{guest_id}")), Some(&alice))
        .await;
    assert_eq!(member.1["membership"], "leave", "{:?}", member.1);
    srv.finish().await;

    // Off by default.
    let srv = TestServer::start(&Backend::Sqlite).await;
    let refused = srv
        .post_json("/_matrix/client/v3/register?kind=guest", None, &json!({}))
        .await;
    assert_error(&refused, 403, "M_GUEST_ACCESS_FORBIDDEN");
    srv.finish().await;
}

async fn legacy_endpoints_still_answer(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let room = create_room(
        &srv,
        &alice,
        json!({"name": "Old school", "preset": "private_chat"}),
    )
    .await;
    let r = |rest: &str| format!("/_matrix/client/v3/rooms/{room}/{rest}");

    // Element Web asks a room it has not joined for its initialSync and offers to join on 403.
    assert_error(
        &srv.get(&r("initialSync"), Some(&bob)).await,
        403,
        "M_FORBIDDEN",
    );

    // `/events` from now waits for the next event; a send without a transaction id is one.
    let now = srv
        .get("/_matrix/client/v3/events?timeout=0", Some(&alice))
        .await;
    assert_eq!(now.0, 200, "{:?}", now.1);
    assert_eq!(now.1["chunk"], json!([]), "{:?}", now.1);
    let from = now.1["end"].as_str().expect("end").to_owned();
    let sent = srv
        .post_json(
            &r("send/m.room.message"),
            Some(&alice),
            &json!({"body": "no txn"}),
        )
        .await;
    assert_eq!(sent.0, 200, "{:?}", sent.1);
    let again = srv
        .post_json(
            &r("send/m.room.message"),
            Some(&alice),
            &json!({"body": "no txn"}),
        )
        .await;
    assert_ne!(
        sent.1["event_id"], again.1["event_id"],
        "each untransacted send is an event"
    );
    let events = srv
        .get(
            &format!("/_matrix/client/r0/events?from={from}&timeout=5000"),
            Some(&alice),
        )
        .await;
    assert_eq!(events.0, 200, "{:?}", events.1);
    let chunk = events.1["chunk"].as_array().expect("chunk");
    assert!(
        chunk
            .iter()
            .any(|e| e["event_id"] == sent.1["event_id"] && e["room_id"] == room),
        "{chunk:?}"
    );

    // Following a room one is not in is refused at once; a bad limit is 400.
    assert_error(
        &srv.get(
            &format!("/_matrix/client/v3/events?room_id={room}&timeout=30000"),
            Some(&bob),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &srv.get(
            "/_matrix/client/v3/events?limit=abc&timeout=0",
            Some(&alice),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );

    // `/initialSync` and the room's: messages, current state, membership.
    let initial = srv
        .get("/_matrix/client/v3/initialSync?limit=5", Some(&alice))
        .await;
    assert_eq!(initial.0, 200, "{:?}", initial.1);
    let entry = initial.1["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|e| e["room_id"] == room)
        .expect("the room")
        .clone();
    assert_eq!(entry["membership"], "join");
    assert!(
        entry["state"]
            .as_array()
            .expect("state")
            .iter()
            .any(|e| e["type"] == "m.room.name")
    );
    assert!(entry["messages"]["chunk"].as_array().expect("chunk").len() <= 5);
    let own = srv.get(&r("initialSync"), Some(&alice)).await;
    // The v1 event shape: the sender also as `user_id` (clients key members by it).
    let mine = own.1["state"]
        .as_array()
        .expect("state")
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == "@alice:localhost")
        .cloned()
        .expect("own member event");
    assert_eq!(mine["user_id"], "@alice:localhost", "{mine}");
    // Room tags come as they are stored (no `room_id` added); push rules stay out of the
    // account data (they have their own endpoint), and a receipt never moves back.
    let tagged = srv
        .put_json(
            &format!("/_matrix/client/v3/user/@alice:localhost/rooms/{room}/tags/u.old"),
            Some(&alice),
            &json!({}),
        )
        .await;
    assert_eq!(tagged.0, 200);
    let first = own.1["messages"]["chunk"][0]["event_id"]
        .as_str()
        .expect("an early event")
        .to_owned();
    for event in [again.1["event_id"].as_str().expect("id"), first.as_str()] {
        let receipt = srv
            .post_json(
                &r(&format!("receipt/m.read/{event}")),
                Some(&alice),
                &json!({}),
            )
            .await;
        assert_eq!(receipt.0, 200, "{:?}", receipt.1);
    }
    let initial = srv
        .get("/_matrix/client/v3/initialSync?limit=6", Some(&alice))
        .await;
    assert!(
        initial.1["account_data"]
            .as_array()
            .expect("account data")
            .iter()
            .all(|e| e["type"] != "m.push_rules"),
        "{:?}",
        initial.1["account_data"]
    );
    let entry = initial.1["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|e| e["room_id"] == room)
        .expect("the room")
        .clone();
    let tags = entry["account_data"]
        .as_array()
        .expect("account data")
        .iter()
        .find(|e| e["type"] == "m.tag")
        .cloned()
        .expect("tags");
    assert!(tags.get("room_id").is_none(), "{tags}");
    let receipt = initial.1["receipts"]
        .as_array()
        .expect("receipts")
        .iter()
        .find(|e| e["room_id"] == room)
        .cloned()
        .expect("receipt");
    assert!(
        receipt["content"][again.1["event_id"].as_str().expect("id")]["m.read"]["@alice:localhost"]
            .is_object(),
        "the later receipt stays: {receipt}"
    );
    assert_eq!(own.0, 200, "{:?}", own.1);
    assert_eq!(own.1["membership"], "join");
    assert!(
        own.1["state"]
            .as_array()
            .expect("state")
            .iter()
            .any(|e| e["type"] == "m.room.create")
    );

    // Typing without a timeout; members with both profile fields, null when unset.
    let typing = srv
        .put_json(
            &r("typing/@alice:localhost"),
            Some(&alice),
            &json!({"typing": true}),
        )
        .await;
    assert_eq!(typing.0, 200, "{:?}", typing.1);
    let members = srv.get(&r("joined_members"), Some(&alice)).await;
    let me = &members.1["joined"]["@alice:localhost"];
    assert!(
        me.as_object().expect("member").contains_key("avatar_url"),
        "{members:?}"
    );
    assert_error(
        &srv.get(&r("joined_members"), Some(&bob)).await,
        403,
        "M_FORBIDDEN",
    );
    srv.finish().await;
}

async fn widgets_and_settings_get_honest_answers(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    // OpenID: the token a widget hands its backend, exchanged for the user's id.
    let issued = srv
        .post_json(
            "/_matrix/client/v3/user/@alice:localhost/openid/request_token",
            Some(&alice),
            &json!({}),
        )
        .await;
    assert_eq!(issued.0, 200, "{:?}", issued.1);
    assert_eq!(issued.1["token_type"], "Bearer");
    let openid = issued.1["access_token"].as_str().expect("token");
    let info = srv
        .get(
            &format!("/_matrix/federation/v1/openid/userinfo?access_token={openid}"),
            None,
        )
        .await;
    assert_eq!(info.1, json!({"sub": "@alice:localhost"}));
    assert_error(
        &srv.get(
            "/_matrix/federation/v1/openid/userinfo?access_token=nope",
            None,
        )
        .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &srv.post_json(
            "/_matrix/client/v3/user/@bob:localhost/openid/request_token",
            Some(&alice),
            &json!({}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    // Third-party ids: none, and adding one is refused with the reason.
    let listed = srv
        .get("/_matrix/client/v3/account/3pid", Some(&alice))
        .await;
    assert_eq!(listed.1, json!({"threepids": []}));
    let added = srv
        .post_json(
            "/_matrix/client/v3/account/3pid/add",
            Some(&alice),
            &json!({"sid": "x", "client_secret": "y"}),
        )
        .await;
    assert_error(&added, 403, "M_THREEPID_DENIED");
    // Key backups keep what the client sent, whatever its JSON type (as Synapse does).
    let created = srv
        .post_json(
            "/_matrix/client/v3/room_keys/version",
            Some(&alice),
            &json!({"algorithm": "m.megolm_backup.v1", "auth_data": "anopaquestring"}),
        )
        .await;
    assert_eq!(created.0, 200, "{:?}", created.1);
    let version = created.1["version"].as_str().expect("version").to_owned();
    let key = json!({"first_message_index": 3, "forwarded_count": 0,
        "is_verified": false, "session_data": "anopaquestring"});
    let put = srv
        .put_json(
            &format!("/_matrix/client/v3/room_keys/keys/!abcd:localhost/1234?version={version}"),
            Some(&alice),
            &key,
        )
        .await;
    assert_eq!(put.0, 200, "{:?}", put.1);
    let got = srv
        .get(
            &format!("/_matrix/client/v3/room_keys/keys/!abcd:localhost/1234?version={version}"),
            Some(&alice),
        )
        .await;
    assert_eq!(got.1["session_data"], "anopaquestring", "{:?}", got.1);
    assert_eq!(
        srv.get("/_matrix/client/v3/room_keys/version", Some(&alice))
            .await
            .1["auth_data"],
        "anopaquestring"
    );
    assert_eq!(
        srv.get("/_matrix/client/v3/thirdparty/protocols", Some(&alice))
            .await
            .1,
        json!({})
    );
    srv.finish().await;
}

async fn sync_filters_shape_every_section(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let room = create_room(
        &srv,
        &alice,
        json!({"preset": "public_chat", "name": "Named"}),
    )
    .await;
    let r = |rest: &str| format!("/_matrix/client/v3/rooms/{room}/{rest}");
    srv.put_json(
        &r("state/a.madeup.test.state"),
        Some(&alice),
        &json!({"my_key": 1}),
    )
    .await;
    // `timeline.limit: 0`: the room's state, no timeline; later events still bring the room
    // back in an incremental sync, as a limited timeline.
    let zero = json!({"room": {"state": {"types": ["m.room.name"]}, "timeline": {"limit": 0}}});
    let zero: String = url::form_urlencoded::byte_serialize(zero.to_string().as_bytes()).collect();
    let (status, bare) = srv
        .get(
            &format!("/_matrix/client/v3/sync?filter={zero}"),
            Some(&alice),
        )
        .await;
    assert_eq!(status, 200, "{bare}");
    let joined = &bare["rooms"]["join"][room.as_str()];
    assert_eq!(joined["timeline"]["events"], json!([]), "{joined}");
    assert_eq!(joined["timeline"]["limited"], true, "{joined}");
    // `event_format: federation`: timeline events as PDUs, with their ids beside.
    let pdus = json!({"event_format": "federation", "room": {"timeline": {"limit": 1}}});
    let pdus: String = url::form_urlencoded::byte_serialize(pdus.to_string().as_bytes()).collect();
    let (_, raw) = srv
        .get(
            &format!("/_matrix/client/v3/sync?filter={pdus}"),
            Some(&alice),
        )
        .await;
    let pdu = &raw["rooms"]["join"][room.as_str()]["timeline"]["events"][0];
    for key in [
        "event_id",
        "room_id",
        "prev_events",
        "auth_events",
        "depth",
        "hashes",
        "signatures",
    ] {
        assert!(pdu.get(key).is_some(), "{key} in {pdu}");
    }
    // Every section present even when empty (SyTest and client schemas look for them).
    assert_eq!(joined["ephemeral"]["events"], json!([]), "{joined}");
    assert!(joined["account_data"]["events"].is_array(), "{joined}");
    let state = joined["state"]["events"].as_array().expect("state");
    assert_eq!(state.len(), 1, "{state:?}");
    assert_eq!(state[0]["type"], "m.room.name");
    let since = bare["next_batch"].as_str().expect("token").to_owned();
    srv.put_json(
        &r("state/m.room.name"),
        Some(&alice),
        &json!({"name": "Renamed"}),
    )
    .await;
    let (_, next) = srv
        .get(
            &format!("/_matrix/client/v3/sync?filter={zero}&since={since}&timeout=0"),
            Some(&alice),
        )
        .await;
    let joined = &next["rooms"]["join"][room.as_str()];
    assert_eq!(joined["timeline"]["limited"], true, "{next}");
    assert_eq!(
        joined["state"]["events"][0]["content"]["name"], "Renamed",
        "{next}"
    );

    let filter = json!({
        "room": {
            "timeline": {"types": ["a.madeup.test.state"]},
            "state": {"types": ["a.madeup.test.state"]},
            "ephemeral": {"types": []},
        },
        "presence": {"types": []},
    });
    let encoded: String =
        url::form_urlencoded::byte_serialize(filter.to_string().as_bytes()).collect();
    let sync = srv
        .get(
            &format!("/_matrix/client/v3/sync?filter={encoded}"),
            Some(&alice),
        )
        .await;
    assert_eq!(sync.0, 200, "{:?}", sync.1);
    let joined = &sync.1["rooms"]["join"][&room];
    // The state event is in the timeline, so not in the state section; other types are
    // filtered out of both.
    assert_eq!(joined["state"]["events"], json!([]), "{joined}");
    let timeline = joined["timeline"]["events"].as_array().expect("timeline");
    assert_eq!(timeline.len(), 1, "{joined}");
    assert_eq!(timeline[0]["type"], "a.madeup.test.state");
    assert_eq!(joined["timeline"]["limited"], json!(false), "{joined}");
    assert_eq!(sync.1["presence"]["events"], json!([]));

    // A room with a name has no heroes; a nameless one is named by its members.
    srv.post_json(
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        &json!({}),
    )
    .await;
    let nameless = create_room(&srv, &alice, json!({"preset": "public_chat"})).await;
    srv.post_json(
        &format!("/_matrix/client/v3/join/{nameless}"),
        Some(&bob),
        &json!({}),
    )
    .await;
    let sync = srv.get("/_matrix/client/v3/sync", Some(&alice)).await;
    let rooms = &sync.1["rooms"]["join"];
    assert!(
        rooms[&room]["summary"].get("m.heroes").is_none(),
        "{}",
        rooms[&room]
    );
    assert_eq!(
        rooms[&nameless]["summary"]["m.heroes"],
        json!(["@bob:localhost"])
    );
    assert_eq!(rooms[&nameless]["timeline"]["limited"], json!(false));
    // A full-state sync with nothing new still says where to paginate back from.
    let since = sync.1["next_batch"].as_str().expect("next_batch");
    let full = srv
        .get(
            &format!("/_matrix/client/v3/sync?since={since}&full_state=true"),
            Some(&alice),
        )
        .await;
    let timeline = &full.1["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["events"], json!([]), "{timeline}");
    assert!(
        timeline["prev_batch"]
            .as_str()
            .is_some_and(|t| t.starts_with('t')),
        "{timeline}"
    );

    // A left room carries its state and timeline sections, even when empty.
    let since = sync.1["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    srv.post_json(
        &format!("/_matrix/client/v3/rooms/{nameless}/leave"),
        Some(&bob),
        &json!({}),
    )
    .await;
    let sync = srv
        .get(
            &format!("/_matrix/client/v3/sync?since={since}&timeout=5000"),
            Some(&bob),
        )
        .await;
    let left = &sync.1["rooms"]["leave"][&nameless];
    assert!(left["state"]["events"].is_array(), "{left}");
    assert!(left["timeline"]["limited"].is_boolean(), "{left}");
    srv.finish().await;
}

async fn user_directory_lists_only_people_one_may_find(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let carol = token(&srv.register("carol", "pw carol 1").await);
    let search = |who: String| {
        let srv = &srv;
        async move {
            let found = srv
                .post_json(
                    "/_matrix/client/v3/user_directory/search",
                    Some(&who),
                    &json!({"search_term": "carol"}),
                )
                .await;
            assert_eq!(found.0, 200, "{:?}", found.1);
            found.1["results"]
                .as_array()
                .expect("results")
                .iter()
                .any(|u| u["user_id"] == "@carol:localhost")
        }
    };
    // Carol is only in a private room with Alice: Alice finds her, Bob does not.
    let private = create_room(&srv, &alice, json!({"preset": "private_chat"})).await;
    srv.post_json(
        &format!("/_matrix/client/v3/rooms/{private}/invite"),
        Some(&alice),
        &json!({"user_id": "@carol:localhost"}),
    )
    .await;
    srv.post_json(
        &format!("/_matrix/client/v3/join/{private}"),
        Some(&carol),
        &json!({}),
    )
    .await;
    assert!(search(alice.clone()).await);
    assert!(
        !search(bob.clone()).await,
        "a private room's member is listed to strangers"
    );
    // Nor does she find herself: only a public room lists her, to her as to anyone.
    assert!(!search(carol.clone()).await);
    // In a public room, anyone finds her; once she leaves it, strangers no longer do.
    let public = create_room(&srv, &alice, json!({"preset": "public_chat"})).await;
    let r = |rest: &str| format!("/_matrix/client/v3/rooms/{public}/{rest}");
    srv.post_json(
        &format!("/_matrix/client/v3/join/{public}"),
        Some(&carol),
        &json!({}),
    )
    .await;
    assert!(search(bob.clone()).await);
    assert!(search(carol.clone()).await);
    // A room turned private stops listing her; made world-readable, it lists her again.
    srv.put_json(
        &r("state/m.room.join_rules"),
        Some(&alice),
        &json!({"join_rule": "invite"}),
    )
    .await;
    assert!(!search(bob.clone()).await);
    srv.put_json(
        &r("state/m.room.history_visibility"),
        Some(&alice),
        &json!({"history_visibility": "world_readable"}),
    )
    .await;
    assert!(search(bob.clone()).await);
    srv.put_json(
        &r("state/m.room.join_rules"),
        Some(&alice),
        &json!({"join_rule": "public"}),
    )
    .await;
    srv.post_json(&r("leave"), Some(&carol), &json!({})).await;
    assert!(!search(bob.clone()).await);
    srv.finish().await;
}

async fn new_devices_reach_everyones_device_lists(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let room = create_room(&srv, &alice, json!({"preset": "public_chat"})).await;
    srv.post_json(
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        &json!({}),
    )
    .await;
    let next = |v: &Value| v["next_batch"].as_str().expect("next_batch").to_owned();
    let alice_since = next(&srv.get("/_matrix/client/v3/sync", Some(&alice)).await.1);
    let bob_since = next(&srv.get("/_matrix/client/v3/sync", Some(&bob)).await.1);
    // Bob signs in on a second device: Alice's client and Bob's first one hear of it.
    srv.login("bob", "pw bob 1").await;
    for (who, since) in [(&alice, alice_since), (&bob, bob_since)] {
        let sync = srv
            .get(
                &format!("/_matrix/client/v3/sync?since={since}&timeout=5000"),
                Some(who),
            )
            .await;
        let changed = sync.1["device_lists"]["changed"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(changed.contains(&json!("@bob:localhost")), "{:?}", sync.1);
    }
    srv.finish().await;
}

async fn deleting_an_alias_takes_it_out_of_the_canonical_alias(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let room = create_room(
        &srv,
        &alice,
        json!({"preset": "public_chat", "room_alias_name": "lobby"}),
    )
    .await;
    let state = format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias");
    assert_eq!(
        srv.get(&state, Some(&alice)).await.1["alias"],
        "#lobby:localhost"
    );
    for (alt, errcode) in [
        ("%lobby:localhost", "M_INVALID_PARAM"),
        ("#nowhere:localhost", "M_BAD_ALIAS"),
    ] {
        let content = json!({"alias": "#lobby:localhost", "alt_aliases": [alt]});
        let refused = srv.put_json(&state, Some(&alice), &content).await;
        assert_error(&refused, 400, errcode);
    }
    let deleted = srv
        .request(
            reqwest::Method::DELETE,
            "/_matrix/client/v3/directory/room/%23lobby:localhost",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(deleted.0, 200, "{:?}", deleted.1);
    let after = srv.get(&state, Some(&alice)).await;
    assert!(after.1.get("alias").is_none(), "{:?}", after.1);
    srv.finish().await;
}

async fn ignored_users_are_not_heard(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let room = create_room(&srv, &alice, json!({"preset": "public_chat"})).await;
    srv.post_json(
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        &json!({}),
    )
    .await;
    let ignored = srv
        .put_json(
            "/_matrix/client/v3/user/@alice:localhost/account_data/m.ignored_user_list",
            Some(&alice),
            &json!({"ignored_users": {"@bob:localhost": {}}}),
        )
        .await;
    assert_eq!(ignored.0, 200, "{:?}", ignored.1);
    for (who, body) in [(&bob, "from bob"), (&alice, "from alice")] {
        srv.put_json(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{body}"),
            Some(who),
            &json!({"msgtype": "m.text", "body": body}),
        )
        .await;
    }
    let other = create_room(&srv, &bob, json!({"invite": ["@alice:localhost"]})).await;
    let sync = srv.get("/_matrix/client/v3/sync", Some(&alice)).await;
    let bodies: Vec<&Value> = sync.1["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| &e["content"]["body"])
        .collect();
    assert!(bodies.contains(&&json!("from alice")), "{bodies:?}");
    assert!(!bodies.contains(&&json!("from bob")), "{bodies:?}");
    assert!(
        sync.1["rooms"]["invite"].get(&other).is_none(),
        "{:?}",
        sync.1["rooms"]
    );
    srv.finish().await;
}

/// A join's body beyond `reason` goes into the member event, as on Synapse (SyTest, and
/// clients that tag joins); the keys the server sets stay the server's.
async fn joins_keep_the_content_they_carry(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let (_, room) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            &json!({"preset": "public_chat", "room_alias_name": "carried"}),
        )
        .await;
    let room = room["room_id"].as_str().expect("room").to_owned();
    let member = |who: &'static str| {
        let srv = &srv;
        let room = room.clone();
        let alice = alice.clone();
        async move {
            srv.get(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{who}"),
                Some(&alice),
            )
            .await
            .1
        }
    };
    for (path, body) in [
        (
            format!("/_matrix/client/v3/join/{room}"),
            json!({"foo": "bar", "reason": "curious", "membership": "ban", "displayname": "Mallory"}),
        ),
        (
            "/_matrix/client/v3/join/%23carried:localhost".to_owned(),
            json!({"foo": "baz"}),
        ),
        (
            format!("/_matrix/client/v3/rooms/{room}/join"),
            json!({"foo": {"nested": true}}),
        ),
    ] {
        let joined = srv.post_json(&path, Some(&bob), &body).await;
        assert_eq!(joined.0, 200, "{path}: {:?}", joined.1);
        let content = member("@bob:localhost").await;
        assert_eq!(content["foo"], body["foo"], "{path}: {content}");
        assert_eq!(content["membership"], "join", "{content}");
        assert_eq!(
            content["displayname"], "bob",
            "the profile's name: {content}"
        );
    }
    // A reason of the wrong type is refused as before, and changes nothing.
    assert_error(
        &srv.post_json(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&bob),
            &json!({"reason": 5, "foo": "changed"}),
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    assert_eq!(
        member("@bob:localhost").await["foo"],
        json!({"nested": true})
    );
    srv.finish().await;
}

/// A guest registers for real with its guest token and keeps its id (Synapse's
/// `guest_access_token`); no guest upgrades another, and a full account is no guest token.
async fn guests_upgrade_to_full_accounts(backend: Backend) {
    let srv = TestServer::start_with(&backend, |c| c.registration.guest_access = true).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let room = create_room(&srv, &alice, json!({"preset": "private_chat"})).await;
    let guest = || async {
        let (status, body) = srv
            .post_json("/_matrix/client/v3/register?kind=guest", None, &json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
        (
            body["user_id"].as_str().expect("id").to_owned(),
            token(&body),
        )
    };
    let (guest_id, guest_token) = guest().await;
    let (other_id, _) = guest().await;
    let localpart = |id: &str| id[1..].split(':').next().expect("localpart").to_owned();
    let upgrade = |name: String, guest: String, auth: Option<Value>| {
        let srv = &srv;
        async move {
            let mut body = json!({
                "username": name, "password": "a guest no more 1", "guest_access_token": guest,
            });
            if let Some(auth) = auth {
                body["auth"] = auth;
            }
            srv.post_json("/_matrix/client/v3/register", None, &body)
                .await
        }
    };

    // Refusals first, and nothing changes: another guest's name, a full account's token.
    assert_error(
        &upgrade(localpart(&other_id), guest_token.clone(), None).await,
        400,
        "M_USER_IN_USE",
    );
    assert_error(
        &upgrade("alice".to_owned(), alice.clone(), None).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &upgrade(localpart(&guest_id), "not a token".to_owned(), None).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(
        &srv.post_json(
            "/_matrix/client/v3/createRoom",
            Some(&guest_token),
            &json!({}),
        )
        .await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );

    // UIA as for any registration (a dummy stage without a session, as SyTest sends it).
    let challenge = upgrade(localpart(&guest_id), guest_token.clone(), None).await;
    assert_eq!(challenge.0, 401, "{:?}", challenge.1);
    let (status, upgraded) = upgrade(
        localpart(&guest_id),
        guest_token.clone(),
        Some(json!({"type": "m.login.dummy"})),
    )
    .await;
    assert_eq!(status, 200, "{upgraded}");
    assert_eq!(upgraded["user_id"], guest_id.as_str(), "the id stays");
    let full = token(&upgraded);
    // A full account now: it may create rooms and be invited to private ones, and log in.
    assert_eq!(
        srv.post_json("/_matrix/client/v3/createRoom", Some(&full), &json!({}))
            .await
            .0,
        200
    );
    let invited = srv
        .post_json(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&alice),
            &json!({"user_id": guest_id}),
        )
        .await;
    assert_eq!(invited.0, 200, "{:?}", invited.1);
    let joined = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&full),
            &json!({}),
        )
        .await;
    assert_eq!(joined.0, 200, "{:?}", joined.1);
    let login = srv.login(&guest_id, "a guest no more 1").await;
    assert_eq!(login["user_id"], guest_id.as_str());
    // Upgrading twice is refused: it is no guest any more.
    assert_error(
        &upgrade(localpart(&guest_id), full, None).await,
        403,
        "M_FORBIDDEN",
    );
    srv.finish().await;
}

/// Someone who joins a room is heard of once by the members (their presence, changed or not),
/// and the joiner hears of everyone there; the legacy `initialSync`s carry presence too, with
/// `content.user_id`.
async fn presence_reaches_new_room_mates(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let room = create_room(&srv, &alice, json!({"preset": "public_chat"})).await;
    // Both online (a sync sets it) before either token: no presence *change* is left for
    // the syncs below to report. Strangers to each other.
    for who in [&alice, &bob] {
        srv.get("/_matrix/client/v3/sync?set_presence=online", Some(who))
            .await;
    }
    let (_, first) = srv.get("/_matrix/client/v3/sync", Some(&alice)).await;
    let since = first["next_batch"].as_str().expect("token").to_owned();
    let (_, bob_first) = srv.get("/_matrix/client/v3/sync", Some(&bob)).await;
    let bob_since = bob_first["next_batch"].as_str().expect("token").to_owned();
    let senders = |sync: &Value| -> Vec<String> {
        sync["presence"]["events"]
            .as_array()
            .expect("presence")
            .iter()
            .map(|e| e["sender"].as_str().expect("sender").to_owned())
            .collect()
    };
    assert!(!senders(&bob_first).contains(&"@alice:localhost".to_owned()));

    let joined = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&bob),
            &json!({}),
        )
        .await;
    assert_eq!(joined.0, 200);
    let (_, next) = srv
        .get(
            &format!("/_matrix/client/v3/sync?since={since}&timeout=0"),
            Some(&alice),
        )
        .await;
    let heard = next["presence"]["events"]
        .as_array()
        .expect("presence")
        .iter()
        .find(|e| e["sender"] == "@bob:localhost")
        .cloned()
        .unwrap_or_else(|| panic!("alice hears of bob: {next}"));
    assert_eq!(heard["content"]["presence"], "online");
    assert!(heard["content"]["last_active_ago"].is_u64(), "{heard}");
    let (_, bob_next) = srv
        .get(
            &format!("/_matrix/client/v3/sync?since={bob_since}&timeout=0"),
            Some(&bob),
        )
        .await;
    assert!(
        senders(&bob_next).contains(&"@alice:localhost".to_owned()),
        "bob hears of the room's members: {bob_next}"
    );
    // Once: the next sync has nothing new about bob.
    let later = next["next_batch"].as_str().expect("token");
    let (_, after) = srv
        .get(
            &format!("/_matrix/client/v3/sync?since={later}&timeout=0"),
            Some(&alice),
        )
        .await;
    assert!(
        !senders(&after).contains(&"@bob:localhost".to_owned()),
        "{after}"
    );

    for path in [
        format!("/_matrix/client/v3/rooms/{room}/initialSync"),
        "/_matrix/client/v3/initialSync".to_owned(),
    ] {
        let (status, initial) = srv.get(&path, Some(&bob)).await;
        assert_eq!(status, 200, "{path}: {initial}");
        let users: Vec<&str> = initial["presence"]
            .as_array()
            .expect("presence")
            .iter()
            .map(|e| e["content"]["user_id"].as_str().expect("user_id"))
            .collect();
        assert!(users.contains(&"@alice:localhost"), "{path}: {initial}");
        assert!(users.contains(&"@bob:localhost"), "{path}: {initial}");
    }
    // Carol never syncs: the room lists her offline; her own initialSync makes her online.
    let carol = token(&srv.register("carol", "pw carol 1").await);
    let joined = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&carol),
            &json!({}),
        )
        .await;
    assert_eq!(joined.0, 200);
    let presence_of = |body: &Value, who: &str| {
        body["presence"]
            .as_array()
            .expect("presence")
            .iter()
            .find(|e| e["content"]["user_id"] == who)
            .cloned()
    };
    let (_, room_view) = srv
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/initialSync"),
            Some(&bob),
        )
        .await;
    assert_eq!(
        presence_of(&room_view, "@carol:localhost").expect("carol")["content"]["presence"],
        "offline"
    );
    let (_, own) = srv
        .get("/_matrix/client/v3/initialSync", Some(&carol))
        .await;
    let mine = presence_of(&own, "@carol:localhost").expect("own presence");
    assert_eq!(mine["content"]["presence"], "online", "{mine}");
    assert!(mine["content"]["last_active_ago"].is_u64(), "{mine}");
    srv.finish().await;
}

/// A room joined since the last sync says its timeline is limited (it is not the room's
/// history since then); a room joined and left since the last sync comes with all its state.
async fn rooms_joined_or_left_since_the_last_sync(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let room = create_room(&srv, &alice, json!({"preset": "public_chat"})).await;
    let r = |rest: &str| format!("/_matrix/client/v3/rooms/{room}/{rest}");
    srv.put_json(
        &r("state/a.madeup.test.state"),
        Some(&alice),
        &json!({"my_key": 1}),
    )
    .await;
    srv.put_json(
        &r("send/m.room.message/1"),
        Some(&alice),
        &json!({"body": "one"}),
    )
    .await;
    let sync = |since: Option<&str>, filter: &Value| {
        let srv = &srv;
        let bob = bob.clone();
        let filter: String =
            url::form_urlencoded::byte_serialize(filter.to_string().as_bytes()).collect();
        let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
        async move {
            let (status, body) = srv
                .get(
                    &format!("/_matrix/client/v3/sync?timeout=0&filter={filter}{since}"),
                    Some(&bob),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let plain = json!({});
    let first = sync(None, &plain).await;
    let since = first["next_batch"].as_str().expect("token").to_owned();
    let join = |token: &str| {
        let srv = &srv;
        let path = format!("/_matrix/client/v3/join/{room}");
        let token = token.to_owned();
        async move { srv.post_json(&path, Some(&token), &json!({})).await.0 }
    };
    assert_eq!(join(&bob).await, 200);
    let next = sync(Some(&since), &plain).await;
    let joined = &next["rooms"]["join"][room.as_str()];
    assert_eq!(joined["timeline"]["limited"], true, "{joined}");

    // Left again, then joined and left within one batch: the whole state comes with it.
    let left = srv.post_json(&r("leave"), Some(&bob), &json!({})).await;
    assert_eq!(left.0, 200);
    let quiet = json!({"room": {"timeline": {"types": []}, "state": {"types": ["a.madeup.test.state"]},
        "include_leave": true}});
    let before = sync(None, &quiet).await;
    let since = before["next_batch"].as_str().expect("token").to_owned();
    assert_eq!(join(&bob).await, 200);
    assert_eq!(
        srv.post_json(&r("leave"), Some(&bob), &json!({})).await.0,
        200
    );
    let after = sync(Some(&since), &quiet).await;
    let state = after["rooms"]["leave"][room.as_str()]["state"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(state.len(), 1, "{after}");
    assert_eq!(state[0]["type"], "a.madeup.test.state");

    // History visible to joined members only: carol joins while bob is away; when bob comes
    // back, her join (current state) is in his timeline although it was sent in his absence.
    let carol = token(&srv.register("carol", "pw carol 1").await);
    srv.put_json(
        &r("state/m.room.history_visibility"),
        Some(&alice),
        &json!({"history_visibility": "joined"}),
    )
    .await;
    let away = sync(None, &plain).await;
    let since = away["next_batch"].as_str().expect("token").to_owned();
    assert_eq!(join(&carol).await, 200);
    srv.put_json(
        &r("send/m.room.message/2"),
        Some(&alice),
        &json!({"body": "unseen"}),
    )
    .await;
    assert_eq!(join(&bob).await, 200);
    let back = sync(Some(&since), &plain).await;
    let timeline = back["rooms"]["join"][room.as_str()]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        timeline.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == "@carol:localhost"
            && e["content"]["membership"] == "join"),
        "{timeline:?}"
    );
    assert!(
        !timeline.iter().any(|e| e["content"]["body"] == "unseen"),
        "history stays hidden: {timeline:?}"
    );
    srv.finish().await;
}

/// Peeking: `/events?room_id=` of a world-readable room follows it without joining, for
/// users and guests, woken by the room's events; other rooms stay 403.
async fn world_readable_rooms_can_be_followed_without_joining(backend: Backend) {
    let srv = TestServer::start_with(&backend, |c| c.registration.guest_access = true).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    let (_, guest) = srv
        .post_json("/_matrix/client/v3/register?kind=guest", None, &json!({}))
        .await;
    let guest = token(&guest);
    let room = create_room(
        &srv,
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility",
            "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    let r = |rest: &str| format!("/_matrix/client/v3/rooms/{room}/{rest}");
    for peeker in [&bob, &guest] {
        // Where to start: the room's initialSync, which non-members may read here.
        let (status, initial) = srv.get(&r("initialSync"), Some(peeker)).await;
        assert_eq!(status, 200, "{initial}");
        let from = initial["messages"]["end"].as_str().expect("end").to_owned();
        let (status, caught_up) = srv
            .get(
                &format!("/_matrix/client/v3/events?room_id={room}&from={from}&timeout=0"),
                Some(peeker),
            )
            .await;
        assert_eq!(status, 200, "{caught_up}");
        let from = caught_up["end"].as_str().expect("end").to_owned();
        let path = format!("/_matrix/client/v3/events?room_id={room}&from={from}&timeout=10000");
        let txn = format!("peek-{}", &peeker[peeker.len() - 6..]);
        let (peeked, sent) = tokio::join!(srv.get(&path, Some(peeker)), async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            srv.put_json(
                &r(&format!("send/m.room.message/{txn}")),
                Some(&alice),
                &json!({"msgtype": "m.text", "body": "for all to see"}),
            )
            .await
        });
        assert_eq!(sent.0, 200);
        assert_eq!(peeked.0, 200, "{:?}", peeked.1);
        let chunk = peeked.1["chunk"].as_array().expect("chunk");
        assert!(
            chunk.iter().any(|e| e["event_id"] == sent.1["event_id"]),
            "woken by the room's event: {chunk:?}"
        );
        assert_ne!(peeked.1["end"], json!(from));
        // The members' presence changes come through the peek too.
        let from = peeked.1["end"].as_str().expect("end").to_owned();
        let path = format!("/_matrix/client/v3/events?room_id={room}&from={from}&timeout=10000");
        let status_msg = format!("busy {txn}");
        let (peeked, set) = tokio::join!(srv.get(&path, Some(peeker)), async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            srv.put_json(
                "/_matrix/client/v3/presence/@alice:localhost/status",
                Some(&alice),
                &json!({"presence": "online", "status_msg": status_msg}),
            )
            .await
        });
        assert_eq!(set.0, 200, "{:?}", set.1);
        let presence = peeked.1["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .find(|e| e["type"] == "m.presence")
            .cloned()
            .unwrap_or_else(|| panic!("presence: {:?}", peeked.1));
        assert_eq!(presence["content"]["user_id"], "@alice:localhost");
        assert_eq!(presence["content"]["status_msg"], json!(status_msg));
        // And its receipts and typing, each once.
        let message = sent.1["event_id"].as_str().expect("event id").to_owned();
        let mut end = peeked.1["end"].as_str().expect("end").to_owned();
        for kind in ["m.receipt", "m.typing"] {
            let from = end.clone();
            let path =
                format!("/_matrix/client/v3/events?room_id={room}&from={from}&timeout=10000");
            let (next, changed) = tokio::join!(srv.get(&path, Some(peeker)), async {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                if kind == "m.receipt" {
                    srv.post_json(
                        &r(&format!("receipt/m.read/{message}")),
                        Some(&alice),
                        &json!({}),
                    )
                    .await
                } else {
                    srv.put_json(
                        &r("typing/@alice:localhost"),
                        Some(&alice),
                        &json!({"typing": true, "timeout": 30000}),
                    )
                    .await
                }
            });
            assert_eq!(changed.0, 200, "{:?}", changed.1);
            let found: Vec<&Value> = next.1["chunk"]
                .as_array()
                .expect("chunk")
                .iter()
                .filter(|e| e["type"] == kind)
                .collect();
            assert_eq!(found.len(), 1, "{kind}: {:?}", next.1);
            assert_eq!(found[0]["room_id"], json!(room));
            if kind == "m.receipt" {
                assert!(found[0]["content"][&message]["m.read"]["@alice:localhost"].is_object());
            } else {
                assert_eq!(found[0]["content"]["user_ids"], json!(["@alice:localhost"]));
            }
            end = next.1["end"].as_str().expect("end").to_owned();
            let path = format!("/_matrix/client/v3/events?room_id={room}&from={end}&timeout=0");
            let (_, again) = srv.get(&path, Some(peeker)).await;
            assert_eq!(again["chunk"], json!([]), "told once: {again}");
        }
        let stopped = srv
            .put_json(
                &r("typing/@alice:localhost"),
                Some(&alice),
                &json!({"typing": false}),
            )
            .await;
        assert_eq!(stopped.0, 200);
    }
    // Someone who left sees the room as it was: no presence of its members now.
    let joined = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&bob),
            &json!({}),
        )
        .await;
    assert_eq!(joined.0, 200);
    assert_eq!(
        srv.post_json(&r("leave"), Some(&bob), &json!({})).await.0,
        200
    );
    let (status, departed) = srv.get(&r("initialSync"), Some(&bob)).await;
    assert_eq!(status, 200, "{departed}");
    assert_eq!(departed["presence"], json!([]), "{departed}");
    // Not world-readable: 403 at once, for both.
    let private = create_room(&srv, &alice, json!({"preset": "public_chat"})).await;
    for peeker in [&bob, &guest] {
        assert_error(
            &srv.get(
                &format!("/_matrix/client/v3/events?room_id={private}&timeout=30000"),
                Some(peeker),
            )
            .await,
            403,
            "M_FORBIDDEN",
        );
    }
    srv.finish().await;
}

/// `/context` with `lazy_load_members`: only the member events of the senders it returns.
async fn context_lazy_loads_members(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let room = create_room(&srv, &alice, json!({"preset": "public_chat"})).await;
    for who in ["bob", "carol"] {
        let t = token(&srv.register(who, "pw other 1").await);
        let joined = srv
            .post_json(
                &format!("/_matrix/client/v3/join/{room}"),
                Some(&t),
                &json!({}),
            )
            .await;
        assert_eq!(joined.0, 200);
    }
    let (_, sent) = srv
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/c1"),
            Some(&alice),
            &json!({"msgtype": "m.text", "body": "context"}),
        )
        .await;
    let event = sent["event_id"].as_str().expect("event id");
    let members = |filter: Option<Value>| {
        let srv = &srv;
        let alice = alice.clone();
        let mut path = format!("/_matrix/client/v3/rooms/{room}/context/{event}?limit=0");
        if let Some(filter) = filter {
            let encoded: String =
                url::form_urlencoded::byte_serialize(filter.to_string().as_bytes()).collect();
            path.push_str(&format!("&filter={encoded}"));
        }
        async move {
            let (status, body) = srv.get(&path, Some(&alice)).await;
            assert_eq!(status, 200, "{body}");
            let mut keys: Vec<String> = body["state"]
                .as_array()
                .expect("state")
                .iter()
                .filter(|e| e["type"] == "m.room.member")
                .map(|e| e["state_key"].as_str().expect("key").to_owned())
                .collect();
            keys.sort();
            keys
        }
    };
    assert_eq!(members(None).await.len(), 3);
    assert_eq!(
        members(Some(json!({"lazy_load_members": true}))).await,
        ["@alice:localhost"]
    );

    // /messages applies its filter, and lazy loading adds the senders' members (as the
    // state before the page's first event has them).
    let page = |filter: Value| {
        let encoded: String =
            url::form_urlencoded::byte_serialize(filter.to_string().as_bytes()).collect();
        let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&filter={encoded}");
        let (srv, alice) = (&srv, alice.clone());
        async move {
            let (status, body) = srv.get(&path, Some(&alice)).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let messages = page(json!({"types": ["m.room.message"], "lazy_load_members": true})).await;
    let chunk = messages["chunk"].as_array().expect("chunk");
    assert_eq!(chunk.len(), 1, "only the message: {messages}");
    let state = messages["state"].as_array().expect("state");
    assert_eq!(state.len(), 1, "{messages}");
    assert_eq!(state[0]["state_key"], "@alice:localhost");
    assert_eq!(state[0]["content"]["membership"], "join");
    let members_only =
        page(json!({"types": ["m.room.member"], "not_senders": ["@bob:localhost"]})).await;
    let joined: Vec<&str> = members_only["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|e| e["state_key"].as_str().expect("key"))
        .collect();
    assert_eq!(joined, ["@carol:localhost", "@alice:localhost"]);
    assert!(
        members_only
            .get("state")
            .is_none_or(|s| s.as_array().is_some_and(Vec::is_empty))
    );

    // A whole room in an initial sync pages back from the sync's position (as Synapse):
    // the page is the timeline again, and the next one is the end.
    let (_, synced) = srv.get("/_matrix/client/v3/sync", Some(&alice)).await;
    let timeline = &synced["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["limited"], false, "{timeline}");
    let prev = timeline["prev_batch"].as_str().expect("prev_batch");
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from={prev}&limit=50");
    let (_, back) = srv.get(&path, Some(&alice)).await;
    let ids = |events: &Value| -> Vec<String> {
        let mut ids: Vec<String> = events
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["event_id"].as_str().expect("id").to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&back["chunk"]), ids(&timeline["events"]));
    let end = back["end"]
        .as_str()
        .expect("a page with events says where to go on");
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from={end}");
    let (_, last) = srv.get(&path, Some(&alice)).await;
    assert_eq!(last["chunk"], json!([]));
    assert!(last.get("end").is_none(), "{last}");
    srv.finish().await;
}

/// `default_room_version` (Synapse's key): rooms created without a version get it, and
/// `/capabilities` announces it.
async fn the_default_room_version_is_configurable(backend: Backend) {
    let srv = TestServer::start_with(&backend, |c| c.default_room_version = "10".to_owned()).await;
    let token = srv.register("alice", "version password").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (_, caps) = srv
        .get("/_matrix/client/v3/capabilities", Some(&token))
        .await;
    assert_eq!(
        caps["capabilities"]["m.room_versions"]["default"], "10",
        "{caps}"
    );
    let (status, room) = srv
        .post_json("/_matrix/client/v3/createRoom", Some(&token), &json!({}))
        .await;
    assert_eq!(status, 200, "{room}");
    let room_id = room["room_id"].as_str().expect("room");
    let (_, create) = srv
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.create/"),
            Some(&token),
        )
        .await;
    assert_eq!(create["room_version"], "10", "{create}");
    assert_eq!(
        create["creator"], "@alice:localhost",
        "version 10 names its creator"
    );
    srv.finish().await;
}

/// What a gap or an absence would hide is still shown: a gapped lazy-loading sync carries
/// every membership change of the gap (not only the timeline's senders'), later syncs do
/// not repeat the user's own member event, and a rejoin after a busy absence reads further
/// back for the state changes the history visibility lets through (as Synapse).
async fn gaps_and_absences_do_not_hide_membership(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let users: Vec<String> = {
        let mut users = Vec::new();
        for who in ["bob", "carol", "dave"] {
            users.push(token(&srv.register(who, "pw other 1").await));
        }
        users
    };
    let (bob, carol, dave) = (&users[0], &users[1], &users[2]);
    let room = create_room(&srv, &alice, json!({"preset": "public_chat"})).await;
    let r = |rest: &str| format!("/_matrix/client/v3/rooms/{room}/{rest}");
    let join = |t: &str| {
        let (srv, path, t) = (
            &srv,
            format!("/_matrix/client/v3/join/{room}"),
            t.to_owned(),
        );
        async move { assert_eq!(srv.post_json(&path, Some(&t), &json!({})).await.0, 200) }
    };
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let say = |t: &str, n: usize| {
        let (srv, t, sent) = (&srv, t.to_owned(), &sent);
        let base = r("send/m.room.message");
        async move {
            for _ in 0..n {
                let txn = format!(
                    "t{}",
                    sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                );
                let sent = srv
                    .put_json(
                        &format!("{base}/{txn}"),
                        Some(&t),
                        &json!({"msgtype": "m.text", "body": "filler"}),
                    )
                    .await;
                assert_eq!(sent.0, 200);
            }
        }
    };
    join(bob).await;
    join(carol).await;
    // The first sync's timeline is bob's: carol's join is not in it.
    say(bob, 5).await;
    let filter = json!({"room": {"state": {"lazy_load_members": true}, "timeline": {"limit": 5}}});
    let filter: String =
        url::form_urlencoded::byte_serialize(filter.to_string().as_bytes()).collect();
    let sync = |since: Option<&str>| {
        let path = match since {
            Some(since) => format!("/_matrix/client/v3/sync?filter={filter}&since={since}"),
            None => format!("/_matrix/client/v3/sync?filter={filter}"),
        };
        let (srv, alice) = (&srv, alice.clone());
        async move {
            let (status, body) = srv.get(&path, Some(&alice)).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let members = |body: &Value| -> Vec<String> {
        let mut keys: Vec<String> = body["rooms"]["join"][&room]["state"]["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e["type"] == "m.room.member")
                    .map(|e| e["state_key"].as_str().expect("key").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    };
    let first = sync(None).await;
    assert_eq!(
        members(&first),
        ["@alice:localhost", "@bob:localhost"],
        "{first}"
    );
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();
    // dave joins and says nothing; carol talks past the timeline's limit.
    join(dave).await;
    say(carol, 8).await;
    let gapped = sync(Some(&since)).await;
    assert_eq!(gapped["rooms"]["join"][&room]["timeline"]["limited"], true);
    assert_eq!(
        members(&gapped),
        ["@carol:localhost", "@dave:localhost"],
        "{gapped}"
    );
    // Not gapped: dave speaks, and alice's own member event is not sent again; neither is
    // dave's, which this client has.
    let since = gapped["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    say(dave, 1).await;
    let quiet = sync(Some(&since)).await;
    assert_eq!(quiet["rooms"]["join"][&room]["timeline"]["limited"], false);
    assert_eq!(members(&quiet), Vec::<String>::new(), "{quiet}");
    // Asked for redundant members: the senders' again, still not alice's own.
    let since = quiet["next_batch"].as_str().expect("next_batch").to_owned();
    say(dave, 1).await;
    let redundant = json!({"room": {"state": {"lazy_load_members": true,
        "include_redundant_members": true}, "timeline": {"limit": 5}}});
    let redundant: String =
        url::form_urlencoded::byte_serialize(redundant.to_string().as_bytes()).collect();
    let (_, again) = srv
        .get(
            &format!("/_matrix/client/v3/sync?filter={redundant}&since={since}"),
            Some(&alice),
        )
        .await;
    assert_eq!(members(&again), ["@dave:localhost"], "{again}");

    // bob leaves a members-only room, dave joins it while bob is away and the room is busy;
    // bob's rejoin still shows dave's join.
    let private = create_room(
        &srv,
        &alice,
        json!({"preset": "public_chat", "initial_state": [
        {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    let p = |rest: &str| format!("/_matrix/client/v3/rooms/{private}/{rest}");
    let join_private = |t: &str| {
        let (srv, path, t) = (
            &srv,
            format!("/_matrix/client/v3/join/{private}"),
            t.to_owned(),
        );
        async move { assert_eq!(srv.post_json(&path, Some(&t), &json!({})).await.0, 200) }
    };
    join_private(bob).await;
    let (_, bob_first) = srv.get("/_matrix/client/v3/sync", Some(bob)).await;
    let bob_since = bob_first["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    assert_eq!(
        srv.post_json(&p("leave"), Some(bob), &json!({})).await.0,
        200
    );
    join_private(dave).await;
    for i in 0..25 {
        let sent = srv
            .put_json(
                &p(&format!("send/m.room.message/busy{i}")),
                Some(&alice),
                &json!({"msgtype": "m.text", "body": "while bob is away"}),
            )
            .await;
        assert_eq!(sent.0, 200);
    }
    join_private(bob).await;
    let small = json!({"room": {"timeline": {"limit": 10}}});
    let small: String =
        url::form_urlencoded::byte_serialize(small.to_string().as_bytes()).collect();
    let (_, rejoined) = srv
        .get(
            &format!("/_matrix/client/v3/sync?filter={small}&since={bob_since}"),
            Some(bob),
        )
        .await;
    let timeline = rejoined["rooms"]["join"][&private]["timeline"]["events"]
        .as_array()
        .expect("timeline")
        .clone();
    assert!(
        timeline.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == "@dave:localhost"
            && e["content"]["membership"] == "join"),
        "dave's join: {timeline:?}"
    );
    assert!(
        !timeline
            .iter()
            .any(|e| e["content"]["body"] == "while bob is away"),
        "messages of the absence stay hidden"
    );
    srv.finish().await;
}
