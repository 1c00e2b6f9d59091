//! Discovery endpoints, CORS, health, metrics and the signing key.

use futures_util::StreamExt;
use serde_json::json;

use crate::harness::{Backend, Database, TestServer, both_backends, test_config};

both_backends!(
    discovery_documents,
    health_metrics_and_cors,
    signing_key_survives_restart,
    graceful_shutdown_finishes_in_flight_requests,
);

async fn discovery_documents(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let versions = srv.get("/_matrix/client/versions", None).await;
    assert_eq!(versions.0, 200);
    let list = versions.1["versions"].as_array().expect("versions");
    assert!(list.contains(&json!("v1.5")), "{list:?}");
    // A real client accepts them.
    let client = srv.client().await;
    let supported = client.supported_versions().await.expect("versions");
    assert!(
        supported
            .versions
            .contains(&matrix_sdk::ruma::api::MatrixVersion::V1_5)
    );

    // Without public_baseurl the server announces the port it actually bound.
    let port = srv.server.as_ref().expect("running").addrs[0].port();
    let well_known = srv.get("/.well-known/matrix/client", None).await;
    assert_eq!(
        well_known.1,
        json!({"m.homeserver": {"base_url": format!("http://localhost:{port}/")}})
    );
    let server = srv.get("/.well-known/matrix/server", None).await;
    assert_eq!(server.1, json!({"m.server": format!("localhost:{port}")}));

    srv.register("rita", "rita password").await;
    let token = srv.login("rita", "rita password").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let caps = srv
        .get("/_matrix/client/v3/capabilities", Some(&token))
        .await;
    assert_eq!(caps.0, 200);
    // Written out even where the spec's default says the same (SyTest looks for them).
    let caps = &caps.1["capabilities"];
    assert_eq!(caps["m.change_password"]["enabled"], true);
    assert_eq!(caps["m.get_login_token"]["enabled"], true);
    assert_eq!(caps["m.set_displayname"]["enabled"], true);
    assert_eq!(caps["m.3pid_changes"]["enabled"], false);
    assert_eq!(
        srv.get("/_matrix/client/r0/capabilities", Some(&token))
            .await
            .1["capabilities"]["m.change_password"],
        json!({"enabled": true})
    );
    assert_eq!(
        srv.get("/_matrix/client/v3/capabilities", None).await.0,
        401
    );

    let flows = srv.get("/_matrix/client/v3/login", None).await;
    let types: Vec<_> = flows.1["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .map(|f| f["type"].clone())
        .collect();
    assert_eq!(
        types,
        vec![
            json!("m.login.password"),
            json!("m.login.token"),
            json!("m.login.sso"),
            json!("io.matrixon.login.siwe")
        ]
    );
    // The r0 paths of old clients reach the same handlers.
    assert_eq!(srv.get("/_matrix/client/r0/login", None).await.1, flows.1);
    srv.finish().await;
}

async fn health_metrics_and_cors(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let health = srv
        .http
        .get(srv.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.expect("text"), "OK");

    let preflight = srv
        .http
        .request(
            reqwest::Method::OPTIONS,
            srv.url("/_matrix/client/v3/login"),
        )
        .header("origin", "https://app.element.io")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status(), 200);
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    let methods = headers["access-control-allow-methods"]
        .to_str()
        .expect("ascii");
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_lowercase();
    for header in ["x-requested-with", "content-type", "authorization"] {
        assert!(allowed.contains(header), "{allowed}");
    }
    let plain = srv
        .http
        .get(srv.url("/_matrix/client/versions"))
        .header("origin", "https://app.element.io")
        .send()
        .await
        .expect("get");
    assert_eq!(plain.headers()["access-control-allow-origin"], "*");
    // Errors carry CORS headers too, or browsers could not read them.
    let missing = srv
        .http
        .get(srv.url("/nope"))
        .header("origin", "https://x")
        .send()
        .await
        .expect("get");
    assert_eq!(missing.headers()["access-control-allow-origin"], "*");

    let metrics = srv.metrics().await;
    assert!(
        metrics.contains(r#"matrixon_http_requests_total{method="GET",route="/_matrix/client/versions",status="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("matrixon_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("matrixon_db_pool_connections"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="unmatched",status="404"} 1"#),
        "{metrics}"
    );
    srv.finish().await;
}

async fn signing_key_survives_restart(backend: Backend) {
    let db = Database::create(&backend).await;
    let config = test_config(&db.url);
    let first = TestServer::start_on(db, config.clone()).await;
    let services = &first.server.as_ref().expect("running").services;
    let key = (
        services.signing_key.version().to_owned(),
        services.signing_key.public_key(),
    );
    assert!(key.0.starts_with("a_"));
    first.register("sam", "sam password").await;
    let db = first.stop().await;

    let second = TestServer::start_on(db, config).await;
    let services = &second.server.as_ref().expect("running").services;
    assert_eq!(
        (
            services.signing_key.version().to_owned(),
            services.signing_key.public_key()
        ),
        key
    );
    // Accounts survived the graceful shutdown too.
    second.login("sam", "sam password").await;
    second.finish().await;
}

async fn graceful_shutdown_finishes_in_flight_requests(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("uma", "uma password").await;
    // A long-polling sync, parked when the shutdown begins, is answered at once.
    let token = srv.login("uma", "uma password").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let since = srv
        .get("/_matrix/client/v3/sync?timeout=0", Some(&token))
        .await
        .1["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let parked = tokio::spawn(
        reqwest::Client::new()
            .get(srv.url(&format!(
                "/_matrix/client/v3/sync?since={since}&timeout=120000"
            )))
            .bearer_auth(&token)
            .send(),
    );
    assert!(
        srv.wait_for_metric("matrixon_sync_waiting 1").await,
        "the sync parks"
    );
    let url = srv.url("/_matrix/client/v3/login");
    let body = br#"{"type": "m.login.password", "user": "uma", "password": "uma password"}"#;
    let (head, tail) = body.split_at(20);
    let (head, tail) = (head.to_vec(), tail.to_vec());
    // The body arrives in two parts, the second after shutdown has begun.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(head), Ok(tail)]).then(
        |chunk| async move {
            if chunk.as_ref().is_ok_and(|c| c.len() != 20) {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            chunk
        },
    );
    let in_flight = tokio::spawn(
        reqwest::Client::new()
            .post(url.clone())
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let stopping = std::time::Instant::now();
    let db = srv.stop().await;
    assert!(
        stopping.elapsed() < std::time::Duration::from_secs(30),
        "the parked sync did not hold the shutdown: {:?}",
        stopping.elapsed()
    );
    let response = in_flight
        .await
        .expect("task")
        .expect("in-flight request answered");
    assert_eq!(response.status(), 200);
    let login: serde_json::Value = response.json().await.expect("json");
    assert_eq!(login["user_id"], "@uma:localhost");
    let synced = parked.await.expect("task").expect("parked sync answered");
    assert_eq!(synced.status(), 200);
    let synced: serde_json::Value = synced.json().await.expect("json");
    assert_eq!(synced["next_batch"], since.as_str(), "the empty answer");
    // Once stopped, nothing listens any more.
    assert!(reqwest::Client::new().get(url).send().await.is_err());
    db.drop_database().await;
}
