//! The OAuth 2.0 API built into the server: discovery, dynamic client registration, the
//! authorize pages (password here; the wallet in `oauth_wallet_sign_in_in_a_browser`), codes
//! with PKCE, rotating refresh tokens, revocation — with matrix-sdk's own OAuth client and as
//! raw HTTP, every refusal changing nothing.

use matrix_sdk::{
    Client, authentication::oauth::ClientRegistrationData, ruma::serde::Raw, utils::UrlOrQuery,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    anvil::Key,
    harness::{Backend, TestServer, both_backends},
    sso::{INJECT_WALLET, READY, client_site, settle, sign_request},
    webdriver::Browser,
};

both_backends!(
    matrix_sdk_logs_out_over_https,
    discovery_and_client_registration,
    password_sign_in_code_exchange_refresh_and_revocation,
    matrix_sdk_logs_in_refreshes_and_logs_out_through_oauth,
    authorize_refusals_change_nothing,
    device_authorization_grant,
    registration_on_the_authorize_page,
    the_account_page_lists_and_ends_sessions,
    the_account_page_keeps_profile_wallets_and_deactivation,
    a_cross_signing_reset_is_approved_on_the_account_page,
    rendezvous_sessions_take_turns_and_refuse_bad_writes,
);

const PASSWORD: &str = "oauth password";
/// Where the wallet page posts its signature.
const WALLET_SIGN_IN: &str = "/_matrix/client/unstable/io.matrixon/oauth/wallet";
const VERIFIER: &str = "a-perfectly-random-pkce-verifier-of-at-least-43-chars-0123456789";

/// A browser stand-in: no redirects followed, cookies kept by hand.
struct Browserish {
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
}

impl Browserish {
    fn new() -> Self {
        Self::trusting(None)
    }

    /// One that also trusts `ca` (the test CA of `tests/fixtures/tls`).
    fn trusting(ca: Option<reqwest::Certificate>) -> Self {
        let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = ca {
            builder = builder.add_root_certificate(ca);
        }
        Self {
            http: builder.build().expect("client"),
            cookies: Vec::new(),
        }
    }

    fn keep(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let pair = value
                .to_str()
                .expect("cookie")
                .split(';')
                .next()
                .expect("pair");
            let (name, value) = pair.split_once('=').expect("name=value");
            self.cookies.retain(|(n, _)| n != name);
            self.cookies.push((name.to_owned(), value.to_owned()));
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// `(status, Location, body)`.
    async fn get(&mut self, url: &str) -> (u16, String, String) {
        let response = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("get");
        self.keep(&response);
        let status = response.status().as_u16();
        let location = location(&response);
        (status, location, response.text().await.expect("body"))
    }

    /// A JSON POST to `path` of `srv` with the browser's cookies (what the wallet page sends).
    async fn post_json(
        &mut self,
        path: &str,
        srv: &TestServer,
        body: &Value,
    ) -> (u16, String, String) {
        let response = self
            .http
            .post(srv.url(path))
            .header("cookie", self.cookie_header())
            .json(body)
            .send()
            .await
            .expect("post");
        self.keep(&response);
        let status = response.status().as_u16();
        let location = location(&response);
        (status, location, response.text().await.expect("body"))
    }

    async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> (u16, String, String) {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().copied())
            .finish();
        let response = self
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("post");
        self.keep(&response);
        let status = response.status().as_u16();
        let location = location(&response);
        (status, location, response.text().await.expect("body"))
    }
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The value of the page's hidden `csrf` input.
fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a csrf field") + marker.len();
    page[start..].split('"').next().expect("value").to_owned()
}

fn challenge(verifier: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

async fn register_client(srv: &TestServer, body: Value) -> (u16, Value) {
    srv.post_json("/oauth2/registration", None, &body).await
}

async fn web_client(srv: &TestServer) -> String {
    named_client(srv, "Test App").await
}

async fn named_client(srv: &TestServer, name: &str) -> String {
    let (status, client) = register_client(
        srv,
        json!({
            "client_name": name,
            "client_uri": "https://app.example/",
            "redirect_uris": ["https://app.example/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "policy_uri": "https://app.example/policy",
            "logo_uri": "https://app.example/logo.png",
        }),
    )
    .await;
    assert_eq!(status, 201, "{client}");
    client["client_id"].as_str().expect("client id").to_owned()
}

fn authorize_query(client_id: &str, device: &str, state: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", "https://app.example/callback")
        .append_pair(
            "scope",
            &format!("urn:matrix:client:api:* urn:matrix:client:device:{device}"),
        )
        .append_pair("state", state)
        .append_pair("code_challenge", &challenge(VERIFIER))
        .append_pair("code_challenge_method", "S256")
        .finish()
}

fn query_value(url: &str, key: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

async fn token_request(srv: &TestServer, form: &[(&str, &str)]) -> (u16, Value) {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().copied())
        .finish();
    let response = srv
        .http
        .post(srv.url("/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("token request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn revoke(srv: &TestServer, client_id: &str, token: &str) -> u16 {
    srv.http
        .post(srv.url("/oauth2/revoke"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("client_id={client_id}&token={token}"))
        .send()
        .await
        .expect("revoke")
        .status()
        .as_u16()
}

/// Signs `user` in with a password and approves: the code the client gets.
async fn approve(srv: &TestServer, browser: &mut Browserish, query: &str, user: &str) -> String {
    let (status, _, page) = browser
        .get(&srv.url(&format!("/oauth2/authorize?{query}")))
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Test App"),
        "the page names the client: {page}"
    );
    let csrf = csrf_of(&page);
    let (status, next, _) = browser
        .post_form(
            &srv.url("/oauth2/login"),
            &[
                ("request", query),
                ("csrf", &csrf),
                ("username", user),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(status, 303);
    // The consent screen shows the client's logo, which its policy lets load from there only.
    let csp = browser
        .http
        .get(srv.url(&next))
        .header("cookie", browser.cookie_header())
        .send()
        .await
        .expect("consent")
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("img-src 'self' data: https://app.example;"),
        "{csp}"
    );
    let (status, _, consent) = browser.get(&srv.url(&next)).await;
    assert_eq!(status, 200);
    assert!(
        consent.contains("id=\"client-logo\" src=\"https://app.example/logo.png\""),
        "{consent}"
    );
    assert!(consent.contains(&format!("@{user}:localhost")), "{consent}");
    assert!(
        consent.contains("app.example"),
        "the consent names the client's host"
    );
    let (status, back, _) = browser
        .post_form(
            &srv.url("/oauth2/consent"),
            &[
                ("request", query),
                ("csrf", &csrf_of(&consent)),
                ("decision", "allow"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    assert!(back.starts_with("https://app.example/callback?"), "{back}");
    query_value(&back, "code").expect("a code")
}

async fn whoami(srv: &TestServer, token: &str) -> (u16, Value) {
    srv.get("/_matrix/client/v3/account/whoami", Some(token))
        .await
}

async fn discovery_and_client_registration(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    for path in [
        "/_matrix/client/v1/auth_metadata",
        "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
    ] {
        let (status, meta) = srv.get(path, None).await;
        assert_eq!(status, 200, "{meta}");
        let issuer = meta["issuer"].as_str().expect("issuer");
        for key in [
            "authorization_endpoint",
            "token_endpoint",
            "registration_endpoint",
            "revocation_endpoint",
        ] {
            assert!(
                meta[key].as_str().is_some_and(|u| u.starts_with(issuer)),
                "{key}: {meta}"
            );
        }
        assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(meta["response_types_supported"], json!(["code"]));
    }
    let (status, issuer) = srv
        .get(
            "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(issuer["issuer"].is_string());

    let (status, client) = register_client(
        &srv,
        json!({
            "client_name": "Native", "client_uri": "https://app.example/",
            "application_type": "native",
            "redirect_uris": ["http://127.0.0.1:1234/cb", "example.app:/cb"],
        }),
    )
    .await;
    assert_eq!(status, 201, "{client}");
    assert!(client["client_id"].is_string());
    assert_eq!(client["token_endpoint_auth_method"], "none");
    for (body, error) in [
        (
            json!({"redirect_uris": ["https://a.example/cb"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_uri": "https://app.example/", "redirect_uris": ["https://evil.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"client_uri": "https://app.example/", "redirect_uris": ["https://app.example/cb"],
                   "token_endpoint_auth_method": "client_secret_post"}),
            "invalid_client_metadata",
        ),
    ] {
        let (status, refused) = register_client(&srv, body).await;
        assert_eq!(
            (status, refused["error"].as_str()),
            (400, Some(error)),
            "{refused}"
        );
    }
    let response = srv
        .http
        .post(srv.url("/oauth2/registration"))
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    srv.finish().await;
}

async fn password_sign_in_code_exchange_refresh_and_revocation(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("alice", PASSWORD).await;
    let client_id = web_client(&srv).await;
    let other_client = web_client(&srv).await;
    let mut browser = Browserish::new();
    let query = authorize_query(&client_id, "OAUTHDEV1", "state-123");
    let code = approve(&srv, &mut browser, &query, "alice").await;

    // The code with the wrong verifier: refused, and the code is spent.
    let wrong = "another-verifier-that-is-long-enough-to-be-valid-0123456789";
    let (status, refused) = token_request(
        &srv,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &client_id),
            ("redirect_uri", "https://app.example/callback"),
            ("code_verifier", wrong),
        ],
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant")),
        "{refused}"
    );
    let exchange = |code: String| {
        let client_id = client_id.clone();
        let srv = &srv;
        async move {
            token_request(
                srv,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("client_id", &client_id),
                    ("redirect_uri", "https://app.example/callback"),
                    ("code_verifier", VERIFIER),
                ],
            )
            .await
        }
    };
    let (status, refused) = exchange(code).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // A fresh code, exchanged properly.
    let code = approve(&srv, &mut browser, &query, "alice").await;
    let (status, tokens) = exchange(code.clone()).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["expires_in"].as_u64().is_some_and(|e| e > 0));
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let (status, me) = whoami(&srv, &access).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], "@alice:localhost");
    assert_eq!(me["device_id"], "OAUTHDEV1", "the device the scope named");
    // The same code again: refused.
    let (status, _) = exchange(code).await;
    assert_eq!(status, 400);
    // Another client cannot refresh or revoke this session.
    let (status, refused) = token_request(
        &srv,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &other_client),
        ],
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(revoke(&srv, &other_client, &access).await, 400);
    assert_eq!(whoami(&srv, &access).await.0, 200, "still signed in");

    // Refresh: new tokens, the old access token stops working.
    let (status, renewed) = token_request(
        &srv,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(status, 200, "{renewed}");
    let access2 = renewed["access_token"].as_str().expect("access").to_owned();
    assert_ne!(access2, access);
    assert_eq!(whoami(&srv, &access).await.0, 401);
    assert_eq!(whoami(&srv, &access2).await.1["device_id"], "OAUTHDEV1");
    // The legacy /refresh does not take an OAuth session's token (replays are caught only at
    // the token endpoint).
    let legacy = srv
        .post_json(
            "/_matrix/client/v3/refresh",
            None,
            &json!({"refresh_token": renewed["refresh_token"]}),
        )
        .await;
    assert_eq!(legacy.0, 401, "{}", legacy.1);
    // The spent refresh token again at once: a client whose answer was lost. Refused, but the
    // session stays.
    let (status, refused) = token_request(
        &srv,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        whoami(&srv, &access2).await.0,
        200,
        "a quick retry is not a theft"
    );
    // Later, the spent refresh token again: someone copied it. The session ends.
    srv.clock.advance(std::time::Duration::from_secs(31));
    let (status, refused) = token_request(
        &srv,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        whoami(&srv, &access2).await.0,
        401,
        "a replay ends the session"
    );

    // A client cannot name one of alice's other devices (it would take its place).
    let phone = srv.login("alice", PASSWORD).await;
    let phone_device = phone["device_id"].as_str().expect("device").to_owned();
    let taking = authorize_query(&client_id, &phone_device, "x");
    let (status, _, consent) = browser
        .get(&srv.url(&format!("/oauth2/authorize?{taking}")))
        .await;
    assert_eq!(status, 200, "{consent}");
    let (status, location, refused) = browser
        .post_form(
            &srv.url("/oauth2/consent"),
            &[
                ("request", &taking),
                ("csrf", &csrf_of(&consent)),
                ("decision", "allow"),
            ],
        )
        .await;
    assert_eq!((status, location.as_str()), (400, ""), "{refused}");
    assert!(refused.contains("another session"), "{refused}");
    assert_eq!(
        whoami(&srv, phone["access_token"].as_str().expect("token"))
            .await
            .0,
        200
    );

    // A new session, revoked by its refresh token: gone with its device.
    let code = approve(
        &srv,
        &mut browser,
        &authorize_query(&client_id, "OAUTHDEV2", "s2"),
        "alice",
    )
    .await;
    let (_, tokens) = exchange(code).await;
    let access3 = tokens["access_token"].as_str().expect("access").to_owned();
    let refresh3 = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_eq!(revoke(&srv, &client_id, &refresh3).await, 200);
    assert_eq!(whoami(&srv, &access3).await.0, 401);
    assert_eq!(
        revoke(&srv, &client_id, "unknown-token").await,
        200,
        "RFC 7009: not an error"
    );
    let password_login = srv.login("alice", PASSWORD).await;
    let token = password_login["access_token"].as_str().expect("token");
    let (_, devices) = srv.get("/_matrix/client/v3/devices", Some(token)).await;
    let ids: Vec<&str> = devices["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|d| d["device_id"].as_str())
        .collect();
    assert!(
        !ids.contains(&"OAUTHDEV2") && !ids.contains(&"OAUTHDEV1"),
        "{devices}"
    );
    srv.finish().await;
}

async fn authorize_refusals_change_nothing(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("alice", PASSWORD).await;
    let client_id = named_client(&srv, "<script>alert(1)</script>").await;
    let mut browser = Browserish::new();
    // An unknown client or a foreign redirect URI: a page says so; nobody is redirected.
    let foreign = authorize_query(&client_id, "DEV", "s")
        .replace("app.example%2Fcallback", "evil.example%2Fcallback");
    for query in [authorize_query("nobody", "DEV", "s"), foreign] {
        let (status, location, page) = browser
            .get(&srv.url(&format!("/oauth2/authorize?{query}")))
            .await;
        assert_eq!((status, location.as_str()), (400, ""), "{page}");
    }
    // Without PKCE, with another method, another response type, an unknown scope or
    // prompt=login: the page says why. Nobody is sent anywhere before signing in (anyone can
    // register a client: redirecting errors would make the server an open redirect).
    for (from, to, error) in [
        (
            "code_challenge_method=S256",
            "code_challenge_method=plain",
            "invalid_request",
        ),
        (
            "response_type=code",
            "response_type=token",
            "unsupported_response_type",
        ),
        ("urn%3Amatrix%3Aclient%3Aapi%3A*", "admin", "invalid_scope"),
        ("state=s", "state=s&prompt=login", "invalid_request"),
    ] {
        let query = authorize_query(&client_id, "DEV", "s").replace(from, to);
        let (status, location, page) = browser
            .get(&srv.url(&format!("/oauth2/authorize?{query}")))
            .await;
        assert_eq!((status, location.as_str()), (400, ""), "{to}");
        assert!(page.contains(error), "{page}");
    }

    let query = authorize_query(&client_id, "DEV", "s");
    let (_, _, page) = browser
        .get(&srv.url(&format!("/oauth2/authorize?{query}")))
        .await;
    let csrf = csrf_of(&page);
    // A forged form (no matching CSRF cookie): refused.
    let mut forger = Browserish::new();
    let (status, location, _) = forger
        .post_form(
            &srv.url("/oauth2/login"),
            &[
                ("request", &query),
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!((status, location.as_str()), (400, ""));
    // A wrong password: the page again, with the reason, and no session.
    let (status, _, page) = browser
        .post_form(
            &srv.url("/oauth2/login"),
            &[
                ("request", &query),
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", "wrong"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("Invalid username or password"), "{page}");
    // Consent without being signed in: refused.
    let (status, location, _) = browser
        .post_form(
            &srv.url("/oauth2/consent"),
            &[("request", &query), ("csrf", &csrf), ("decision", "allow")],
        )
        .await;
    assert_eq!((status, location.as_str()), (400, ""));
    // Signed in, the user denies: the client hears access_denied, gets no code.
    let (status, next, _) = browser
        .post_form(
            &srv.url("/oauth2/login"),
            &[
                ("request", &query),
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(status, 303);
    let (_, _, consent) = browser.get(&srv.url(&next)).await;
    // HTML in the client's name is shown as text.
    assert!(!consent.contains("<script"), "{consent}");
    assert!(
        consent.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{consent}"
    );
    let (status, back, _) = browser
        .post_form(
            &srv.url("/oauth2/consent"),
            &[
                ("request", &query),
                ("csrf", &csrf_of(&consent)),
                ("decision", "deny"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(
        query_value(&back, "error").as_deref(),
        Some("access_denied")
    );
    assert!(query_value(&back, "code").is_none());
    // Token requests that are not forms, or name no client: refused.
    let response = srv
        .http
        .post(srv.url("/oauth2/token"))
        .json(&json!({"grant_type": "authorization_code"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    let (status, refused) = token_request(
        &srv,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", "nobody"),
        ],
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, refused) = token_request(
        &srv,
        &[("grant_type", "password"), ("client_id", &client_id)],
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("unsupported_grant_type")),
        "{refused}"
    );
    srv.finish().await;
}

async fn matrix_sdk_logs_in_refreshes_and_logs_out_through_oauth(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("alice", PASSWORD).await;
    let client = Client::builder()
        .homeserver_url(&srv.base)
        .handle_refresh_tokens()
        .build()
        .await
        .expect("client");
    let metadata: Raw<matrix_sdk::authentication::oauth::registration::ClientMetadata> =
        Raw::from_json(
            serde_json::value::to_raw_value(&json!({
                "client_name": "Test App",
                "client_uri": "https://app.example/",
                "application_type": "native",
                "redirect_uris": ["http://127.0.0.1:1/callback"],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "none",
                "response_types": ["code"],
            }))
            .expect("raw"),
        );
    let data = client
        .oauth()
        .login(
            url::Url::parse("http://127.0.0.1:1/callback").expect("url"),
            None,
            Some(ClientRegistrationData::new(metadata)),
            None,
        )
        .build()
        .await
        .expect("an authorization URL");
    // The browser: sign in with the password, allow.
    let mut browser = Browserish::new();
    let (status, _, page) = browser.get(data.url.as_str()).await;
    assert_eq!(status, 200, "{page}");
    let query = data.url.query().expect("query").to_owned();
    let (_, next, _) = browser
        .post_form(
            &srv.url("/oauth2/login"),
            &[
                ("request", &query),
                ("csrf", &csrf_of(&page)),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    let (_, _, consent) = browser.get(&srv.url(&next)).await;
    let (status, back, _) = browser
        .post_form(
            &srv.url("/oauth2/consent"),
            &[
                ("request", &query),
                ("csrf", &csrf_of(&consent)),
                ("decision", "allow"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    client
        .oauth()
        .finish_login(UrlOrQuery::Url(url::Url::parse(&back).expect("url")))
        .await
        .expect("matrix-sdk finishes the login");
    let me = client.whoami().await.expect("whoami");
    assert_eq!(me.user_id.as_str(), "@alice:localhost");
    let device = client.device_id().expect("device").to_owned();
    assert_eq!(me.device_id.as_deref(), Some(&*device));
    let before = client.access_token().expect("token");
    client
        .oauth()
        .refresh_access_token()
        .await
        .expect("refresh");
    let after = client.access_token().expect("token");
    assert_ne!(before, after);
    assert_eq!(whoami(&srv, &before).await.0, 401);
    assert_eq!(whoami(&srv, &after).await.0, 200);
    // matrix-sdk's `logout()` revokes only over https (its OAuth library refuses a plain-http
    // revocation endpoint, and this test server is plain http): the same request by hand.
    let client_id = client
        .oauth()
        .client_id()
        .expect("registered")
        .as_str()
        .to_owned();
    assert_eq!(revoke(&srv, &client_id, &after).await, 200);
    assert_eq!(whoami(&srv, &after).await.0, 401, "revoked");
    srv.finish().await;
}

/// The wallet way in, in a real browser, for matrix-sdk's own OAuth client: it registers
/// itself and builds the authorize URL; the browser shows the authorize page, "Continue with
/// Ethereum wallet" opens the SIWE page in its OAuth mode (an injected wallet signs), the
/// consent screen names the client, and the client's redirect URI gets the code, which
/// matrix-sdk exchanges for a session of the wallet's account.
#[tokio::test]
async fn oauth_wallet_sign_in_in_a_browser() {
    let srv = TestServer::start(&Backend::Sqlite).await;
    let site = client_site().await;
    let redirect_uri = format!("{site}/callback");
    let wallet = Key::new(71);
    let user_id = format!("@{:#x}:localhost", wallet.address());
    // The browser uses the public URL, whose host the SIWE message names.
    let public = srv.base.replace("127.0.0.1", "localhost");
    let sdk = Client::builder()
        .homeserver_url(&public)
        .build()
        .await
        .expect("client");
    let metadata: Raw<matrix_sdk::authentication::oauth::registration::ClientMetadata> =
        Raw::from_json(
            serde_json::value::to_raw_value(&json!({
                "client_name": "Wallet dApp", "client_uri": "https://dapp.example/",
                "application_type": "native", "redirect_uris": [redirect_uri],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "none", "response_types": ["code"],
            }))
            .expect("raw"),
        );
    let mut login = sdk.oauth().login(
        url::Url::parse(&redirect_uri).expect("url"),
        Some("WALLETDEV".into()),
        Some(ClientRegistrationData::new(metadata)),
        None,
    );
    login = login.login_hint(format!("{:#x}", wallet.address()));
    let data = login.build().await.expect("an authorization URL");
    let browser = Browser::start().await;
    browser.goto(data.url.as_str()).await;
    browser.wait_text("h1", "Sign in to localhost").await;
    browser.screenshot("oauth-sign-in").await;
    browser.click("#wallet").await;
    sign_on_the_wallet_page(&browser, &wallet).await;
    browser.wait_text("#account", &user_id).await;
    browser.wait_text("#client", "Wallet dApp").await;
    browser.wait_text("#client-host", "dapp.example").await;
    browser.screenshot("oauth-consent").await;
    browser.click("#allow").await;
    let landed = browser
        .wait_for(
            "the client's redirect URI",
            "return location.href.includes('code=') ? location.href : null;",
        )
        .await;
    let landed = landed.as_str().expect("url").to_owned();
    assert!(landed.starts_with(&redirect_uri), "{landed}");
    sdk.oauth()
        .finish_login(UrlOrQuery::Url(url::Url::parse(&landed).expect("url")))
        .await
        .expect("matrix-sdk finishes the login");
    let me = sdk.whoami().await.expect("whoami");
    assert_eq!(me.user_id.as_str(), user_id);
    assert_eq!(
        me.device_id.as_deref().map(|d| d.as_str()),
        Some("WALLETDEV")
    );

    // Signed in in this browser: the next authorization goes straight to the consent screen.
    browser.goto(data.url.as_str()).await;
    browser.wait_text("#account", &user_id).await;

    // The account page links a second wallet through the same wallet page.
    let second = Key::new(72);
    let second_address = format!("{:#x}", second.address());
    browser.goto(&format!("{public}/oauth2/account")).await;
    browser.wait_text("#account", &user_id).await;
    browser.click("#link-wallet").await;
    sign_on_the_wallet_page(&browser, &second).await;
    browser.wait_text("#linked-wallets", &second_address).await;
    browser.wait_text("#account", &user_id).await;
    browser.screenshot("oauth-account-wallets").await;
    browser.quit().await;
    srv.finish().await;
}

/// On the wallet page (its OAuth mode): an injected wallet of `key` is found, chosen and signs.
async fn sign_on_the_wallet_page(browser: &Browser, key: &Key) {
    browser.wait_for("the wallet page's script", READY).await;
    browser
        .execute(
            INJECT_WALLET,
            vec![json!(key.address().to_checksum(None)), json!("0x1")],
        )
        .await;
    browser.wait_text("#wallets", "Test Wallet").await;
    browser.click("#wallets button").await;
    let (id, text) = sign_request(browser).await;
    settle(browser, id, key, &text).await;
}

async fn device_authorization(srv: &TestServer, client_id: &str) -> (u16, Value) {
    let response = srv
        .http
        .post(srv.url("/oauth2/device_authorization"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "client_id={client_id}&scope=urn%3Amatrix%3Aclient%3Aapi%3A*"
        ))
        .send()
        .await
        .expect("device authorization");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn poll(srv: &TestServer, client_id: &str, device_code: &str) -> (u16, Value) {
    token_request(
        srv,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", client_id),
        ],
    )
    .await
}

/// The user answers a device's code in the browser: sign in with a password, then `decision`.
async fn answer_device(
    srv: &TestServer,
    browser: &mut Browserish,
    page_url: &str,
    decision: &str,
) -> String {
    let (status, _, page) = browser.get(page_url).await;
    assert_eq!(status, 200, "{page}");
    let request = format!(
        "user_code={}",
        query_value(page_url, "user_code").expect("code")
    );
    let mut csrf = csrf_of(&page);
    if page.contains("name=\"password\"") {
        let (status, next, _) = browser
            .post_form(
                &srv.url("/oauth2/login"),
                &[
                    ("request", &request),
                    ("csrf", &csrf),
                    ("username", "alice"),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(status, 303);
        let (_, _, consent) = browser.get(&srv.url(&next)).await;
        assert!(consent.contains("TV App"), "{consent}");
        csrf = csrf_of(&consent);
    }
    let (status, _, done) = browser
        .post_form(
            &srv.url("/oauth2/consent"),
            &[
                ("request", &request),
                ("csrf", &csrf),
                ("decision", decision),
            ],
        )
        .await;
    assert_eq!(status, 200, "{done}");
    done
}

async fn device_authorization_grant(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("alice", PASSWORD).await;
    let (status, client) = register_client(
        &srv,
        json!({
            "client_name": "TV App", "client_uri": "https://tv.example/",
            "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
        }),
    )
    .await;
    assert_eq!(status, 201, "{client}");
    let client_id = client["client_id"].as_str().expect("client id").to_owned();
    let (status, grant) = device_authorization(&srv, &client_id).await;
    assert_eq!(status, 200, "{grant}");
    assert_eq!(grant["interval"], 5);
    let device_code = grant["device_code"]
        .as_str()
        .expect("device code")
        .to_owned();
    let complete = grant["verification_uri_complete"]
        .as_str()
        .expect("uri")
        .to_owned();
    assert!(complete.contains(grant["user_code"].as_str().expect("user code")));

    // Before the user answers: pending, and slow down when polled too fast.
    let (status, pending) = poll(&srv, &client_id, &device_code).await;
    assert_eq!(
        (status, pending["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    let (_, fast) = poll(&srv, &client_id, &device_code).await;
    assert_eq!(fast["error"], "slow_down");
    // Another client cannot poll it.
    let other = web_client(&srv).await;
    let (_, refused) = poll(&srv, &other, &device_code).await;
    assert_eq!(refused["error"], "unauthorized_client", "{refused}");

    // The user opens the link (the code typed in any case works too) and allows it.
    let mut browser = Browserish::new();
    let typed = complete.replace(
        grant["user_code"].as_str().expect("code"),
        &grant["user_code"].as_str().expect("code").to_lowercase(),
    );
    let done = answer_device(&srv, &mut browser, &typed, "allow").await;
    assert!(done.contains("Device connected"), "{done}");
    srv.clock.advance(std::time::Duration::from_secs(6));
    let (status, tokens) = poll(&srv, &client_id, &device_code).await;
    assert_eq!(status, 200, "{tokens}");
    let (status, me) = whoami(&srv, tokens["access_token"].as_str().expect("token")).await;
    assert_eq!(status, 200);
    assert_eq!(me["user_id"], "@alice:localhost");
    assert!(
        tokens["scope"]
            .as_str()
            .is_some_and(|s| s.contains(&format!(
                "urn:matrix:client:device:{}",
                me["device_id"].as_str().unwrap_or("?")
            )))
    );
    let (_, again) = poll(&srv, &client_id, &device_code).await;
    assert_eq!(again["error"], "invalid_grant", "answered once");

    // A second device: the user (still signed in in this browser) denies it.
    let (_, grant) = device_authorization(&srv, &client_id).await;
    let device_code = grant["device_code"]
        .as_str()
        .expect("device code")
        .to_owned();
    let done = answer_device(
        &srv,
        &mut browser,
        grant["verification_uri_complete"].as_str().expect("uri"),
        "deny",
    )
    .await;
    assert!(done.contains("Request declined"), "{done}");
    srv.clock.advance(std::time::Duration::from_secs(6));
    let (_, denied) = poll(&srv, &client_id, &device_code).await;
    assert_eq!(denied["error"], "access_denied");

    // A third expires unanswered; its code no longer opens the page.
    let (_, grant) = device_authorization(&srv, &client_id).await;
    let device_code = grant["device_code"]
        .as_str()
        .expect("device code")
        .to_owned();
    srv.clock.advance(std::time::Duration::from_secs(601));
    let (_, expired) = poll(&srv, &client_id, &device_code).await;
    assert_eq!(expired["error"], "expired_token");
    let (status, _, page) = browser
        .get(grant["verification_uri_complete"].as_str().expect("uri"))
        .await;
    assert_eq!(status, 400);
    assert!(page.contains("unknown, expired or already used"), "{page}");
    let (status, _, page) = browser.get(&srv.url("/oauth2/device")).await;
    assert_eq!(status, 200);
    assert!(page.contains("name=\"user_code\""), "{page}");
    // A client that did not register the grant cannot start one.
    let (status, refused) = device_authorization(&srv, &other).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    let (_, refused) = poll(&srv, &client_id, "no-such-code").await;
    assert_eq!(refused["error"], "invalid_grant");
    srv.finish().await;
}

async fn registration_on_the_authorize_page(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("taken", PASSWORD).await;
    let (_, meta) = srv.get("/_matrix/client/v1/auth_metadata", None).await;
    assert_eq!(meta["prompt_values_supported"], json!(["create"]));
    let client_id = web_client(&srv).await;
    let mut browser = Browserish::new();
    let query = format!(
        "{}&prompt=create",
        authorize_query(&client_id, "NEWDEV", "s")
    );
    let (status, _, page) = browser
        .get(&srv.url(&format!("/oauth2/authorize?{query}")))
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("Create an account on localhost"), "{page}");
    let csrf = csrf_of(&page);
    let form = |user: &'static str| {
        vec![
            ("request".to_owned(), query.clone()),
            ("csrf".to_owned(), csrf.clone()),
            ("username".to_owned(), user.to_owned()),
            ("password".to_owned(), PASSWORD.to_owned()),
        ]
    };
    let register_url = srv.url("/oauth2/register");
    // A name that is taken, or not a valid one: the form again, saying why.
    let (status, _, page) = post_pairs(&mut browser, &register_url, form("taken")).await;
    assert_eq!(status, 200);
    assert!(page.contains("already taken"), "{page}");
    let (_, _, page) = post_pairs(&mut browser, &register_url, form("no spaces allowed")).await;
    assert!(page.contains("class=\"error\""), "{page}");
    // A new name: the account exists, the browser is signed in, the consent names it.
    let (status, next, _) = post_pairs(&mut browser, &register_url, form("newbie")).await;
    assert_eq!(status, 303);
    let (_, _, consent) = browser.get(&srv.url(&next)).await;
    assert!(consent.contains("@newbie:localhost"), "{consent}");
    let (_, back, _) = browser
        .post_form(
            &srv.url("/oauth2/consent"),
            &[
                ("request", &query),
                ("csrf", &csrf_of(&consent)),
                ("decision", "allow"),
            ],
        )
        .await;
    let code = query_value(&back, "code").expect("code");
    let (status, tokens) = token_request(
        &srv,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &client_id),
            ("redirect_uri", "https://app.example/callback"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let (_, me) = whoami(&srv, tokens["access_token"].as_str().expect("token")).await;
    assert_eq!(me["user_id"], "@newbie:localhost");
    // The new account signs in with its password elsewhere too.
    assert!(srv.login("newbie", PASSWORD).await["access_token"].is_string());
    srv.finish().await;

    // With registration closed: no registration page, no account.
    let srv = TestServer::start_with(&backend, |c| c.registration.open = false).await;
    let (_, meta) = srv.get("/_matrix/client/v1/auth_metadata", None).await;
    assert_eq!(meta["prompt_values_supported"], json!([]));
    let client_id = web_client(&srv).await;
    let mut browser = Browserish::new();
    let query = format!(
        "{}&prompt=create",
        authorize_query(&client_id, "NEWDEV", "s")
    );
    let (_, _, page) = browser
        .get(&srv.url(&format!("/oauth2/authorize?{query}")))
        .await;
    assert!(
        page.contains("Sign in to localhost") && !page.contains("Create an account"),
        "{page}"
    );
    let (status, _, _) = browser
        .post_form(
            &srv.url("/oauth2/register"),
            &[
                ("request", &query),
                ("csrf", &csrf_of(&page)),
                ("username", "sneaky"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(status, 400);
    srv.finish().await;
}

async fn post_pairs(
    browser: &mut Browserish,
    url: &str,
    pairs: Vec<(String, String)>,
) -> (u16, String, String) {
    let form: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    browser.post_form(url, &form).await
}

async fn the_account_page_lists_and_ends_sessions(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("alice", PASSWORD).await;
    srv.register("bob", PASSWORD).await;
    let phone = srv.login("alice", PASSWORD).await;
    let laptop = srv.login("alice", PASSWORD).await;
    let bobs = srv.login("bob", PASSWORD).await;
    let phone_device = phone["device_id"].as_str().expect("device").to_owned();
    let phone_token = phone["access_token"].as_str().expect("token").to_owned();
    let laptop_token = laptop["access_token"].as_str().expect("token").to_owned();
    let (_, meta) = srv.get("/_matrix/client/v1/auth_metadata", None).await;
    let account_uri = meta["account_management_uri"]
        .as_str()
        .expect("account URI")
        .to_owned();
    assert!(
        meta["account_management_actions_supported"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "org.matrix.session_end"))
    );

    // As a client opens it (MSC4191): the action and the device in the query.
    let mut browser = Browserish::new();
    let sessions = account_page_signed_in(
        &srv,
        &mut browser,
        &account_uri,
        &format!("?action=org.matrix.session_end&device_id={phone_device}"),
    )
    .await;
    assert!(sessions.contains("@alice:localhost"), "{sessions}");
    assert!(sessions.contains(&phone_device), "{sessions}");
    assert!(
        sessions.contains("Sign this session out?"),
        "the chosen one is asked about"
    );
    assert!(
        !sessions.contains(bobs["device_id"].as_str().expect("device")),
        "only alice's"
    );
    let csrf = csrf_of(&sessions);
    // Forged (no cookie) and foreign (bob's device) requests change nothing.
    let mut forger = Browserish::new();
    let (status, _, _) = forger
        .post_form(
            &srv.url("/oauth2/account"),
            &[("csrf", &csrf), ("device_id", &phone_device)],
        )
        .await;
    assert_eq!(status, 400);
    let (status, _, _) = browser
        .post_form(
            &srv.url("/oauth2/account"),
            &[
                ("csrf", &csrf),
                ("device_id", bobs["device_id"].as_str().expect("device")),
            ],
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        whoami(&srv, bobs["access_token"].as_str().expect("token"))
            .await
            .0,
        200
    );
    assert_eq!(whoami(&srv, &phone_token).await.0, 200);
    // Signing the phone out ends it; the laptop stays.
    let (status, back, _) = browser
        .post_form(
            &srv.url("/oauth2/account"),
            &[("csrf", &csrf), ("device_id", &phone_device)],
        )
        .await;
    assert_eq!((status, back.as_str()), (303, "/oauth2/account"));
    assert_eq!(whoami(&srv, &phone_token).await.0, 401);
    assert_eq!(whoami(&srv, &laptop_token).await.0, 200);
    let (_, _, sessions) = browser.get(&srv.url("/oauth2/account")).await;
    assert!(!sessions.contains(&phone_device), "{sessions}");
    srv.finish().await;
}

/// A browser that opens the account page at `account_uri` with `query` (as a client links
/// to it), signs in as alice with her password; the page it lands on.
async fn account_page_signed_in(
    srv: &TestServer,
    browser: &mut Browserish,
    account_uri: &str,
    query: &str,
) -> String {
    let (status, _, page) = browser.get(&format!("{account_uri}{query}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Sign in to manage your account"), "{page}");
    let request = format!("account=1{}", query.replacen('?', "&", 1));
    let (status, next, _) = browser
        .post_form(
            &srv.url("/oauth2/login"),
            &[
                ("request", &request),
                ("csrf", &csrf_of(&page)),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(status, 303, "{next}");
    let (status, _, page) = browser.get(&srv.url(&next)).await;
    assert_eq!(status, 200, "{page}");
    page
}

/// The account page's other actions (MSC4191 and spec v1.15): the display name, wallets
/// linked by a SIWE signature and unlinked, and deactivation, which asks for a sign-in of the
/// last ten minutes and the account's own ID typed out. Forged and wrong requests change
/// nothing.
async fn the_account_page_keeps_profile_wallets_and_deactivation(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("alice", PASSWORD).await;
    let session = srv.login("alice", PASSWORD).await;
    let token = session["access_token"].as_str().expect("token").to_owned();
    let (_, meta) = srv.get("/_matrix/client/v1/auth_metadata", None).await;
    let actions = meta["account_management_actions_supported"].clone();
    for action in [
        "org.matrix.profile",
        "org.matrix.devices_list",
        "org.matrix.device_delete",
        "org.matrix.account_deactivate",
        "org.matrix.session_end",
    ] {
        assert!(
            actions
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == action)),
            "{action} in {actions}"
        );
    }
    let mut browser = Browserish::new();
    let page = account_page_signed_in(
        &srv,
        &mut browser,
        &srv.url("/oauth2/account"),
        "?action=org.matrix.profile",
    )
    .await;
    assert!(page.contains("id=\"displayname\""), "{page}");
    let csrf = csrf_of(&page);
    let account = srv.url("/oauth2/account");
    let displayname = || async {
        srv.get(
            "/_matrix/client/v3/profile/@alice:localhost/displayname",
            None,
        )
        .await
        .1["displayname"]
            .clone()
    };

    // The display name: saved; one with a control character refused, the old one kept.
    let (status, back, _) = browser
        .post_form(
            &account,
            &[("csrf", &csrf), ("displayname", "Alice Liddell")],
        )
        .await;
    assert_eq!((status, back.as_str()), (303, "/oauth2/account"));
    assert_eq!(displayname().await, "Alice Liddell");
    let (status, _, page) = browser
        .post_form(&account, &[("csrf", &csrf), ("displayname", "Alice\u{7}")])
        .await;
    assert_eq!(status, 400, "{page}");
    assert_eq!(displayname().await, "Alice Liddell");
    let (status, _, _) = Browserish::new()
        .post_form(&account, &[("csrf", &csrf), ("displayname", "Forged")])
        .await;
    assert_eq!(status, 400, "no cookie, no change");
    assert_eq!(displayname().await, "Alice Liddell");

    // A wallet linked from the page's wallet sign-in, in its link mode.
    let key = Key::new(81);
    let address = format!("{:#x}", key.address());
    let (text, signature) = crate::wallet::signed_message(&srv, &key).await;
    let link = |csrf: String| {
        json!({
            "request": "account=1&action=io.matrixon.wallet_link",
            "csrf": csrf, "message": text.clone(), "signature": signature.clone(),
        })
    };
    // A browser signed in to nobody links nothing (and spends no nonce).
    let mut stranger = Browserish::new();
    let (_, _, strangers) = stranger.get(&account).await;
    let (status, _, body) = stranger
        .post_json(WALLET_SIGN_IN, &srv, &link(csrf_of(&strangers)))
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = browser
        .post_json(WALLET_SIGN_IN, &srv, &link(csrf.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["linked"], address.as_str());
    assert_eq!(answer["redirect_to"], "/oauth2/account");
    let (_, _, page) = browser.get(&account).await;
    assert!(
        page.contains(&format!("data-wallet=\"{address}\"")),
        "{page}"
    );
    // The wallet now signs in to alice's account.
    let (again, signed) = crate::wallet::signed_message(&srv, &key).await;
    let (status, login) = srv
        .post_json(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "io.matrixon.login.siwe", "message": again, "signature": signed}),
        )
        .await;
    assert_eq!(
        (status, login["user_id"].as_str()),
        (200, Some("@alice:localhost"))
    );
    // Unlinked: an unknown address is refused, the linked one goes.
    let (status, _, _) = browser
        .post_form(
            &account,
            &[
                ("csrf", &csrf),
                ("unlink", "0x0000000000000000000000000000000000000001"),
            ],
        )
        .await;
    assert_eq!(status, 400);
    let (status, _, _) = browser
        .post_form(&account, &[("csrf", &csrf), ("unlink", &address)])
        .await;
    assert_eq!(status, 303);
    let (_, _, page) = browser.get(&account).await;
    assert!(!page.contains(&address), "{page}");

    // Deactivation: the page offers it; the ID must be typed out.
    assert!(
        page.contains("action=org.matrix.account_deactivate"),
        "{page}"
    );
    let (_, _, page) = browser
        .get(&srv.url("/oauth2/account?action=org.matrix.account_deactivate"))
        .await;
    assert!(page.contains("Deactivate your account?"), "{page}");
    let (status, _, _) = browser
        .post_form(
            &account,
            &[("csrf", &csrf), ("deactivate", "@bob:localhost")],
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(whoami(&srv, &token).await.0, 200);
    // Eleven minutes later the sign-in is too old to deactivate with (the page asks again).
    srv.clock.advance(std::time::Duration::from_secs(11 * 60));
    let (_, _, page) = browser
        .get(&srv.url("/oauth2/account?action=org.matrix.account_deactivate"))
        .await;
    assert!(page.contains("Sign in to manage your account"), "{page}");
    let (status, _, _) = browser
        .post_form(
            &account,
            &[("csrf", &csrf), ("deactivate", "@alice:localhost")],
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(whoami(&srv, &token).await.0, 200);
    // Signed in again: deactivated for good.
    let page = account_page_signed_in(
        &srv,
        &mut browser,
        &srv.url("/oauth2/account"),
        "?action=org.matrix.account_deactivate",
    )
    .await;
    let (status, _, done) = browser
        .post_form(
            &account,
            &[
                ("csrf", &csrf_of(&page)),
                ("deactivate", "@alice:localhost"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("Account deactivated"), "{done}");
    assert_eq!(whoami(&srv, &token).await.0, 401);
    let (status, _) = srv
        .post_json(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 403);
    srv.finish().await;
}

fn master_key(id: &str) -> Value {
    json!({"master_key": {"user_id": "@alice:localhost", "usage": ["master"],
                          "keys": {format!("ed25519:{id}"): id}}})
}

async fn a_cross_signing_reset_is_approved_on_the_account_page(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("alice", PASSWORD).await;
    let login = srv.login("alice", PASSWORD).await;
    let token = login["access_token"].as_str().expect("token").to_owned();
    let upload = |body: Value| {
        let token = token.clone();
        let srv = &srv;
        async move {
            srv.post_json(
                "/_matrix/client/v3/keys/device_signing/upload",
                Some(&token),
                &body,
            )
            .await
        }
    };
    // The first keys need nothing; replacing them asks for UIA, m.oauth among the ways.
    assert_eq!(upload(master_key("Zmlyc3Q")).await.0, 200);
    let (status, challenge) = upload(master_key("c2Vjb25k")).await;
    assert_eq!(status, 401, "{challenge}");
    assert!(
        challenge["flows"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["stages"] == json!(["m.oauth"]))),
        "{challenge}"
    );
    let url = challenge["params"]["m.oauth"]["url"]
        .as_str()
        .expect("approval URL")
        .to_owned();
    assert!(
        url.ends_with("/oauth2/account?action=org.matrix.cross_signing_reset"),
        "{url}"
    );
    // Saying "m.oauth" before approving does not pass.
    let mut early = master_key("c2Vjb25k");
    early["auth"] = json!({"type": "m.oauth", "session": challenge["session"]});
    let (status, refused) = upload(early.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(refused["errcode"], "M_FORBIDDEN", "{refused}");

    // The user opens the link, signs in, and allows the reset.
    let mut browser = Browserish::new();
    let (_, _, page) = browser.get(&url).await;
    let request = "account=1&action=org.matrix.cross_signing_reset";
    let (status, next, _) = browser
        .post_form(
            &srv.url("/oauth2/login"),
            &[
                ("request", request),
                ("csrf", &csrf_of(&page)),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(status, 303);
    let (_, _, account) = browser.get(&srv.url(&next)).await;
    assert!(account.contains("Reset your identity?"), "{account}");
    let (status, _, done) = browser
        .post_form(
            &srv.url("/oauth2/account"),
            &[("csrf", &csrf_of(&account)), ("reset", "allow")],
        )
        .await;
    assert_eq!(status, 200);
    assert!(done.contains("Reset approved"), "{done}");
    // The client's retry (as matrix-sdk polls) goes through, once.
    let (status, answer) = upload(early).await;
    assert_eq!(status, 200, "{answer}");
    let (_, keys) = srv
        .post_json(
            "/_matrix/client/v3/keys/query",
            Some(&token),
            &json!({"device_keys": {"@alice:localhost": []}}),
        )
        .await;
    assert!(
        keys["master_keys"]["@alice:localhost"]["keys"]["ed25519:c2Vjb25k"].is_string(),
        "{keys}"
    );
    assert_eq!(
        upload(master_key("dGhpcmQ")).await.0,
        401,
        "the approval was used up"
    );
    // An approval that is not used expires after ten minutes.
    let (_, _, account) = browser.get(&url).await;
    browser
        .post_form(
            &srv.url("/oauth2/account"),
            &[("csrf", &csrf_of(&account)), ("reset", "allow")],
        )
        .await;
    srv.clock.advance(std::time::Duration::from_secs(601));
    assert_eq!(upload(master_key("dGhpcmQ")).await.0, 401, "expired");
    srv.finish().await;
}

/// matrix-sdk's whole OAuth life cycle against the server behind TLS (its OAuth library
/// revokes only over https): log in, refresh, and `logout()`, which revokes the session.
async fn matrix_sdk_logs_out_over_https(backend: Backend) {
    let front = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let public = format!(
        "https://localhost:{}/",
        front.local_addr().expect("addr").port()
    );
    let base = public.clone();
    let srv = TestServer::start_with(&backend, move |c| c.public_baseurl = Some(base)).await;
    let backend_addr: std::net::SocketAddr = srv
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address");
    crate::tls::front(front, backend_addr);
    srv.register("alice", PASSWORD).await;
    let ca = reqwest::Certificate::from_pem(include_bytes!("../fixtures/tls/ca.pem")).expect("ca");
    let client = Client::builder()
        .homeserver_url(&public)
        .add_root_certificates(vec![ca.clone()])
        .handle_refresh_tokens()
        .build()
        .await
        .expect("client");
    let metadata: Raw<matrix_sdk::authentication::oauth::registration::ClientMetadata> =
        Raw::from_json(
            serde_json::value::to_raw_value(&json!({
                "client_name": "Test App", "client_uri": "https://app.example/",
                "application_type": "native", "redirect_uris": ["http://127.0.0.1:1/callback"],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "none", "response_types": ["code"],
            }))
            .expect("raw"),
        );
    let data = client
        .oauth()
        .login(
            url::Url::parse("http://127.0.0.1:1/callback").expect("url"),
            None,
            Some(ClientRegistrationData::new(metadata)),
            None,
        )
        .build()
        .await
        .expect("an authorization URL");
    assert!(data.url.as_str().starts_with(&public), "{}", data.url);
    let mut browser = Browserish::trusting(Some(ca));
    let (status, _, page) = browser.get(data.url.as_str()).await;
    assert_eq!(status, 200, "{page}");
    let query = data.url.query().expect("query").to_owned();
    let at = |path: &str| format!("{}{path}", public.trim_end_matches('/'));
    let (_, next, _) = browser
        .post_form(
            &at("/oauth2/login"),
            &[
                ("request", &query),
                ("csrf", &csrf_of(&page)),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    let (_, _, consent) = browser.get(&at(&next)).await;
    let (_, back, _) = browser
        .post_form(
            &at("/oauth2/consent"),
            &[
                ("request", &query),
                ("csrf", &csrf_of(&consent)),
                ("decision", "allow"),
            ],
        )
        .await;
    client
        .oauth()
        .finish_login(UrlOrQuery::Url(url::Url::parse(&back).expect("url")))
        .await
        .expect("matrix-sdk finishes the login");
    client
        .oauth()
        .refresh_access_token()
        .await
        .expect("refresh");
    let token = client.access_token().expect("token");
    assert_eq!(whoami(&srv, &token).await.0, 200);
    client
        .oauth()
        .logout()
        .await
        .expect("matrix-sdk's logout revokes");
    assert_eq!(whoami(&srv, &token).await.0, 401, "revoked");
    srv.finish().await;
}

const RENDEZVOUS: &str = "/_matrix/client/unstable/org.matrix.msc4108/rendezvous";

/// The MSC4108 rendezvous that QR login runs over (matrix-sdk's whole flow is in
/// `tests/e2ee`): sessions created, read with ETags (304 while unchanged, exactly
/// `text/plain`), written in turns (`If-Match`), shared by a second instance on the same
/// database, deleted and expiring; wrong writes refused and changing nothing.
async fn rendezvous_sessions_take_turns_and_refuse_bad_writes(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let other = matrixon::Server::start_with_clock(
        crate::harness::test_config(&srv.db.url),
        srv.clock.clone(),
    )
    .await
    .expect("a second instance");
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method,
                url: String,
                headers: Vec<(&'static str, String)>,
                body: &'static str| {
        let mut request = http.request(method, url).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.send().await.expect("request") }
    };
    let text = || ("content-type", "text/plain".to_owned());
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let errcode =
        |body: &str| serde_json::from_str::<Value>(body).unwrap_or_default()["errcode"].clone();

    // Created: 201 with the session's URL and its headers.
    let created = send(reqwest::Method::POST, srv.url(RENDEZVOUS), vec![text()], "").await;
    assert_eq!(created.status().as_u16(), 201);
    let etag = header(&created, "etag");
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    assert!(
        !header(&created, "expires").is_empty() && !header(&created, "last-modified").is_empty()
    );
    assert_eq!(header(&created, "cache-control"), "no-store, no-transform");
    let url = created.json::<Value>().await.expect("json")["url"]
        .as_str()
        .expect("url")
        .to_owned();
    assert!(
        url.starts_with(&format!(
            "{}{RENDEZVOUS}/",
            srv.base.replace("127.0.0.1", "localhost")
        )),
        "{url}"
    );
    let path = url.split_once(RENDEZVOUS).expect("path").1.to_owned();
    let at = |base: &str| format!("{base}{RENDEZVOUS}{path}");

    // Unchanged: 304 with the same ETag; changed by a write on the other instance: 200, text.
    let unchanged = send(
        reqwest::Method::GET,
        at(&srv.base),
        vec![("if-none-match", etag.clone())],
        "",
    )
    .await;
    assert_eq!(unchanged.status().as_u16(), 304);
    assert_eq!(header(&unchanged, "etag"), etag);
    let written = send(
        reqwest::Method::PUT,
        at(&other.base_url()),
        vec![text(), ("if-match", etag.clone())],
        "hello from the new device",
    )
    .await;
    assert_eq!(written.status().as_u16(), 202);
    let second = header(&written, "etag");
    assert!(!second.is_empty() && second != etag);
    let read = send(
        reqwest::Method::GET,
        at(&srv.base),
        vec![("if-none-match", etag.clone())],
        "",
    )
    .await;
    assert_eq!(read.status().as_u16(), 200);
    assert_eq!(header(&read, "content-type"), "text/plain");
    assert_eq!(header(&read, "etag"), second);
    assert_eq!(
        read.text().await.expect("body"),
        "hello from the new device"
    );

    // Refused writes change nothing: a stale ETag (412, M_CONCURRENT_WRITE), none, another
    // type, too large, an unknown session.
    let stale = send(
        reqwest::Method::PUT,
        at(&srv.base),
        vec![text(), ("if-match", etag.clone())],
        "late",
    )
    .await;
    assert_eq!(stale.status().as_u16(), 412);
    let body: Value = stale.json().await.expect("json");
    assert_eq!(
        body["org.matrix.msc4108.errcode"], "M_CONCURRENT_WRITE",
        "{body}"
    );
    let unconditional = send(reqwest::Method::PUT, at(&srv.base), vec![text()], "blind").await;
    assert_eq!(unconditional.status().as_u16(), 400);
    let json_body = send(
        reqwest::Method::PUT,
        at(&srv.base),
        vec![
            ("content-type", "application/json".to_owned()),
            ("if-match", second.clone()),
        ],
        "{}",
    )
    .await;
    assert_eq!(json_body.status().as_u16(), 400);
    assert_eq!(
        errcode(&json_body.text().await.expect("body")),
        "M_INVALID_PARAM"
    );
    let huge: &'static str = Box::leak("x".repeat(4097).into_boxed_str());
    let too_large = send(
        reqwest::Method::PUT,
        at(&srv.base),
        vec![text(), ("if-match", second.clone())],
        huge,
    )
    .await;
    assert_eq!(too_large.status().as_u16(), 413);
    let unknown = send(
        reqwest::Method::GET,
        format!("{}{RENDEZVOUS}/nosuchsession", srv.base),
        vec![],
        "",
    )
    .await;
    assert_eq!(unknown.status().as_u16(), 404);
    assert_eq!(errcode(&unknown.text().await.expect("body")), "M_NOT_FOUND");
    let still = send(reqwest::Method::GET, at(&srv.base), vec![], "").await;
    assert_eq!(header(&still, "etag"), second);
    assert_eq!(
        still.text().await.expect("body"),
        "hello from the new device"
    );
    let not_text = send(
        reqwest::Method::POST,
        srv.url(RENDEZVOUS),
        vec![("content-type", "application/json".to_owned())],
        "{}",
    )
    .await;
    assert_eq!(not_text.status().as_u16(), 400);

    // Deleted: gone on both instances.
    let deleted = send(reqwest::Method::DELETE, at(&other.base_url()), vec![], "").await;
    assert_eq!(deleted.status().as_u16(), 204);
    let after = send(reqwest::Method::GET, at(&srv.base), vec![], "").await;
    assert_eq!(after.status().as_u16(), 404);

    // A session lives five minutes from its creation, whatever is written.
    let created = send(reqwest::Method::POST, srv.url(RENDEZVOUS), vec![text()], "").await;
    let url = created.json::<Value>().await.expect("json")["url"]
        .as_str()
        .expect("url")
        .to_owned();
    let path = url.split_once(RENDEZVOUS).expect("path").1.to_owned();
    srv.clock
        .advance(std::time::Duration::from_secs(5 * 60 + 1));
    let expired = send(
        reqwest::Method::GET,
        format!("{}{RENDEZVOUS}{path}", srv.base),
        vec![],
        "",
    )
    .await;
    assert_eq!(expired.status().as_u16(), 404);
    other.shutdown().await;
    srv.finish().await;
}
