//! Registration policy: open, closed, tokens, names, guests, and Synapse's shared-secret API.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

use crate::harness::{Backend, SHARED_SECRET, TestServer, assert_error, both_backends};

both_backends!(
    registration_tokens_gate_registration,
    closed_registration_and_bad_names,
    shared_secret_registration_like_synapse,
    registrations_remember_their_parameters_and_replay,
);

async fn register_with_token(srv: &TestServer, username: &str, token: &str) -> (u16, Value) {
    let first = srv
        .post_json(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": username, "password": "pw-123456"}),
        )
        .await;
    assert_eq!(first.0, 401, "{:?}", first.1);
    assert_eq!(
        first.1["flows"],
        json!([{"stages": ["m.login.registration_token"]}])
    );
    let session = first.1["session"].as_str().expect("session");
    srv.post_json(
        "/_matrix/client/v3/register",
        None,
        &json!({"username": username, "password": "pw-123456",
            "auth": {"type": "m.login.registration_token", "token": token, "session": session}}),
    )
    .await
}

async fn registration_tokens_gate_registration(backend: Backend) {
    let srv = TestServer::start_with(&backend, |c| {
        c.registration.open = false;
        c.registration.tokens_required = true;
    })
    .await;
    let services = &srv.server.as_ref().expect("running").services;
    let token = services
        .create_registration_token(Some("one-use".to_owned()), Some(1), None)
        .await
        .expect("token");
    let validity = |t: &str| {
        format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={t}")
    };
    assert_eq!(
        srv.get(&validity(&token), None).await.1,
        json!({"valid": true})
    );
    assert_eq!(
        srv.get(&validity("unknown"), None).await.1,
        json!({"valid": false})
    );

    // A wrong token keeps the UIA session open and says why.
    let wrong = register_with_token(&srv, "gina", "unknown").await;
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong.1["errcode"], "M_FORBIDDEN");
    assert_eq!(
        srv.get("/_matrix/client/v3/register/available?username=gina", None)
            .await
            .1["available"],
        true
    );

    let ok = register_with_token(&srv, "gina", &token).await;
    assert_eq!(ok.0, 200, "{:?}", ok.1);
    assert_eq!(ok.1["user_id"], "@gina:localhost");

    // The single use is spent.
    assert_eq!(
        srv.get(&validity(&token), None).await.1,
        json!({"valid": false})
    );
    let spent = register_with_token(&srv, "hank", &token).await;
    assert_eq!(spent.0, 401);
    assert_eq!(spent.1["errcode"], "M_FORBIDDEN");
    assert_eq!(
        srv.get("/_matrix/client/v3/register/available?username=hank", None)
            .await
            .1["available"],
        true
    );
    // Dummy auth is not offered when tokens are required.
    let first = srv
        .post_json(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "ivy", "password": "x"}),
        )
        .await;
    let dummy = srv
        .post_json(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "ivy", "password": "x", "auth": {"type": "m.login.dummy", "session": first.1["session"]}}),
        )
        .await;
    assert_eq!(dummy.0, 401);
    assert_eq!(dummy.1["errcode"], "M_UNRECOGNIZED");

    // Expired tokens are invalid.
    let expiring = services
        .create_registration_token(None, None, Some(60))
        .await
        .expect("token");
    assert_eq!(
        srv.get(&validity(&expiring), None).await.1,
        json!({"valid": true})
    );
    srv.clock.advance(std::time::Duration::from_secs(61));
    assert_eq!(
        srv.get(&validity(&expiring), None).await.1,
        json!({"valid": false})
    );
    srv.finish().await;
}

async fn closed_registration_and_bad_names(backend: Backend) {
    let open = TestServer::start(&backend).await;
    open.register("jack", "jack password").await;
    let available = |name: &str| format!("/_matrix/client/v3/register/available?username={name}");
    assert_eq!(
        open.get(&available("kate"), None).await.1,
        json!({"available": true})
    );
    assert_error(
        &open.get(&available("jack"), None).await,
        400,
        "M_USER_IN_USE",
    );
    assert_error(
        &open.get(&available("Jack"), None).await,
        400,
        "M_INVALID_USERNAME",
    );
    assert_error(
        &open.get(&available("a%20b"), None).await,
        400,
        "M_INVALID_USERNAME",
    );
    assert_error(
        &open
            .get(
                &available("0x51a1449b3b6d635eddec781cd47a99221712de97"),
                None,
            )
            .await,
        400,
        "M_EXCLUSIVE",
    );
    assert_error(
        &open
            .get("/_matrix/client/v3/register/available", None)
            .await,
        400,
        "M_INVALID_PARAM",
    );
    // Taken names are refused before authentication starts.
    let taken = open
        .post_json(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "jack", "password": "x"}),
        )
        .await;
    assert_error(&taken, 400, "M_USER_IN_USE");
    // Guests are refused cleanly.
    let guest = open
        .post_json("/_matrix/client/v3/register?kind=guest", None, &json!({}))
        .await;
    assert_error(&guest, 403, "M_GUEST_ACCESS_FORBIDDEN");
    // Without a user name the server picks one; inhibit_login returns no token.
    let first = open
        .post_json(
            "/_matrix/client/v3/register",
            None,
            &json!({"inhibit_login": true}),
        )
        .await;
    let anon = open
        .post_json(
            "/_matrix/client/v3/register",
            None,
            &json!({"inhibit_login": true, "auth": {"type": "m.login.dummy", "session": first.1["session"]}}),
        )
        .await;
    assert_eq!(anon.0, 200, "{:?}", anon.1);
    assert!(
        anon.1["user_id"]
            .as_str()
            .expect("id")
            .ends_with(":localhost")
    );
    assert!(anon.1.get("access_token").is_none());
    // An unknown UIA session is refused.
    let unknown = open
        .post_json(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "lena", "auth": {"type": "m.login.dummy", "session": "nope"}}),
        )
        .await;
    assert_eq!(unknown.0, 400);
    open.finish().await;

    let closed = TestServer::start_with(&backend, |c| c.registration.open = false).await;
    let refused = closed
        .post_json(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "max", "password": "x"}),
        )
        .await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    closed.finish().await;
}

fn mac(nonce: &str, user: &str, password: &str, admin: bool, secret: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(
        format!(
            "{nonce}\0{user}\0{password}\0{}",
            if admin { "admin" } else { "notadmin" }
        )
        .as_bytes(),
    );
    hex::encode(mac.finalize().into_bytes())
}

async fn shared_secret_registration_like_synapse(backend: Backend) {
    let srv = TestServer::start_with(&backend, |c| c.registration.open = false).await;
    let path = "/_synapse/admin/v1/register";
    let nonce = srv.get(path, None).await.1["nonce"]
        .as_str()
        .expect("nonce")
        .to_owned();

    // A wrong MAC is refused and burns the nonce.
    let body = json!({"nonce": nonce, "username": "root", "password": "pw", "admin": true,
        "mac": mac(&nonce, "root", "pw", true, "wrong secret")});
    assert_error(&srv.post_json(path, None, &body).await, 403, "M_FORBIDDEN");
    let body = json!({"nonce": nonce, "username": "root", "password": "pw", "admin": true,
        "mac": mac(&nonce, "root", "pw", true, SHARED_SECRET)});
    assert_error(&srv.post_json(path, None, &body).await, 400, "M_UNKNOWN");

    // The MAC covers the admin flag: claiming admin with a notadmin MAC fails.
    let nonce = srv.get(path, None).await.1["nonce"]
        .as_str()
        .expect("nonce")
        .to_owned();
    let body = json!({"nonce": nonce, "username": "root", "password": "pw", "admin": true,
        "mac": mac(&nonce, "root", "pw", false, SHARED_SECRET)});
    assert_error(&srv.post_json(path, None, &body).await, 403, "M_FORBIDDEN");

    // A correct MAC creates the user, logged in.
    let nonce = srv.get(path, None).await.1["nonce"]
        .as_str()
        .expect("nonce")
        .to_owned();
    let body = json!({"nonce": nonce, "username": "root", "password": "pw", "admin": true,
        "mac": mac(&nonce, "root", "pw", true, SHARED_SECRET)});
    let created = srv.post_json(path, None, &body).await;
    assert_eq!(created.0, 200, "{:?}", created.1);
    assert_eq!(created.1["user_id"], "@root:localhost");
    assert_eq!(created.1["home_server"], "localhost");
    let whoami = srv
        .get(
            "/_matrix/client/v3/account/whoami",
            created.1["access_token"].as_str(),
        )
        .await;
    assert_eq!(whoami.1["user_id"], "@root:localhost");
    assert_eq!(whoami.1["device_id"], created.1["device_id"]);
    srv.login("root", "pw").await;
    let user = srv
        .server
        .as_ref()
        .expect("running")
        .services
        .store
        .user(matrix_sdk::ruma::user_id!("@root:localhost"))
        .await;
    assert!(user.expect("db").expect("row").is_admin);

    // Malformed bodies are Matrix errors.
    assert_error(
        &srv.request(reqwest::Method::POST, path, None, Some(b"{".to_vec()))
            .await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &srv.post_json(path, None, &json!({"nonce": "x"})).await,
        400,
        "M_BAD_JSON",
    );
    srv.finish().await;

    // Without a configured secret the endpoint says it is off.
    let off = TestServer::start_with(&backend, |c| c.registration.shared_secret = None).await;
    assert_error(&off.get(path, None).await, 400, "M_UNKNOWN");
    off.finish().await;
}

/// As on Synapse: a client may send a registration's parameters only with its first request
/// and finish with `auth` alone; replaying a completed registration's session signs in to the
/// account it made instead of failing (so a lost answer can be retried).
async fn registrations_remember_their_parameters_and_replay(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let register = |body: Value| {
        let srv = &srv;
        async move {
            srv.post_json("/_matrix/client/v3/register", None, &body)
                .await
        }
    };
    let first = register(json!({
        "username": "Remembered", "password": "übers3kr1t pw",
        "device_id": "XYZZY", "initial_device_display_name": "Phone",
    }))
    .await;
    assert_eq!(first.0, 401, "{:?}", first.1);
    let session = first.1["session"].as_str().expect("session").to_owned();
    let auth = json!({"auth": {"type": "m.login.dummy", "session": session}});
    let (status, done) = register(auth.clone()).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["user_id"], "@remembered:localhost");
    assert_eq!(done["device_id"], "XYZZY");
    let token = done["access_token"].as_str().expect("token").to_owned();
    let (_, device) = srv
        .get("/_matrix/client/v3/devices/XYZZY", Some(&token))
        .await;
    assert_eq!(device["display_name"], "Phone");
    // The remembered password is the account's (kept as its hash only).
    assert_eq!(
        srv.login("remembered", "übers3kr1t pw").await["user_id"],
        "@remembered:localhost"
    );

    // The same completed session again: the same account, signed in afresh.
    let (status, again) = register(auth).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["user_id"], "@remembered:localhost");
    let token = again["access_token"].as_str().expect("token");
    let (_, me) = srv
        .get("/_matrix/client/v3/account/whoami", Some(token))
        .await;
    assert_eq!(me["user_id"], "@remembered:localhost");

    // inhibit_login is remembered as well.
    let first =
        register(json!({"username": "quiet", "password": "quiet pw 1", "inhibit_login": true}))
            .await;
    let session = first.1["session"].as_str().expect("session");
    let (status, quiet) =
        register(json!({"auth": {"type": "m.login.dummy", "session": session}})).await;
    assert_eq!(status, 200, "{quiet}");
    assert_eq!(quiet["user_id"], "@quiet:localhost");
    assert!(quiet.get("access_token").is_none(), "{quiet}");
    assert!(quiet.get("device_id").is_none(), "{quiet}");

    // A session nobody started remembers nothing and makes no account.
    let (status, unknown) = register(json!({"auth": {
        "type": "m.login.dummy", "session": "NoSuchSessionAnywhere1234"}}))
    .await;
    assert_ne!(status, 200, "{unknown}");
    assert!(unknown.get("user_id").is_none(), "{unknown}");
    srv.finish().await;
}
