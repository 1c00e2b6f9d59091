//! Identity servers, with a real Sydent: a user validates an e-mail address there and binds
//! it through Matrixon, others invite the address (by `/invite` and in `createRoom`), and
//! removing the address or the account unbinds it (a request Sydent accepts only when signed
//! by the user's homeserver). Bad input is refused with the reason and changes nothing.

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    federation::federating_server,
    harness::{Backend, TestServer, assert_error, both_backends},
    sydent::Sydent,
};

/// A user's identity-server token: an OpenID token from Matrixon, which Sydent checks with
/// Matrixon over federation.
async fn identity_token(srv: &TestServer, sydent: &Sydent, user: &str, token: &str) -> String {
    let path = format!("/_matrix/client/v3/user/{user}/openid/request_token");
    let (status, openid) = srv.post_json(&path, Some(token), &json!({})).await;
    assert_eq!(status, 200, "{openid}");
    let (status, registered) = sydent
        .post("/_matrix/identity/v2/account/register", None, &openid)
        .await;
    assert_eq!(status, 200, "Sydent registers the user: {registered}");
    registered["token"].as_str().expect("token").to_owned()
}

/// Validates `email` with Sydent (its mail read from the sink): the session id and secret.
async fn validate(sydent: &Sydent, is_token: &str, email: &str) -> (String, String) {
    let secret = format!("secret{}", rand::random::<u32>());
    let (status, session) = sydent
        .post(
            "/_matrix/identity/v2/validate/email/requestToken",
            Some(is_token),
            &json!({ "client_secret": secret, "email": email, "send_attempt": 1 }),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let sid = session["sid"].as_str().expect("sid").to_owned();
    let mail = sydent.next_mail().await;
    let code = mail
        .lines()
        .find_map(|l| l.strip_prefix("Token: "))
        .expect("the mail states the token")
        .trim()
        .to_owned();
    let (status, done) = sydent
        .post(
            "/_matrix/identity/v2/validate/email/submitToken",
            Some(is_token),
            &json!({ "sid": sid, "client_secret": secret, "token": code }),
        )
        .await;
    assert_eq!((status, &done["success"]), (200, &json!(true)), "{done}");
    (sid, secret)
}

/// Who `email` is bound to on Sydent, by a hashed v2 lookup.
async fn lookup(sydent: &Sydent, is_token: &str, email: &str) -> Option<String> {
    let (_, details) = sydent
        .get("/_matrix/identity/v2/hash_details", is_token)
        .await;
    let pepper = details["lookup_pepper"].as_str().expect("pepper");
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(format!("{email} email {pepper}").as_bytes()));
    let (status, found) = sydent
        .post(
            "/_matrix/identity/v2/lookup",
            Some(is_token),
            &json!({ "addresses": [hash], "algorithm": "sha256", "pepper": pepper }),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    found["mappings"][&hash].as_str().map(str::to_owned)
}

async fn user(srv: &TestServer, localpart: &str) -> (String, String) {
    let registered = srv.register(localpart, "a long password").await;
    (
        registered["user_id"].as_str().expect("user id").to_owned(),
        registered["access_token"]
            .as_str()
            .expect("token")
            .to_owned(),
    )
}

async fn membership(srv: &TestServer, token: &str, room: &str, user: &str) -> (u16, Value) {
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}");
    srv.get(&path, Some(token)).await
}

async fn addresses_bound_on_sydent_are_invited_and_unbound(backend: Backend) {
    let Some(sydent) = Sydent::start().await else {
        return;
    };
    let srv = federating_server(&backend).await;
    let (alice, alice_token) = user(&srv, "alice").await;
    let (bob, bob_token) = user(&srv, "bob").await;
    let alice_is = identity_token(&srv, &sydent, &alice, &alice_token).await;
    let bob_is = identity_token(&srv, &sydent, &bob, &bob_token).await;
    let email = "alice@example.org";
    let (sid, secret) = validate(&sydent, &alice_is, email).await;

    // Bad binds change nothing: a wrong secret, a missing field, a malformed server name.
    let (srv_ref, alice_auth) = (&srv, alice_token.as_str());
    let bind = |body: Value| async move {
        srv_ref
            .post_json(
                "/_matrix/client/v3/account/3pid/bind",
                Some(alice_auth),
                &body,
            )
            .await
    };
    let good = json!({
        "id_server": sydent.name, "id_access_token": alice_is, "sid": sid, "client_secret": secret,
    });
    let mut wrong_secret = good.clone();
    wrong_secret["client_secret"] = json!("not the secret");
    let refused = bind(wrong_secret).await;
    assert_eq!(refused.0, 400, "{:?}", refused.1);
    let mut no_sid = good.clone();
    no_sid.as_object_mut().expect("object").remove("sid");
    assert_error(&bind(no_sid).await, 400, "M_MISSING_PARAM");
    let mut bad_server = good.clone();
    bad_server["id_server"] = json!("localhost/evil?x=");
    assert_error(&bind(bad_server).await, 400, "M_INVALID_PARAM");
    let mut unreachable = good.clone();
    unreachable["id_server"] = json!("127.0.0.1:1");
    assert_eq!(bind(unreachable).await.0, 502, "nobody listens there");
    assert_eq!(lookup(&sydent, &bob_is, email).await, None);

    // Bound: Sydent maps the address to alice.
    let (status, body) = bind(good.clone()).await;
    assert_eq!((status, &body), (200, &json!({})));
    assert_eq!(
        lookup(&sydent, &bob_is, email).await.as_deref(),
        Some(alice.as_str())
    );

    // bob invites the address (in another case: e-mail addresses are case-insensitive).
    let (status, room) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&bob_token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{room}");
    let room = room["room_id"].as_str().expect("room id").to_owned();
    let invite = |address: &str, token: &str| {
        json!({
            "id_server": sydent.name, "id_access_token": token,
            "medium": "email", "address": address,
        })
    };
    let path = format!("/_matrix/client/v3/rooms/{room}/invite");
    let unbound = srv
        .post_json(
            &path,
            Some(&bob_token),
            &invite("nobody@example.org", &bob_is),
        )
        .await;
    assert_error(&unbound, 404, "M_THREEPID_NOT_FOUND");
    let bad_token = srv
        .post_json(&path, Some(&bob_token), &invite(email, "not a token"))
        .await;
    assert_error(&bad_token, 403, "M_FORBIDDEN");
    assert_error(
        &membership(&srv, &bob_token, &room, &alice).await,
        404,
        "M_NOT_FOUND",
    );
    let (status, body) = srv
        .post_json(
            &path,
            Some(&bob_token),
            &invite("Alice@Example.org", &bob_is),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, member) = membership(&srv, &bob_token, &room, &alice).await;
    assert_eq!(member["membership"], "invite");

    // And in createRoom; an unbound address there creates no room.
    let rooms_before = srv
        .get("/_matrix/client/v3/joined_rooms", Some(&bob_token))
        .await
        .1["joined_rooms"]
        .clone();
    let refused = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&bob_token),
            &json!({ "invite_3pid": [invite("nobody@example.org", &bob_is)] }),
        )
        .await;
    assert_error(&refused, 404, "M_THREEPID_NOT_FOUND");
    let rooms_after = srv
        .get("/_matrix/client/v3/joined_rooms", Some(&bob_token))
        .await
        .1["joined_rooms"]
        .clone();
    assert_eq!(rooms_before, rooms_after, "no room was created");
    let (status, created) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&bob_token),
            &json!({ "invite_3pid": [invite(email, &bob_is)] }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let second = created["room_id"].as_str().expect("room id");
    let (_, member) = membership(&srv, &bob_token, second, &alice).await;
    assert_eq!(member["membership"], "invite");

    // Removing the address unbinds it on Sydent, which checks Matrixon's signature.
    let (status, removed) = srv
        .post_json(
            "/_matrix/client/v3/account/3pid/delete",
            Some(&alice_token),
            &json!({ "medium": "email", "address": email }),
        )
        .await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(
        removed["id_server_unbind_result"],
        "success",
        "{}",
        sydent.log_tail()
    );
    assert_eq!(lookup(&sydent, &bob_is, email).await, None);

    // Bound again, then the account is deactivated: the address leads to nobody.
    let (sid, secret) = validate(&sydent, &alice_is, email).await;
    let again = json!({
        "id_server": sydent.name, "id_access_token": alice_is, "sid": sid, "client_secret": secret,
    });
    assert_eq!(bind(again).await.0, 200);
    assert_eq!(
        lookup(&sydent, &bob_is, email).await.as_deref(),
        Some(alice.as_str())
    );
    let (status, body) = srv
        .post_with_password_uia(
            "/_matrix/client/v3/account/deactivate",
            &alice_token,
            json!({}),
            &alice,
            "a long password",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(lookup(&sydent, &bob_is, email).await, None);
    let _ = bob;
    srv.finish().await;
}

/// Identity-server requests are made on a user's behalf to a server the user names: they
/// share the user's `rate_limits.lookups_per_user` budget (429 once it is spent).
async fn identity_server_requests_are_rate_limited(backend: Backend) {
    let srv = TestServer::start_with(&backend, |config| {
        config.rate_limits.enabled = true;
        config.rate_limits.lookups_per_user.per_second = 0.001;
        config.rate_limits.lookups_per_user.burst = 2;
        config.federation.ip_range_allow = vec!["127.0.0.0/8".to_owned()];
    })
    .await;
    let (_, token) = user(&srv, "alice").await;
    let bind = json!({
        "id_server": "127.0.0.1:1", "id_access_token": "t", "sid": "s", "client_secret": "c",
    });
    for _ in 0..2 {
        let answer = srv
            .post_json("/_matrix/client/v3/account/3pid/bind", Some(&token), &bind)
            .await;
        assert_eq!(answer.0, 502, "nobody listens there: {:?}", answer.1);
    }
    let spent = srv
        .post_json("/_matrix/client/v3/account/3pid/bind", Some(&token), &bind)
        .await;
    assert_error(&spent, 429, "M_LIMIT_EXCEEDED");
    let (_, room) = srv
        .post_json("/_matrix/client/v3/createRoom", Some(&token), &json!({}))
        .await;
    let room = room["room_id"].as_str().expect("room");
    let invite = srv
        .post_json(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&token),
            &json!({"id_server": "127.0.0.1:1", "id_access_token": "t",
                "medium": "email", "address": "a@example.org"}),
        )
        .await;
    assert_error(&invite, 429, "M_LIMIT_EXCEEDED");
    srv.finish().await;
}

both_backends!(
    addresses_bound_on_sydent_are_invited_and_unbound,
    identity_server_requests_are_rate_limited
);
