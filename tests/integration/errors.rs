//! Every error row of the foundation: raw HTTP, status and errcode checked.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(bad_requests_are_matrix_errors, rate_limits_answer_429);

async fn bad_requests_are_matrix_errors(backend: Backend) {
    let srv = TestServer::start_with(&backend, |c| c.max_request_bytes = 4096).await;
    srv.register("nick", "nick password").await;
    let token = srv.login("nick", "nick password").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    use reqwest::Method;

    assert_error(
        &srv.get("/_matrix/client/v3/no/such/endpoint", None).await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_error(&srv.get("/nothing", None).await, 404, "M_UNRECOGNIZED");
    // Request heads up to 8 KiB are read; a larger one is 431.
    let head = |bytes: usize| {
        srv.http
            .get(srv.url("/_matrix/client/versions"))
            .header("x-padding", "p".repeat(bytes))
            .send()
    };
    assert_eq!(head(6 * 1024).await.expect("6 KiB head").status(), 200);
    assert_eq!(head(9 * 1024).await.expect("9 KiB head").status(), 431);
    assert_error(
        &srv.request(Method::DELETE, "/_matrix/client/v3/login", None, None)
            .await,
        405,
        "M_UNRECOGNIZED",
    );
    assert_error(
        &srv.request(Method::PUT, "/_matrix/client/versions", None, None)
            .await,
        405,
        "M_UNRECOGNIZED",
    );

    let login = "/_matrix/client/v3/login";
    assert_error(
        &srv.request(Method::POST, login, None, Some(b"not json".to_vec()))
            .await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &srv.request(Method::POST, login, None, Some(b"{\"type\":".to_vec()))
            .await,
        400,
        "M_NOT_JSON",
    );
    assert_error(
        &srv.post_json(login, None, &json!({})).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &srv.post_json(login, None, &json!([1, 2])).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &srv.post_json(login, None, &json!({"type": 7})).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &srv.post_json(
            login,
            None,
            &json!({"type": "m.login.password", "password": 5}),
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &srv.post_json(login, None, &json!({"type": "m.login.bogus"}))
            .await,
        400,
        "M_UNKNOWN",
    );
    let wrong_password = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nick"}, "password": "nope"});
    assert_error(
        &srv.post_json(login, None, &wrong_password).await,
        403,
        "M_FORBIDDEN",
    );
    let no_such_user = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"}, "password": "nope"});
    assert_error(
        &srv.post_json(login, None, &no_such_user).await,
        403,
        "M_FORBIDDEN",
    );
    let other_server = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@nick:elsewhere.org"}, "password": "x"});
    assert_error(
        &srv.post_json(login, None, &other_server).await,
        403,
        "M_FORBIDDEN",
    );
    let huge_password =
        json!({"type": "m.login.password", "user": "nick", "password": "x".repeat(600)});
    assert_error(
        &srv.post_json(login, None, &huge_password).await,
        403,
        "M_FORBIDDEN",
    );

    let whoami = "/_matrix/client/v3/account/whoami";
    assert_error(&srv.get(whoami, None).await, 401, "M_MISSING_TOKEN");
    assert_error(
        &srv.get(whoami, Some("mxa_unknown")).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let raw = srv
        .http
        .get(srv.url(whoami))
        .header("authorization", "Basic abc")
        .send()
        .await
        .expect("sent");
    assert_eq!(raw.status(), 401);
    let body: serde_json::Value = raw.json().await.expect("json");
    assert_eq!(
        body["errcode"], "M_MISSING_TOKEN",
        "Basic auth is not a Matrix token"
    );
    let empty_bearer = srv
        .http
        .get(srv.url(whoami))
        .header("authorization", "Bearer ")
        .send()
        .await
        .expect("sent");
    assert_eq!(empty_bearer.status(), 401);
    // A non-Bearer Authorization header does not break endpoints that need no token.
    let public = srv
        .http
        .get(srv.url("/_matrix/client/versions"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .expect("sent");
    assert_eq!(public.status(), 200);
    // The deprecated query parameter still authenticates.
    assert_eq!(
        srv.get(&format!("{whoami}?access_token={token}"), None)
            .await
            .0,
        200
    );

    // Bodies over the limit are refused, whether declared or streamed. The server answers
    // without reading the rest and closes the connection, so these use a client of their own
    // (a pooled connection closed under a later request would fail that request instead).
    let once = reqwest::Client::new();
    let big = json!({"type": "m.login.password", "user": "nick", "password": "x".repeat(5000)});
    let declared = once
        .post(srv.url(login))
        .json(&big)
        .send()
        .await
        .expect("sent");
    assert_eq!(declared.status(), 413);
    let declared: serde_json::Value = declared.json().await.expect("json");
    assert_eq!(declared["errcode"], "M_TOO_LARGE");
    let stream = futures_body(vec![b'['; 8000]);
    let chunked = reqwest::Client::new()
        .post(srv.url(login))
        .body(stream)
        .send()
        .await
        .expect("sent");
    assert_eq!(chunked.status(), 413);

    // Bad path parameters and query strings are parameter errors.
    let bad_device = srv
        .get("/_matrix/client/v3/devices/%FF%FE", Some(&token))
        .await;
    assert_eq!(bad_device.0 / 100, 4, "{bad_device:?}");
    assert_error(
        &srv.get("/_matrix/client/v3/register/available?username=", None)
            .await,
        400,
        "M_INVALID_USERNAME",
    );

    // Account endpoints that need a token say so.
    assert_error(
        &srv.post_json(
            "/_matrix/client/v3/account/password",
            None,
            &json!({"new_password": "x"}),
        )
        .await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &srv.post_json("/_matrix/client/v3/account/deactivate", None, &json!({}))
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_error(
        &srv.post_json("/_matrix/client/v3/logout", None, &json!({}))
            .await,
        401,
        "M_MISSING_TOKEN",
    );

    // None of that hurt the account.
    assert_eq!(srv.get(whoami, Some(&token)).await.0, 200);
    srv.login("nick", "nick password").await;
    srv.finish().await;
}

fn futures_body(bytes: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

async fn rate_limits_answer_429(backend: Backend) {
    let srv = TestServer::start_with(&backend, |c| {
        c.rate_limits.enabled = true;
        c.rate_limits.login_per_ip.burst = 20;
        c.rate_limits.login_per_account.burst = 3;
        c.rate_limits.login_per_account.per_second = 0.1;
        c.rate_limits.register_per_ip.burst = 4;
        c.rate_limits.register_per_ip.per_second = 0.001;
        c.rate_limits.lookups_per_user.burst = 2;
        c.rate_limits.lookups_per_user.per_second = 0.001;
    })
    .await;
    srv.register("olga", "olga password").await; // two register requests
    let login = "/_matrix/client/v3/login";
    let wrong = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "olga"}, "password": "nope"});
    for _ in 0..3 {
        assert_error(
            &srv.post_json(login, None, &wrong).await,
            403,
            "M_FORBIDDEN",
        );
    }
    // The account's bucket is empty: even the right password waits.
    let limited = srv.post_json(login, None, &wrong).await;
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED");
    let retry = limited.1["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    assert!((1..=10_000).contains(&retry), "{retry}");
    // Another account is not affected.
    let pete = srv.register("pete", "pete password").await;
    srv.login("pete", "pete password").await;
    // After the wait, olga may try again.
    srv.clock.advance(Duration::from_millis(retry));
    let olga = srv.login("olga", "olga password").await;

    // Registration per address: 4 requests were allowed, the next is refused.
    let reg = srv
        .post_json(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "quinn"}),
        )
        .await;
    assert_error(&reg, 429, "M_LIMIT_EXCEEDED");

    // Lookups that may reach a chain or another server, per user: two are allowed, whatever
    // they ask; the third waits, for that user only.
    let pete = pete["access_token"].as_str().expect("token");
    let resolve =
        "/_matrix/client/unstable/io.matrixon/resolve/0x00000000000000000000000000000000000000aa";
    let did = "/_matrix/client/unstable/io.matrixon/did/did:pkh:eip155:1:0x00000000000000000000000000000000000000aa";
    for path in [resolve, did] {
        let (status, body) = srv.get(path, Some(pete)).await;
        assert_ne!(status, 429, "{path}: {body}");
    }
    let check = "/_matrix/client/unstable/io.matrixon/gate/check";
    let rule = json!({"rule": {"allowlist": ["0x00000000000000000000000000000000000000aa"]}, "address": "0x00000000000000000000000000000000000000aa"});
    assert_error(
        &srv.post_json(check, Some(pete), &rule).await,
        429,
        "M_LIMIT_EXCEEDED",
    );
    assert_error(&srv.get(resolve, Some(pete)).await, 429, "M_LIMIT_EXCEEDED");
    let olga = olga["access_token"].as_str().expect("token");
    let (status, body) = srv.get(resolve, Some(olga)).await;
    assert_ne!(status, 429, "{body}");
    srv.finish().await;
}
