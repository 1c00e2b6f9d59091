//! Two instances on one PostgreSQL and one Redis: a send on one wakes a sync waiting on the
//! other, typing crosses over, and concurrent sends to one room keep one unforked chain.

use std::{sync::Arc, time::Duration};

use matrixon::Server;
use serde_json::{Value, json};

use crate::harness::{Backend, TestClock, TestServer, redis_url, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_database_and_bus() {
    let Some(redis) = redis_url("two_instances_share_one_database_and_bus") else {
        return;
    };
    let Some(backend) = Backend::postgres("two_instances_share_one_database_and_bus") else {
        return;
    };
    let redis_for_a = redis.clone();
    let a = TestServer::start_with(&backend, move |c| c.redis.url = Some(redis_for_a)).await;
    let mut config = test_config(&a.db.url);
    config.redis.url = Some(redis);
    let b = Server::start_with_clock(config, Arc::new(TestClock::default()))
        .await
        .expect("second instance starts");
    let b_base = b.base_url();
    let http = reqwest::Client::new();
    let on_b = |path: &str| format!("{b_base}{path}");

    let token = |v: &Value| v["access_token"].as_str().expect("token").to_owned();
    let alice = token(&a.register("alice", "pw alice 1").await);
    let bob = token(&a.register("bob", "pw bob 1").await);
    let (_, room) = a
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            &json!({"preset": "public_chat"}),
        )
        .await;
    let room_id = room["room_id"].as_str().expect("room").to_owned();
    // Bob joins through instance B.
    let joined = http
        .post(on_b(&format!("/_matrix/client/v3/join/{room_id}")))
        .bearer_auth(&bob)
        .json(&json!({}))
        .send()
        .await
        .expect("join");
    assert_eq!(joined.status(), 200);
    let get_b = |path: String, token: String| {
        let http = http.clone();
        let url = on_b(&path);
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("request")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let since = get_b("/_matrix/client/v3/sync".to_owned(), bob.clone()).await["next_batch"]
        .as_str()
        .expect("token")
        .to_owned();

    // Bob waits on B; Alice sends on A; B's sync wakes with the message.
    let waiting = tokio::spawn(get_b(
        format!("/_matrix/client/v3/sync?since={since}&timeout=20000"),
        bob.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let sent = a
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/x1"),
            Some(&alice),
            &json!({"msgtype": "m.text", "body": "across instances"}),
        )
        .await;
    assert_eq!(sent.0, 200, "{:?}", sent.1);
    let woke = waiting.await.expect("task");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "woken by the bus, not the timeout"
    );
    let events = &woke["rooms"]["join"][&room_id]["timeline"]["events"];
    assert_eq!(events[0]["content"]["body"], "across instances", "{woke}");
    let since = woke["next_batch"].as_str().expect("token").to_owned();

    // Typing on A shows on B.
    let typing = a
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room_id}/typing/@alice:localhost"),
            Some(&alice),
            &json!({"typing": true, "timeout": 10000}),
        )
        .await;
    assert_eq!(typing.0, 200);
    let mut typing_seen = false;
    for _ in 0..50 {
        let update = get_b(
            format!("/_matrix/client/v3/sync?since={since}&timeout=1000"),
            bob.clone(),
        )
        .await;
        if let Some(events) = update["rooms"]["join"][&room_id]["ephemeral"]["events"].as_array()
            && events
                .iter()
                .any(|e| e["content"]["user_ids"] == json!(["@alice:localhost"]))
        {
            typing_seen = true;
            break;
        }
    }
    assert!(typing_seen, "typing crossed to the other instance");

    // Presence set on A is seen from B.
    let set = a
        .put_json(
            "/_matrix/client/v3/presence/@alice:localhost/status",
            Some(&alice),
            &json!({"presence": "unavailable", "status_msg": "in a meeting"}),
        )
        .await;
    assert_eq!(set.0, 200, "{:?}", set.1);
    let mut presence_seen = false;
    for _ in 0..50 {
        let seen = get_b(
            "/_matrix/client/v3/presence/@alice:localhost/status".to_owned(),
            bob.clone(),
        )
        .await;
        if seen["status_msg"] == "in a meeting" {
            presence_seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(presence_seen, "presence crossed to the other instance");

    // Concurrent sends from both instances: all stored, one chain, no shared parents.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let http = http.clone();
        let (base, token) = if i % 2 == 0 {
            (a.base.clone(), alice.clone())
        } else {
            (b_base.clone(), bob.clone())
        };
        let url = format!("{base}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/c{i}");
        tasks.push(tokio::spawn(async move {
            http.put(url)
                .bearer_auth(token)
                .json(&json!({"msgtype": "m.text", "body": format!("c{i}")}))
                .send()
                .await
                .expect("send")
                .status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), 200);
    }
    let services = a.server.as_ref().expect("running").services.clone();
    let stored = services
        .store
        .room_events(&room_id, 0, i64::MAX, true, 10_000)
        .await
        .expect("events");
    let mut parents = std::collections::HashSet::new();
    for pair in stored.windows(2) {
        let pdu: Value = serde_json::from_str(&pair[1].json).expect("pdu");
        assert_eq!(
            pdu["prev_events"],
            json!([pair[0].event_id]),
            "each event follows the previous one"
        );
        assert!(
            parents.insert(pair[0].event_id.clone()),
            "no event has two children"
        );
    }
    let bodies = stored.iter().filter(|e| e.kind == "m.room.message").count();
    assert_eq!(bodies, 21);
    b.shutdown().await;
    a.finish().await;
}

/// Two `matrixon` processes (the binary the test command builds), on one PostgreSQL and one
/// Redis: each serves every request of this scenario, a sync waiting on one wakes for a send
/// on the other, and concurrent sends through both give one history, seen alike by both.
/// A sliding sync connection started on one instance continues on the other (its positions
/// are in the shared database), and a long poll there wakes for a message sent on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliding_sync_connection_moves_between_instances() {
    let name = "a_sliding_sync_connection_moves_between_instances";
    let (Some(redis), Some(backend)) = (redis_url(name), Backend::postgres(name)) else {
        return;
    };
    let redis_for_a = redis.clone();
    let a = TestServer::start_with(&backend, move |c| c.redis.url = Some(redis_for_a)).await;
    let mut config = test_config(&a.db.url);
    config.redis.url = Some(redis);
    let b = Server::start_with_clock(config, Arc::new(TestClock::default()))
        .await
        .expect("second instance starts");
    let b_base = b.base_url();
    let token = |v: &Value| v["access_token"].as_str().expect("token").to_owned();
    let alice = token(&a.register("alice", "pw alice 1").await);
    let (_, room) = a
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            &json!({"name": "Shared"}),
        )
        .await;
    let room_id = room["room_id"].as_str().expect("room").to_owned();
    let path = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
    let body =
        json!({"conn_id": "main", "lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 5}}});
    let (status, first) = a
        .post_json(&format!("{path}?timeout=0"), Some(&alice), &body)
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["rooms"][&room_id]["initial"], true);
    let pos = first["pos"].as_str().expect("pos").to_owned();

    let waiting = tokio::spawn({
        let url = format!("{b_base}{path}?pos={pos}&timeout=20000");
        let (alice, body) = (alice.clone(), body.clone());
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(alice)
                .json(&body)
                .send()
                .await
                .expect("request")
                .json::<Value>()
                .await
                .expect("json")
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = a
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/s1"),
            Some(&alice),
            &json!({"msgtype": "m.text", "body": "from A"}),
        )
        .await;
    assert_eq!(status, 200);
    let next = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("woken before its timeout")
        .expect("task");
    let room = &next["rooms"][&room_id];
    assert!(room.get("initial").is_none(), "continued on B: {next}");
    assert_eq!(room["timeline"][0]["content"]["body"], "from A", "{next}");
    b.shutdown().await;
    a.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_share_one_database_and_bus() {
    let name = "two_server_processes_share_one_database_and_bus";
    let Some(redis) = redis_url(name) else {
        return;
    };
    let Some(backend) = Backend::postgres(name) else {
        return;
    };
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("matrixon")))
        .filter(|bin| bin.exists());
    let Some(binary) = binary else {
        assert!(
            std::env::var("CI").is_err(),
            "target/debug/matrixon is missing: scripts/test.sh builds it before the tests"
        );
        println!("SKIPPED {name}: build the server binary first (cargo build -p matrixon)");
        return;
    };
    let db = crate::harness::Database::create(&backend).await;
    let media = tempfile::tempdir().expect("media dir");
    let start = |redis: &str| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let child = tokio::process::Command::new(&binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("MATRIXON_LISTEN", format!("[\"127.0.0.1:{port}\"]"))
            .env("MATRIXON_DATABASE_URL", format!("\"{}\"", db.url))
            .env("MATRIXON_REDIS_URL", format!("\"{redis}\""))
            .env("MATRIXON_REGISTRATION_OPEN", "true")
            .env("MATRIXON_RATE_LIMITS_ENABLED", "false")
            .env(
                "MATRIXON_MEDIA_DIRECTORY",
                format!("\"{}\"", media.path().display()),
            )
            .env("MATRIXON_LOG_LEVEL", "\"warn\"")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("matrixon starts");
        (format!("http://127.0.0.1:{port}"), child)
    };
    let (a, _a_process) = start(&redis);
    let (b, _b_process) = start(&redis);
    let http = reqwest::Client::new();
    for base in [&a, &b] {
        let mut up = false;
        for _ in 0..200 {
            if http
                .get(format!("{base}/health"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "{base} did not come up");
    }
    let call = |base: &str,
                method: reqwest::Method,
                path: &str,
                token: Option<&str>,
                body: Option<Value>| {
        let mut request = http.request(method, format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let register = |base: String, user: &'static str| {
        let call = &call;
        async move {
            let body = json!({"username": user, "password": "two processes"});
            let (_, challenge) = call(
                &base,
                reqwest::Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(body.clone()),
            )
            .await;
            let mut body = body;
            body["auth"] = json!({"type": "m.login.dummy", "session": challenge["session"]});
            let (status, done) = call(
                &base,
                reqwest::Method::POST,
                "/_matrix/client/v3/register",
                None,
                Some(body),
            )
            .await;
            assert_eq!(status, 200, "{done}");
            done["access_token"].as_str().expect("token").to_owned()
        }
    };
    let alice = register(a.clone(), "alice").await;
    let bob = register(b.clone(), "bob").await;
    let (status, room) = call(
        &a,
        reqwest::Method::POST,
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        Some(json!({"preset": "public_chat"})),
    )
    .await;
    assert_eq!(status, 200, "{room}");
    let room = room["room_id"].as_str().expect("room").to_owned();
    let (status, _) = call(
        &b,
        reqwest::Method::POST,
        &format!("/_matrix/client/v3/join/{room}"),
        Some(&bob),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, first) = call(
        &b,
        reqwest::Method::GET,
        "/_matrix/client/v3/sync",
        Some(&bob),
        None,
    )
    .await;
    let since = first["next_batch"].as_str().expect("token").to_owned();

    // Bob waits on B; Alice sends on A; B's sync wakes with it.
    let waiting = tokio::spawn(call(
        &b,
        reqwest::Method::GET,
        &format!("/_matrix/client/v3/sync?since={since}&timeout=20000"),
        Some(&bob),
        None,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let (status, _) = call(
        &a,
        reqwest::Method::PUT,
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/p0"),
        Some(&alice),
        Some(json!({"msgtype": "m.text", "body": "across processes"})),
    )
    .await;
    assert_eq!(status, 200);
    // The send also refreshes Alice's presence, which crosses over too and may wake Bob's
    // sync first: then his next sync brings the message.
    let (_, mut woke) = waiting.await.expect("sync");
    while woke["rooms"]["join"][&room].is_null() && started.elapsed() < Duration::from_secs(15) {
        let next = woke["next_batch"].as_str().expect("token").to_owned();
        woke = call(
            &b,
            reqwest::Method::GET,
            &format!("/_matrix/client/v3/sync?since={next}&timeout=15000"),
            Some(&bob),
            None,
        )
        .await
        .1;
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "woken by the bus"
    );
    assert_eq!(
        woke["rooms"]["join"][&room]["timeline"]["events"][0]["content"]["body"],
        "across processes",
        "{woke}"
    );

    // Both send at once through their own process: one history, the same on both.
    let sends = |base: String, token: String, who: &'static str| {
        let call = &call;
        let room = room.clone();
        async move {
            for n in 0..15 {
                let (status, body) = call(
                    &base,
                    reqwest::Method::PUT,
                    &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{who}{n}"),
                    Some(&token),
                    Some(json!({"msgtype": "m.text", "body": format!("{who} {n}")})),
                )
                .await;
                assert_eq!(status, 200, "{body}");
            }
        }
    };
    tokio::join!(
        sends(a.clone(), alice.clone(), "a"),
        sends(b.clone(), bob.clone(), "b")
    );
    let history = |base: String, token: String| {
        let call = &call;
        let room = room.clone();
        async move {
            let (_, page) = call(
                &base,
                reqwest::Method::GET,
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1000"),
                Some(&token),
                None,
            )
            .await;
            page["chunk"]
                .as_array()
                .expect("chunk")
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["event_id"].as_str().expect("id").to_owned())
                .collect::<Vec<_>>()
        }
    };
    let on_a = history(a.clone(), alice.clone()).await;
    let on_b = history(b.clone(), bob.clone()).await;
    assert_eq!(on_a.len(), 31, "every message once");
    let mut unique = on_a.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 31, "no duplicates");
    assert_eq!(on_a, on_b, "both processes show the same history");
    db.drop_database().await;
}
