//! Refresh tokens, soft logout, logout, logout everywhere and one-time login tokens.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(
    sdk_refresh_tokens_and_soft_logout,
    sdk_logout_and_logout_all,
    login_tokens_are_single_use
);

async fn sdk_refresh_tokens_and_soft_logout(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("dave", "dave password").await;

    let client = srv.client().await;
    let login = client
        .matrix_auth()
        .login_username("dave", "dave password")
        .request_refresh_token()
        .send()
        .await
        .expect("login");
    let first_refresh = login.refresh_token.clone().expect("refresh token issued");
    assert_eq!(login.expires_in, Some(Duration::from_secs(300)));
    let first_access = login.access_token.clone();
    client.whoami().await.expect("whoami");

    // Past its lifetime the access token is refused with soft_logout, so clients refresh.
    srv.clock.advance(Duration::from_secs(301));
    let expired = srv
        .get("/_matrix/client/v3/account/whoami", Some(&first_access))
        .await;
    assert_error(&expired, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.1["soft_logout"], true);

    client.refresh_access_token().await.expect("refresh");
    let second_access = client.access_token().expect("new token");
    assert_ne!(second_access, first_access);
    let whoami = client.whoami().await.expect("whoami after refresh");
    assert_eq!(whoami.device_id, Some(login.device_id.clone()));

    // The used refresh token is gone; so is the access token issued with it.
    let reused = srv
        .post_json(
            "/_matrix/client/v3/refresh",
            None,
            &json!({"refresh_token": first_refresh}),
        )
        .await;
    assert_error(&reused, 401, "M_UNKNOWN_TOKEN");
    let unknown = srv
        .post_json(
            "/_matrix/client/v3/refresh",
            None,
            &json!({"refresh_token": "nope"}),
        )
        .await;
    assert_error(&unknown, 401, "M_UNKNOWN_TOKEN");
    let missing_field = srv
        .post_json("/_matrix/client/v3/refresh", None, &json!({}))
        .await;
    assert_error(&missing_field, 400, "M_BAD_JSON");

    // Tokens without refresh never expire.
    let plain = srv.login("dave", "dave password").await;
    assert!(plain.get("refresh_token").is_none() && plain.get("expires_in_ms").is_none());
    srv.clock.advance(Duration::from_secs(3600 * 24 * 30));
    assert_eq!(
        srv.get(
            "/_matrix/client/v3/account/whoami",
            plain["access_token"].as_str()
        )
        .await
        .0,
        200
    );
    srv.finish().await;
}

async fn sdk_logout_and_logout_all(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("erin", "erin password").await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let client = srv.client().await;
        client
            .matrix_auth()
            .login_username("erin", "erin password")
            .send()
            .await
            .expect("login");
        clients.push(client);
    }
    let tokens: Vec<String> = clients
        .iter()
        .map(|c| c.access_token().expect("token"))
        .collect();

    // Logging out ends only that device.
    clients[0].matrix_auth().logout().await.expect("logout");
    assert_error(
        &srv.get("/_matrix/client/v3/account/whoami", Some(&tokens[0]))
            .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(
        clients[1].devices().await.expect("devices").devices.len(),
        3,
        "registration device + 2"
    );

    // Logging out everywhere (through the client's typed request) ends all of them.
    clients[1]
        .send(matrix_sdk::ruma::api::client::session::logout_all::v3::Request::new())
        .await
        .expect("logout everywhere");
    for token in &tokens {
        assert_error(
            &srv.get("/_matrix/client/v3/account/whoami", Some(token))
                .await,
            401,
            "M_UNKNOWN_TOKEN",
        );
    }
    // Logging out with a dead token is an auth error, not a success.
    let again = srv
        .post_json("/_matrix/client/v3/logout", Some(&tokens[2]), &json!({}))
        .await;
    assert_error(&again, 401, "M_UNKNOWN_TOKEN");
    srv.login("erin", "erin password").await;
    srv.finish().await;
}

async fn login_tokens_are_single_use(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("fay", "fay password").await;
    let session = srv.login("fay", "fay password").await;
    let token = session["access_token"].as_str().expect("token");

    // get_token is protected by UIA.
    let get_token = "/_matrix/client/v1/login/get_token";
    let minted = srv
        .post_with_password_uia(get_token, token, json!({}), "fay", "fay password")
        .await;
    assert_eq!(minted.0, 200, "{:?}", minted.1);
    let login_token = minted.1["login_token"]
        .as_str()
        .expect("login token")
        .to_owned();
    assert_eq!(minted.1["expires_in_ms"], 120_000);

    // A real client logs in with it once.
    let client = srv.client().await;
    let login = client
        .matrix_auth()
        .login_token(&login_token)
        .send()
        .await
        .expect("token login");
    assert_eq!(login.user_id.as_str(), "@fay:localhost");
    let again = srv
        .post_json(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.token", "token": login_token}),
        )
        .await;
    assert_error(&again, 403, "M_FORBIDDEN");

    // An expired token is refused too.
    let minted = srv
        .post_with_password_uia(get_token, token, json!({}), "fay", "fay password")
        .await;
    srv.clock.advance(Duration::from_secs(121));
    let expired = srv
        .post_json(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.token", "token": minted.1["login_token"]}),
        )
        .await;
    assert_error(&expired, 403, "M_FORBIDDEN");
    srv.finish().await;
}
