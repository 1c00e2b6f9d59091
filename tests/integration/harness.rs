//! Starts the real server on an ephemeral port against a fresh database, and talks to it.

use std::{
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use matrixon::{Config, Server, clock::Clock};
use serde_json::Value;

/// Which database a scenario runs against.
#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    Postgres { admin_url: String },
}

impl Backend {
    /// PostgreSQL when `MATRIXON_TEST_POSTGRES_URL` is set; otherwise prints that it skipped.
    pub fn postgres(test: &str) -> Option<Self> {
        match std::env::var("MATRIXON_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(Self::Postgres { admin_url: url }),
            _ => {
                // Written to the process's stderr directly so the test harness does not hide it.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED postgres::{test}: MATRIXON_TEST_POSTGRES_URL is not set"
                );
                None
            }
        }
    }
}

/// The Redis of `MATRIXON_TEST_REDIS_URL`; otherwise prints that `test` skipped its Redis part.
pub fn redis_url(test: &str) -> Option<String> {
    match std::env::var("MATRIXON_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED redis::{test}: MATRIXON_TEST_REDIS_URL is not set"
            );
            None
        }
    }
}

/// Declares each scenario once per backend.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = $crate::harness::Backend::postgres(stringify!($name)) {
                        super::$name(backend).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use both_backends;

/// A clock the test can move forward.
#[derive(Debug, Default)]
pub struct TestClock {
    offset_ms: AtomicI64,
}

impl TestClock {
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(
            i64::try_from(by.as_millis()).expect("small"),
            Ordering::SeqCst,
        );
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        matrixon::clock::SystemClock.now_ms() + self.offset_ms.load(Ordering::SeqCst)
    }
}

static DB_COUNTER: AtomicUsize = AtomicUsize::new(0);
static CREATE_DB: Mutex<()> = Mutex::new(());

/// Where a test server keeps its data.
pub struct Database {
    pub url: String,
    _dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl Database {
    /// A fresh, empty database on `backend`.
    pub async fn create(backend: &Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite:{}", dir.path().join("matrixon.db").display()),
                _dir: dir,
                postgres: None,
            },
            Backend::Postgres { admin_url } => {
                let name = format!(
                    "matrixon_test_{}_{}",
                    std::process::id(),
                    DB_COUNTER.fetch_add(1, Ordering::SeqCst)
                );
                {
                    // CREATE DATABASE copies template1 and fails while another copy runs.
                    let admin_url = admin_url.clone();
                    let name = name.clone();
                    tokio::task::spawn_blocking(move || {
                        let _guard = CREATE_DB.lock().unwrap_or_else(|e| e.into_inner());
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("rt")
                            .block_on(async {
                                let pool = sqlx::PgPool::connect(&admin_url)
                                    .await
                                    .expect("connect to PostgreSQL");
                                sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                                    .execute(&pool)
                                    .await
                                    .expect("drop");
                                sqlx::query(&format!("CREATE DATABASE {name}"))
                                    .execute(&pool)
                                    .await
                                    .expect("create database");
                                pool.close().await;
                            });
                    })
                    .await
                    .expect("create database task");
                }
                let url = with_database(admin_url, &name);
                Self {
                    url,
                    _dir: dir,
                    postgres: Some((admin_url.clone(), name)),
                }
            }
        }
    }

    /// Drops a PostgreSQL test database (SQLite files go with the temp dir).
    pub async fn drop_database(&self) {
        if let Some((admin_url, name)) = &self.postgres
            && let Ok(pool) = sqlx::PgPool::connect(admin_url).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&pool)
                .await;
            pool.close().await;
        }
    }
}

/// `postgres://user@host:port/db?x` with the database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// The configuration every test server starts from: open registration, a shared secret,
/// no rate limits (tests that check limits turn them on), metrics on an ephemeral port.
pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::from_toml_with_env("", Vec::new()).expect("defaults");
    config.listen = vec!["127.0.0.1:0".parse().expect("addr")];
    config.metrics.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.database.url = database_url.to_owned();
    config.database.max_connections = 4;
    config.registration.open = true;
    config.registration.shared_secret = Some(SHARED_SECRET.to_owned());
    config.rate_limits.enabled = false;
    // Each server its own media directory, removed with the system's temp files.
    static MEDIA_DIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MEDIA_DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    config.media.directory = std::env::temp_dir()
        .join(format!("matrixon-test-media-{}-{n}", std::process::id()))
        .to_string_lossy()
        .into_owned();
    config
}

pub const SHARED_SECRET: &str = "test shared secret";

/// A running server with its database and clock.
pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    pub clock: Arc<TestClock>,
    pub db: Database,
    pub http: reqwest::Client,
}

impl TestServer {
    /// A server with [`test_config`].
    pub async fn start(backend: &Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// A server with [`test_config`] changed by `tweak`.
    pub async fn start_with(backend: &Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let db = Database::create(backend).await;
        let mut config = test_config(&db.url);
        tweak(&mut config);
        Self::start_on(db, config).await
    }

    /// A server on an existing database (to test restarts).
    pub async fn start_on(db: Database, config: Config) -> Self {
        match Self::try_start_on(db, config).await {
            Ok(server) => server,
            Err((_, error)) => panic!("server starts: {error:?}"),
        }
    }

    /// [`TestServer::start_on`], handing the database back when the server does not start
    /// (a port taken meanwhile, say).
    pub async fn try_start_on(
        db: Database,
        config: Config,
    ) -> Result<Self, (Database, anyhow::Error)> {
        let clock = Arc::new(TestClock::default());
        let server = match Server::start_with_clock(config, clock.clone()).await {
            Ok(server) => server,
            Err(error) => return Err((db, error)),
        };
        let base = server.base_url();
        Ok(Self {
            server: Some(server),
            base,
            clock,
            db,
            http: reqwest::Client::new(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The Prometheus text of the server's metrics listener.
    pub async fn metrics(&self) -> String {
        let addr = self
            .server
            .as_ref()
            .expect("running")
            .metrics_addr
            .expect("metrics on");
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Waits up to 5 s for `line` (a gauge at a value, say) to be one of the metrics' lines.
    pub async fn wait_for_metric(&self, line: &str) -> bool {
        for _ in 0..250 {
            if self.metrics().await.lines().any(|l| l == line) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Stops the server gracefully; returns the database for a restart.
    pub async fn stop(mut self) -> Database {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        self.db
    }

    /// Stops the server and removes its database.
    pub async fn finish(self) {
        let db = self.stop().await;
        db.drop_database().await;
    }

    /// A `matrix-sdk` client for this server, not logged in.
    pub async fn client(&self) -> matrix_sdk::Client {
        matrix_sdk::Client::builder()
            .homeserver_url(&self.base)
            .build()
            .await
            .expect("matrix-sdk client")
    }

    /// Creates `localpart` with `password` through the client API (UIA with m.login.dummy).
    pub async fn register(&self, localpart: &str, password: &str) -> Value {
        let first = self
            .post_json(
                "/_matrix/client/v3/register",
                None,
                &serde_json::json!({"username": localpart, "password": password}),
            )
            .await;
        assert_eq!(first.0, 401, "{:?}", first.1);
        let session = first.1["session"].as_str().expect("session").to_owned();
        let done = self
            .post_json(
                "/_matrix/client/v3/register",
                None,
                &serde_json::json!({
                    "username": localpart, "password": password,
                    "auth": {"type": "m.login.dummy", "session": session}
                }),
            )
            .await;
        assert_eq!(done.0, 200, "{:?}", done.1);
        done.1
    }

    /// Logs in with a password; returns the response body.
    pub async fn login(&self, user: &str, password: &str) -> Value {
        let (status, body) = self
            .post_json(
                "/_matrix/client/v3/login",
                None,
                &serde_json::json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}),
            )
            .await;
        assert_eq!(status, 200, "{body:?}");
        body
    }

    /// POSTs `body` to a UIA-protected endpoint twice, as clients do: once to get the
    /// session, then with an `m.login.password` stage for `user`. Returns the second answer.
    pub async fn post_with_password_uia(
        &self,
        path: &str,
        token: &str,
        mut body: Value,
        user: &str,
        password: &str,
    ) -> (u16, Value) {
        let first = self.post_json(path, Some(token), &body).await;
        assert_eq!(first.0, 401, "{:?}", first.1);
        body["auth"] = serde_json::json!({
            "type": "m.login.password", "session": first.1["session"],
            "identifier": {"type": "m.id.user", "user": user}, "password": password,
        });
        self.post_json(path, Some(token), &body).await
    }

    /// Sends a request and returns status and JSON body (Null when the body is not JSON).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, token, None).await
    }

    pub async fn put_json(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.request(
            reqwest::Method::PUT,
            path,
            token,
            Some(serde_json::to_vec(body).expect("json")),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.request(
            reqwest::Method::POST,
            path,
            token,
            Some(serde_json::to_vec(body).expect("json")),
        )
        .await
    }
}

/// Asserts a Matrix error: status and errcode.
#[track_caller]
pub fn assert_error(response: &(u16, Value), status: u16, errcode: &str) {
    assert_eq!(response.0, status, "status of {:?}", response.1);
    assert_eq!(
        response.1["errcode"], errcode,
        "errcode of {:?}",
        response.1
    );
    assert!(
        response.1["error"].is_string(),
        "error message missing in {:?}",
        response.1
    );
}
