//! `matrixon-load`: a load generator that talks HTTP to a running Matrixon and prints what
//! the benchmarks in docs/BENCHMARKS.md report.
//!
//! - `idle`: N long-polling `/sync` requests held open at once; the server's RSS before and
//!   with them, and the memory per waiting connection.
//! - `fanout`: one sender, R receivers long-polling in one room; send-to-receive latency.
//! - `send`: `PUT /send` throughput into one room or spread over many, with latency; with
//!   `--members`, into rooms that many other users have joined.
//!
//! Users are registered through the shared-secret admin API (`registration.shared_secret`).

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;
use tokio::task::JoinSet;

#[derive(Parser)]
#[command(about = "Load generator for Matrixon")]
struct Cli {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    server: String,
    /// Its `registration.shared_secret`.
    #[arg(long, default_value = "bench secret")]
    secret: String,
    /// Local addresses to spread connections over (loopback aliases such as 127.0.0.2).
    #[arg(long, value_delimiter = ',')]
    sources: Vec<IpAddr>,
    /// The server's metrics URL (`metrics.listen`, path included): when given, fan-out sends
    /// and idle measures only once every sync is parked (`matrixon_sync_waiting`), so that
    /// latencies leave out the server still taking requests in.
    #[arg(long)]
    metrics: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hold N idle long-polls and report memory per waiting connection.
    Idle {
        /// Waiting syncs to hold.
        #[arg(long)]
        connections: usize,
        /// Distinct users they belong to.
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// The server's process id, to read its memory.
        #[arg(long)]
        pid: u32,
    },
    /// One sender, R long-polling receivers in one room: send-to-receive latency.
    Fanout {
        /// Receiving connections.
        #[arg(long)]
        receivers: usize,
        /// Distinct receiving users.
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Messages to send, one after another.
        #[arg(long, default_value_t = 5)]
        messages: usize,
        /// The server's process id, to report the CPU time it and this program spent from
        /// each send until every receiver had the message.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// One user in many rooms: the first sliding sync window, and how fast an incremental
    /// sliding sync (and, beside it, `/sync`) wakes for a message.
    Sliding {
        /// Rooms the user is in.
        #[arg(long, default_value_t = 1000)]
        rooms: usize,
        /// Rooms in the window (the list's range).
        #[arg(long, default_value_t = 20)]
        window: usize,
        /// Requests of each kind.
        #[arg(long, default_value_t = 100)]
        requests: usize,
        /// The server's process id, to report its CPU time per request.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Send throughput and latency.
    Send {
        /// Rooms to spread the messages over.
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        /// Messages in all.
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// Concurrent senders.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Other users joined to every room (each send runs their push rules and records
        /// their notifications).
        #[arg(long, default_value_t = 0)]
        members: usize,
    },
}

struct Load {
    metrics: Option<String>,
    server: String,
    secret: String,
    clients: Vec<reqwest::Client>,
}

impl Load {
    fn client(&self, i: usize) -> &reqwest::Client {
        &self.clients[i % self.clients.len()]
    }

    /// Registers `name` (admin shared-secret API); its access token.
    async fn register(&self, name: &str) -> Result<String> {
        let http = self.client(0);
        let url = format!("{}/_synapse/admin/v1/register", self.server);
        let nonce: Value = http.get(&url).send().await?.json().await?;
        let nonce = nonce["nonce"].as_str().context("nonce")?.to_owned();
        let password = format!("load {name} password");
        let mut mac = Hmac::<Sha1>::new_from_slice(self.secret.as_bytes())?;
        mac.update(format!("{nonce}\0{name}\0{password}\0notadmin").as_bytes());
        let mac = hex::encode(mac.finalize().into_bytes());
        let answer: Value = http
            .post(&url)
            .json(&json!({"nonce": nonce, "username": name, "password": password, "mac": mac}))
            .send()
            .await?
            .json()
            .await?;
        answer["access_token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("registering {name}: {answer}"))
    }

    async fn users(&self, prefix: &str, count: usize) -> Result<Vec<String>> {
        let run = Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id());
        let mut tokens = Vec::with_capacity(count);
        let mut set = JoinSet::new();
        for i in 0..count {
            let name = format!("{prefix}{run:x}{i}").to_lowercase();
            let this = self.clone_handle();
            set.spawn(async move { this.register(&name).await });
            if set.len() >= 8
                && let Some(done) = set.join_next().await
            {
                tokens.push(done??);
            }
        }
        while let Some(done) = set.join_next().await {
            tokens.push(done??);
        }
        Ok(tokens)
    }

    fn clone_handle(&self) -> Arc<Load> {
        Arc::new(Load {
            metrics: self.metrics.clone(),
            server: self.server.clone(),
            secret: self.secret.clone(),
            clients: self.clients.clone(),
        })
    }

    /// Until the server has `count` syncs parked (read from its metrics), or a pause long
    /// enough for that when there are no metrics to read.
    async fn wait_parked(&self, count: usize) -> Result<()> {
        let Some(url) = &self.metrics else {
            tokio::time::sleep(Duration::from_millis(200 + count as u64 / 10)).await;
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let text = self.client(0).get(url).send().await?.text().await?;
            let waiting = text
                .lines()
                .find_map(|l| l.strip_prefix("matrixon_sync_waiting "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .context("matrixon_sync_waiting in the metrics")?;
            if waiting >= count as f64 {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {waiting} of {count} syncs parked after 300 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> Result<Value> {
        let response = self
            .client(0)
            .post(format!("{}{path}", self.server))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("POST {path}: {status} {body}");
        }
        Ok(body)
    }

    async fn sync(
        &self,
        i: usize,
        token: &str,
        since: Option<&str>,
        timeout_ms: u64,
    ) -> Result<Value> {
        let mut url = format!(
            "{}/_matrix/client/v3/sync?timeout={timeout_ms}&set_presence=offline",
            self.server
        );
        if let Some(since) = since {
            url.push_str(&format!("&since={since}"));
        }
        let response = self.client(i).get(url).bearer_auth(token).send().await?;
        Ok(response.json().await?)
    }
}

/// User and system CPU time of a process (`self` or a pid), in seconds.
fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces) are space-separated.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks =
        |i: usize| -> Result<f64> { Ok(fields.get(i).context("stat field")?.parse::<f64>()?) };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; the
    // kernel counts them in USER_HZ, 100 per second on Linux.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name}: n={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

async fn idle(load: Arc<Load>, connections: usize, users: usize, pid: u32) -> Result<()> {
    let tokens = load.users("idle", users.max(1)).await?;
    let mut sinces = Vec::new();
    for token in &tokens {
        let first = load.sync(0, token, None, 0).await?;
        sinces.push(
            first["next_batch"]
                .as_str()
                .context("next_batch")?
                .to_owned(),
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid)?;
    let mut set = JoinSet::new();
    for i in 0..connections {
        let load = load.clone();
        let token = tokens[i % tokens.len()].clone();
        let since = sinces[i % sinces.len()].clone();
        set.spawn(async move { load.sync(i, &token, Some(&since), 290_000).await.map(drop) });
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Let every request arrive and settle into waiting.
    load.wait_parked(connections).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = rss_kib(pid)?;
    let per = (waiting.saturating_sub(before)) as f64 / connections as f64;
    println!(
        "idle: {connections} waiting syncs from {} users: server RSS {before} KiB -> {waiting} KiB, {per:.2} KiB per waiting connection",
        tokens.len()
    );
    set.abort_all();
    Ok(())
}

async fn fanout(
    load: Arc<Load>,
    receivers: usize,
    users: usize,
    messages: usize,
    pid: Option<u32>,
) -> Result<()> {
    // CPU seconds (server, this program) spent between each send and its last receipt.
    let mut cpu = (0.0, 0.0);
    let sender = load.users("sender", 1).await?.remove(0);
    let room: Value = load
        .post(
            &sender,
            "/_matrix/client/v3/createRoom",
            json!({"preset": "public_chat"}),
        )
        .await?;
    let room_id = room["room_id"].as_str().context("room")?.to_owned();
    let tokens = load.users("recv", users.max(1)).await?;
    for token in &tokens {
        load.post(
            token,
            &format!("/_matrix/client/v3/join/{room_id}"),
            json!({}),
        )
        .await?;
    }
    let mut latencies = Vec::new();
    for m in 0..messages {
        let mut sinces = Vec::new();
        for token in &tokens {
            let now = load.sync(0, token, None, 0).await?;
            sinces.push(now["next_batch"].as_str().context("next_batch")?.to_owned());
        }
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(receivers);
        let sent_at = Arc::new(tokio::sync::OnceCell::<Instant>::new());
        let mut set = JoinSet::new();
        for i in 0..receivers {
            let load = load.clone();
            let token = tokens[i % tokens.len()].clone();
            let since = sinces[i % sinces.len()].clone();
            let sent_at = sent_at.clone();
            let ready = ready_tx.clone();
            set.spawn(async move {
                let _ = ready.send(()).await;
                let answer = load.sync(i, &token, Some(&since), 60_000).await?;
                let arrived = Instant::now();
                let got = answer["rooms"]["join"]
                    .as_object()
                    .is_some_and(|j| !j.is_empty());
                anyhow::ensure!(
                    got,
                    "a receiver woke without the message after {:?}: {answer}",
                    arrived.duration_since(*sent_at.get().context("sent")?)
                );
                Ok::<_, anyhow::Error>(arrived.duration_since(*sent_at.get().context("sent")?))
            });
        }
        drop(ready_tx);
        for _ in 0..receivers {
            ready_rx
                .recv()
                .await
                .context("a receiver task ended early")?;
        }
        load.wait_parked(receivers).await?;
        let cpu_before = pid.map(|pid| (cpu_seconds(&pid.to_string()), cpu_seconds("self")));
        let start = Instant::now();
        let _ = sent_at.set(start);
        let response = load
            .client(0)
            .put(format!(
                "{}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/f{m}",
                load.server
            ))
            .bearer_auth(&sender)
            .json(&json!({"msgtype": "m.text", "body": format!("fan-out {m}")}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "send: {}",
            response.status()
        );
        while let Some(done) = set.join_next().await {
            latencies.push(done??);
        }
        if let (Some(pid), Some((server, own))) = (pid, cpu_before) {
            cpu.0 += cpu_seconds(&pid.to_string())? - server?;
            cpu.1 += cpu_seconds("self")? - own?;
        }
    }
    report(&format!("fanout R={receivers} ({users} users)"), latencies);
    if pid.is_some() {
        let per = |seconds: f64| seconds * 1e6 / (receivers * messages) as f64;
        println!(
            "fanout CPU per delivery: server {:.1} µs, load generator {:.1} µs (both on the same cores)",
            per(cpu.0),
            per(cpu.1)
        );
    }
    Ok(())
}

async fn send(
    load: Arc<Load>,
    rooms: usize,
    messages: usize,
    concurrency: usize,
    members: usize,
) -> Result<()> {
    let sender = load.users("sender", 1).await?.remove(0);
    let preset = if members > 0 {
        "public_chat"
    } else {
        "private_chat"
    };
    let mut room_ids = Vec::new();
    for _ in 0..rooms.max(1) {
        let room: Value = load
            .post(
                &sender,
                "/_matrix/client/v3/createRoom",
                json!({"preset": preset}),
            )
            .await?;
        room_ids.push(room["room_id"].as_str().context("room")?.to_owned());
    }
    if members > 0 {
        let tokens = load.users("member", members).await?;
        let mut set = JoinSet::new();
        for token in tokens {
            for room in &room_ids {
                let (load, token) = (load.clone(), token.clone());
                let path = format!("/_matrix/client/v3/join/{room}");
                set.spawn(async move { load.post(&token, &path, json!({})).await.map(drop) });
                if set.len() >= 8
                    && let Some(done) = set.join_next().await
                {
                    done??;
                }
            }
        }
        while let Some(done) = set.join_next().await {
            done??;
        }
    }
    let room_ids = Arc::new(room_ids);
    let started = Instant::now();
    let mut set = JoinSet::new();
    let per_worker = messages.div_ceil(concurrency.max(1));
    for w in 0..concurrency.max(1) {
        let load = load.clone();
        let sender = sender.clone();
        let room_ids = room_ids.clone();
        set.spawn(async move {
            let mut latencies = Vec::new();
            for k in 0..per_worker {
                let n = w * per_worker + k;
                let room = &room_ids[n % room_ids.len()];
                let t = Instant::now();
                let response = load
                    .client(w)
                    .put(format!(
                        "{}/_matrix/client/v3/rooms/{room}/send/m.room.message/s{n}",
                        load.server
                    ))
                    .bearer_auth(&sender)
                    .json(&json!({"msgtype": "m.text", "body": format!("message {n}")}))
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "send: {}",
                    response.status()
                );
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = set.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = started.elapsed();
    println!(
        "send: {} messages into {} room(s) of {} members, {} concurrent: {:.0} messages/s",
        latencies.len(),
        room_ids.len(),
        members + 1,
        concurrency,
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    report("send latency", latencies);
    Ok(())
}

/// Sends one text message (transaction `txn`) and checks it was accepted.
async fn send_text(load: &Load, user: &str, room: &str, txn: &str) -> Result<()> {
    let response = load
        .client(0)
        .put(format!(
            "{}/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}",
            load.server
        ))
        .bearer_auth(user)
        .json(&json!({"msgtype": "m.text", "body": format!("message {txn}")}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "send: {}",
        response.status()
    );
    Ok(())
}

const SLIDING_PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// Element X's room list request (its `all_rooms` list, timeline of one, its required state).
fn room_list_request(window: usize) -> Value {
    json!({
        "conn_id": "room-list",
        "lists": {"all_rooms": {
            "ranges": [[0, window.saturating_sub(1)]],
            "timeline_limit": 1,
            "required_state": [
                ["m.room.name", ""], ["m.room.avatar", ""], ["m.room.encryption", ""],
                ["m.room.member", "$LAZY"], ["m.room.member", "$ME"],
                ["m.room.canonical_alias", ""], ["m.room.join_rules", ""], ["m.room.topic", ""],
            ],
        }},
        "extensions": {"account_data": {"enabled": true}, "receipts": {"enabled": true},
            "typing": {"enabled": true}},
    })
}

/// CPU seconds of the server since `from`, per request, in milliseconds.
fn cpu_per_request(pid: Option<u32>, from: Option<f64>, requests: usize) -> String {
    match (pid, from) {
        (Some(pid), Some(from)) => match cpu_seconds(&pid.to_string()) {
            Ok(now) => format!(
                ", server CPU {:.2} ms per request",
                (now - from) * 1e3 / requests.max(1) as f64
            ),
            Err(_) => String::new(),
        },
        _ => String::new(),
    }
}

async fn sliding(
    load: Arc<Load>,
    rooms: usize,
    window: usize,
    requests: usize,
    pid: Option<u32>,
) -> Result<()> {
    let user = load.users("sliding", 1).await?.remove(0);
    let mut room_ids = Vec::with_capacity(rooms);
    for i in 0..rooms {
        let room: Value = load
            .post(
                &user,
                "/_matrix/client/v3/createRoom",
                json!({"name": format!("room {i}")}),
            )
            .await?;
        room_ids.push(room["room_id"].as_str().context("room")?.to_owned());
    }
    let cpu = || pid.and_then(|p| cpu_seconds(&p.to_string()).ok());
    // The first window of a new connection, again and again.
    let mut first = Vec::with_capacity(requests);
    let started = cpu();
    let mut pos = String::new();
    for _ in 0..requests {
        let t = Instant::now();
        let answer = load
            .post(
                &user,
                &format!("{SLIDING_PATH}?timeout=0"),
                room_list_request(window),
            )
            .await?;
        first.push(t.elapsed());
        anyhow::ensure!(
            answer["rooms"].as_object().map(|r| r.len()) == Some(window.min(rooms)),
            "the window holds {window} rooms: {answer}"
        );
        pos = answer["pos"].as_str().context("pos")?.to_owned();
    }
    let label = format!("sliding sync, first {window}-room window of {rooms} rooms");
    println!("{label}{}", cpu_per_request(pid, started, requests));
    report(&label, first);

    // Incremental: a long poll, then a message into a room of the window.
    let mut woken = Vec::with_capacity(requests);
    let started = cpu();
    for n in 0..requests {
        let waiting = {
            let load = load.clone();
            let (user, pos) = (user.clone(), pos.clone());
            tokio::spawn(async move {
                let answer = load
                    .post(
                        &user,
                        &format!("{SLIDING_PATH}?pos={pos}&timeout=30000"),
                        room_list_request(window),
                    )
                    .await?;
                Ok::<_, anyhow::Error>((Instant::now(), answer))
            })
        };
        load.wait_parked(1).await?;
        let room = &room_ids[rooms - 1 - n % window.min(rooms)];
        let sent = Instant::now();
        send_text(&load, &user, room, &format!("w{n}")).await?;
        let (answered, answer) = waiting.await??;
        woken.push(answered.saturating_duration_since(sent));
        pos = answer["pos"].as_str().context("pos")?.to_owned();
    }
    let label = "sliding sync, incremental: send to answer";
    println!("{label}{}", cpu_per_request(pid, started, requests));
    report(label, woken);

    // The same with `/sync`, for comparison.
    let mut since = load.sync(0, &user, None, 0).await?["next_batch"]
        .as_str()
        .context("next_batch")?
        .to_owned();
    let mut woken = Vec::with_capacity(requests);
    let started = cpu();
    for n in 0..requests {
        let waiting = {
            let load = load.clone();
            let (user, since) = (user.clone(), since.clone());
            tokio::spawn(async move {
                let answer = load.sync(0, &user, Some(&since), 30000).await?;
                Ok::<_, anyhow::Error>((Instant::now(), answer))
            })
        };
        load.wait_parked(1).await?;
        let room = &room_ids[n % rooms];
        let sent = Instant::now();
        send_text(&load, &user, room, &format!("v{n}")).await?;
        let (answered, answer) = waiting.await??;
        woken.push(answered.saturating_duration_since(sent));
        since = answer["next_batch"]
            .as_str()
            .context("next_batch")?
            .to_owned();
    }
    let label = "/sync, incremental: send to answer";
    println!("{label}{}", cpu_per_request(pid, started, requests));
    report(label, woken);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let sources = if cli.sources.is_empty() {
        vec![None]
    } else {
        cli.sources.iter().copied().map(Some).collect()
    };
    let clients = sources
        .into_iter()
        .map(|source| {
            reqwest::Client::builder()
                .local_address(source)
                .pool_max_idle_per_host(usize::MAX)
                .timeout(Duration::from_secs(600))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let load = Arc::new(Load {
        metrics: cli.metrics,
        server: cli.server.trim_end_matches('/').to_owned(),
        secret: cli.secret,
        clients,
    });
    match cli.command {
        Command::Idle {
            connections,
            users,
            pid,
        } => idle(load, connections, users, pid).await,
        Command::Fanout {
            receivers,
            users,
            messages,
            pid,
        } => fanout(load, receivers, users, messages, pid).await,
        Command::Send {
            rooms,
            messages,
            concurrency,
            members,
        } => send(load, rooms, messages, concurrency, members).await,
        Command::Sliding {
            rooms,
            window,
            requests,
            pid,
        } => sliding(load, rooms, window, requests, pid).await,
    }
}
