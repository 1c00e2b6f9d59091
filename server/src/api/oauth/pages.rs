//! The authorize pages: sign in (password, or a wallet on the existing SIWE page), then a
//! consent screen naming the client. Forms carry the authorize request itself (re-checked at
//! every step) and a CSRF token that must match the browser's cookie.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{ConnectInfo, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;

use super::PREFIX;
use crate::{
    http::{error::Result, ruma::JsonBody},
    service::{
        Limit, Services,
        oauth::{AuthorizeError, AuthorizeRequest, BROWSER_SESSION_LIFETIME, OAuthClient},
        secrets,
    },
    store::oauth::DeviceGrant,
};

/// The browser's sign-in on these pages.
const SESSION_COOKIE: &str = "matrixon_oauth_session";
/// The double-submit CSRF token every form carries.
const CSRF_COOKIE: &str = "matrixon_oauth_csrf";
/// Pages load only the server's style sheet and are never framed.
const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
    base-uri 'none'; frame-ancestors 'none'";
const STYLE: &str = "/_matrix/client/unstable/io.matrixon/sso/static/wallet.css";

pub(super) fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route(&format!("{PREFIX}/authorize"), get(authorize))
        .route(&format!("{PREFIX}/login"), post(password_sign_in))
        .route(&format!("{PREFIX}/consent"), post(consent))
        .route(
            &format!("{PREFIX}/register"),
            get(registration_page).post(register),
        )
        .route(&format!("{PREFIX}/wallet"), get(wallet_page))
        .route(&format!("{PREFIX}/device"), get(device_page))
        .merge(super::account::routes())
        .route(
            "/_matrix/client/unstable/io.matrixon/oauth/wallet",
            post(wallet_sign_in),
        )
}

/// Text made safe for HTML (element content and quoted attributes).
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value: HttpOnly, same-site, secure when the server is served over https.
fn set_cookie(services: &Services, name: &str, value: &str, max_age_s: u64) -> Option<HeaderValue> {
    let secure = if services.config.public_baseurl().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{secure}"
    ))
    .ok()
}

/// Who the browser is signed in as on these pages, if anyone.
pub(super) async fn browser_session(
    headers: &HeaderMap,
    services: &Services,
) -> Option<ruma::OwnedUserId> {
    browser_sign_in(headers, services)
        .await
        .map(|(user, _)| user)
}

/// The browser's signed-in user and when it signed in.
pub(super) async fn browser_sign_in(
    headers: &HeaderMap,
    services: &Services,
) -> Option<(ruma::OwnedUserId, i64)> {
    let session = cookie(headers, SESSION_COOKIE)?;
    services.browser_user(session).await.ok().flatten()
}

/// Whether the form's CSRF token is the browser's.
pub(super) fn csrf_ok(headers: &HeaderMap, submitted: &str) -> bool {
    cookie(headers, CSRF_COOKIE).is_some_and(|expected| {
        secrets::is_token_shaped(expected)
            && expected.len() == submitted.len()
            && expected
                .bytes()
                .zip(submitted.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

/// A page with the headers every one of them carries.
pub(super) fn page(
    status: StatusCode,
    title: &str,
    body: &str,
    cookies: Vec<HeaderValue>,
) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n<title>{}</title>\n\
         <link rel=\"stylesheet\" href=\"{STYLE}\">\n</head>\n<body>\n<main>\n{body}\n</main>\n\
         </body>\n</html>\n",
        escape(title)
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

pub(super) fn error_page(message: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Cannot sign in",
        &format!(
            "<h1>Cannot sign in</h1>\n<p class=\"error\">{}</p>\n\
             <p>Go back to the app and start signing in again.</p>",
            escape(message)
        ),
        Vec::new(),
    )
}

pub(super) fn see_other(location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The browser's CSRF token, and the cookie that sets one when it has none yet.
pub(super) fn csrf_token(services: &Services, headers: &HeaderMap) -> (String, Vec<HeaderValue>) {
    match cookie(headers, CSRF_COOKIE).filter(|t| secrets::is_token_shaped(t)) {
        Some(token) => (token.to_owned(), Vec::new()),
        None => {
            let token = secrets::random_alphanumeric(32);
            let set = set_cookie(
                services,
                CSRF_COOKIE,
                &token,
                BROWSER_SESSION_LIFETIME.as_secs(),
            );
            (token, set.into_iter().collect())
        }
    }
}

/// What the pages are signing the user in for: a client's authorize request, or a device
/// that showed a user code. Forms carry it as `request` (the authorize query, or
/// `user_code=…`) and it is checked again at every step.
pub(super) enum Pending {
    Authorize(Box<AuthorizeRequest>),
    Device(Box<(DeviceGrant, OAuthClient)>),
    /// The account page (`account=1&action=…&device_id=…`).
    Account,
}

impl Pending {
    fn client(&self) -> Option<&OAuthClient> {
        match self {
            Self::Authorize(request) => Some(&request.client),
            Self::Device(grant) => Some(&grant.1),
            Self::Account => None,
        }
    }

    fn device_id(&self) -> &str {
        match self {
            Self::Authorize(request) => request.device_id.as_str(),
            Self::Device(grant) => &grant.0.device_id,
            Self::Account => "",
        }
    }

    /// Whether the client asked to open on registration (`prompt=create`).
    fn create(&self) -> bool {
        matches!(self, Self::Authorize(request) if request.create)
    }

    fn login_hint(&self) -> Option<&str> {
        match self {
            Self::Authorize(request) => request.login_hint.as_deref(),
            Self::Device(_) | Self::Account => None,
        }
    }

    /// The page that continues it once the browser is signed in.
    fn page(&self, request: &str) -> String {
        match self {
            Self::Authorize(_) => format!("{PREFIX}/authorize?{request}"),
            Self::Device(_) => format!("{PREFIX}/device?{request}"),
            Self::Account => format!("{PREFIX}/account?{request}"),
        }
    }
}

fn device_request(user_code: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("user_code", user_code)
        .finish()
}

async fn checked(services: &Services, request: &str) -> std::result::Result<Pending, Response> {
    if request == "account=1" || request.starts_with("account=1&") {
        return Ok(Pending::Account);
    }
    if request.starts_with("user_code=") {
        let typed = crate::http::ruma::query_params(Some(request))
            .remove("user_code")
            .unwrap_or_default();
        return match services.pending_device_grant(&typed).await {
            Ok(Some(grant)) => Ok(Pending::Device(Box::new(grant))),
            Ok(None) => Err(code_page(Some(
                "That code is unknown, expired or already used. Check the code your device shows.",
            ))),
            Err(error) => Err(error_page(&error.description)),
        };
    }
    services
        .authorize_request(request)
        .await
        .map(|r| Pending::Authorize(Box::new(r)))
        .map_err(|AuthorizeError::Show(message)| error_page(&message))
}

/// The device page without a code: a form to type the one the device shows.
fn code_page(problem: Option<&str>) -> Response {
    let status = if problem.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let problem = problem
        .map(|p| format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(p)))
        .unwrap_or_default();
    page(
        status,
        "Connect a device",
        &format!(
            "<header><h1>Connect a device</h1></header>\n\
             <p>Type the code your device shows.</p>\n{problem}\
             <form method=\"get\" action=\"{PREFIX}/device\">\n\
             <p><label>Code <input name=\"user_code\" autocomplete=\"off\" \
             autocapitalize=\"characters\" required></label></p>\n\
             <p class=\"actions\"><button id=\"continue\" type=\"submit\">Continue</button></p>\n</form>"
        ),
        Vec::new(),
    )
}
fn hidden(request: &str, csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"request\" value=\"{}\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(request),
        escape(csrf)
    )
}

/// # `GET /oauth2/authorize`
async fn authorize(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    if query.starts_with("user_code=") {
        return error_page("This is not an authorize request.");
    }
    continue_pending(&services, &headers, &query).await
}

/// # `GET /oauth2/device[?user_code=…]`
async fn device_page(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = crate::http::ruma::query_params(query.as_deref());
    match params.get("user_code") {
        None => code_page(None),
        Some(code) => continue_pending(&services, &headers, &device_request(code)).await,
    }
}

/// Sign-in when the browser is not signed in, else the consent screen.
async fn continue_pending(services: &Services, headers: &HeaderMap, request: &str) -> Response {
    let pending = match checked(services, request).await {
        Ok(pending) => pending,
        Err(response) => return response,
    };
    let (csrf, cookies) = csrf_token(services, headers);
    let signed_in = browser_session(headers, services).await;
    match signed_in {
        Some(user_id) => consent_page(&pending, request, &csrf, user_id.as_str(), cookies),
        None if pending.create() && services.config.registration.open => {
            registration_form(services, &pending, request, &csrf, None, cookies)
        }
        None => sign_in_page(services, &pending, request, &csrf, None, cookies),
    }
}

pub(super) fn sign_in_page(
    services: &Services,
    request: &Pending,
    query: &str,
    csrf: &str,
    problem: Option<&str>,
    cookies: Vec<HeaderValue>,
) -> Response {
    let purpose = match request.client() {
        Some(client) => format!(
            "<strong>{}</strong> wants to use your Matrix account.",
            escape(&client.display_name())
        ),
        None => "Sign in to manage your account.".to_owned(),
    };
    let server = escape(services.config.server_name.as_str());
    let hint = request.login_hint().unwrap_or_default();
    let wallet_first = hint.starts_with("0x");
    let username = hint
        .strip_prefix('@')
        .and_then(|h| h.split_once(':'))
        .map_or(if wallet_first { "" } else { hint }, |(local, _)| local);
    let wallet_url = format!(
        "{PREFIX}/wallet?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("request", query)
            .append_pair("csrf", csrf)
            .finish()
    );
    let problem = problem
        .map(|p| format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(p)))
        .unwrap_or_default();
    let body = format!(
        "<header><h1>Sign in to {server}</h1></header>\n\
         <p>{purpose}</p>\n{problem}\
         <p class=\"actions\"><a id=\"wallet\" class=\"button\" href=\"{wallet}\">Continue with Ethereum wallet</a></p>\n\
         <form method=\"post\" action=\"{PREFIX}/login\">\n{hidden}\n\
         <p><label>Username <input name=\"username\" autocomplete=\"username\" value=\"{username}\" required></label></p>\n\
         <p><label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label></p>\n\
         <p class=\"actions\"><button id=\"sign-in\" type=\"submit\" class=\"secondary\">Sign in with password</button></p>\n\
         </form>{register}",
        wallet = escape(&wallet_url),
        register = if services.config.registration.open {
            format!(
                "\n<p>New here? <a id=\"register\" href=\"{}\">Create an account</a>, or \
                 continue with a wallet (its first sign-in creates the account).</p>",
                escape(&format!(
                    "{PREFIX}/register?{}",
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair("request", query)
                        .finish()
                ))
            )
        } else {
            String::new()
        },
        hidden = hidden(query, csrf),
        username = escape(username),
    );
    page(
        StatusCode::OK,
        &format!("Sign in to {}", services.config.server_name),
        &body,
        cookies,
    )
}

fn consent_page(
    request: &Pending,
    query: &str,
    csrf: &str,
    user_id: &str,
    cookies: Vec<HeaderValue>,
) -> Response {
    let Some(client) = request.client() else {
        return error_page("Nothing to approve here.");
    };
    let mut links = String::new();
    for (label, uri) in [
        ("Privacy policy", &client.policy_uri),
        ("Terms of service", &client.tos_uri),
    ] {
        if let Some(uri) = uri {
            links.push_str(&format!(
                "<a href=\"{}\" rel=\"noopener noreferrer\" target=\"_blank\">{label}</a> ",
                escape(uri)
            ));
        }
    }
    let links = if links.is_empty() {
        String::new()
    } else {
        format!("<p>{links}</p>\n")
    };
    // The logo is on the client's own host (registration checks it), so showing it tells
    // that host nothing the sign-in does not.
    let logo = client
        .logo_uri
        .as_deref()
        .map(|uri| {
            format!(
                "<img id=\"client-logo\" src=\"{}\" alt=\"\" width=\"64\" height=\"64\" \
                 referrerpolicy=\"no-referrer\">\n",
                escape(uri)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<header>{logo}<h1>Allow {name}?</h1></header>\n\
         <p><strong id=\"client\">{name}</strong> (<span id=\"client-host\">{host}</span>) asks for full \
         access to your Matrix account <strong id=\"account\">{user}</strong>, as a new session \
         (device <code>{device}</code>). It will read and send messages as you.</p>\n{links}\
         <p>Allow it only if you started signing in there.</p>\n\
         <form method=\"post\" action=\"{PREFIX}/consent\">\n{hidden}\n\
         <p class=\"actions\"><button id=\"allow\" type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\n\
         <button id=\"deny\" type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button></p>\n\
         </form>",
        name = escape(&client.display_name()),
        host = escape(&client.host()),
        user = escape(user_id),
        device = escape(request.device_id()),
        hidden = hidden(query, csrf),
    );
    let mut response = page(
        StatusCode::OK,
        &format!("Allow {}?", client.display_name()),
        &body,
        cookies,
    );
    if let Some(origin) = client
        .logo_uri
        .as_deref()
        .and_then(|uri| url::Url::parse(uri).ok())
        .map(|uri| uri.origin().ascii_serialization())
        && let Ok(csp) = HeaderValue::from_str(&PAGE_CSP.replace(
            "img-src 'self' data:",
            &format!("img-src 'self' data: {origin}"),
        ))
    {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

/// After the user answered a device's request.
fn done_page(allowed: bool, client: &str) -> Response {
    let (title, text) = if allowed {
        (
            "Device connected",
            format!("{} is signed in. You can close this page.", escape(client)),
        )
    } else {
        (
            "Request declined",
            format!(
                "{} was not signed in. You can close this page.",
                escape(client)
            ),
        )
    };
    page(
        StatusCode::OK,
        title,
        &format!("<header><h1>{title}</h1></header>\n<p id=\"done\">{text}</p>"),
        Vec::new(),
    )
}

/// A page's form whose CSRF token is the browser's; else what the error page says
/// (`expired` for a token that does not match).
pub(super) fn csrf_checked_form<'a>(
    headers: &HeaderMap,
    body: &[u8],
    expired: &'a str,
) -> std::result::Result<std::collections::HashMap<String, String>, &'a str> {
    let fields = form_fields(body).ok_or("The form was sent twice over itself.")?;
    let token = fields.get("csrf").map(String::as_str).unwrap_or_default();
    if !csrf_ok(headers, token) {
        return Err(expired);
    }
    Ok(fields)
}

/// Reads a page's form (each key once).
fn form_fields(body: &[u8]) -> Option<std::collections::HashMap<String, String>> {
    let mut map = std::collections::HashMap::new();
    for (key, value) in form_urlencoded::parse(body) {
        if map.len() == 16 || map.insert(key.into_owned(), value.into_owned()).is_some() {
            return None;
        }
    }
    Some(map)
}

/// # `POST /oauth2/login`
async fn password_sign_in(
    State(services): State<Arc<Services>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = match csrf_checked_form(
        &headers,
        &body,
        "This form expired. Start signing in again from the app.",
    ) {
        Ok(fields) => fields,
        Err(refused) => return error_page(refused),
    };
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let query = field("request");
    let request = match checked(&services, query).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let csrf = field("csrf");
    let retry =
        |problem: &str| sign_in_page(&services, &request, query, csrf, Some(problem), Vec::new());
    if services
        .rate_limit(Limit::LoginPerIp, &peer.ip().to_string())
        .is_err()
    {
        return retry("Too many attempts. Wait a moment and try again.");
    }
    let Ok(user_id) = services.local_user_id(field("username")) else {
        return retry("Invalid username or password.");
    };
    if services
        .rate_limit(Limit::LoginPerAccount, user_id.as_str())
        .is_err()
    {
        return retry("Too many attempts. Wait a moment and try again.");
    }
    if services
        .check_password(&user_id, field("password"))
        .await
        .is_err()
    {
        return retry("Invalid username or password.");
    }
    signed_in(&services, &user_id, &request.page(query)).await
}

/// The browser is signed in: back to the page, which now asks for consent.
async fn signed_in(services: &Services, user_id: &ruma::UserId, next: &str) -> Response {
    match services.sign_in_browser(user_id).await {
        Ok(secret) => {
            let cookie = set_cookie(
                services,
                SESSION_COOKIE,
                &secret,
                BROWSER_SESSION_LIFETIME.as_secs(),
            );
            see_other(next, cookie.into_iter().collect())
        }
        Err(error) => error_page(&error.description),
    }
}

/// The registration form (open registration only).
fn registration_form(
    services: &Services,
    request: &Pending,
    query: &str,
    csrf: &str,
    problem: Option<&str>,
    cookies: Vec<HeaderValue>,
) -> Response {
    let then = request
        .client()
        .map(|c| {
            format!(
                "<p>Then <strong>{}</strong> asks to use it.</p>\n",
                escape(&c.display_name())
            )
        })
        .unwrap_or_default();
    let server = escape(services.config.server_name.as_str());
    let problem = problem
        .map(|p| format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(p)))
        .unwrap_or_default();
    let token = if services.config.registration.tokens_required {
        "<p><label>Registration token <input name=\"registration_token\" autocomplete=\"off\" required></label></p>\n"
    } else {
        ""
    };
    let body = format!(
        "<header><h1>Create an account on {server}</h1></header>\n\
         {then}{problem}\
         <form method=\"post\" action=\"{PREFIX}/register\">\n{hidden}\n\
         <p><label>Username <input name=\"username\" autocomplete=\"username\" required></label></p>\n\
         <p><label>Password <input type=\"password\" name=\"password\" autocomplete=\"new-password\" required></label></p>\n\
         {token}<p class=\"actions\"><button id=\"create\" type=\"submit\">Create account</button></p>\n</form>",
        hidden = hidden(query, csrf),
    );
    page(
        StatusCode::OK,
        &format!("Create an account on {}", services.config.server_name),
        &body,
        cookies,
    )
}

/// # `GET /oauth2/register?request=…`
async fn registration_page(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if !services.config.registration.open {
        return error_page("This server does not let new accounts register here.");
    }
    let params = crate::http::ruma::query_params(query.as_deref());
    let request = params
        .get("request")
        .map(String::as_str)
        .unwrap_or_default();
    let pending = match checked(&services, request).await {
        Ok(pending) => pending,
        Err(response) => return response,
    };
    let (csrf, cookies) = csrf_token(&services, &headers);
    registration_form(&services, &pending, request, &csrf, None, cookies)
}

/// # `POST /oauth2/register`: creates a password account, signs the browser in with it.
async fn register(
    State(services): State<Arc<Services>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !services.config.registration.open {
        return error_page("This server does not let new accounts register here.");
    }
    let fields = match csrf_checked_form(
        &headers,
        &body,
        "This form expired. Start signing in again from the app.",
    ) {
        Ok(fields) => fields,
        Err(refused) => return error_page(refused),
    };
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let query = field("request");
    let pending = match checked(&services, query).await {
        Ok(pending) => pending,
        Err(response) => return response,
    };
    let retry = |problem: &str| {
        registration_form(
            &services,
            &pending,
            query,
            field("csrf"),
            Some(problem),
            Vec::new(),
        )
    };
    if services
        .rate_limit(Limit::RegisterPerIp, &peer.ip().to_string())
        .is_err()
    {
        return retry("Too many attempts. Wait a moment and try again.");
    }
    let token = Some(field("registration_token")).filter(|t| !t.is_empty());
    if services.config.registration.tokens_required && token.is_none() {
        return retry("A registration token is needed.");
    }
    let created = services
        .create_account(
            field("username"),
            Some(field("password").to_owned()),
            false,
            token.filter(|_| services.config.registration.tokens_required),
        )
        .await;
    match created {
        Ok(user_id) => {
            tracing::info!(%user_id, "account created on the OAuth registration page");
            signed_in(&services, &user_id, &pending.page(query)).await
        }
        Err(crate::http::error::Error::Internal(e)) => {
            tracing::error!(error = %format!("{e:#}"), "OAuth registration failed");
            error_page("The server failed to create the account; try again.")
        }
        Err(refused) => retry(&refused_reason(
            &refused,
            "The account could not be created.",
        )),
    }
}

/// A Matrix error's message, for a page.
/// What a refused change says on a page: the error's own message, else `fallback`.
pub(super) fn refused_reason(error: &crate::http::error::Error, fallback: &str) -> String {
    match error {
        crate::http::error::Error::Matrix { message, .. }
        | crate::http::error::Error::Detailed { message, .. } => message.clone(),
        _ => fallback.to_owned(),
    }
}

/// # `POST /oauth2/consent`
async fn consent(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = match csrf_checked_form(
        &headers,
        &body,
        "This form expired. Start signing in again from the app.",
    ) {
        Ok(fields) => fields,
        Err(refused) => return error_page(refused),
    };
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let request = match checked(&services, field("request")).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let user = browser_session(&headers, &services).await;
    let Some(user_id) = user else {
        return error_page("You are no longer signed in. Start signing in again from the app.");
    };
    let allow = match field("decision") {
        "allow" => true,
        "deny" => false,
        _ => return error_page("Choose Allow or Deny."),
    };
    match request {
        Pending::Authorize(request) if allow => {
            match services.approve_authorization(&request, &user_id).await {
                Ok(location) => see_other(&location, Vec::new()),
                Err(error) => error_page(&error.description),
            }
        }
        Pending::Authorize(request) => {
            see_other(&services.deny_authorization(&request), Vec::new())
        }
        Pending::Account => error_page("Nothing to approve here."),
        Pending::Device(grant) => {
            match services
                .decide_device_grant(&grant.0.user_code, &user_id, allow)
                .await
            {
                Ok(true) => done_page(allow, &grant.1.display_name()),
                Ok(false) => code_page(Some("That code was already answered or has expired.")),
                Err(error) => error_page(&error.description),
            }
        }
    }
}

/// # `GET /oauth2/wallet?request=…&csrf=…`: the wallet page, in its OAuth mode.
async fn wallet_page(State(services): State<Arc<Services>>, RawQuery(query): RawQuery) -> Response {
    let params = crate::http::ruma::query_params(query.as_deref());
    let request = params
        .get("request")
        .map(String::as_str)
        .unwrap_or_default();
    if let Err(response) = checked(&services, request).await {
        return response;
    }
    super::super::sso::page()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WalletSignIn {
    request: String,
    csrf: String,
    message: String,
    signature: String,
}

/// # `POST /_matrix/client/unstable/io.matrixon/oauth/wallet`: signs the browser in with a
/// SIWE signature; the page then goes where the answer says.
async fn wallet_sign_in(
    State(services): State<Arc<Services>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<WalletSignIn>,
) -> Result<Response> {
    if !csrf_ok(&headers, &body.csrf) {
        return Err(crate::http::error::Error::forbidden(
            "This page expired: start signing in again from the app",
        ));
    }
    services.rate_limit(Limit::LoginPerIp, &peer.ip().to_string())?;
    let Ok(pending) = checked(&services, &body.request).await else {
        return Err(crate::http::error::Error::invalid_param(
            "The sign-in request is no longer valid: start again from the app",
        ));
    };
    if matches!(pending, Pending::Account)
        && super::account::requested_action(&body.request).as_deref()
            == Some(super::account::LINK_WALLET)
    {
        // Linking one more wallet to the account this browser is signed in to.
        let Some(user_id) = browser_session(&headers, &services).await else {
            return Err(crate::http::error::Error::forbidden(
                "You are no longer signed in: open your account page again",
            ));
        };
        let address = services
            .link_wallet(&user_id, &body.message, &body.signature)
            .await?;
        tracing::info!(%user_id, address, "wallet linked on the account page");
        return Ok(Json(json!({
            "redirect_to": format!("{PREFIX}/account"),
            "user_id": user_id,
            "linked": address,
        }))
        .into_response());
    }
    let user_id = services.siwe_login(&body.message, &body.signature).await?;
    let secret = services
        .sign_in_browser(&user_id)
        .await
        .map_err(|e| crate::http::error::Error::Internal(anyhow::anyhow!(e.description)))?;
    let mut response = Json(json!({
        "redirect_to": pending.page(&body.request),
        "user_id": user_id,
    }))
    .into_response();
    if let Some(cookie) = set_cookie(
        &services,
        SESSION_COOKIE,
        &secret,
        BROWSER_SESSION_LIFETIME.as_secs(),
    ) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}
