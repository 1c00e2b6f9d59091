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
