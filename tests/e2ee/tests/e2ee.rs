//! End-to-end encryption with real clients: `matrix-sdk` (vodozemac inside) encrypts, the
//! server only relays keys; every message must decrypt on every device that should read it.
//!
//! The server runs as a process (the `matrixon` binary named by `MATRIXON_BIN`, built by the
//! test command) on a fresh SQLite database; see Cargo.toml for why this crate stands alone.

use std::{net::TcpListener, path::PathBuf, process::Stdio, time::Duration};

use futures_util::{StreamExt, pin_mut};
use matrix_sdk::{
    Client, RoomState,
    config::SyncSettings,
    room::MessagesOptions,
    ruma::{
        OwnedRoomId, api::client::room::create_room, events::room::message::RoomMessageEventContent,
    },
};
use matrix_sdk_ui::{
    room_list_service::{RoomListItem, filters::new_filter_non_left},
    sync_service::SyncService,
};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The server process, killed when dropped.
struct Server {
    base: String,
    http: reqwest::Client,
    _child: Child,
    _dir: tempfile::TempDir,
}

/// The repository's test TLS material (a CA and a certificate for 127.0.0.1).
fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tls")
        .join(name)
        .display()
        .to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

impl Server {
    async fn start() -> Self {
        Self::start_with("localhost", &[]).await
    }

    /// A server federating on a TLS listener of its own, named `127.0.0.1:<that port>`, that
    /// trusts the test CA and may reach loopback.
    async fn federating() -> Self {
        let port = free_port();
        let name = format!("127.0.0.1:{port}");
        let env = [
            ("MATRIXON_FEDERATION_ENABLED", "true".to_owned()),
            ("MATRIXON_FEDERATION_LISTEN", format!("\"{name}\"")),
            (
                "MATRIXON_FEDERATION_TLS_CERTIFICATE",
                format!("\"{}\"", fixture("server.pem")),
            ),
            (
                "MATRIXON_FEDERATION_TLS_PRIVATE_KEY",
                format!("\"{}\"", fixture("server.key")),
            ),
            (
                "MATRIXON_FEDERATION_EXTRA_CA_FILE",
                format!("\"{}\"", fixture("ca.pem")),
            ),
            (
                "MATRIXON_FEDERATION_IP_RANGE_ALLOW",
                "[\"127.0.0.0/8\"]".to_owned(),
            ),
        ];
        Self::start_with(&name, &env).await
    }

    async fn start_with(server_name: &str, env: &[(&str, String)]) -> Self {
        let bin = std::env::var_os("MATRIXON_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/matrixon")
            });
        assert!(
            bin.exists(),
            "{} is missing: build it with `cargo build -p matrixon` or set MATRIXON_BIN",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Command::new(bin)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("MATRIXON_SERVER_NAME", format!("\"{server_name}\""))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("MATRIXON_LISTEN", format!("[\"127.0.0.1:{port}\"]"))
            .env(
                "MATRIXON_DATABASE_URL",
                format!("\"sqlite:{}/matrixon.db\"", dir.path().display()),
            )
            .env("MATRIXON_REGISTRATION_OPEN", "true")
            .env("MATRIXON_RATE_LIMITS_ENABLED", "false")
            .env("MATRIXON_LOG_LEVEL", "\"warn\"")
            // The OAuth endpoints and rendezvous URLs are built from it.
            .env(
                "MATRIXON_PUBLIC_BASEURL",
                format!("\"http://127.0.0.1:{port}/\""),
            )
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("matrixon starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http
                .get(format!("{base}/_matrix/client/versions"))
                .send()
                .await
                .is_ok()
            {
                return Self {
                    base,
                    http,
                    _child: child,
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("matrixon did not answer on {base}");
    }

    async fn client(&self) -> Client {
        Client::builder()
            .homeserver_url(&self.base)
            .build()
            .await
            .expect("client")
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn register(&self, user: &str) {
        let mut body = json!({"username": user, "password": PASSWORD});
        let (status, challenge) = self.post("/_matrix/client/v3/register", None, &body).await;
        assert_eq!(status, 401, "{challenge}");
        body["auth"] = json!({"type": "m.login.dummy", "session": challenge["session"]});
        let (status, answer) = self.post("/_matrix/client/v3/register", None, &body).await;
        assert_eq!(status, 200, "{answer}");
    }
}

const PASSWORD: &str = "e2ee password";

async fn login(srv: &Server, user: &str) -> Client {
    let client = srv.client().await;
    client
        .matrix_auth()
        .login_username(user, PASSWORD)
        .send()
        .await
        .expect("login");
    client
}

async fn sync(client: &Client) -> matrix_sdk::sync::SyncResponse {
    client
        .sync_once(SyncSettings::default().timeout(Duration::ZERO))
        .await
        .expect("sync")
}

/// `(type, body)` of the timeline events a sync response carries for a room, as the client
/// decrypted them: an undecryptable event stays `m.room.encrypted`.
fn timeline(
    response: &matrix_sdk::sync::SyncResponse,
    room: &OwnedRoomId,
) -> Vec<(String, String)> {
    let Some(joined) = response.rooms.joined.get(room) else {
        return Vec::new();
    };
    joined
        .timeline
        .events
        .iter()
        .filter_map(|e| {
            let value: Value = serde_json::from_str(e.raw().json().get()).ok()?;
            let kind = value["type"].as_str()?.to_owned();
            (kind == "m.room.message" || kind == "m.room.encrypted").then(|| {
                (
                    kind,
                    value["content"]["body"].as_str().unwrap_or("").to_owned(),
                )
            })
        })
        .collect()
}

/// Syncs until the room's timeline shows `body` (decrypted), failing on an undecryptable one.
async fn receive(client: &Client, room: &OwnedRoomId, body: &str) {
    for attempt in 0..60 {
        if attempt > 10 {
            // Across servers it may take a transaction or two.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for (kind, text) in timeline(&sync(client).await, room) {
            assert_eq!(
                kind,
                "m.room.message",
                "a message did not decrypt on {:?}",
                client.device_id()
            );
            if text == body {
                return;
            }
        }
    }
    panic!("{body:?} never reached {:?}", client.device_id());
}

async fn send(client: &Client, room: &OwnedRoomId, body: &str) {
    client
        .get_room(room)
        .expect("room")
        .send(RoomMessageEventContent::text_plain(body))
        .await
        .expect("send");
}

/// Bodies of the room's history as `/messages` gives it, decrypted where the client can.
async fn history(client: &Client, room: &OwnedRoomId) -> Vec<(String, String)> {
    let page = client
        .get_room(room)
        .expect("room")
        .messages(MessagesOptions::backward())
        .await
        .expect("messages");
    let mut events: Vec<(String, String)> = page
        .chunk
        .iter()
        .filter_map(|e| {
            let value: Value = serde_json::from_str(e.raw().json().get()).ok()?;
            let kind = value["type"].as_str()?.to_owned();
            (kind == "m.room.message" || kind == "m.room.encrypted").then(|| {
                (
                    kind,
                    value["content"]["body"].as_str().unwrap_or("").to_owned(),
                )
            })
        })
        .collect();
    events.reverse();
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_chat_across_devices_cross_signing_and_backup() {
    let srv = Server::start().await;
    srv.register("alice").await;
    srv.register("bob").await;
    let alice = login(&srv, "alice").await;
    let bob = login(&srv, "bob").await;
    sync(&alice).await;
    sync(&bob).await;

    let mut request = create_room::v3::Request::new();
    request.invite = vec![bob.user_id().expect("bob").to_owned()];
    let room = alice.create_room(request).await.expect("create room");
    let room_id = room.room_id().to_owned();
    room.enable_encryption().await.expect("enable encryption");
    sync(&bob).await;
    bob.get_room(&room_id)
        .expect("invite")
        .join()
        .await
        .expect("bob joins");
    sync(&alice).await;
    sync(&bob).await;

    // Both ways, every message decrypts.
    let mut sent = Vec::new();
    for i in 0..3 {
        let body = format!("alice says {i}");
        send(&alice, &room_id, &body).await;
        receive(&bob, &room_id, &body).await;
        sent.push(body);
        let body = format!("bob says {i}");
        send(&bob, &room_id, &body).await;
        receive(&alice, &room_id, &body).await;
        sent.push(body);
    }
    let raw = srv
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50"),
            alice.access_token().expect("token").as_str(),
        )
        .await;
    assert!(
        raw.1["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .all(|e| e["type"] != "m.room.message"),
        "the server stored no plaintext"
    );

    // Alice's identity: cross-signing bootstrapped without UIA the first time (MSC3967).
    alice
        .encryption()
        .bootstrap_cross_signing(None)
        .await
        .expect("cross-signing bootstrap");
    let status = alice
        .encryption()
        .cross_signing_status()
        .await
        .expect("status");
    assert!(status.is_complete(), "{status:?}");
    let query = srv
        .post(
            "/_matrix/client/v3/keys/query",
            Some(bob.access_token().expect("token").as_str()),
            &json!({"device_keys": {"@alice:localhost": []}}),
        )
        .await;
    assert_eq!(query.0, 200, "{}", query.1);
    let master = &query.1["master_keys"]["@alice:localhost"];
    assert!(master["keys"].is_object(), "{}", query.1);
    assert!(
        query.1["user_signing_keys"]["@alice:localhost"].is_null(),
        "a user-signing key is shown to its owner only"
    );
    let alice_device = alice.device_id().expect("device").to_string();
    let device = &query.1["device_keys"]["@alice:localhost"][&alice_device];
    let signers: Vec<&String> = device["signatures"]["@alice:localhost"]
        .as_object()
        .expect("signatures")
        .keys()
        .collect();
    assert_eq!(
        signers.len(),
        2,
        "device self-signature plus the self-signing key: {device}"
    );

    // Backup: Alice turns on recovery (secret storage + server-side backup of her keys).
    let recovery_key = alice
        .encryption()
        .recovery()
        .enable()
        .wait_for_backups_to_upload()
        .await
        .expect("recovery enabled");
    let (status, version) = srv
        .get(
            "/_matrix/client/v3/room_keys/version",
            alice.access_token().expect("token").as_str(),
        )
        .await;
    assert_eq!(status, 200, "{version}");
    assert!(version["count"].as_u64().expect("count") >= 2, "{version}");

    // A second device for Alice: Bob's next message must decrypt there too.
    let alice2 = login(&srv, "alice").await;
    sync(&alice2).await;
    sync(&bob).await;
    send(&bob, &room_id, "bob to both of alice's devices").await;
    receive(&alice2, &room_id, "bob to both of alice's devices").await;
    receive(&alice, &room_id, "bob to both of alice's devices").await;
    sent.push("bob to both of alice's devices".into());

    // Replacing the identity from the new device needs the password (UIA) now.
    let replace = alice2.encryption().bootstrap_cross_signing(None).await;
    let uia = replace.expect_err("replacing cross-signing keys needs UIA");
    assert!(uia.as_uiaa_response().is_some(), "{uia:?}");

    // A third device restores history from the backup with the recovery key.
    let alice3 = login(&srv, "alice").await;
    sync(&alice3).await;
    let before = history(&alice3, &room_id).await;
    assert!(
        before.iter().any(|(kind, _)| kind == "m.room.encrypted"),
        "without the backup, old messages are unreadable: {before:?}"
    );
    alice3
        .encryption()
        .recovery()
        .recover(&recovery_key)
        .await
        .expect("recover");
    alice3
        .encryption()
        .backups()
        .download_room_keys_for_room(&room_id)
        .await
        .expect("download keys");
    let after = history(&alice3, &room_id).await;
    let bodies: Vec<&str> = after
        .iter()
        .filter(|(kind, _)| kind == "m.room.message")
        .map(|(_, body)| body.as_str())
        .collect();
    for body in &sent[..6] {
        assert!(
            bodies.contains(&body.as_str()),
            "{body} not restored: {after:?}"
        );
    }
}

/// Waits up to 30 s for `done`.
/// Alice and Bob on two Matrixon servers chat end-to-end encrypted: Bob's devices and keys
/// are fetched from his server (`/user/keys/query`, `/user/keys/claim` over federation), the
/// room key travels as a to-device message between the servers, and each side decrypts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_chat_across_two_servers() {
    let a = Server::federating().await;
    let b = Server::federating().await;
    a.register("alice").await;
    b.register("bob").await;
    let alice = login(&a, "alice").await;
    let bob = login(&b, "bob").await;
    sync(&alice).await;
    sync(&bob).await;

    let mut request = create_room::v3::Request::new();
    request.invite = vec![bob.user_id().expect("bob").to_owned()];
    let room = alice.create_room(request).await.expect("create room");
    let room_id = room.room_id().to_owned();
    room.enable_encryption().await.expect("enable encryption");
    let a_name = alice.user_id().expect("alice").server_name().to_owned();
    let mut invited = false;
    for _ in 0..50 {
        sync(&bob).await;
        if bob.get_room(&room_id).is_some() {
            invited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(invited, "the invite crossed to Bob's server");
    bob.join_room_by_id_or_alias((&*room_id).into(), &[a_name])
        .await
        .expect("bob joins through Alice's server");
    sync(&alice).await;
    sync(&bob).await;

    for i in 0..2 {
        let body = format!("alice says {i} across servers");
        send(&alice, &room_id, &body).await;
        receive(&bob, &room_id, &body).await;
        let body = format!("bob says {i} across servers");
        send(&bob, &room_id, &body).await;
        receive(&alice, &room_id, &body).await;
    }
}

async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

/// Whether the client reads `body` (decrypted) in the room's history.
async fn reads(client: &Client, room: &OwnedRoomId, body: &str) -> bool {
    history(client, room)
        .await
        .iter()
        .any(|(kind, text)| kind == "m.room.message" && text == body)
}

/// As Element X: matrix-sdk-ui's `SyncService` (its room list and encryption connections
/// over simplified sliding sync, no `/sync` at all) for two users, an encrypted DM whose
/// messages decrypt, a room list ordered by activity, and a client that stops and continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn element_x_style_sync_service_room_list_and_encrypted_dm() {
    let srv = Server::start().await;
    srv.register("alice").await;
    srv.register("bob").await;
    let alice = login(&srv, "alice").await;
    let bob = login(&srv, "bob").await;
    let alice_sync = SyncService::builder(alice.clone())
        .build()
        .await
        .expect("alice's sync service");
    let bob_sync = SyncService::builder(bob.clone())
        .build()
        .await
        .expect("bob's sync service");
    alice_sync.start().await;
    bob_sync.start().await;

    let mut request = create_room::v3::Request::new();
    request.name = Some("Quiet".to_owned());
    let quiet = alice.create_room(request).await.expect("create room");
    let dm = alice
        .create_dm(bob.user_id().expect("bob"))
        .await
        .expect("create DM");
    let dm_id = dm.room_id().to_owned();
    eventually("bob's room list shows the invite", async || {
        bob.get_room(&dm_id)
            .is_some_and(|r| r.state() == RoomState::Invited)
    })
    .await;
    bob.join_room_by_id(&dm_id).await.expect("bob joins");
    eventually("alice sees bob join", async || {
        dm.joined_members_count() == 2
    })
    .await;
    assert!(
        dm.latest_encryption_state()
            .await
            .expect("state")
            .is_encrypted()
    );

    send(&alice, &dm_id, "over sliding sync").await;
    eventually("bob decrypts alice's message", async || {
        reads(&bob, &dm_id, "over sliding sync").await
    })
    .await;
    send(&bob, &dm_id, "and back").await;
    eventually("alice decrypts bob's answer", async || {
        reads(&alice, &dm_id, "and back").await
    })
    .await;

    // Alice's room list, as Element X shows it: both rooms, the one with the chat first.
    let room_list = alice_sync
        .room_list_service()
        .all_rooms()
        .await
        .expect("all rooms");
    let (entries, controller) = room_list.entries_with_dynamic_adapters(50);
    controller.set_filter(Box::new(new_filter_non_left()));
    pin_mut!(entries);
    let mut rooms: imbl::Vector<RoomListItem> = imbl::Vector::new();
    let ordered = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(diffs) = entries.next().await {
            for diff in diffs {
                diff.apply(&mut rooms);
            }
            let ids: Vec<_> = rooms.iter().map(|r| r.room_id().to_owned()).collect();
            if ids == [dm_id.clone(), quiet.room_id().to_owned()] {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ordered, Ok(true), "the DM above the quiet room");

    // Bob's client stops (as an app sent to the background) and continues.
    bob_sync.stop().await;
    send(&alice, &dm_id, "while you were away").await;
    bob_sync.start().await;
    eventually("bob reads what came while he was away", async || {
        reads(&bob, &dm_id, "while you were away").await
    })
    .await;
    alice_sync.stop().await;
    bob_sync.stop().await;
}

/// What a person does on the device page a granting device opens: signs in with the password
/// and allows (or denies) the new device. `(status, page)` of the answer.
async fn answer_device_page(srv: &Server, page_url: &url::Url, decision: &str) -> (u16, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut cookies: Vec<String> = Vec::new();
    async fn call(
        http: &reqwest::Client,
        cookies: &mut Vec<String>,
        request: reqwest::RequestBuilder,
    ) -> (u16, String, String) {
        let _ = http;
        let response = request
            .header("cookie", cookies.join("; "))
            .send()
            .await
            .expect("request");
        for value in response.headers().get_all("set-cookie") {
            let pair = value
                .to_str()
                .expect("cookie")
                .split(';')
                .next()
                .expect("pair");
            let name = pair.split('=').next().expect("name").to_owned();
            cookies.retain(|c| !c.starts_with(&format!("{name}=")));
            cookies.push(pair.to_owned());
        }
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, location, response.text().await.expect("body"))
    }
    let csrf_of = |page: &str| {
        let marker = "name=\"csrf\" value=\"";
        let start = page.find(marker).expect("a csrf field") + marker.len();
        page[start..].split('"').next().expect("value").to_owned()
    };
    let form = |pairs: &[(&str, &str)]| {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().copied())
            .finish()
    };
    let user_code = page_url
        .query_pairs()
        .find(|(k, _)| k == "user_code")
        .map(|(_, v)| v.into_owned())
        .expect("the device page names the user code");
    let request = format!("user_code={user_code}");
    let (status, _, page) = call(&http, &mut cookies, http.get(page_url.as_str())).await;
    assert_eq!(status, 200, "{page}");
    let (status, next, _) = call(
        &http,
        &mut cookies,
        http.post(format!("{}/oauth2/login", srv.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("request", &request),
                ("csrf", &csrf_of(&page)),
                ("username", "alice"),
                ("password", PASSWORD),
            ])),
    )
    .await;
    assert_eq!(status, 303, "the password sign-in");
    let (_, _, consent) = call(&http, &mut cookies, http.get(format!("{}{next}", srv.base))).await;
    assert!(consent.contains("QR App"), "{consent}");
    let (status, _, done) = call(
        &http,
        &mut cookies,
        http.post(format!("{}/oauth2/consent", srv.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("request", &request),
                ("csrf", &csrf_of(&consent)),
                ("decision", decision),
            ])),
    )
    .await;
    (status, done)
}

fn qr_registration() -> matrix_sdk::authentication::oauth::ClientRegistrationData {
    let metadata = json!({
        "client_name": "QR App", "client_uri": "https://qr.example/",
        "application_type": "native", "token_endpoint_auth_method": "none",
        "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
    });
    matrix_sdk::authentication::oauth::ClientRegistrationData::new(
        matrix_sdk::ruma::serde::Raw::from_json(
            serde_json::value::to_raw_value(&metadata).expect("raw"),
        ),
    )
}

/// The new device must end up as alice's, cross-signed, with her identity's secrets.
async fn check_new_device(old: &Client, new: &Client) {
    let user_id = old.user_id().expect("alice").to_owned();
    assert_eq!(new.user_id(), Some(user_id.as_ref()));
    let status = new
        .encryption()
        .cross_signing_status()
        .await
        .expect("status");
    assert!(
        status.is_complete(),
        "the secrets came over the channel: {status:?}"
    );
    let device_id = new.device_id().expect("device").to_owned();
    eventually(
        "the granting device sees the new one cross-signed",
        async || {
            sync(old).await;
            old.encryption()
                .get_device(&user_id, &device_id)
                .await
                .ok()
                .flatten()
                .is_some_and(|d| d.is_cross_signed_by_owner())
        },
    )
    .await;
}

use matrix_sdk::authentication::oauth::qrcode::{
    GeneratedQrProgress, GrantLoginProgress, LoginProgress, QRCodeGrantLoginError,
    QRCodeLoginError, QrCodeData, QrProgress,
};
use tokio::sync::oneshot;

/// The signed-in device grants a login by showing a QR code: it hands the code over, takes
/// the check code the new device shows, and hands over the device page to approve on.
async fn grant_by_showing(
    old: &Client,
    qr_tx: oneshot::Sender<QrCodeData>,
    code_rx: oneshot::Receiver<u8>,
    uri_tx: oneshot::Sender<url::Url>,
) -> Result<(), QRCodeGrantLoginError> {
    use std::future::IntoFuture;
    let oauth = old.oauth();
    let grant = oauth.grant_login_with_qr_code().generate();
    let mut progress = grant.subscribe_to_progress();
    let done = grant.into_future();
    tokio::pin!(done);
    let (mut qr_tx, mut code_rx, mut uri_tx) = (Some(qr_tx), Some(code_rx), Some(uri_tx));
    loop {
        tokio::select! {
            result = &mut done => return result,
            Some(step) = progress.next() => match step {
                GrantLoginProgress::EstablishingSecureChannel(GeneratedQrProgress::QrReady(qr)) => {
                    if let Some(tx) = qr_tx.take() {
                        tx.send(qr).expect("qr");
                    }
                }
                GrantLoginProgress::EstablishingSecureChannel(GeneratedQrProgress::QrScanned(sender)) => {
                    let code = code_rx.take().expect("once").await.expect("check code");
                    sender.send(code).await.expect("check code sent");
                }
                GrantLoginProgress::WaitingForAuth { verification_uri } => {
                    if let Some(tx) = uri_tx.take() {
                        tx.send(verification_uri).expect("uri");
                    }
                }
                _ => {}
            },
        }
    }
}

/// The signed-in device grants a login by scanning the new device's QR code.
async fn grant_by_scanning(
    old: &Client,
    qr_rx: oneshot::Receiver<QrCodeData>,
    code_tx: oneshot::Sender<u8>,
    uri_tx: oneshot::Sender<url::Url>,
) -> Result<(), QRCodeGrantLoginError> {
    use std::future::IntoFuture;
    // As a camera reads it.
    let qr = QrCodeData::from_bytes(&qr_rx.await.expect("qr").to_bytes()).expect("decodes");
    let oauth = old.oauth();
    let grant = oauth.grant_login_with_qr_code().scan(&qr);
    let mut progress = grant.subscribe_to_progress();
    let done = grant.into_future();
    tokio::pin!(done);
    let (mut code_tx, mut uri_tx) = (Some(code_tx), Some(uri_tx));
    loop {
        tokio::select! {
            result = &mut done => return result,
            Some(step) = progress.next() => match step {
                GrantLoginProgress::EstablishingSecureChannel(QrProgress { check_code }) => {
                    if let Some(tx) = code_tx.take() {
                        tx.send(check_code.to_digit()).expect("code");
                    }
                }
                GrantLoginProgress::WaitingForAuth { verification_uri } => {
                    if let Some(tx) = uri_tx.take() {
                        tx.send(verification_uri).expect("uri");
                    }
                }
                _ => {}
            },
        }
    }
}

/// The new device logs in by scanning the signed-in device's QR code.
async fn login_by_scanning(
    new: &Client,
    qr_rx: oneshot::Receiver<QrCodeData>,
    code_tx: oneshot::Sender<u8>,
) -> Result<(), QRCodeLoginError> {
    use std::future::IntoFuture;
    let qr = QrCodeData::from_bytes(&qr_rx.await.expect("qr").to_bytes()).expect("decodes");
    let registration = qr_registration();
    let oauth = new.oauth();
    let login = oauth.login_with_qr_code(Some(&registration)).scan(&qr);
    let mut progress = login.subscribe_to_progress();
    let done = login.into_future();
    tokio::pin!(done);
    let mut code_tx = Some(code_tx);
    loop {
        tokio::select! {
            result = &mut done => return result,
            Some(step) = progress.next() => {
                if let LoginProgress::EstablishingSecureChannel(QrProgress { check_code }) = step
                    && let Some(tx) = code_tx.take()
                {
                    tx.send(check_code.to_digit()).expect("code");
                }
            }
        }
    }
}

/// The new device logs in by showing a QR code for the signed-in one to scan.
async fn login_by_showing(
    new: &Client,
    qr_tx: oneshot::Sender<QrCodeData>,
    code_rx: oneshot::Receiver<u8>,
) -> Result<(), QRCodeLoginError> {
    use std::future::IntoFuture;
    let registration = qr_registration();
    let oauth = new.oauth();
    let login = oauth.login_with_qr_code(Some(&registration)).generate();
    let mut progress = login.subscribe_to_progress();
    let done = login.into_future();
    tokio::pin!(done);
    let (mut qr_tx, mut code_rx) = (Some(qr_tx), Some(code_rx));
    loop {
        tokio::select! {
            result = &mut done => return result,
            Some(step) = progress.next() => match step {
                LoginProgress::EstablishingSecureChannel(GeneratedQrProgress::QrReady(qr)) => {
                    if let Some(tx) = qr_tx.take() {
                        tx.send(qr).expect("qr");
                    }
                }
                LoginProgress::EstablishingSecureChannel(GeneratedQrProgress::QrScanned(sender)) => {
                    let code = code_rx.take().expect("once").await.expect("check code");
                    sender.send(code).await.expect("check code sent");
                }
                _ => {}
            },
        }
    }
}

/// Approves (or denies) on the device page once the granting device names it.
async fn approve(srv: &Server, uri_rx: oneshot::Receiver<url::Url>, decision: &str) {
    let uri = uri_rx.await.expect("the device page's address");
    let (status, done) = answer_device_page(srv, &uri, decision).await;
    assert_eq!(status, 200, "{done}");
}

/// QR code login (MSC4108 rendezvous + the OAuth device authorization grant), as Element X
/// signs a phone in from a signed-in device: matrix-sdk on both sides, both ways round (the
/// signed-in device shows the code, then the new one does); the person approves on the
/// device page the granting device opens; the new device gets alice's cross-signing secrets
/// over the end-to-end encrypted channel. A denial leaves no new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_code_login_signs_a_new_device_in_with_its_secrets() {
    let srv = Server::start().await;
    srv.register("alice").await;
    let old = login(&srv, "alice").await;
    sync(&old).await;
    old.encryption()
        .bootstrap_cross_signing(None)
        .await
        .expect("cross-signing bootstrap");
    let versions: Value = srv
        .http
        .get(format!("{}/_matrix/client/versions", srv.base))
        .send()
        .await
        .expect("versions")
        .json()
        .await
        .expect("json");
    assert_eq!(
        versions["unstable_features"]["org.matrix.msc4108"], true,
        "Element X offers QR login only when the server announces it"
    );
    let limit = Duration::from_secs(120);

    // 1. The signed-in device shows the QR code; the new one scans it.
    let new = srv.client().await;
    let (qr_tx, qr_rx) = oneshot::channel();
    let (code_tx, code_rx) = oneshot::channel();
    let (uri_tx, uri_rx) = oneshot::channel();
    let (granted, logged_in, ()) = tokio::time::timeout(limit, async {
        tokio::join!(
            grant_by_showing(&old, qr_tx, code_rx, uri_tx),
            login_by_scanning(&new, qr_rx, code_tx),
            approve(&srv, uri_rx, "allow"),
        )
    })
    .await
    .expect("the QR login finishes");
    granted.expect("the signed-in device granted the login");
    logged_in.expect("the new device logged in");
    check_new_device(&old, &new).await;

    // 2. The new device shows the QR code; the signed-in one scans it.
    let newer = srv.client().await;
    let (qr_tx, qr_rx) = oneshot::channel();
    let (code_tx, code_rx) = oneshot::channel();
    let (uri_tx, uri_rx) = oneshot::channel();
    let (logged_in, granted, ()) = tokio::time::timeout(limit, async {
        tokio::join!(
            login_by_showing(&newer, qr_tx, code_rx),
            grant_by_scanning(&old, qr_rx, code_tx, uri_tx),
            approve(&srv, uri_rx, "allow"),
        )
    })
    .await
    .expect("the QR login finishes");
    granted.expect("the signed-in device granted the login");
    logged_in.expect("the new device logged in");
    check_new_device(&old, &newer).await;

    // 3. Denied on the device page: the new device gets no session.
    let refused = srv.client().await;
    let (qr_tx, qr_rx) = oneshot::channel();
    let (code_tx, code_rx) = oneshot::channel();
    let (uri_tx, uri_rx) = oneshot::channel();
    let (_, denied, ()) = tokio::time::timeout(limit, async {
        tokio::join!(
            // The granting side fails too, one way or another, once the new device gives up.
            tokio::time::timeout(
                Duration::from_secs(60),
                grant_by_showing(&old, qr_tx, code_rx, uri_tx)
            ),
            login_by_scanning(&refused, qr_rx, code_tx),
            approve(&srv, uri_rx, "deny"),
        )
    })
    .await
    .expect("the denied QR login ends");
    let denied = denied.expect_err("a denied login fails");
    assert!(
        matches!(denied, QRCodeLoginError::OAuth(_)),
        "denied by the authorization server: {denied:?}"
    );
    assert!(
        refused.user_id().is_none(),
        "no session for a denied device"
    );
    let (_, devices) = srv
        .get(
            "/_matrix/client/v3/devices",
            old.access_token().expect("token").as_str(),
        )
        .await;
    assert_eq!(
        devices["devices"].as_array().map(Vec::len),
        Some(4),
        "alice's devices: registration's, the password login's and the two QR logins', \
         not the denied one: {devices}"
    );
}
