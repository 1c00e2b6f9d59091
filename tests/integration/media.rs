//! The media repository over HTTP: uploads and downloads byte for byte, safe headers,
//! de-duplicated storage, thumbnails of every supported format, asynchronous uploads, the
//! upload limit, the media freeze, and URL previews of a local page with the SSRF rules.

use std::io::Cursor;

use axum::{Router, response::IntoResponse, routing::get};
use image::{DynamicImage, ImageFormat, RgbImage};
use serde_json::Value;

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(
    uploads_download_byte_for_byte_with_safe_headers,
    thumbnails_of_every_format_and_corrupt_images,
    asynchronous_uploads_and_limits,
    url_previews_follow_the_ssrf_rules,
);

/// A raw response: status, headers, body.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn call(
    srv: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> Reply {
    let mut request = srv.http.request(method, srv.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some((content_type, bytes)) = body {
        request = request.header("content-type", content_type).body(bytes);
    }
    let response = request.send().await.expect("request");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await.expect("body").to_vec(),
    }
}

async fn upload(
    srv: &TestServer,
    token: &str,
    content_type: &str,
    bytes: Vec<u8>,
    name: &str,
) -> String {
    let reply = call(
        srv,
        reqwest::Method::POST,
        &format!("/_matrix/media/v3/upload?filename={name}"),
        Some(token),
        Some((content_type, bytes)),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    let uri = reply.json()["content_uri"]
        .as_str()
        .expect("uri")
        .to_owned();
    uri.strip_prefix("mxc://").expect("mxc").to_owned()
}

/// An RGB test picture, encoded.
pub(crate) fn image(format: ImageFormat, width: u32, height: u32) -> Vec<u8> {
    let picture = RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(picture)
        .write_to(&mut out, format)
        .expect("encode");
    out.into_inner()
}

fn files_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                if path.ends_with("tmp") {
                    0
                } else {
                    files_under(&path)
                }
            } else {
                1
            }
        })
        .sum()
}

async fn token(srv: &TestServer, user: &str) -> String {
    srv.register(user, "media password").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

async fn uploads_download_byte_for_byte_with_safe_headers(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv, "alice").await;
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let id = upload(&srv, &alice, "image/png", bytes.clone(), "photo.png").await;

    let got = call(
        &srv,
        reqwest::Method::GET,
        &format!("/_matrix/client/v1/media/download/{id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, bytes, "byte-identical");
    assert_eq!(got.header("content-type"), "image/png");
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=\"photo.png\""
    );
    assert!(got.header("content-security-policy").contains("sandbox"));
    assert_eq!(got.header("x-content-type-options"), "nosniff");

    // A type a browser would run is an attachment, whatever it is called.
    let html = upload(
        &srv,
        &alice,
        "text/html",
        b"<script>alert(1)</script>".to_vec(),
        "page.html",
    )
    .await;
    let got = call(
        &srv,
        reqwest::Method::GET,
        &format!("/_matrix/client/v1/media/download/{html}/other%20name.html"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("content-disposition"),
        "attachment; filename=\"other name.html\""
    );
    let svg = upload(&srv, &alice, "image/svg+xml", b"<svg/>".to_vec(), "x.svg").await;
    let got = call(
        &srv,
        reqwest::Method::GET,
        &format!("/_matrix/client/v1/media/download/{svg}"),
        Some(&alice),
        None,
    )
    .await;
    assert!(
        got.header("content-disposition").starts_with("attachment"),
        "{}",
        got.header("content-disposition")
    );

    // Identical content is stored once.
    let dir = std::path::PathBuf::from(
        &srv.server
            .as_ref()
            .expect("server")
            .services
            .config
            .media
            .directory,
    );
    let before = files_under(&dir);
    let again = upload(&srv, &alice, "image/png", bytes.clone(), "copy.png").await;
    assert_ne!(again, id, "a new media ID");
    assert_eq!(files_under(&dir), before, "no second copy on disk");

    // Authenticated media: no token, no media; the frozen legacy endpoint answers 404.
    let anonymous = call(
        &srv,
        reqwest::Method::GET,
        &format!("/_matrix/client/v1/media/download/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["errcode"], "M_MISSING_TOKEN");
    let legacy = call(
        &srv,
        reqwest::Method::GET,
        &format!("/_matrix/media/v3/download/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(legacy.status, 404);
    assert_eq!(legacy.json()["errcode"], "M_NOT_FOUND");
    // Unknown media, other servers' media, malformed IDs: 404, never a 500.
    for path in [
        "localhost/doesnotexist",
        "elsewhere.example/abc",
        "localhost/..%2F..%2Fetc",
    ] {
        let missing = call(
            &srv,
            reqwest::Method::GET,
            &format!("/_matrix/client/v1/media/download/{path}"),
            Some(&alice),
            None,
        )
        .await;
        assert_eq!(missing.status, 404, "{path}: {}", missing.json());
    }
    srv.finish().await;

    // With the legacy endpoints left open, they serve without a token.
    let srv = TestServer::start_with(&backend, |c| c.media.legacy_unauthenticated = true).await;
    let alice = token(&srv, "alice").await;
    let id = upload(&srv, &alice, "text/plain", b"hello".to_vec(), "hello.txt").await;
    let legacy = call(
        &srv,
        reqwest::Method::GET,
        &format!("/_matrix/media/v3/download/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(legacy.status, 200);
    assert_eq!(legacy.body, b"hello");
    srv.finish().await;
}

async fn thumbnails_of_every_format_and_corrupt_images(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv, "alice").await;
    for (format, content_type) in [
        (ImageFormat::Jpeg, "image/jpeg"),
        (ImageFormat::Png, "image/png"),
        (ImageFormat::Gif, "image/gif"),
        (ImageFormat::WebP, "image/webp"),
    ] {
        let id = upload(&srv, &alice, content_type, image(format, 400, 200), "i").await;
        // Requests snap to the smallest preset box that holds them (32², 96², 320×240,
        // 640×480, 800×600, 1600×1200); images are never enlarged.
        for (query, expected) in [
            ("width=100&height=100&method=scale", (320, 160)),
            ("width=64&height=64&method=crop", (96, 96)),
            ("width=30&height=20&method=crop", (32, 32)),
            ("width=800&height=800&method=crop", (267, 200)),
            ("width=1000&height=1000&method=scale", (400, 200)),
        ] {
            let path = format!("/_matrix/client/v1/media/thumbnail/{id}?{query}");
            let got = call(&srv, reqwest::Method::GET, &path, Some(&alice), None).await;
            assert_eq!(got.status, 200, "{content_type} {query}: {}", got.json());
            let decoded = image::load_from_memory(&got.body).expect("a thumbnail decodes");
            assert_eq!(
                (decoded.width(), decoded.height()),
                expected,
                "{content_type} {query}"
            );
            let again = call(&srv, reqwest::Method::GET, &path, Some(&alice), None).await;
            assert_eq!(again.body, got.body, "cached thumbnail");
        }
    }
    // Corrupt or non-image content: a clear 400, and the server carries on.
    let corrupt = upload(
        &srv,
        &alice,
        "image/png",
        b"\x89PNG\r\n\x1a\nnot really".to_vec(),
        "bad.png",
    )
    .await;
    let text = upload(&srv, &alice, "text/plain", b"just text".to_vec(), "a.txt").await;
    for id in [&corrupt, &text] {
        let got = call(
            &srv,
            reqwest::Method::GET,
            &format!("/_matrix/client/v1/media/thumbnail/{id}?width=32&height=32"),
            Some(&alice),
            None,
        )
        .await;
        assert_eq!(got.status, 400, "{}", got.json());
        assert!(
            got.json()["error"]
                .as_str()
                .expect("error")
                .contains("cannot be thumbnailed")
        );
    }
    let bad = call(
        &srv,
        reqwest::Method::GET,
        &format!("/_matrix/client/v1/media/thumbnail/{corrupt}?width=x&height=32"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(bad.json()["errcode"], "M_INVALID_PARAM");
    let bad = call(
        &srv,
        reqwest::Method::GET,
        &format!("/_matrix/client/v1/media/thumbnail/{corrupt}?width=32&height=32&method=zoom"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(bad.json()["errcode"], "M_INVALID_PARAM");
    srv.finish().await;
}

async fn asynchronous_uploads_and_limits(backend: Backend) {
    let srv = TestServer::start_with(&backend, |c| c.media.max_upload_bytes = 10_000).await;
    let alice = token(&srv, "alice").await;
    let bob = token(&srv, "bob").await;

    let config = call(
        &srv,
        reqwest::Method::GET,
        "/_matrix/client/v1/media/config",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(config.json()["m.upload.size"], 10_000);

    let create = |token: String| {
        let srv = &srv;
        async move {
            call(
                srv,
                reqwest::Method::POST,
                "/_matrix/media/v1/create",
                Some(&token),
                None,
            )
            .await
        }
    };
    let created = create(alice.clone()).await;
    assert_eq!(created.status, 200, "{}", created.json());
    let uri = created.json()["content_uri"]
        .as_str()
        .expect("uri")
        .to_owned();
    assert!(created.json()["unused_expires_at"].as_i64().is_some());
    let id = uri.strip_prefix("mxc://").expect("mxc").to_owned();

    // Not uploaded yet: a download that waits a little gives up with 504.
    let early = call(
        &srv,
        reqwest::Method::GET,
        &format!("/_matrix/client/v1/media/download/{id}?timeout_ms=300"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(early.status, 504);
    assert_eq!(early.json()["errcode"], "M_NOT_YET_UPLOADED");
    // Only the creator may fill it, and only once.
    let put = |token: String, bytes: Vec<u8>| {
        let path = format!("/_matrix/media/v3/upload/{id}?filename=late.txt");
        let srv = &srv;
        async move {
            call(
                srv,
                reqwest::Method::PUT,
                &path,
                Some(&token),
                Some(("text/plain", bytes)),
            )
            .await
        }
    };
    let stolen = put(bob.clone(), b"bob's".to_vec()).await;
    assert_eq!(stolen.status, 403);
    assert_eq!(stolen.json()["errcode"], "M_FORBIDDEN");
    let too_big = put(alice.clone(), vec![b'x'; 10_001]).await;
    assert_eq!(too_big.status, 413);
    assert_eq!(too_big.json()["errcode"], "M_TOO_LARGE");
    let done = put(alice.clone(), b"finally".to_vec()).await;
    assert_eq!(done.status, 200, "{}", done.json());
    let twice = put(alice.clone(), b"again".to_vec()).await;
    assert_eq!(twice.status, 409);
    assert_eq!(twice.json()["errcode"], "M_CANNOT_OVERWRITE_MEDIA");
    let got = call(
        &srv,
        reqwest::Method::GET,
        &format!("/_matrix/client/v1/media/download/{id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(got.body, b"finally");
    assert_eq!(
        got.header("content-disposition"),
        "inline; filename=\"late.txt\""
    );

    // Oversized direct uploads are refused, declared or streamed.
    let refused = call(
        &srv,
        reqwest::Method::POST,
        "/_matrix/media/v3/upload",
        Some(&alice),
        Some(("application/octet-stream", vec![0; 10_001])),
    )
    .await;
    assert_eq!(refused.status, 413);
    assert_eq!(refused.json()["errcode"], "M_TOO_LARGE");
    let chunks =
        futures_util::stream::iter((0..11).map(|_| Ok::<_, std::io::Error>(vec![1u8; 1_000])));
    let streamed = srv
        .http
        .post(srv.url("/_matrix/media/v3/upload"))
        .bearer_auth(&alice)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("request");
    assert_eq!(streamed.status().as_u16(), 413);
    let anonymous = call(
        &srv,
        reqwest::Method::POST,
        "/_matrix/media/v3/upload",
        None,
        Some(("text/plain", b"x".to_vec())),
    )
    .await;
    assert_eq!(anonymous.status, 401);

    // At most ten reservations wait at once per user, however many are asked for at once.
    let asked = (0..25).map(|_| create(bob.clone()));
    let answers = futures_util::future::join_all(asked).await;
    let made = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(made, 10, "reservations made of 25 asked at once");
    for refused in answers.iter().filter(|a| a.status != 200) {
        assert_eq!(refused.status, 429);
        assert_eq!(refused.json()["errcode"], "M_LIMIT_EXCEEDED");
    }
    // Each user has their own ten.
    let alice_more = create(alice.clone()).await;
    assert_eq!(alice_more.status, 200);
    srv.finish().await;
}

/// A local site: a page with Open Graph tags and an image, and a redirect to a metadata
/// address.
async fn site() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let png = image(ImageFormat::Png, 120, 60);
    let app = Router::new()
        .route(
            "/page",
            get(|| async {
                (
                    [("content-type", "text/html; charset=utf-8")],
                    r#"<html><head><title>ignored</title>
                    <meta property="og:title" content="Matrixon &amp; friends">
                    <meta property="og:description" content="Wallet-native chat">
                    <meta property="og:image" content="/logo.png"></head><body>hi</body></html>"#,
                )
            }),
        )
        .route(
            "/logo.png",
            get(move || {
                let png = png.clone();
                async move { ([("content-type", "image/png")], png).into_response() }
            }),
        )
        .route(
            "/to-metadata",
            get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", "http://169.254.169.254/latest/meta-data/")],
                )
            }),
        );
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("127.0.0.1:{}", addr.port()), handle)
}

async fn url_previews_follow_the_ssrf_rules(backend: Backend) {
    let (host, site) = site().await;
    let preview = |srv: &TestServer, token: String, url: String| {
        let path = format!(
            "/_matrix/client/v1/media/preview_url?url={}",
            url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
        );
        let srv_url = srv.url(&path);
        let http = srv.http.clone();
        async move {
            let response = http
                .get(srv_url)
                .bearer_auth(token)
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    // Not allow-listed: loopback, private and metadata addresses are refused.
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv, "alice").await;
    for url in [
        format!("http://{host}/page"),
        "http://10.1.2.3/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::1]/".to_owned(),
    ] {
        let refused = preview(&srv, alice.clone(), url.clone()).await;
        assert_error(&refused, 403, "M_FORBIDDEN");
    }
    let bad = preview(&srv, alice.clone(), "file:///etc/passwd".to_owned()).await;
    assert_error(&bad, 400, "M_INVALID_PARAM");
    srv.finish().await;

    // Allow-listed: the page is previewed, its image stored as media.
    let allowed = host.clone();
    let srv =
        TestServer::start_with(&backend, move |c| c.media.preview_allow = vec![allowed]).await;
    let alice = token(&srv, "alice").await;
    let (status, og) = preview(&srv, alice.clone(), format!("http://{host}/page")).await;
    assert_eq!(status, 200, "{og}");
    assert_eq!(og["og:title"], "Matrixon & friends");
    assert_eq!(og["og:description"], "Wallet-native chat");
    assert_eq!(og["og:image:width"], 120);
    assert_eq!(og["og:image:height"], 60);
    let image_id = og["og:image"]
        .as_str()
        .expect("image")
        .strip_prefix("mxc://")
        .expect("mxc")
        .to_owned();
    let got = call(
        &srv,
        reqwest::Method::GET,
        &format!("/_matrix/client/v1/media/download/{image_id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, image(ImageFormat::Png, 120, 60));
    // A redirect is checked like the first address: to the metadata service, refused.
    let redirected = preview(&srv, alice.clone(), format!("http://{host}/to-metadata")).await;
    assert_error(&redirected, 403, "M_FORBIDDEN");
    let anonymous = srv
        .get("/_matrix/client/v1/media/preview_url?url=http://x/", None)
        .await;
    assert_error(&anonymous, 401, "M_MISSING_TOKEN");
    srv.finish().await;
    site.abort();
}
