//! Accounts and devices driven by a real Matrix client (matrix-sdk).

use matrix_sdk::ruma::{
    api::client::{
        account::register,
        uiaa::{AuthData, Dummy, MatrixUserIdentifier, Password, UserIdentifier},
    },
    api::error::ErrorKind,
};
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(
    sdk_register_login_and_manage_devices,
    change_password_then_deactivate,
    uia_sessions_stay_with_their_operation_and_user,
);

fn password_auth(user: &str, password: &str, session: Option<String>) -> AuthData {
    let mut auth = Password::new(
        UserIdentifier::Matrix(MatrixUserIdentifier::new(user.to_owned())),
        password.to_owned(),
    );
    auth.session = session;
    AuthData::Password(auth)
}

async fn sdk_register_login_and_manage_devices(backend: Backend) {
    let srv = TestServer::start(&backend).await;

    // Register through user-interactive auth, as a client does: first ask, then answer.
    let phone = srv.client().await;
    let mut request = register::v3::Request::new();
    request.username = Some("alice".to_owned());
    request.password = Some("correct horse".to_owned());
    request.initial_device_display_name = Some("Phone".to_owned());
    let err = phone
        .matrix_auth()
        .register(request.clone())
        .await
        .expect_err("UIA first");
    let uiaa = err.as_uiaa_response().expect("UIA response");
    assert_eq!(uiaa.flows.len(), 1);
    assert_eq!(uiaa.flows[0].stages[0].to_string(), "m.login.dummy");
    let mut dummy = Dummy::new();
    dummy.session = uiaa.session.clone();
    request.auth = Some(AuthData::Dummy(dummy));
    let registered = phone
        .matrix_auth()
        .register(request)
        .await
        .expect("registered");
    assert_eq!(registered.user_id.as_str(), "@alice:localhost");
    let phone_device = registered.device_id.expect("device");

    // Log in with the password on a second client.
    let laptop = srv.client().await;
    let login = laptop
        .matrix_auth()
        .login_username("alice", "correct horse")
        .initial_device_display_name("Laptop")
        .send()
        .await
        .expect("login");
    assert_eq!(login.user_id.as_str(), "@alice:localhost");
    assert_ne!(login.device_id, phone_device);
    let whoami = laptop.whoami().await.expect("whoami");
    assert_eq!(whoami.user_id.as_str(), "@alice:localhost");
    assert_eq!(whoami.device_id.as_deref(), Some(&*login.device_id));
    assert!(!whoami.is_guest);

    // A wrong password is refused.
    let other = srv.client().await;
    let err = other
        .matrix_auth()
        .login_username("alice", "wrong")
        .send()
        .await
        .expect_err("wrong password");
    assert_eq!(err.client_api_error_kind(), Some(&ErrorKind::Forbidden));

    // List and rename devices.
    let devices = laptop.devices().await.expect("devices").devices;
    assert_eq!(devices.len(), 2);
    let names: Vec<_> = devices
        .iter()
        .filter_map(|d| d.display_name.clone())
        .collect();
    assert!(names.contains(&"Laptop".to_owned()) && names.contains(&"Laptop".to_owned()));
    assert!(
        devices.iter().any(|d| d.last_seen_ts.is_some()),
        "last seen recorded"
    );
    laptop
        .rename_device(&phone_device, "Old phone")
        .await
        .expect("rename");
    let (status, device) = srv
        .get(
            &format!("/_matrix/client/v3/devices/{phone_device}"),
            laptop.access_token().as_deref(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(device["display_name"], "Old phone");

    // Deleting a device needs UIA with the account's password.
    let err = laptop
        .delete_devices(std::slice::from_ref(&phone_device), None)
        .await
        .expect_err("needs auth");
    let session = err.as_uiaa_response().expect("UIA").session.clone();
    let err = laptop
        .delete_devices(
            std::slice::from_ref(&phone_device),
            Some(password_auth("alice", "wrong", session.clone())),
        )
        .await
        .expect_err("wrong password");
    let info = err.as_uiaa_response().expect("UIA again");
    assert_eq!(
        info.auth_error.as_ref().map(|e| e.kind.clone()),
        Some(ErrorKind::Forbidden)
    );
    laptop
        .delete_devices(
            std::slice::from_ref(&phone_device),
            Some(password_auth("@alice:localhost", "correct horse", session)),
        )
        .await
        .expect("deleted");
    let devices = laptop.devices().await.expect("devices").devices;
    assert_eq!(devices.len(), 1);

    // The deleted device's token no longer works; the other device's still does.
    let gone = srv
        .get(
            "/_matrix/client/v3/account/whoami",
            phone.access_token().as_deref(),
        )
        .await;
    assert_error(&gone, 401, "M_UNKNOWN_TOKEN");
    assert_ne!(gone.1["soft_logout"], true);
    laptop.whoami().await.expect("laptop still logged in");

    // Unknown devices are 404.
    let missing = srv
        .get(
            "/_matrix/client/v3/devices/NOPE",
            laptop.access_token().as_deref(),
        )
        .await;
    assert_error(&missing, 404, "M_NOT_FOUND");
    let rename_missing = srv
        .request(
            reqwest::Method::PUT,
            "/_matrix/client/v3/devices/NOPE",
            laptop.access_token().as_deref(),
            Some(br#"{"display_name":"x"}"#.to_vec()),
        )
        .await;
    assert_error(&rename_missing, 404, "M_NOT_FOUND");
    srv.finish().await;
}

async fn change_password_then_deactivate(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("bob", "first password").await;
    let a = srv.login("bob", "first password").await;
    let b = srv.login("bob", "first password").await;
    let token_a = a["access_token"].as_str().expect("token");
    let token_b = b["access_token"].as_str().expect("token");

    // Password change: UIA first, then the change logs out the other devices.
    let body = json!({"new_password": "second password"});
    let done = srv
        .post_with_password_uia(
            "/_matrix/client/v3/account/password",
            token_a,
            body,
            "bob",
            "first password",
        )
        .await;
    assert_eq!(done.0, 200, "{:?}", done.1);
    assert_eq!(
        srv.get("/_matrix/client/v3/account/whoami", Some(token_a))
            .await
            .0,
        200
    );
    assert_error(
        &srv.get("/_matrix/client/v3/account/whoami", Some(token_b))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let old = srv
        .post_json(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "first password"}),
        )
        .await;
    assert_error(&old, 403, "M_FORBIDDEN");
    srv.login("bob", "second password").await;

    // A UIA session cannot be used as another user: carol cannot prove bob's password.
    srv.register("carol", "carol password").await;
    let carol = srv.login("carol", "carol password").await;
    let carol_token = carol["access_token"].as_str().expect("token");
    let attempt = srv
        .post_json(
            "/_matrix/client/v3/account/deactivate",
            Some(carol_token),
            &json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "second password"}}),
        )
        .await;
    // Someone else's credentials are refused outright (403, as Synapse), not challenged.
    assert_error(&attempt, 403, "M_FORBIDDEN");
    assert_eq!(
        srv.get("/_matrix/client/v3/account/whoami", Some(carol_token))
            .await
            .0,
        200
    );

    // Deactivation: all tokens die, login is refused as deactivated, the name stays taken.
    let deactivated = srv
        .post_json(
            "/_matrix/client/v3/account/deactivate",
            Some(token_a),
            &json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "second password"}}),
        )
        .await;
    assert_eq!(deactivated.0, 200, "{:?}", deactivated.1);
    assert_eq!(deactivated.1["id_server_unbind_result"], "no-support");
    assert_error(
        &srv.get("/_matrix/client/v3/account/whoami", Some(token_a))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let login = srv
        .post_json(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "second password"}),
        )
        .await;
    assert_error(&login, 403, "M_USER_DEACTIVATED");
    let available = srv
        .get("/_matrix/client/v3/register/available?username=bob", None)
        .await;
    assert_error(&available, 400, "M_USER_IN_USE");
    srv.finish().await;
}

/// A UIA session started to delete one device cannot delete another (403, nothing deleted);
/// a wrong password of one's own is a fresh challenge saying what was completed.
async fn uia_sessions_stay_with_their_operation_and_user(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("dora", "dora password").await;
    let login = |device: &'static str| {
        let srv = &srv;
        async move {
            let (status, body) = srv
                .post_json(
                    "/_matrix/client/v3/login",
                    None,
                    &json!({"type": "m.login.password", "device_id": device,
                        "identifier": {"type": "m.id.user", "user": "dora"},
                        "password": "dora password"}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["access_token"].as_str().expect("token").to_owned()
        }
    };
    let token = login("MAIN").await;
    login("FIRST").await;
    login("SECOND").await;
    let delete = |device: &str, auth: Value| {
        let srv = &srv;
        let token = token.clone();
        let path = format!("/_matrix/client/v3/devices/{device}");
        async move {
            srv.request(
                reqwest::Method::DELETE,
                &path,
                Some(&token),
                Some(auth.to_string().into_bytes()),
            )
            .await
        }
    };
    let challenge = delete("FIRST", json!({})).await;
    assert_eq!(challenge.0, 401, "{:?}", challenge.1);
    assert_eq!(challenge.1["completed"], json!([]), "{:?}", challenge.1);
    let session = challenge.1["session"].as_str().expect("session").to_owned();
    let password = |password: &str| {
        json!({"auth": {"type": "m.login.password", "session": session, "password": password,
            "identifier": {"type": "m.id.user", "user": "dora"}}})
    };
    assert_error(
        &delete("SECOND", password("dora password")).await,
        403,
        "M_FORBIDDEN",
    );
    let ids = || async {
        let (_, devices) = srv.get("/_matrix/client/v3/devices", Some(&token)).await;
        devices["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| d["device_id"].as_str().expect("id").to_owned())
            .collect::<Vec<_>>()
    };
    assert!(
        ids().await.contains(&"SECOND".to_owned()),
        "nothing deleted"
    );
    let wrong = delete("FIRST", password("not it")).await;
    assert_eq!(wrong.0, 401, "{:?}", wrong.1);
    assert_eq!(wrong.1["errcode"], "M_FORBIDDEN");
    assert_eq!(wrong.1["completed"], json!([]));
    let done = delete("FIRST", password("dora password")).await;
    assert_eq!(done.0, 200, "{:?}", done.1);
    let left = ids().await;
    assert!(!left.contains(&"FIRST".to_owned()), "{left:?}");
    assert!(left.contains(&"SECOND".to_owned()), "{left:?}");
    srv.finish().await;
}
