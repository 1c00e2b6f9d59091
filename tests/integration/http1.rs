//! The server's own HTTP/1.1 layer over raw TCP: keep-alive and pipelining, HEAD, HTTP/1.0,
//! chunked request bodies, `Expect: 100-continue`, malformed and ambiguous requests, a client
//! hanging up on a waiting sync; and HTTP/2 with prior knowledge.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::harness::{Backend, TestServer};

/// One response as the wire carried it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// A client connection that writes bytes as given and reads responses by hand.
struct Raw {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Raw {
    async fn connect(srv: &TestServer) -> Self {
        let addr = srv.base.trim_start_matches("http://");
        Self {
            stream: TcpStream::connect(addr).await.expect("connect"),
            read: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("the server answers within 10 s")
            .unwrap_or(0);
        self.read.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.read.len() < n {
            assert!(self.fill().await, "the connection closed mid-answer");
        }
        self.read.drain(..n).collect()
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.read.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(end + 2).await;
                return String::from_utf8(line[..end].to_vec()).expect("text line");
            }
            assert!(self.fill().await, "the connection closed mid-line");
        }
    }

    /// Reads one response; `head_only` for the answer to a HEAD request.
    async fn answer(&mut self, head_only: bool) -> Answer {
        let status_line = self.line().await;
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 100 || status == 204 {
            return answer;
        }
        if let Some(length) = answer.header("content-length") {
            let length = length.parse().expect("length");
            answer.body = self.take(length).await;
        } else if answer.header("transfer-encoding") == Some("chunked") {
            loop {
                let size = usize::from_str_radix(&self.line().await, 16).expect("chunk size");
                answer.body.extend(self.take(size).await);
                assert_eq!(self.take(2).await, b"\r\n");
                if size == 0 {
                    break;
                }
            }
        } else {
            while self.fill().await {}
            answer.body = std::mem::take(&mut self.read);
        }
        answer
    }

    /// Whether the server closes the connection (within 10 s) without sending more.
    async fn closed(&mut self) -> bool {
        self.read.is_empty() && !self.fill().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_framing_and_refusals() {
    let srv = TestServer::start_with(&Backend::Sqlite, |c| c.max_request_bytes = 4096).await;
    srv.register("ada", "ada password").await;
    let versions = "GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n";

    // Keep-alive and pipelining: two requests in one write, two answers in order.
    let mut raw = Raw::connect(&srv).await;
    raw.send(format!("{versions}{versions}").as_bytes()).await;
    for _ in 0..2 {
        let answer = raw.answer(false).await;
        assert_eq!(answer.status, 200);
        assert!(answer.json()["versions"].is_array());
        assert!(answer.header("date").is_some());
    }
    // HEAD: the length the answer would have, no body; the next answer follows at once.
    raw.send(b"HEAD /_matrix/client/versions HTTP/1.1\r\n\r\n")
        .await;
    raw.send(versions.as_bytes()).await;
    let head = raw.answer(true).await;
    let full = raw.answer(false).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length").map(str::to_owned),
        Some(full.body.len().to_string())
    );

    // A chunked body with extensions and trailers, sent in pieces.
    let login = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "ada"},
        "password": "ada password",
    })
    .to_string();
    let (first, second) = login.split_at(10);
    raw.send(b"POST /_matrix/client/v3/login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    raw.send(format!("{:x};note=1\r\n{first}\r\n", first.len()).as_bytes())
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    raw.send(
        format!(
            "{:x}\r\n{second}\r\n0\r\nX-Trailer: y\r\n\r\n",
            second.len()
        )
        .as_bytes(),
    )
    .await;
    let logged_in = raw.answer(false).await;
    assert_eq!(logged_in.status, 200, "{:?}", logged_in.json());
    assert!(logged_in.json()["access_token"].is_string());

    // Expect: 100-continue: the server invites the body, then answers.
    raw.send(
        format!(
            "POST /_matrix/client/v3/login HTTP/1.1\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            login.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw.answer(false).await.status, 100);
    raw.send(login.as_bytes()).await;
    assert_eq!(raw.answer(false).await.status, 200);

    // Refused before the handler reads the body (a bad token): the body already sent is
    // skipped and the connection carries on, a stray CRLF after it included.
    let filter = "{\"room\":{}}";
    raw.send(
        format!(
            "POST /_matrix/client/v3/user/@ada:localhost/filter HTTP/1.1\r\nAuthorization: Bearer nope\r\nContent-Length: {}\r\n\r\n{filter}\r\n",
            filter.len()
        )
        .as_bytes(),
    )
    .await;
    let refused = raw.answer(false).await;
    assert_eq!(
        (refused.status, refused.json()["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN"))
    );
    assert_eq!(refused.header("connection"), None, "kept alive");
    raw.send(versions.as_bytes()).await;
    assert_eq!(raw.answer(false).await.status, 200);

    // With `Expect: 100-continue`, a request refused before its body is wanted gets no
    // invitation to send it: the answer comes first, and the connection closes.
    raw.send(
        format!(
            "POST /_matrix/client/v3/user/@ada:localhost/filter HTTP/1.1\r\nAuthorization: Bearer nope\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            filter.len()
        )
        .as_bytes(),
    )
    .await;
    let refused = raw.answer(false).await;
    assert_eq!(
        (refused.status, refused.header("connection")),
        (401, Some("close"))
    );
    assert!(raw.closed().await);
    let mut raw = Raw::connect(&srv).await;

    // A broken chunked body: the handler's Matrix error, then the connection closes.
    raw.send(b"POST /_matrix/client/v3/login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        .await;
    let broken = raw.answer(false).await;
    assert_eq!(
        (broken.status, broken.json()["errcode"].as_str()),
        (400, Some("M_UNKNOWN"))
    );
    assert_eq!(broken.header("connection"), Some("close"));
    assert!(raw.closed().await);

    // A chunked body over the request limit: 413, answered in full before the close.
    let mut raw = Raw::connect(&srv).await;
    raw.send(b"POST /_matrix/client/v3/login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    let piece = format!("1000\r\n{}\r\n", "x".repeat(4096));
    for _ in 0..4 {
        raw.send(piece.as_bytes()).await;
    }
    let large = raw.answer(false).await;
    assert_eq!(
        (large.status, large.json()["errcode"].as_str()),
        (413, Some("M_TOO_LARGE"))
    );
    assert!(raw.closed().await);

    // Requests that could be read two ways, or not at all, are refused before any handler.
    for (request, status) in [
        (
            "POST /_matrix/client/v3/login HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "POST /_matrix/client/v3/login HTTP/1.1\r\nContent-Length: 2, 3\r\n\r\n",
            400,
        ),
        (
            "POST /_matrix/client/v3/login HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
        ("HELLO\r\n\r\n", 400),
        (
            "GET /_matrix/client/versions HTTP/1.1\r\nX: \u{1}\r\n\r\n",
            400,
        ),
    ] {
        let mut raw = Raw::connect(&srv).await;
        raw.send(request.as_bytes()).await;
        let refused = raw.answer(false).await;
        assert_eq!(refused.status, status, "{request:?}");
        assert!(refused.json()["errcode"].is_string(), "{request:?}");
        assert!(raw.closed().await, "{request:?}");
    }

    // HTTP/1.0: one answer, then the server closes.
    let mut raw = Raw::connect(&srv).await;
    raw.send(b"GET /_matrix/client/versions HTTP/1.0\r\n\r\n")
        .await;
    let old = raw.answer(false).await;
    assert_eq!((old.status, old.header("connection")), (200, Some("close")));
    assert!(raw.closed().await);
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_ends_its_waiting_sync() {
    let srv = TestServer::start(&Backend::Sqlite).await;
    srv.register("bea", "bea password").await;
    let token = srv.login("bea", "bea password").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, first) = srv
        .get("/_matrix/client/v3/sync?timeout=0", Some(&token))
        .await;
    assert_eq!(status, 200);
    let since = first["next_batch"].as_str().expect("next_batch");
    let mut raw = Raw::connect(&srv).await;
    raw.send(
        format!(
            "GET /_matrix/client/v3/sync?since={since}&timeout=60000 HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(
        srv.wait_for_metric("matrixon_sync_waiting 1").await,
        "the sync parks"
    );
    drop(raw);
    assert!(
        srv.wait_for_metric("matrixon_sync_waiting 0").await,
        "the hang-up ends the waiting sync"
    );
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_and_streamed_uploads() {
    let srv = TestServer::start(&Backend::Sqlite).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let answer = h2
        .get(srv.url("/_matrix/client/versions"))
        .send()
        .await
        .expect("h2 request");
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    assert_eq!(answer.status(), 200);

    // An upload of unknown length (chunked over HTTP/1.1) streams in, and reads back whole.
    srv.register("cy", "cy password").await;
    let token = srv.login("cy", "cy password").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let pieces: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 10_000]).collect();
    let expected = pieces.concat();
    let stream = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
    let uploaded: Value = srv
        .http
        .post(srv.url("/_matrix/media/v3/upload?filename=big.bin"))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("upload JSON");
    let uri = uploaded["content_uri"].as_str().expect("content_uri");
    let media = uri.trim_start_matches("mxc://");
    for client in [&srv.http, &h2] {
        let download = client
            .get(srv.url(&format!("/_matrix/client/v1/media/download/{media}")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("download");
        assert_eq!(download.status(), 200);
        let mut body = Vec::new();
        let mut chunks = download.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            body.extend_from_slice(&chunk.expect("chunk"));
        }
        assert_eq!(body, expected);
    }
    srv.finish().await;
}
