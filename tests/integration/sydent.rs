//! A real identity server, Sydent (matrix.org's, from PyPI), so the identity tests check
//! Matrixon against what Element's users actually bind their addresses on.
//!
//! scripts/test.sh installs Sydent, pinned (tests/identity/sydent-requirements.txt), into
//! tools/sydent-venv. Each [`Sydent`] is a fresh process on loopback with its own temp dir
//! (SQLite database, e-mail template, logs). It serves plain HTTP (as behind a proxy); a
//! TLS front with the test certificate for `localhost` stands before it, since homeservers
//! reach identity servers over https only. Its e-mail goes to an SMTP sink in this process
//! ([`Sydent::next_mail`]); its requests to homeservers (OpenID checks, the keys of signed
//! unbinds) may reach 127.0.0.1 and skip certificate checks.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::Notify,
};

/// How long Sydent may take to answer (it starts in about 2 s on an idle machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Mail the SMTP sink received, in order, and a wake-up for each.
#[derive(Default)]
struct Mailbox {
    messages: Mutex<Vec<String>>,
    arrived: Notify,
}

/// A running Sydent, killed (and its temp dir removed) on drop.
pub struct Sydent {
    /// `localhost:<TLS port>`, the `id_server` clients name to homeservers.
    pub name: String,
    /// `http://127.0.0.1:<port>`, its plain-HTTP API for test clients.
    pub url: String,
    mailbox: Arc<Mailbox>,
    read: Mutex<usize>,
    _dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl Drop for Sydent {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// An SMTP server that takes every message (no extensions, no auth) into `mailbox`.
async fn smtp_sink(mailbox: Arc<Mailbox>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let mailbox = mailbox.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(message) = data.as_mut() {
                        if line == "." {
                            if let Ok(mut messages) = mailbox.messages.lock() {
                                messages.push(std::mem::take(message));
                            }
                            mailbox.arrived.notify_waiters();
                            data = None;
                            let _ = write.write_all(b"250 queued\r\n").await;
                        } else {
                            message.push_str(line.strip_prefix('.').unwrap_or(&line));
                            message.push('\n');
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 ok\r\n",
                    };
                    let _ = write.write_all(answer).await;
                }
            });
        }
    });
    port
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Sydent {
    /// A fresh Sydent; None (saying so) when tools/sydent-venv is missing outside CI.
    pub async fn start() -> Option<Self> {
        let python = repo_root().join("tools/sydent-venv/bin/python");
        if !python.exists() {
            assert!(
                std::env::var("CI").is_err(),
                "{} is missing: scripts/test.sh installs Sydent there",
                python.display()
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED sydent: {} is missing; scripts/test.sh installs it",
                python.display()
            );
            return None;
        }
        // Its port is found free before Sydent binds it: another test may take it meanwhile.
        let mut last = String::new();
        for _ in 0..5 {
            match Self::start_once(&python).await {
                Ok(sydent) => return Some(sydent),
                Err(why) => last = why,
            }
        }
        panic!("Sydent did not start: {last}");
    }

    /// One try at starting Sydent: Err with its output when it stopped (its port was taken).
    async fn start_once(python: &Path) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir for Sydent");
        let mailbox = Arc::new(Mailbox::default());
        let smtp_port = smtp_sink(mailbox.clone()).await;
        let front = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
        let name = format!("localhost:{}", front.local_addr().expect("addr").port());
        let port = free_port();
        // Sydent's package carries no templates; the validation mail just states the token.
        let templates = dir.path().join("res/matrix-org");
        std::fs::create_dir_all(&templates).expect("template dir");
        std::fs::write(
            templates.join("verification_template.eml.j2"),
            "Date: {{ date|safe }}\nFrom: {{ from|safe }}\nTo: {{ to|safe }}\n\
             Message-ID: {{ messageid|safe }}\nSubject: Your validation token\n\
             Content-Type: text/plain; charset=UTF-8\n\nToken: {{ token }}\n",
        )
        .expect("write template");
        let config = format!(
            "[general]\nserver.name = {name}\npidfile.path = {dir}/sydent.pid\n\
             templates.path = {dir}/res\nlog.path = {dir}/sydent.log\n\
             ip.whitelist = 127.0.0.0/8\n\
             [db]\ndb.file = {dir}/sydent.db\n\
             [http]\nclientapi.http.bind_address = 127.0.0.1\nclientapi.http.port = {port}\n\
             federation.verifycerts = False\n\
             [email]\nemail.smtphost = 127.0.0.1\nemail.smtpport = {smtp_port}\n\
             email.tlsmode = 0\nemail.from = Sydent <noreply@localhost>\n",
            dir = dir.path().display(),
        );
        std::fs::write(dir.path().join("sydent.conf"), config).expect("write sydent.conf");
        let output = std::fs::File::create(dir.path().join("stdout.log")).expect("output file");
        let child = tokio::process::Command::new(python)
            .args(["-m", "sydent.sydent", "--config-path", "sydent.conf"])
            .current_dir(dir.path())
            .stdout(Stdio::from(output.try_clone().expect("clone")))
            .stderr(Stdio::from(output))
            .kill_on_drop(true)
            .spawn()
            .expect("start Sydent");
        let sydent = Self {
            name,
            url: format!("http://127.0.0.1:{port}"),
            mailbox,
            read: Mutex::new(0),
            _dir: dir,
            child,
        };
        crate::tls::front(front, ([127, 0, 0, 1], port).into());
        let started = Instant::now();
        let client = reqwest::Client::new();
        // Up once its own log says it listens on its port (another Sydent could answer there)
        // and it answers.
        let listening = format!("Site starting on {port}");
        let mut sydent = sydent;
        loop {
            let output = |sydent: &Self| {
                let read = |name: &str| {
                    std::fs::read_to_string(sydent._dir.path().join(name)).unwrap_or_default()
                };
                read("stdout.log") + read("sydent.log").as_str()
            };
            if let Ok(Some(status)) = sydent.child.try_wait() {
                return Err(format!("it exited ({status}): {}", output(&sydent)));
            }
            let up = output(&sydent).contains(&listening)
                && client
                    .get(format!("{}/_matrix/identity/v2", sydent.url))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
            if up {
                return Ok(sydent);
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "Sydent did not start: {}",
                output(&sydent)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The end of Sydent's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self._dir.path().join("sydent.log")).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains(" - twisted - "))
            .collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The next e-mail Sydent sent (waiting for it), whole.
    pub async fn next_mail(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let arrived = self.mailbox.arrived.notified();
            {
                let messages = self.mailbox.messages.lock().expect("mailbox");
                let mut read = self.read.lock().expect("read");
                if let Some(message) = messages.get(*read) {
                    *read += 1;
                    return message.clone();
                }
            }
            assert!(Instant::now() < deadline, "Sydent sent no e-mail");
            let _ = tokio::time::timeout(Duration::from_secs(1), arrived).await;
        }
    }

    /// A request to Sydent's API with `token` as Bearer: status and JSON body.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("Sydent answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// A GET of Sydent's API with `token` as Bearer.
    pub async fn get(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("Sydent answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }
}
