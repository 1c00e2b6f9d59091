//! Crash safety: the server binary is killed with SIGKILL while messages, media and keys are
//! being written; after a restart on the same database and media directory, everything that
//! was answered 200 is there, exactly once, and sync tokens handed out before the crash
//! continue without repeating what they had delivered.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};

use crate::harness::{Backend, Database, both_backends};

both_backends!(answered_writes_survive_a_kill);

/// The server binary, as `scripts/test.sh` builds it before the tests.
fn server_binary(name: &str) -> Option<std::path::PathBuf> {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("matrixon")))
        .filter(|bin| bin.exists());
    if binary.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "target/debug/matrixon is missing: scripts/test.sh builds it before the tests"
        );
        println!("SKIPPED {name}: build the server binary first (cargo build -p matrixon)");
    }
    binary
}

/// Starts the binary on `database` and `media`; its base URL once `/health` answers.
async fn start(binary: &Path, database: &str, media: &Path) -> (String, tokio::process::Child) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let child = tokio::process::Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MATRIXON_LISTEN", format!("[\"127.0.0.1:{port}\"]"))
        .env("MATRIXON_DATABASE_URL", format!("\"{database}\""))
        .env("MATRIXON_REGISTRATION_OPEN", "true")
        .env("MATRIXON_RATE_LIMITS_ENABLED", "false")
        .env(
            "MATRIXON_MEDIA_DIRECTORY",
            format!("\"{}\"", media.display()),
        )
        .env("MATRIXON_LOG_LEVEL", "\"warn\"")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("matrixon starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..400 {
        if http
            .get(format!("{base}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return (base, child);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} did not come up");
}

/// One JSON call; `None` when the server did not answer (it was killed).
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut request = http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// Every `m.room.message` body in the room, newest first, through `/messages`.
async fn all_bodies(http: &reqwest::Client, base: &str, token: &str, room: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut from = String::new();
    loop {
        let url = format!("{base}/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=500{from}");
        let (status, page) = call(http, reqwest::Method::GET, url, token, None)
            .await
            .expect("answer");
        assert_eq!(status, 200, "{page}");
        let chunk = page["chunk"].as_array().expect("chunk");
        bodies.extend(
            chunk
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)),
        );
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = format!("&from={end}"),
            _ => return bodies,
        }
    }
}

/// What the writers were told: message bodies with their event ids, media with their bytes,
/// and how many one-time keys were acknowledged.
#[derive(Default)]
struct Answered {
    messages: HashMap<String, (String, String)>,
    media: Vec<(String, Vec<u8>)>,
    keys: usize,
}

/// Waits (up to 60 s, however loaded the machine) until the writers have been told `enough`.
async fn wait_for(answered: &Mutex<Answered>, enough: impl Fn(&Answered) -> bool) {
    for _ in 0..600 {
        if enough(&answered.lock().expect("lock")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn answered_writes_survive_a_kill(backend: Backend) {
    let name = "answered_writes_survive_a_kill";
    let Some(binary) = server_binary(name) else {
        return;
    };
    let db = Database::create(&backend).await;
    let media = tempfile::tempdir().expect("media dir");
    let (base, mut server) = start(&binary, &db.url, media.path()).await;
    let http = reqwest::Client::new();
    let register = json!({"username": "alice", "password": "crash test"});
    let (_, challenge) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/_matrix/client/v3/register"),
        "",
        Some(register.clone()),
    )
    .await
    .expect("answer");
    let mut register = register;
    register["auth"] = json!({"type": "m.login.dummy", "session": challenge["session"]});
    let (status, alice) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/_matrix/client/v3/register"),
        "",
        Some(register),
    )
    .await
    .expect("answer");
    assert_eq!(status, 200, "{alice}");
    let token = alice["access_token"].as_str().expect("token").to_owned();
    let (_, room) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/_matrix/client/v3/createRoom"),
        &token,
        Some(json!({"preset": "private_chat"})),
    )
    .await
    .expect("answer");
    let room = room["room_id"].as_str().expect("room").to_owned();

    // Writers: messages from six senders, media from two, one-time keys from one.
    let answered = Arc::new(Mutex::new(Answered::default()));
    let mut writers = Vec::new();
    for sender in 0..6 {
        let (http, base, token, room, answered) = (
            http.clone(),
            base.clone(),
            token.clone(),
            room.clone(),
            answered.clone(),
        );
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let txn = format!("s{sender}-{i}");
                let url =
                    format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
                let body = json!({"msgtype": "m.text", "body": txn});
                match call(&http, reqwest::Method::PUT, url, &token, Some(body)).await {
                    Some((200, sent)) => {
                        let id = sent["event_id"].as_str().expect("event id").to_owned();
                        let mut answered = answered.lock().expect("lock");
                        answered.messages.insert(txn.clone(), (txn, id));
                    }
                    Some((status, error)) => panic!("send answered {status}: {error}"),
                    None => return,
                }
            }
        }));
    }
    for uploader in 0..2u8 {
        let (http, base, token, answered) =
            (http.clone(), base.clone(), token.clone(), answered.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..u32::MAX {
                let bytes: Vec<u8> = (0..4096u32)
                    .map(|b| (b ^ i ^ (u32::from(uploader) * 7)) as u8)
                    .collect();
                let sent = http
                    .post(format!("{base}/_matrix/media/v3/upload"))
                    .bearer_auth(&token)
                    .header("Content-Type", "application/octet-stream")
                    .body(bytes.clone())
                    .send()
                    .await;
                // No answer: the server was killed. Any answer must be a success.
                let Ok(response) = sent else { return };
                let status = response.status();
                let Ok(body) = response.json::<Value>().await else {
                    return;
                };
                assert_eq!(status, 200, "upload answered {status}: {body}");
                let uri = body["content_uri"].as_str().expect("uri").to_owned();
                answered.lock().expect("lock").media.push((uri, bytes));
            }
        }));
    }
    {
        let (http, base, token, answered) =
            (http.clone(), base.clone(), token.clone(), answered.clone());
        writers.push(tokio::spawn(async move {
            for batch in 0.. {
                let keys: serde_json::Map<String, Value> = (0..5)
                    .map(|k| {
                        (
                            format!("curve25519:K{batch}x{k}"),
                            json!(format!("key{batch}x{k}")),
                        )
                    })
                    .collect();
                let url = format!("{base}/_matrix/client/v3/keys/upload");
                let body = json!({"one_time_keys": keys});
                match call(&http, reqwest::Method::POST, url, &token, Some(body)).await {
                    Some((200, _)) => answered.lock().expect("lock").keys += 5,
                    Some((status, error)) => panic!("key upload answered {status}: {error}"),
                    None => return,
                }
            }
        }));
    }

    // A sync mid-stream: its token must carry on after the crash without repeats.
    wait_for(&answered, |a| a.messages.len() >= 10).await;
    let (status, synced) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/_matrix/client/v3/sync?timeout=0"),
        &token,
        None,
    )
    .await
    .expect("answer");
    assert_eq!(status, 200, "{synced}");
    let since = synced["next_batch"].as_str().expect("token").to_owned();
    let delivered: HashSet<String> = synced["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect();
    wait_for(&answered, |a| {
        a.messages.len() >= 30 && a.media.len() >= 2 && a.keys >= 10
    })
    .await;
    server.start_kill().expect("SIGKILL");
    server.wait().await.expect("killed");
    for writer in writers {
        writer.await.expect("writer");
    }
    let answered = std::mem::take(&mut *answered.lock().expect("lock"));
    assert!(
        answered.messages.len() >= 30 && answered.media.len() >= 2 && answered.keys >= 10,
        "the writers got going: {} messages, {} uploads, {} keys",
        answered.messages.len(),
        answered.media.len(),
        answered.keys
    );

    let (base, mut server) = start(&binary, &db.url, media.path()).await;
    // Every answered message is there, once.
    let bodies = all_bodies(&http, &base, &token, &room).await;
    let mut seen = HashSet::new();
    for body in &bodies {
        assert!(seen.insert(body.clone()), "{body} is in the room twice");
    }
    for (body, _) in answered.messages.values() {
        assert!(seen.contains(body), "answered message {body} was lost");
    }
    // Retrying an answered transaction gives the same event, not a second one.
    let (txn, (_, event_id)) = answered.messages.iter().next().expect("one");
    let (status, again) = call(
        &http,
        reqwest::Method::PUT,
        format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        &token,
        Some(json!({"msgtype": "m.text", "body": txn})),
    )
    .await
    .expect("answer");
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["event_id"].as_str(), Some(event_id.as_str()));
    // Every answered upload downloads as it was sent.
    for (uri, bytes) in &answered.media {
        let path = uri.trim_start_matches("mxc://");
        let got = http
            .get(format!("{base}/_matrix/client/v1/media/download/{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("download");
        assert_eq!(got.status(), 200, "{uri}");
        assert_eq!(
            got.bytes().await.expect("bytes").as_ref(),
            &bytes[..],
            "{uri}"
        );
    }
    // Every acknowledged one-time key is still there.
    let (status, counts) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/_matrix/client/v3/keys/upload"),
        &token,
        Some(json!({})),
    )
    .await
    .expect("answer");
    assert_eq!(status, 200, "{counts}");
    let kept = counts["one_time_key_counts"]["curve25519"]
        .as_u64()
        .expect("count");
    assert!(
        kept >= answered.keys as u64,
        "{kept} one-time keys kept, {} acknowledged",
        answered.keys
    );
    // The token from before the crash continues: what follows it, and nothing it delivered.
    let (status, sent) = call(
        &http,
        reqwest::Method::PUT,
        format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/after"),
        &token,
        Some(json!({"msgtype": "m.text", "body": "after the crash"})),
    )
    .await
    .expect("answer");
    assert_eq!(status, 200, "{sent}");
    let after = sent["event_id"].as_str().expect("id").to_owned();
    let filter = json!({"room": {"timeline": {"limit": 10000}}}).to_string();
    let (status, next) = call(
        &http,
        reqwest::Method::GET,
        format!(
            "{base}/_matrix/client/v3/sync?timeout=0&since={since}&filter={}",
            url::form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>()
        ),
        &token,
        None,
    )
    .await
    .expect("answer");
    assert_eq!(status, 200, "{next}");
    let events: Vec<String> = next["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect();
    assert!(events.contains(&after), "{next}");
    for id in &events {
        assert!(
            !delivered.contains(id),
            "{id} was delivered before the crash, and again"
        );
    }
    server.start_kill().expect("stop");
    server.wait().await.expect("stopped");
    db.drop_database().await;
}
