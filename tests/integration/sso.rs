//! Wallet SSO for unmodified clients: the `m.login.sso` redirect, the wallet page in a real
//! headless Chromium with an injected EIP-1193 wallet, login tokens, the confirmation page
//! for clients not on the whitelist, and the UIA fallback page.

use std::net::SocketAddr;

use matrixon_chain::siwe::Message;
use serde_json::{Value, json};

use crate::{
    anvil::Key,
    harness::{Backend, TestServer, assert_error, both_backends},
    webdriver::Browser,
};

both_backends!(sso_endpoints_refuse_bad_input);

const SSO: &str = "/_matrix/client/unstable/io.matrixon/sso";

/// An EIP-1193 wallet announced through EIP-6963, as a browser extension would after the
/// page loaded. Accounts and chain are answered here; `personal_sign` requests queue up in
/// `window.__wallet.requests` for the test to sign with its key and settle.
pub(crate) const INJECT_WALLET: &str = r##"
const [address, chainId] = arguments;
const wallet = {
  chainId, allowSwitch: false, rejectNext: false, requests: [], pending: new Map(), next: 0,
  settle(id, signature) { const done = this.pending.get(id); this.pending.delete(id); done(signature); },
};
window.__wallet = wallet;
const provider = {
  request({ method, params }) {
    if (wallet.rejectNext) {
      wallet.rejectNext = false;
      return Promise.reject({ code: 4001, message: "User rejected the request." });
    }
    switch (method) {
      case "eth_requestAccounts":
      case "eth_accounts":
        return Promise.resolve([address]);
      case "eth_chainId":
        return Promise.resolve(wallet.chainId);
      case "wallet_switchEthereumChain":
        if (!wallet.allowSwitch) return Promise.reject({ code: 4902, message: "Unrecognized chain ID" });
        wallet.chainId = params[0].chainId;
        return Promise.resolve(null);
      case "personal_sign":
        return new Promise((resolve) => {
          const id = wallet.next++;
          wallet.pending.set(id, resolve);
          wallet.requests.push({ id, message: params[0], address: params[1] });
        });
      default:
        return Promise.reject({ code: 4200, message: "Unsupported method " + method });
    }
  },
};
const icon = "data:image/svg+xml," + encodeURIComponent(
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><circle cx="5" cy="5" r="5" fill="#f6851b"/></svg>');
window.dispatchEvent(new CustomEvent("eip6963:announceProvider", { detail: Object.freeze({
  info: { uuid: "5f2c7a4e-0d4b-4d8e-9a51-3f0c2b8e9d11", name: "Test Wallet", icon, rdns: "org.matrixon.test" },
  provider,
}) }));
"##;

/// True once the page listens for wallets.
pub(crate) const READY: &str = "return document.querySelector('main')?.dataset.ready === 'true';";

/// The client the browser returns to: any page under it answers, like a web client would.
pub(crate) async fn client_site() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(|| async {
        axum::response::Html("<!doctype html><title>Client</title><h1>Back in the client</h1>")
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Waits for the page's `personal_sign` request and returns `(id, message text)`.
pub(crate) async fn sign_request(browser: &Browser) -> (u64, String) {
    let requests = browser
        .wait_for(
            "a personal_sign request",
            "return window.__wallet.requests.splice(0);",
        )
        .await;
    let request = &requests[0];
    let hex = request["message"].as_str().expect("hex message");
    let bytes = alloy::primitives::hex::decode(hex).expect("hex");
    (
        request["id"].as_u64().expect("id"),
        String::from_utf8(bytes).expect("utf-8 message"),
    )
}

pub(crate) async fn settle(browser: &Browser, id: u64, key: &Key, text: &str) {
    let signature = format!(
        "0x{}",
        alloy::primitives::hex::encode(key.personal_sign(text))
    );
    browser
        .execute(
            "window.__wallet.settle(arguments[0], arguments[1]);",
            vec![json!(id), json!(signature)],
        )
        .await;
}

fn login_token(url: &str) -> String {
    url::Url::parse(url)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "loginToken")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no loginToken in {url}"))
}

/// A message the server builds for `key` (as the wallet page gets it), signed by `key`.
async fn signed_by(srv: &TestServer, key: &Key) -> (String, String) {
    let nonce = srv
        .get("/_matrix/client/unstable/io.matrixon/siwe/nonce", None)
        .await
        .1["nonce"]
        .as_str()
        .expect("nonce")
        .to_owned();
    let body = json!({"address": format!("{:#x}", key.address()), "chain_id": 1, "nonce": nonce});
    let text = srv
        .post_json(
            "/_matrix/client/unstable/io.matrixon/siwe/message",
            None,
            &body,
        )
        .await
        .1["message"]
        .as_str()
        .expect("text")
        .to_owned();
    let signature = format!(
        "0x{}",
        alloy::primitives::hex::encode(key.personal_sign(&text))
    );
    (text, signature)
}

#[tokio::test]
async fn sso_login_in_a_browser_with_an_injected_wallet() {
    let client = client_site().await;
    let trusted = format!("{client}/trusted/");
    let whitelist = trusted.clone();
    let srv = TestServer::start_with(&Backend::Sqlite, move |c| {
        c.sso.client_whitelist = vec![whitelist];
    })
    .await;
    let wallet = Key::new(61);
    let impostor = Key::new(62);
    let address = wallet.address().to_checksum(None);
    let user_id = format!("@{:#x}:localhost", wallet.address());

    // GET /login offers the wallet as an SSO identity provider, with an icon that loads.
    let flows = srv.get("/_matrix/client/v3/login", None).await.1;
    let sso = flows["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .find(|f| f["type"] == "m.login.sso")
        .expect("m.login.sso offered");
    let idp = &sso["identity_providers"][0];
    assert_eq!(idp["id"], "ethereum");
    assert_eq!(idp["name"], "Ethereum wallet");
    assert_eq!(idp["brand"], "io.matrixon.ethereum");
    let icon = idp["icon"].as_str().expect("icon").to_owned();
    let media = icon.strip_prefix("mxc://").expect("mxc icon");
    let icon_response = srv
        .http
        .get(srv.url(&format!(
            "/_matrix/client/v1/media/thumbnail/{media}?width=24&height=24"
        )))
        .send()
        .await
        .expect("icon");
    assert_eq!(icon_response.status(), 200);
    assert_eq!(icon_response.headers()["content-type"], "image/svg+xml");

    // The browser uses the public URL, whose host the messages name (as a wallet checks).
    let public = srv.base.replace("127.0.0.1", "localhost");
    let page = |path: String| format!("{public}{path}");
    let browser = Browser::start().await;
    let elsewhere = format!("{client}/elsewhere/?state=abc");
    browser
        .goto(&page(format!(
            "/_matrix/client/v3/login/sso/redirect/ethereum?redirectUrl={}",
            encode(&elsewhere)
        )))
        .await;

    // No wallet in the browser: the page says so.
    browser.wait_text("#status", "No Ethereum wallet").await;
    browser.screenshot("sso-no-wallet").await;

    // A wallet announces itself late (EIP-6963) on a chain the server does not accept.
    browser
        .execute(INJECT_WALLET, vec![json!(address), json!("0x2a")])
        .await;
    browser.wait_text("#wallets", "Test Wallet").await;
    browser.screenshot("sso-wallet-list").await;
    browser.click("#wallets button").await;
    browser
        .wait_text("#status", "wrong network (chain 42)")
        .await;

    // The wallet may switch now, but the user declines the request.
    browser
        .execute(
            "window.__wallet.allowSwitch = true; window.__wallet.rejectNext = true;",
            Vec::new(),
        )
        .await;
    browser.click("#wallets button").await;
    browser
        .wait_text("#status", "You declined the request")
        .await;

    // Another key signs: the server refuses, and says so.
    browser.click("#wallets button").await;
    let (id, text) = sign_request(&browser).await;
    let message: Message = text.parse().expect("the page asks to sign a SIWE message");
    assert_eq!(message.address, wallet.address());
    assert_eq!(message.chain_id, 1, "the wallet was switched to chain 1");
    assert_eq!(format!("http://{}", message.domain), public);
    settle(&browser, id, &impostor, &text).await;
    browser
        .wait_text("#status", "Sign-in refused: the signature")
        .await;

    // The user waits too long before signing: the request has expired.
    browser.click("#wallets button").await;
    let (id, text) = sign_request(&browser).await;
    srv.clock
        .advance(std::time::Duration::from_secs(300 + 60 + 1));
    settle(&browser, id, &wallet, &text).await;
    browser.wait_text("#status", "expired").await;
    browser.screenshot("sso-refused").await;

    // Signed properly: the destination is not whitelisted, so the page asks first.
    browser.click("#wallets button").await;
    let (id, text) = sign_request(&browser).await;
    settle(&browser, id, &wallet, &text).await;
    let client_host = client.trim_start_matches("http://");
    browser
        .wait_text("#confirm h2", &format!("Continue to {client_host}?"))
        .await;
    browser.wait_text("#account", &user_id).await;
    let shot = browser.screenshot("sso-confirm").await;
    assert!(shot.exists());
    browser.click("#continue").await;
    let landed = browser
        .wait_for(
            "the client page",
            "return document.querySelector('h1')?.textContent === 'Back in the client' ? location.href : null;",
        )
        .await;
    let landed = landed.as_str().expect("url").to_owned();
    assert!(
        landed.starts_with(&format!("{client}/elsewhere/?state=abc&loginToken=")),
        "{landed}"
    );
    assert_eq!(browser.current_url().await, landed);

    // The client logs in with the token (matrix-sdk), once.
    let token = login_token(&landed);
    let sdk = srv.client().await;
    let login = sdk
        .matrix_auth()
        .login_token(&token)
        .initial_device_display_name("Element")
        .send()
        .await
        .expect("login with the SSO token");
    assert_eq!(login.user_id.as_str(), user_id);
    assert_eq!(
        sdk.whoami().await.expect("whoami").user_id.as_str(),
        user_id
    );
    let replay = srv
        .post_json(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.token", "token": token}),
        )
        .await;
    assert_error(&replay, 403, "M_FORBIDDEN");

    // A whitelisted client gets the token straight away.
    browser
        .goto(&page(format!(
            "/_matrix/client/v3/login/sso/redirect?redirectUrl={}",
            encode(&trusted)
        )))
        .await;
    browser.wait_for("the page's script", READY).await;
    browser
        .execute(INJECT_WALLET, vec![json!(address), json!("0x1")])
        .await;
    browser.wait_text("#wallets", "Test Wallet").await;
    browser.click("#wallets button").await;
    let (id, text) = sign_request(&browser).await;
    settle(&browser, id, &wallet, &text).await;
    let landed = browser
        .wait_for(
            "the trusted client page",
            "return location.href.includes('loginToken=') ? location.href : null;",
        )
        .await;
    let landed = landed.as_str().expect("url").to_owned();
    assert!(
        landed.starts_with(&format!("{trusted}?loginToken=")),
        "{landed}"
    );
    let second = srv
        .post_json(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.token", "token": login_token(&landed)}),
        )
        .await;
    assert_eq!(second.0, 200, "{:?}", second.1);
    assert_eq!(second.1["user_id"], user_id);

    // UIA from a client like Element: the m.login.sso stage, through the fallback page.
    let access_token = second.1["access_token"].as_str().expect("token").to_owned();
    let body = json!({"devices": [login.device_id.to_string()]});
    let challenge = srv
        .post_json(
            "/_matrix/client/v3/delete_devices",
            Some(&access_token),
            &body,
        )
        .await;
    assert_eq!(challenge.0, 401, "{:?}", challenge.1);
    let session = challenge.1["session"].as_str().expect("session").to_owned();
    browser
        .goto(&page(format!(
            "/_matrix/client/v3/auth/m.login.sso/fallback/web?session={session}"
        )))
        .await;
    browser.wait_text("#title", "Confirm it's you").await;
    browser
        .wait_text(
            "#intro",
            &format!("sign out and remove devices for {user_id}"),
        )
        .await;
    browser.wait_for("the page's script", READY).await;
    browser
        .execute(INJECT_WALLET, vec![json!(address), json!("0x1")])
        .await;
    browser.wait_text("#wallets", "Test Wallet").await;
    browser.click("#wallets button").await;
    let (id, text) = sign_request(&browser).await;
    settle(&browser, id, &wallet, &text).await;
    browser.wait_text("#status", "Done").await;
    browser.screenshot("sso-uia-done").await;
    let mut done = body.clone();
    done["auth"] = json!({"session": session});
    let finished = srv
        .post_json(
            "/_matrix/client/v3/delete_devices",
            Some(&access_token),
            &done,
        )
        .await;
    assert_eq!(finished.0, 200, "{:?}", finished.1);
    assert!(sdk.whoami().await.is_err(), "the SDK's device was deleted");

    browser.quit().await;
    srv.finish().await;
}

async fn sso_endpoints_refuse_bad_input(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let wallet = Key::new(63);
    let stranger = Key::new(64);
    let redirect = "/_matrix/client/v3/login/sso/redirect";

    // The page is served with a strict policy; bad redirects never get it.
    let page = srv
        .http
        .get(srv.url(&format!(
            "{redirect}?redirectUrl=https%3A%2F%2Fapp.example%2F"
        )))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let csp = headers["content-security-policy"]
        .to_str()
        .unwrap_or_default();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(page.text().await.expect("html").contains("wallet.js"));
    assert_error(&srv.get(redirect, None).await, 400, "M_MISSING_PARAM");
    let twice = format!(
        "{redirect}?redirectUrl={}&redirectUrl=https%3A%2F%2Fok.example%2F",
        encode("javascript:alert(1)")
    );
    assert_error(&srv.get(&twice, None).await, 400, "M_INVALID_PARAM");
    for bad in [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "data:text/html,hi",
        "/relative/path",
        "//evil.example/",
        "not a url",
        "https://app.example@evil.example/",
    ] {
        let path = format!("{redirect}?redirectUrl={}", encode(bad));
        assert_error(&srv.get(&path, None).await, 400, "M_INVALID_PARAM");
    }
    assert_error(
        &srv.get(
            &format!("{redirect}/google?redirectUrl=https%3A%2F%2Fa.example%2F"),
            None,
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &srv.get(&format!("{SSO}/static/secret.txt"), None).await,
        404,
        "M_NOT_FOUND",
    );
    // Other media is authenticated media: the logo is the one public file.
    assert_error(
        &srv.get("/_matrix/client/v1/media/download/localhost/other", None)
            .await,
        401,
        "M_MISSING_TOKEN",
    );

    // The message builder checks what it is given.
    let nonce = srv
        .get("/_matrix/client/unstable/io.matrixon/siwe/nonce", None)
        .await
        .1["nonce"]
        .as_str()
        .expect("nonce")
        .to_owned();
    let build = |body: Value| {
        let srv = &srv;
        async move {
            srv.post_json(
                "/_matrix/client/unstable/io.matrixon/siwe/message",
                None,
                &body,
            )
            .await
        }
    };
    let address = format!("{:#x}", wallet.address());
    let made = build(json!({"address": address, "chain_id": 1, "nonce": nonce})).await;
    assert_eq!(made.0, 200, "{:?}", made.1);
    let message: Message = made.1["message"]
        .as_str()
        .expect("text")
        .parse()
        .expect("SIWE");
    assert_eq!(message.address, wallet.address());
    assert_eq!(message.nonce, nonce);
    assert!(message.expiration_time.is_some());
    assert_error(
        &build(json!({"address": "0x1234", "chain_id": 1, "nonce": nonce})).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &build(json!({"address": address, "chain_id": 5, "nonce": nonce})).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &build(json!({"address": address, "chain_id": 1, "nonce": "short"})).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &build(json!({"address": address, "chain_id": 1, "nonce": nonce, "extra": 1})).await,
        400,
        "M_BAD_JSON",
    );

    // SSO login: a bad redirect is refused before the nonce is spent; a bad signature is
    // refused and creates nothing.
    let text = made.1["message"].as_str().expect("text").to_owned();
    let signed = format!(
        "0x{}",
        alloy::primitives::hex::encode(wallet.personal_sign(&text))
    );
    let login = |redirect_url: &str, signature: &str| {
        let body = json!({"redirect_url": redirect_url, "message": text, "signature": signature});
        let srv = &srv;
        async move { srv.post_json(&format!("{SSO}/login"), None, &body).await }
    };
    assert_error(
        &login("javascript:alert(1)", &signed).await,
        400,
        "M_INVALID_PARAM",
    );
    let forged = format!(
        "0x{}",
        alloy::primitives::hex::encode(stranger.personal_sign(&text))
    );
    assert_error(
        &login("https://app.example/", &forged).await,
        403,
        "M_FORBIDDEN",
    );
    let services = srv.server.as_ref().expect("running").services.clone();
    assert_eq!(
        services.store.wallet_owner(&address).await.expect("db"),
        None,
        "a refused sign-in creates no account"
    );
    // The forged attempt spent the nonce: the genuine signature of that message is refused too.
    assert_error(
        &login("https://app.example/", &signed).await,
        403,
        "M_FORBIDDEN",
    );

    let nonce = srv
        .get("/_matrix/client/unstable/io.matrixon/siwe/nonce", None)
        .await
        .1["nonce"]
        .as_str()
        .expect("nonce")
        .to_owned();
    let text = build(json!({"address": address, "chain_id": 1, "nonce": nonce}))
        .await
        .1["message"]
        .as_str()
        .expect("text")
        .to_owned();
    let body = json!({
        "redirect_url": "myapp://sso/done#x",
        "message": text,
        "signature": format!("0x{}", alloy::primitives::hex::encode(wallet.personal_sign(&text))),
    });
    let ok = srv.post_json(&format!("{SSO}/login"), None, &body).await;
    assert_eq!(ok.0, 200, "{:?}", ok.1);
    assert_eq!(ok.1["confirm"], true, "nothing is whitelisted by default");
    assert_eq!(ok.1["destination"], "myapp:");
    let to = ok.1["redirect_to"].as_str().expect("url");
    assert!(
        to.starts_with("myapp://sso/done?loginToken=") && to.ends_with("#x"),
        "{to}"
    );

    // UIA fallback: wallet accounts are offered m.login.sso, and only their wallet passes.
    let session = srv
        .post_json(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.token", "token": login_token(to)}),
        )
        .await;
    assert_eq!(session.0, 200, "{:?}", session.1);
    let token = session.1["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let challenge = srv
        .post_json(
            "/_matrix/client/v3/delete_devices",
            Some(&token),
            &json!({"devices": []}),
        )
        .await;
    assert_eq!(challenge.0, 401);
    assert_eq!(
        challenge.1["flows"],
        json!([{"stages": ["m.login.sso"]}, {"stages": ["io.matrixon.login.siwe"]}])
    );
    let uia = challenge.1["session"].as_str().expect("session").to_owned();
    let fallback = "/_matrix/client/v3/auth/m.login.sso/fallback/web";
    assert_eq!(
        srv.get(&format!("{fallback}?session={uia}"), None).await.0,
        200
    );
    assert_error(
        &srv.get(&format!("{fallback}?session=nope"), None).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(&srv.get(fallback, None).await, 400, "M_MISSING_PARAM");
    assert_error(
        &srv.get(&format!("{fallback}?session=%00"), None).await,
        404,
        "M_NOT_FOUND",
    );
    let summary = srv.get(&format!("{SSO}/session/{uia}"), None).await;
    assert_eq!(summary.0, 200, "{:?}", summary.1);
    assert_eq!(summary.1["action"], "sign out and remove devices");
    assert_eq!(
        summary.1["user_id"],
        format!("@{:#x}:localhost", wallet.address())
    );
    assert_error(
        &srv.get(&format!("{SSO}/session/nope"), None).await,
        404,
        "M_NOT_FOUND",
    );
    let nul = srv
        .post_json(
            "/_matrix/client/v3/delete_devices",
            Some(&token),
            &json!({"devices": [], "auth": {"session": "a\u{0}b"}}),
        )
        .await;
    assert_eq!(
        nul.0, 400,
        "a NUL session is refused, not a 500: {:?}",
        nul.1
    );
    assert_error(
        &srv.get(
            &format!("/_matrix/client/v3/auth/m.login.dummy/fallback/web?session={uia}"),
            None,
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    // Acknowledging the fallback before it is done completes nothing.
    let ack = srv
        .post_json(
            "/_matrix/client/v3/delete_devices",
            Some(&token),
            &json!({"devices": [], "auth": {"session": uia}}),
        )
        .await;
    assert_eq!(ack.0, 401, "{:?}", ack.1);
    assert!(
        ack.1.get("completed").is_none_or(|c| c == &json!([])),
        "{:?}",
        ack.1
    );

    let authenticate = |session: &str, stage: &str, (text, signature): (String, String)| {
        let body =
            json!({"session": session, "stage": stage, "message": text, "signature": signature});
        let srv = &srv;
        async move {
            srv.post_json(&format!("{SSO}/authenticate"), None, &body)
                .await
        }
    };
    assert_error(
        &authenticate(&uia, "m.login.sso", signed_by(&srv, &stranger).await).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &authenticate("unknown", "m.login.sso", signed_by(&srv, &wallet).await).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &authenticate(&uia, "m.login.dummy", signed_by(&srv, &wallet).await).await,
        400,
        "M_INVALID_PARAM",
    );
    let ack = srv
        .post_json(
            "/_matrix/client/v3/delete_devices",
            Some(&token),
            &json!({"devices": [], "auth": {"type": "m.login.sso", "session": uia}}),
        )
        .await;
    assert_eq!(
        ack.0, 401,
        "a stranger's wallet completed nothing: {:?}",
        ack.1
    );
    let passed = authenticate(&uia, "m.login.sso", signed_by(&srv, &wallet).await).await;
    assert_eq!(passed.0, 200, "{:?}", passed.1);
    let done = srv
        .post_json(
            "/_matrix/client/v3/delete_devices",
            Some(&token),
            &json!({"devices": [], "auth": {"session": uia}}),
        )
        .await;
    assert_eq!(done.0, 200, "{:?}", done.1);
    srv.finish().await;
}
