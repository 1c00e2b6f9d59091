//! `GET /voip/turnServer`: coturn-style time-limited credentials, or nothing when no TURN
//! server is configured.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha1::Sha1;

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(turn_credentials_are_coturn_compatible);

async fn turn_credentials_are_coturn_compatible(backend: Backend) {
    let path = "/_matrix/client/v3/voip/turnServer";
    let srv = TestServer::start(&backend).await;
    let token = srv.register("alice", "voip password").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, body) = srv.get(path, Some(&token)).await;
    assert_eq!(
        (status, body),
        (200, json!({})),
        "no TURN server configured"
    );
    assert_error(&srv.get(path, None).await, 401, "M_MISSING_TOKEN");
    srv.finish().await;

    let srv = TestServer::start_with(&backend, |c| {
        c.voip.turn_uris = vec!["turn:turn.example.org:3478?transport=udp".into()];
        c.voip.turn_shared_secret = Some("coturn secret".into());
        c.voip.turn_ttl_s = 600;
    })
    .await;
    let token = srv.register("alice", "voip password").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, body) = srv.get(path, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["uris"],
        json!(["turn:turn.example.org:3478?transport=udp"])
    );
    assert_eq!(body["ttl"], 600);
    let username = body["username"].as_str().expect("username");
    let (expiry, user) = username.split_once(':').expect("expiry:user");
    assert_eq!(user, "@alice:localhost");
    let now = matrixon::clock::Clock::now_ms(&*srv.clock) / 1000;
    assert_eq!(expiry.parse::<i64>().expect("expiry"), now + 600);
    // What coturn computes from its static-auth-secret.
    let mut mac = Hmac::<Sha1>::new_from_slice(b"coturn secret").expect("key");
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(body["password"], expected.as_str());
    srv.finish().await;
}
