//! What matrix-rust-sdk's own real-server tests found: invites that name their inviter, room
//! previews for people not (yet) in the room, rooms nobody is left in, and declined invites
//! that are forgotten at once. Each with matrix-sdk and with raw HTTP.

use matrix_sdk::{
    Client,
    config::SyncSettings,
    room_preview::RoomPreview,
    ruma::{OwnedRoomId, RoomAliasId, RoomId, RoomOrAliasId, room::JoinRuleSummary},
};
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(
    invites_name_the_inviter,
    rooms_preview_to_those_who_may_see_them,
    rooms_nobody_is_left_in_cannot_be_joined,
    a_declined_and_forgotten_invite_still_syncs_its_leave,
    a_deleted_alias_no_longer_finds_or_names_the_room,
);

fn token(v: &Value) -> String {
    v["access_token"].as_str().expect("token").to_owned()
}

async fn sdk_login(srv: &TestServer, user: &str) -> Client {
    srv.register(user, "preview password").await;
    let client = srv.client().await;
    client
        .matrix_auth()
        .login_username(user, "preview password")
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

async fn invites_name_the_inviter(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = sdk_login(&srv, "alice").await;
    let bob = sdk_login(&srv, "bob").await;
    alice
        .account()
        .set_display_name(Some("Alice A."))
        .await
        .expect("display name");
    let alice_token = alice.access_token().expect("token");
    let room_id = create(
        &srv,
        &alice_token,
        json!({"name": "Invited", "invite": ["@bob:localhost"]}),
    )
    .await;

    // matrix-sdk: the invite says who sent it, with the inviter's profile.
    bob.sync_once(SyncSettings::default())
        .await
        .expect("bob syncs");
    let invited = bob.get_room(&room_id).expect("bob sees the invite");
    let details = invited.invite_details().await.expect("invite details");
    assert_eq!(details.inviter_id.as_str(), "@alice:localhost");
    let inviter = details
        .inviter
        .expect("the inviter's member event is there");
    assert_eq!(inviter.display_name(), Some("Alice A."));

    // Raw: the inviter's stripped member event is in invite_state, next to the invitee's.
    let bob_token = bob.access_token().expect("token");
    let (_, sync) = srv.get("/_matrix/client/v3/sync", Some(&bob_token)).await;
    let events = sync["rooms"]["invite"][room_id.as_str()]["invite_state"]["events"]
        .as_array()
        .expect("invite state")
        .clone();
    let member = |who: &str| {
        events
            .iter()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == who)
            .cloned()
    };
    let inviter = member("@alice:localhost").expect("inviter's member event");
    assert_eq!(inviter["content"]["membership"], "join");
    assert_eq!(inviter["sender"], "@alice:localhost");
    assert!(
        inviter.get("event_id").is_none(),
        "stripped, as the rest: {inviter}"
    );
    assert_eq!(
        member("@bob:localhost").expect("own invite")["content"]["membership"],
        "invite"
    );
    // A knock is its own: no second member event rides along.
    let carol = token(&srv.register("carol", "preview password").await);
    let knockable = create(
        &srv,
        &alice_token,
        json!({"initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]}),
    )
    .await;
    let knocked = srv
        .post_json(
            &format!("/_matrix/client/v3/knock/{knockable}"),
            Some(&carol),
            &json!({}),
        )
        .await;
    assert_eq!(knocked.0, 200, "{:?}", knocked.1);
    let (_, sync) = srv.get("/_matrix/client/v3/sync", Some(&carol)).await;
    let members: Vec<&Value> = sync["rooms"]["knock"][knockable.as_str()]["knock_state"]["events"]
        .as_array()
        .expect("knock state")
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .collect();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0]["state_key"], "@carol:localhost");
    srv.finish().await;
}

async fn rooms_preview_to_those_who_may_see_them(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "preview password").await);
    let bob = sdk_login(&srv, "bob").await;
    let bob_token = bob.access_token().expect("token");
    let open = create(
        &srv,
        &alice,
        json!({
            "preset": "public_chat", "name": "Town square", "topic": "Anyone may look",
            "room_alias_name": "square",
            "initial_state": [
                {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}},
                {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            ],
        }),
    )
    .await;

    // matrix-sdk, not in the room: the summary endpoint, by alias…
    let alias = <&RoomOrAliasId>::try_from("#square:localhost").expect("alias");
    let preview = RoomPreview::from_room_summary(&bob, open.clone(), alias, vec![])
        .await
        .expect("summary preview");
    assert_eq!(preview.name.as_deref(), Some("Town square"));
    assert_eq!(preview.topic.as_deref(), Some("Anyone may look"));
    assert_eq!(
        preview.canonical_alias.as_ref().map(|a| a.as_str()),
        Some("#square:localhost")
    );
    assert_eq!(preview.num_joined_members, 1);
    assert_eq!(preview.join_rule, Some(JoinRuleSummary::Public));
    assert_eq!(preview.is_world_readable, Some(true));
    assert_eq!(preview.state, None, "bob has never been there");
    // …and the state endpoints a client falls back on: world-readable, so joined_members too.
    let preview = RoomPreview::from_state_events(&bob, &open)
        .await
        .expect("state preview");
    assert_eq!(preview.name.as_deref(), Some("Town square"));
    assert_eq!(preview.num_joined_members, 1);

    // Raw: every field, on the stable and the unstable path, signed in and not.
    let (status, summary) = srv
        .get(
            &format!("/_matrix/client/v1/room_summary/{open}"),
            Some(&bob_token),
        )
        .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["room_id"], open.as_str());
    assert_eq!(summary["membership"], "leave");
    assert_eq!(summary["encryption"], "m.megolm.v1.aes-sha2");
    assert_eq!(summary["room_version"], "11");
    assert_eq!(summary["guest_can_join"], false);
    // ruma leaves out the spec's default, `public` (clients read it as public).
    assert!(
        summary.get("join_rule").is_none_or(|rule| rule == "public"),
        "{summary}"
    );
    let (status, anonymous) = srv
        .get(
            "/_matrix/client/unstable/im.nheko.summary/rooms/%23square:localhost/summary",
            None,
        )
        .await;
    assert_eq!(status, 200, "{anonymous}");
    assert_eq!(anonymous["name"], "Town square");
    assert!(anonymous.get("membership").is_none(), "{anonymous}");

    // A private room: nothing to see, for the anonymous, for bob, nor by its member list; it
    // answers as a room that does not exist.
    let private = create(&srv, &alice, json!({"name": "Back office"})).await;
    let summary_path = format!("/_matrix/client/v1/room_summary/{private}");
    assert_error(&srv.get(&summary_path, None).await, 404, "M_NOT_FOUND");
    let refused = srv.get(&summary_path, Some(&bob_token)).await;
    assert_error(&refused, 404, "M_NOT_FOUND");
    assert_error(
        &srv.get(
            "/_matrix/client/v1/room_summary/!nowhere:localhost",
            Some(&bob_token),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &srv.get(
            &format!("/_matrix/client/v3/rooms/{private}/joined_members"),
            Some(&bob_token),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    let private_alias = <&RoomOrAliasId>::from(&*private);
    assert!(
        RoomPreview::from_room_summary(&bob, private.clone(), private_alias, vec![])
            .await
            .is_err()
    );
    // Invited, bob may look (and learns he is invited).
    let invited = srv
        .post_json(
            &format!("/_matrix/client/v3/rooms/{private}/invite"),
            Some(&alice),
            &json!({"user_id": "@bob:localhost"}),
        )
        .await;
    assert_eq!(invited.0, 200);
    let (status, summary) = srv.get(&summary_path, Some(&bob_token)).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["membership"], "invite");
    assert_eq!(summary["join_rule"], "invite");
    assert_eq!(summary["name"], "Back office");

    // A restricted room previews to members of the rooms it names, and no one else.
    let restricted = create(
        &srv,
        &alice,
        json!({"initial_state": [{"type": "m.room.join_rules", "content": {
            "join_rule": "restricted",
            "allow": [{"type": "m.room_membership", "room_id": open}],
        }}]}),
    )
    .await;
    let path = format!("/_matrix/client/v1/room_summary/{restricted}");
    assert_error(&srv.get(&path, Some(&bob_token)).await, 404, "M_NOT_FOUND");
    let joined = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{open}"),
            Some(&bob_token),
            &json!({}),
        )
        .await;
    assert_eq!(joined.0, 200);
    let (status, summary) = srv.get(&path, Some(&bob_token)).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["join_rule"], "restricted");
    assert_eq!(summary["allowed_room_ids"], json!([open.as_str()]));

    // Bad input: not a room id or alias; an alias nobody holds.
    assert_error(
        &srv.get("/_matrix/client/v1/room_summary/square", Some(&bob_token))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &srv.get(
            "/_matrix/client/v1/room_summary/%23nobody:localhost",
            Some(&bob_token),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    srv.finish().await;
}

async fn rooms_nobody_is_left_in_cannot_be_joined(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "preview password").await);
    let bob = sdk_login(&srv, "bob").await;
    let room = create(&srv, &alice, json!({"preset": "public_chat"})).await;
    let left = srv
        .post_json(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&alice),
            &json!({}),
        )
        .await;
    assert_eq!(left.0, 200);

    // matrix-sdk and raw HTTP: 404, as on Synapse, and bob is not in the room afterwards.
    let err = bob.join_room_by_id(&room).await.expect_err("refused");
    assert_eq!(
        err.as_client_api_error().map(|e| e.status_code.as_u16()),
        Some(404),
        "{err}"
    );
    let bob_token = bob.access_token().expect("token");
    assert_error(
        &srv.post_json(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&bob_token),
            &json!({}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &srv.get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@bob:localhost"),
            Some(&alice),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    // Nor may its last member come back: nobody is there to let them in.
    assert_error(
        &srv.post_json(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&alice),
            &json!({}),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    srv.finish().await;
}

async fn a_declined_and_forgotten_invite_still_syncs_its_leave(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "preview password").await);
    let bob = sdk_login(&srv, "bob").await;
    let bob_token = bob.access_token().expect("token");
    let room = create(&srv, &alice, json!({"invite": ["@bob:localhost"]})).await;

    let (_, first) = srv.get("/_matrix/client/v3/sync", Some(&bob_token)).await;
    assert!(first["rooms"]["invite"].get(room.as_str()).is_some());
    let since = first["next_batch"].as_str().expect("token").to_owned();

    // matrix-sdk declines and forgets, as Element does with "Decline".
    bob.sync_once(SyncSettings::default())
        .await
        .expect("bob syncs");
    let invited = bob.get_room(&room).expect("invite");
    invited.leave().await.expect("decline");
    invited.forget().await.expect("forget");

    // The next sync from before the decline still reports the leave, once.
    let (status, next) = srv
        .get(
            &format!("/_matrix/client/v3/sync?since={since}&timeout=0"),
            Some(&bob_token),
        )
        .await;
    assert_eq!(status, 200, "{next}");
    let leave = &next["rooms"]["leave"][room.as_str()];
    let events = leave["timeline"]["events"].as_array().expect("timeline");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "leave"),
        "{leave}"
    );
    let later = next["next_batch"].as_str().expect("token");
    let (_, after) = srv
        .get(
            &format!("/_matrix/client/v3/sync?since={later}&timeout=0"),
            Some(&bob_token),
        )
        .await;
    assert!(
        after["rooms"]["leave"].get(room.as_str()).is_none(),
        "{after}"
    );
    // A fresh sync asking for left rooms does not bring a forgotten room back.
    let filter: String = url::form_urlencoded::byte_serialize(
        json!({"room": {"include_leave": true}})
            .to_string()
            .as_bytes(),
    )
    .collect();
    let (_, initial) = srv
        .get(
            &format!("/_matrix/client/v3/sync?filter={filter}"),
            Some(&bob_token),
        )
        .await;
    assert!(
        initial["rooms"]["leave"].get(room.as_str()).is_none(),
        "{initial}"
    );
    srv.finish().await;
}

/// matrix-sdk deletes an alias: it no longer resolves, and the room's canonical alias (what
/// previews and the directory show) no longer names it.
async fn a_deleted_alias_no_longer_finds_or_names_the_room(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = sdk_login(&srv, "alice").await;
    let bob = sdk_login(&srv, "bob").await;
    let token = alice.access_token().expect("token");
    let room = create(
        &srv,
        &token,
        json!({"preset": "public_chat", "room_alias_name": "hall"}),
    )
    .await;
    let alias = <&RoomAliasId>::try_from("#hall:localhost").expect("alias");
    assert_eq!(
        bob.resolve_room_alias(alias)
            .await
            .expect("resolves")
            .room_id,
        room
    );
    alice.remove_room_alias(alias).await.expect("alias removed");
    assert!(bob.resolve_room_alias(alias).await.is_err());
    let by_id = <&RoomOrAliasId>::from(&*room);
    let preview = RoomPreview::from_room_summary(&bob, room.clone(), by_id, vec![])
        .await
        .expect("preview");
    assert_eq!(preview.canonical_alias, None);
    let (_, state) = srv
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias"),
            Some(&token),
        )
        .await;
    assert!(state.get("alias").is_none(), "{state}");
    srv.finish().await;
}
