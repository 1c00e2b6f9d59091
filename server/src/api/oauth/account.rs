//! The account page at the metadata's `account_management_uri` (MSC4191, spec v1.15): the
//! profile, the linked wallets, the sessions, deactivation and cross-signing resets, for a
//! browser signed in on the authorize pages.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::get,
};

use super::{
    PREFIX,
    pages::{
        Pending, browser_sign_in, csrf_checked_form, csrf_token, error_page, escape, page,
        refused_reason, see_other, sign_in_page,
    },
};
use crate::service::Services;

/// How long an approved cross-signing reset waits for the client.
const CROSS_SIGNING_RESET_WINDOW_MS: i64 = 10 * 60 * 1000;
/// How recent a browser's sign-in must be for it to deactivate the account.
const RECENT_SIGN_IN_MS: i64 = 10 * 60 * 1000;
/// What the page says when a change failed for no reason the user can act on.
const CHANGE_FAILED: &str = "The server could not make the change; try again.";
/// The action that links one more wallet (the wallet page's sign-in, in link mode).
pub(super) const LINK_WALLET: &str = "io.matrixon.wallet_link";

/// Every action the page answers, in the spec's names and MSC4191's older ones.
pub(super) const ACTIONS: [&str; 9] = [
    "org.matrix.profile",
    "org.matrix.devices_list",
    "org.matrix.device_view",
    "org.matrix.device_delete",
    "org.matrix.sessions_list",
    "org.matrix.session_view",
    "org.matrix.session_end",
    "org.matrix.account_deactivate",
    "org.matrix.cross_signing_reset",
];

pub(super) fn routes() -> Router<Arc<Services>> {
    Router::new().route(&format!("{PREFIX}/account"), get(account).post(act))
}

/// The account page's request as the sign-in forms carry it (only the keys it reads).
fn account_request(params: &HashMap<String, String>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    out.append_pair("account", "1");
    for key in ["action", "device_id"] {
        if let Some(value) = params.get(key).filter(|v| v.len() <= 255) {
            out.append_pair(key, value);
        }
    }
    out.finish()
}

/// The action an account request (`account=1&action=…`) names, if any.
pub(super) fn requested_action(request: &str) -> Option<String> {
    crate::http::ruma::query_params(Some(request)).remove("action")
}

/// A `<form>` posting to the account page with its CSRF token and `fields`.
fn form(csrf: &str, fields: &[(&str, &str)], inner: &str) -> String {
    let mut hidden = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(csrf)
    );
    for (name, value) in fields {
        hidden.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(name),
            escape(value)
        ));
    }
    format!("<form method=\"post\" action=\"{PREFIX}/account\">{hidden}{inner}</form>")
}

/// A time as the page shows it.
fn shown_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// # `GET /oauth2/account[?action=…&device_id=…]` (MSC4191's account management URL).
async fn account(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = crate::http::ruma::query_params(query.as_deref());
    let request = account_request(&params);
    let (csrf, cookies) = csrf_token(&services, &headers);
    let action = params.get("action").map(String::as_str).unwrap_or_default();
    let signed_in = browser_sign_in(&headers, &services).await;
    let deactivating = action == "org.matrix.account_deactivate";
    // Deactivation asks for a fresh sign-in, whatever the browser did an hour ago.
    let Some((user_id, _)) = signed_in.filter(|(_, at)| {
        !deactivating || *at > services.now_ms().saturating_sub(RECENT_SIGN_IN_MS)
    }) else {
        return sign_in_page(&services, &Pending::Account, &request, &csrf, None, cookies);
    };
    let Ok(devices) = services.store.devices(&user_id).await else {
        return error_page("The server could not list your sessions; try again.");
    };
    let Ok(wallets) = services.store.wallets(&user_id).await else {
        return error_page("The server could not list your wallets; try again.");
    };
    let Ok((displayname, _)) = services.profile(&user_id).await else {
        return error_page("The server could not read your profile; try again.");
    };
    let chosen = params.get("device_id").map(String::as_str);
    let ending = matches!(
        action,
        "org.matrix.session_end" | "org.matrix.device_delete"
    );
    let mut sessions = String::new();
    for device in &devices {
        let id = device.device_id.as_str();
        let class = if chosen == Some(id) {
            " class=\"chosen\""
        } else {
            ""
        };
        let confirm = if chosen == Some(id) && ending {
            "<p class=\"error\">Sign this session out?</p>"
        } else {
            ""
        };
        sessions.push_str(&format!(
            "<li{class} data-device=\"{id}\"><strong>{name}</strong> <code>{id}</code><br>\
             Last seen {seen}{ip}\n{confirm}{form}</li>\n",
            id = escape(id),
            name = escape(device.display_name.as_deref().unwrap_or("Unnamed session")),
            seen = device
                .last_seen_ms
                .map_or_else(|| "never".to_owned(), shown_time),
            ip = device
                .last_seen_ip
                .as_deref()
                .map(|ip| format!(" from {}", escape(ip)))
                .unwrap_or_default(),
            form = form(
                &csrf,
                &[("device_id", id)],
                "<button type=\"submit\" class=\"secondary\">Sign out</button>"
            ),
        ));
    }
    let mut linked = String::new();
    for (address, linked_ms) in &wallets {
        linked.push_str(&format!(
            "<li data-wallet=\"{address}\"><code>{address}</code><br>Linked {when}\n{form}</li>\n",
            address = escape(address),
            when = shown_time(*linked_ms),
            form = form(
                &csrf,
                &[("unlink", address)],
                "<button type=\"submit\" class=\"secondary\">Unlink</button>"
            ),
        ));
    }
    let link_url = format!(
        "{PREFIX}/wallet?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("request", &format!("account=1&action={LINK_WALLET}"))
            .append_pair("csrf", &csrf)
            .finish()
    );
    let reset = if action == "org.matrix.cross_signing_reset" {
        format!(
            "<section id=\"reset\"><h2>Reset your identity?</h2>\n\
             <p>An app asks to replace your cross-signing keys. Your other sessions and the \
             people you talk to will have to verify you again, and messages only your old \
             identity could read may be lost. Allow it only if you started the reset.</p>\n{}\
             </section>\n",
            form(
                &csrf,
                &[("reset", "allow")],
                "<p class=\"actions\"><button id=\"allow-reset\" type=\"submit\">Allow the reset for 10 minutes</button></p>"
            )
        )
    } else {
        String::new()
    };
    let deactivate = if deactivating {
        format!(
            "<section id=\"deactivate\"><h2>Deactivate your account?</h2>\n\
             <p>Deactivation is for good: every session ends, your wallets are unlinked, you \
             leave every room, and nobody can take <strong>{user}</strong> again. Type your \
             Matrix ID to confirm.</p>\n{}</section>\n",
            form(
                &csrf,
                &[],
                "<p><label>Matrix ID <input name=\"deactivate\" autocomplete=\"off\" required></label></p>\n\
                 <p class=\"actions\"><button id=\"confirm-deactivate\" type=\"submit\">Deactivate for good</button></p>"
            ),
            user = escape(user_id.as_str()),
        )
    } else {
        format!(
            "<p><a id=\"deactivate\" href=\"{PREFIX}/account?action=org.matrix.account_deactivate\">\
             Deactivate this account</a></p>"
        )
    };
    let body = format!(
        "<header><h1>Your account</h1></header>\n{reset}\
         <p>Signed in as <strong id=\"account\">{user}</strong>.</p>\n\
         <section id=\"profile\"><h2>Profile</h2>\n{profile}</section>\n\
         <section><h2>Wallets</h2>\n<ul id=\"linked-wallets\">\n{linked}</ul>\n\
         <p><a id=\"link-wallet\" class=\"button secondary\" href=\"{link}\">Link a wallet</a></p></section>\n\
         <section><h2>Sessions</h2>\n<p>Signing a session out ends it and removes its \
         encryption keys.</p>\n<ul id=\"sessions\">\n{sessions}</ul></section>\n{deactivate}",
        user = escape(user_id.as_str()),
        link = escape(&link_url),
        profile = form(
            &csrf,
            &[],
            &format!(
                "<p><label>Display name <input id=\"displayname\" name=\"displayname\" \
                 maxlength=\"256\" value=\"{}\"></label></p>\n\
                 <p class=\"actions\"><button id=\"save-profile\" type=\"submit\" class=\"secondary\">Save</button></p>",
                escape(displayname.as_deref().unwrap_or_default())
            )
        ),
    );
    page(StatusCode::OK, "Your account", &body, cookies)
}

/// # `POST /oauth2/account`: one of the page's forms (a session signed out, a wallet
/// unlinked, the display name saved, a reset approved, the account deactivated).
async fn act(State(services): State<Arc<Services>>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = match csrf_checked_form(
        &headers,
        &body,
        "This form expired. Open your account page again.",
    ) {
        Ok(fields) => fields,
        Err(refused) => return error_page(refused),
    };
    let Some((user_id, signed_in_ms)) = browser_sign_in(&headers, &services).await else {
        return error_page("You are no longer signed in. Open your account page again.");
    };
    let back = || see_other(&format!("{PREFIX}/account"), Vec::new());
    if fields.get("reset").map(String::as_str) == Some("allow") {
        let expires = services
            .now_ms()
            .saturating_add(CROSS_SIGNING_RESET_WINDOW_MS);
        if services
            .store
            .allow_cross_signing_reset(user_id.as_str(), expires)
            .await
            .is_err()
        {
            return error_page("The server could not record the approval; try again.");
        }
        tracing::info!(%user_id, "cross-signing reset approved on the account page");
        return page(
            StatusCode::OK,
            "Reset approved",
            "<header><h1>Reset approved</h1></header>\n<p id=\"done\">Return to your app: it \
             can replace your cross-signing keys in the next 10 minutes.</p>",
            Vec::new(),
        );
    }
    if let Some(name) = fields.get("displayname") {
        let name = name.trim();
        let name = (!name.is_empty()).then_some(name);
        return match services.set_displayname(&user_id, name).await {
            Ok(()) => back(),
            Err(error) => error_page(&refused_reason(&error, CHANGE_FAILED)),
        };
    }
    if let Some(address) = fields.get("unlink") {
        return match services.unlink_wallet(&user_id, address).await {
            Ok(()) => {
                tracing::info!(%user_id, address, "wallet unlinked on the account page");
                back()
            }
            Err(error) => error_page(&refused_reason(&error, CHANGE_FAILED)),
        };
    }
    if let Some(typed) = fields.get("deactivate") {
        if signed_in_ms <= services.now_ms().saturating_sub(RECENT_SIGN_IN_MS) {
            return error_page("Sign in again to deactivate your account.");
        }
        if typed.trim() != user_id.as_str() {
            return error_page("The Matrix ID you typed is not this account's; nothing changed.");
        }
        if services.deactivate(&user_id, false).await.is_err() {
            return error_page("The server could not deactivate the account; try again.");
        }
        return page(
            StatusCode::OK,
            "Account deactivated",
            "<header><h1>Account deactivated</h1></header>\n<p id=\"done\">This account is \
             closed. You can close this page.</p>",
            Vec::new(),
        );
    }
    let device = fields
        .get("device_id")
        .map(String::as_str)
        .unwrap_or_default();
    let known = match services.store.devices(&user_id).await {
        Ok(devices) => devices.iter().any(|d| d.device_id.as_str() == device),
        Err(_) => return error_page("The server could not list your sessions; try again."),
    };
    if !known {
        return error_page("That session is not one of yours, or has already ended.");
    }
    let ended = services
        .store
        .delete_devices(&user_id, &[ruma::OwnedDeviceId::from(device)])
        .await;
    if ended.is_err() || services.wake_device_watchers(&user_id).await.is_err() {
        return error_page("The server could not end the session; try again.");
    }
    tracing::info!(%user_id, device, "session ended on the account page");
    back()
}
