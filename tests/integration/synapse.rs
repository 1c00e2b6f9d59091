//! A real Synapse as a federation peer, so the federation tests check Matrixon against the
//! reference homeserver rather than against our own reading of the spec.
//!
//! scripts/test.sh installs Synapse, pinned (tests/federation/synapse-requirements.txt), into
//! tools/synapse-venv. Each [`Synapse`] is a fresh process on loopback with its own temp dir
//! (SQLite database, signing key, media, logs): its server name is `127.0.0.1:<federation
//! port>`, where it serves federation and the client API over TLS with the test certificate
//! in tests/fixtures/tls; the client API is also served over plain HTTP for test clients. Its
//! outbound federation trusts only tests/fixtures/tls/ca.pem and may reach 127.0.0.1.

use std::{
    fs,
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

/// The `registration_shared_secret` of every test Synapse.
pub const SHARED_SECRET: &str = "synapse test shared secret";

/// How long Synapse may take to answer `/health` (it takes about 3 s on an idle machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Synapse, killed (and its temp dir removed) on drop.
pub struct Synapse {
    /// `127.0.0.1:<TLS port>`, the part after the colon in its user ids; that port serves
    /// federation (and the client API).
    pub server_name: String,
    /// `http://127.0.0.1:<port>`, the plain-HTTP client API for test clients.
    pub client_url: String,
    dir: tempfile::TempDir,
    child: tokio::process::Child,
    python: PathBuf,
    client_port: u16,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        // Before the temp dir goes; kill_on_drop would only do it after.
        let _ = self.child.start_kill();
    }
}

/// The repository's root (tests run with cwd = the tests crate).
fn repo_root() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The password [`Synapse::register`] gives `localpart`.
pub fn password(localpart: &str) -> String {
    format!("{localpart} password")
}

/// Two ports nobody listens on now (another process could take one before Synapse binds it).
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = |l: &TcpListener| l.local_addr().expect("local addr").port();
    (port(&a), port(&b))
}

/// Runs Synapse on the configuration in `dir`, its output in files there.
fn spawn(python: &Path, dir: &Path) -> tokio::process::Child {
    let output =
        |name: &str| Stdio::from(fs::File::create(dir.join(name)).expect("create output file"));
    tokio::process::Command::new(python)
        .args(["-m", "synapse.app.homeserver", "-c", "homeserver.yaml"])
        .current_dir(dir)
        // Else Synapse reports this repository's git branch and commit as its own version.
        .env("GIT_CEILING_DIRECTORIES", repo_root())
        .stdin(Stdio::null())
        .stdout(output("stdout.log"))
        .stderr(output("stderr.log"))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()))
}

/// The Synapse configuration for `dir`, as JSON (which is YAML too, so Synapse reads it).
fn homeserver_config(dir: &Path, federation_port: u16, client_port: u16) -> Value {
    let tls = repo_root().join("tests/fixtures/tls");
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let listener = |port: u16, with_tls: bool, names: Value| {
        json!({
            "port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": with_tls,
            "x_forwarded": false, "resources": [{"names": names, "compress": false}],
        })
    };
    let mut config = json!({
        "server_name": format!("127.0.0.1:{federation_port}"),
        "listeners": [
            listener(federation_port, true, json!(["federation", "client"])),
            listener(client_port, false, json!(["client"])),
        ],
        "tls_certificate_path": path(&tls.join("server.pem")),
        "tls_private_key_path": path(&tls.join("server.key")),
        // Outbound federation: verify certificates against the test CA only.
        "federation_verify_certificates": true,
        "federation_custom_ca_list": [path(&tls.join("ca.pem"))],
        // The default blocks 127.0.0.0/8 and the other private ranges. ip_range_whitelist is no
        // use: Synapse checks IP-literal server names against this list alone.
        "ip_range_blacklist": [],
        // Retries and backoff in seconds rather than minutes, so a peer that was down (or
        // answered an error) while a test ran gets its events soon after.
        "federation": {
            "client_timeout": "20s",
            "max_long_retry_delay": "2s",
            "max_short_retry_delay": "1s",
            "destination_min_retry_interval": "1s",
            "destination_retry_multiplier": 1.5,
            "destination_max_retry_interval": "5s",
        },
        "trusted_key_servers": [],
        "suppress_key_server_warning": true,
        "allow_public_rooms_over_federation": true,
        // Synapse's default lets no one but admins publish rooms in its directory.
        "room_list_publication_rules": [{"action": "allow"}],
        "presence": {"enabled": true},
    });
    let settings = config.as_object_mut().expect("an object");
    // (Two json! objects: one would pass the macro's recursion limit.)
    settings.extend(
        json!({
            "database": {"name": "sqlite3", "args": {"database": path(&dir.join("homeserver.db"))}},
            "log_config": path(&dir.join("log.yaml")),
            "media_store_path": path(&dir.join("media_store")),
            "signing_key_path": path(&dir.join("signing.key")),
            "registration_shared_secret": SHARED_SECRET,
            "enable_registration": false,
            "report_stats": false,
            "enable_metrics": false,
        })
        .as_object()
        .expect("an object")
        .clone(),
    );
    // No test load hits a limit.
    let unlimited = json!({"per_second": 100_000, "burst_count": 1_000_000});
    for key in [
        "rc_message",
        "rc_registration",
        "rc_joins_per_room",
        "rc_3pid_validation",
        "rc_third_party_invite",
        "rc_key_requests",
        "rc_admin_redaction",
        "rc_media_create",
        "rc_delayed_event_mgmt",
        "rc_room_creation",
        "rc_reports",
        "rc_user_directory",
        "rc_profile",
    ] {
        settings.insert(key.to_owned(), unlimited.clone());
    }
    let nested = [
        ("rc_login", &["address", "account", "failed_attempts"][..]),
        ("rc_joins", &["local", "remote"]),
        ("rc_invites", &["per_room", "per_user", "per_issuer"]),
        ("rc_presence", &["per_user"]),
    ];
    for (key, kinds) in nested {
        let limits = kinds.iter().map(|k| ((*k).to_owned(), unlimited.clone()));
        settings.insert(key.to_owned(), Value::Object(limits.collect()));
    }
    settings.insert(
        "rc_federation".to_owned(),
        json!({
            "window_size": 1000, "sleep_limit": 100_000, "sleep_delay": 0,
            "reject_limit": 1_000_000, "concurrent": 100_000,
        }),
    );
    config
}

/// Python logging's dictConfig: everything at INFO into `homeserver.log` in `dir`.
fn log_config(dir: &Path) -> Value {
    json!({
        "version": 1,
        "formatters": {"precise": {"format":
            "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"}},
        "handlers": {"file": {
            "class": "logging.FileHandler", "formatter": "precise", "encoding": "utf8",
            "filename": dir.join("homeserver.log").to_string_lossy(),
        }},
        "root": {"level": "INFO", "handlers": ["file"]},
        "disable_existing_loggers": false,
    })
}

/// The last `n` lines of the file at `path` (empty when it does not exist).
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Synapse {
    /// A fresh Synapse; None (saying so) when tools/synapse-venv is missing outside CI.
    pub async fn start() -> Option<Self> {
        Self::start_with(|_| {}).await
    }

    /// A fresh Synapse with its configuration changed by `tweak` (say, `default_room_version`).
    pub async fn start_with(tweak: impl Fn(&mut Value)) -> Option<Self> {
        let python = repo_root().join("tools/synapse-venv/bin/python");
        if !python.exists() {
            assert!(
                std::env::var("CI").is_err(),
                "{} is missing: scripts/test.sh installs Synapse there",
                python.display()
            );
            // Written to the process's stderr directly so the test harness does not hide it.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED synapse: {} is missing; scripts/test.sh installs it",
                python.display()
            );
            return None;
        }
        // Its ports are found free before Synapse binds them: another test may take one
        // meanwhile, and then Synapse stops at once; it is started again on others.
        for _ in 0..5 {
            if let Some(synapse) = Self::start_once(&python, &tweak).await {
                return Some(synapse);
            }
        }
        panic!("Synapse found no free ports in 5 tries");
    }

    /// One try: `None` when a port was taken before Synapse could bind it.
    async fn start_once(python: &Path, tweak: &impl Fn(&mut Value)) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir for Synapse");
        // Any 32 bytes are an ed25519 seed; this is the file --generate-keys would write.
        let seed =
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(rand::random::<[u8; 32]>());
        fs::write(
            dir.path().join("signing.key"),
            format!("ed25519 a_test {seed}\n"),
        )
        .expect("write signing key");
        fs::write(
            dir.path().join("log.yaml"),
            serde_json::to_vec_pretty(&log_config(dir.path())).expect("json"),
        )
        .expect("write log config");
        let (federation_port, client_port) = free_ports();
        let mut config = homeserver_config(dir.path(), federation_port, client_port);
        tweak(&mut config);
        fs::write(
            dir.path().join("homeserver.yaml"),
            serde_json::to_vec_pretty(&config).expect("json"),
        )
        .expect("write homeserver.yaml");
        let child = spawn(python, dir.path());
        let mut synapse = Self {
            server_name: format!("127.0.0.1:{federation_port}"),
            client_url: format!("http://127.0.0.1:{client_port}"),
            dir,
            child,
            python: python.to_owned(),
            client_port,
        };
        synapse
            .wait_until_healthy(client_port)
            .await
            .then_some(synapse)
    }

    /// Stops Synapse (as a crash would: killed), keeping its data for [`Synapse::resume`].
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts a stopped Synapse again on its data and ports.
    pub async fn resume(&mut self) {
        self.child = spawn(&self.python, self.dir.path());
        let port = self.client_port;
        assert!(
            self.wait_until_healthy(port).await,
            "Synapse's ports were taken while it was stopped"
        );
    }

    /// Waits until Synapse says it listens on `client_port` (another Synapse could answer
    /// there) and `/health` answers; false when it stopped because a port was taken; panics
    /// with the logs when it exits otherwise or is slow.
    async fn wait_until_healthy(&mut self, client_port: u16) -> bool {
        let http = reqwest::Client::new();
        let url = format!("{}/health", self.client_url);
        let listening = format!("Synapse now listening on TCP port {client_port}");
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Some(status) = self.child.try_wait().expect("Synapse's status") {
                let output = self.output_tail();
                if output.contains("Address already in use") {
                    return false;
                }
                panic!("Synapse exited ({status}) while starting:\n{output}");
            }
            let healthy = self.log().contains(&listening)
                && http
                    .get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
            if healthy {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "Synapse did not answer {url} within {} s:\n{}",
            START_TIMEOUT.as_secs(),
            self.output_tail()
        );
    }

    /// stderr (where configuration errors go) and the end of the log.
    fn output_tail(&self) -> String {
        format!(
            "--- stderr ---\n{}\n--- homeserver.log ---\n{}",
            tail(&self.dir.path().join("stderr.log"), 40),
            self.log_tail()
        )
    }

    /// Synapse's whole log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("homeserver.log")).unwrap_or_default()
    }

    /// The last 60 lines of Synapse's log, for assertion messages.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("homeserver.log"), 60)
    }

    /// Creates `localpart` (password [`password`]) by shared-secret registration; returns its
    /// user id and access token.
    pub async fn register(&self, localpart: &str) -> (String, String) {
        let path = "/_synapse/admin/v1/register";
        let (status, body) = self.request(reqwest::Method::GET, path, None, None).await;
        assert_eq!(status, 200, "nonce: {body}\n{}", self.log_tail());
        let nonce = body["nonce"].as_str().expect("nonce").to_owned();
        let password = password(localpart);
        let mut mac = Hmac::<Sha1>::new_from_slice(SHARED_SECRET.as_bytes()).expect("key");
        mac.update(format!("{nonce}\0{localpart}\0{password}\0notadmin").as_bytes());
        let body = json!({
            "nonce": nonce, "username": localpart, "password": password, "admin": false,
            "mac": hex::encode(mac.finalize().into_bytes()),
        });
        let (status, body) = self
            .request(reqwest::Method::POST, path, None, Some(&body))
            .await;
        assert_eq!(
            status,
            200,
            "register {localpart}: {body}\n{}",
            self.log_tail()
        );
        let field = |name: &str| body[name].as_str().expect("registration answer").to_owned();
        (field("user_id"), field("access_token"))
    }

    /// Creates a room as the user of `token` (`createRoom` with `body`): its id.
    pub async fn create_room(&self, token: &str, body: &Value) -> String {
        let (status, created) = self
            .request(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(token),
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "{created}");
        created["room_id"].as_str().expect("room id").to_owned()
    }

    /// Sends a request to the plain-HTTP client port; returns status and JSON (Null if not JSON).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request =
            reqwest::Client::new().request(method, format!("{}{path}", self.client_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request to Synapse sent");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("Synapse's body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}
