//! Dynamic client registration (RFC 7591 as MSC2966 narrows it): public clients only, and
//! URIs that a client cannot use to pass itself off as another.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::OAuthError;

/// Most redirect URIs one client may register.
const MAX_REDIRECT_URIS: usize = 10;
/// Longest URI or name accepted.
const MAX_FIELD: usize = 2048;

/// A registered client, as the authorize page shows it and the token endpoint checks it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OAuthClient {
    /// Its name as shown on the consent screen (the host of `client_uri` when it gave none).
    pub client_name: Option<String>,
    /// Its home page; every other URI must be on its host (or a subdomain).
    pub client_uri: String,
    /// `web` (the default) or `native`.
    pub application_type: String,
    /// Where codes may be sent, exactly as registered.
    pub redirect_uris: Vec<String>,
    /// Shown on the consent screen.
    pub logo_uri: Option<String>,
    /// Shown on the consent screen.
    pub policy_uri: Option<String>,
    /// Shown on the consent screen.
    pub tos_uri: Option<String>,
    /// The grants it may use.
    pub grant_types: Vec<String>,
}

impl OAuthClient {
    /// The host of its `client_uri`, which the consent screen names it by.
    pub fn host(&self) -> String {
        Url::parse(&self.client_uri)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Its name, or its host.
    pub fn display_name(&self) -> String {
        self.client_name.clone().unwrap_or_else(|| self.host())
    }
}

/// Grants a registration may ask for.
const GRANTS: [&str; 3] = [
    "authorization_code",
    "refresh_token",
    super::DEVICE_CODE_GRANT,
];

fn invalid(message: impl Into<String>) -> OAuthError {
    OAuthError::new("invalid_client_metadata", message)
}

fn invalid_redirect(message: impl Into<String>) -> OAuthError {
    OAuthError::new("invalid_redirect_uri", message)
}

/// Reads and checks a registration request.
pub fn validate(body: &Value) -> Result<OAuthClient, OAuthError> {
    let text = |key: &str| -> Result<Option<String>, OAuthError> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= MAX_FIELD => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!(
                "{key} must be a string of at most {MAX_FIELD} bytes"
            ))),
        }
    };
    let client_uri = text("client_uri")?.ok_or_else(|| invalid("client_uri is required"))?;
    let home = Url::parse(&client_uri).map_err(|_| invalid("client_uri is not a URI"))?;
    let host = home
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("client_uri has no host"))?
        .to_ascii_lowercase();
    if !(home.scheme() == "https" || (home.scheme() == "http" && is_loopback(&home))) {
        return Err(invalid("client_uri must be https"));
    }
    if !home.username().is_empty() || home.password().is_some() || home.fragment().is_some() {
        return Err(invalid(
            "client_uri must have no user, password or fragment",
        ));
    }
    let application_type = text("application_type")?.unwrap_or_else(|| "web".to_owned());
    if application_type != "web" && application_type != "native" {
        return Err(invalid("application_type must be web or native"));
    }
    match text("token_endpoint_auth_method")?.as_deref() {
        None | Some("none") => {}
        Some(_) => {
            return Err(invalid(
                "only public clients (token_endpoint_auth_method none) are supported",
            ));
        }
    }
    let grant_types = match body.get("grant_types") {
        None => vec!["authorization_code".to_owned()],
        Some(Value::Array(list)) if list.len() <= GRANTS.len() * 2 => {
            let mut grants: Vec<String> = Vec::new();
            for g in list {
                let grant = g
                    .as_str()
                    .filter(|g| GRANTS.contains(g))
                    .ok_or_else(|| invalid(format!("unsupported grant type {g}")))?;
                if !grants.iter().any(|known| known == grant) {
                    grants.push(grant.to_owned());
                }
            }
            grants
        }
        Some(_) => return Err(invalid("grant_types must be a short list of grant types")),
    };
    if let Some(types) = body.get("response_types") {
        let only_code = types
            .as_array()
            .is_some_and(|t| t.iter().all(|t| t.as_str() == Some("code")));
        if !only_code {
            return Err(invalid("response_types may only be [\"code\"]"));
        }
    }
    let redirect_uris = match body.get("redirect_uris") {
        None => Vec::new(),
        Some(Value::Array(list)) if list.len() <= MAX_REDIRECT_URIS => list
            .iter()
            .map(|u| {
                u.as_str()
                    .filter(|u| u.len() <= MAX_FIELD)
                    .map(str::to_owned)
                    .ok_or_else(|| invalid_redirect("redirect URIs must be strings"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(invalid_redirect(format!(
                "redirect_uris must be a list of at most {MAX_REDIRECT_URIS}"
            )));
        }
    };
    if grant_types.iter().any(|g| g == "authorization_code") && redirect_uris.is_empty() {
        return Err(invalid_redirect(
            "the authorization code grant needs a redirect URI",
        ));
    }
    for uri in &redirect_uris {
        check_redirect_uri(uri, &host, &application_type)?;
    }
    let mut shown = Vec::new();
    for key in ["logo_uri", "policy_uri", "tos_uri"] {
        let value = text(key)?;
        if let Some(uri) = &value {
            let parsed = Url::parse(uri).map_err(|_| invalid(format!("{key} is not a URI")))?;
            let ok = matches!(parsed.scheme(), "https" | "http")
                && (parsed.scheme() == "https" || is_loopback(&parsed))
                && parsed.host_str().is_some_and(|h| on_host(h, &host));
            if !ok {
                return Err(invalid(format!(
                    "{key} must be an https URI on the client_uri's host"
                )));
            }
        }
        shown.push(value);
    }
    let mut shown = shown.into_iter();
    let client_name = text("client_name")?
        .map(|n| {
            n.chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect::<String>()
        })
        .filter(|n| !n.trim().is_empty());
    Ok(OAuthClient {
        client_name,
        client_uri,
        application_type,
        redirect_uris,
        logo_uri: shown.next().flatten(),
        policy_uri: shown.next().flatten(),
        tos_uri: shown.next().flatten(),
        grant_types,
    })
}

/// Whether `host` is `client_host` or one of its subdomains.
fn on_host(host: &str, client_host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == client_host || host.ends_with(&format!(".{client_host}"))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// MSC2966's rules: https on the client's host; for native apps also loopback http (any
/// port) and a private-use scheme that is the client's host reversed (`com.example.app:`).
fn check_redirect_uri(
    uri: &str,
    client_host: &str,
    application_type: &str,
) -> Result<(), OAuthError> {
    let parsed = Url::parse(uri).map_err(|_| invalid_redirect(format!("{uri} is not a URI")))?;
    if parsed.fragment().is_some() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid_redirect(format!(
            "{uri} must have no fragment, user or password"
        )));
    }
    let ok = match parsed.scheme() {
        "https" => parsed.host_str().is_some_and(|h| on_host(h, client_host)),
        "http" => {
            is_loopback(&parsed)
                && (application_type == "native"
                    || parsed.host_str().is_some_and(|h| on_host(h, client_host)))
        }
        scheme => {
            application_type == "native"
                && scheme.contains('.')
                && on_host(&reversed(scheme), client_host)
                && parsed.host_str().is_none_or(str::is_empty)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(invalid_redirect(format!(
            "{uri} is not a redirect URI for a client at {client_host}"
        )))
    }
}

/// `com.example.app` → `app.example.com`.
fn reversed(scheme: &str) -> String {
    scheme.split('.').rev().collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn registers(body: Value) -> Result<OAuthClient, String> {
        validate(&body).map_err(|e| e.error.to_owned())
    }

    #[test]
    fn redirect_uris_follow_the_client() {
        let web = |uri: &str| {
            registers(json!({"client_uri": "https://app.example.com/", "redirect_uris": [uri]}))
        };
        assert!(web("https://app.example.com/callback").is_ok());
        assert!(web("https://login.app.example.com/cb").is_ok());
        assert_eq!(
            web("https://evil.com/cb").expect_err("refused"),
            "invalid_redirect_uri"
        );
        assert_eq!(
            web("https://app.example.com.evil.com/cb").expect_err("refused"),
            "invalid_redirect_uri"
        );
        assert_eq!(
            web("https://notapp.example.com.x/cb").expect_err("refused"),
            "invalid_redirect_uri"
        );
        assert_eq!(
            web("http://app.example.com/cb").expect_err("refused"),
            "invalid_redirect_uri"
        );
        assert_eq!(
            web("https://app.example.com/cb#x").expect_err("refused"),
            "invalid_redirect_uri"
        );
        assert_eq!(
            web("https://user@app.example.com/cb").expect_err("refused"),
            "invalid_redirect_uri"
        );
        assert_eq!(
            web("com.example.app:/cb").expect_err("refused"),
            "invalid_redirect_uri"
        );
        let native = |uri: &str| {
            registers(json!({
                "client_uri": "https://app.example.com/", "application_type": "native",
                "redirect_uris": [uri],
            }))
        };
        assert!(native("http://127.0.0.1:51234/callback").is_ok());
        assert!(native("http://[::1]/callback").is_ok());
        assert!(native("http://localhost:8080/").is_ok());
        assert!(native("com.example.app:/callback").is_ok());
        assert_eq!(
            native("com.evil.app:/callback").expect_err("refused"),
            "invalid_redirect_uri"
        );
        assert_eq!(
            native("javascript:alert(1)").expect_err("refused"),
            "invalid_redirect_uri"
        );
        assert_eq!(
            native("http://10.0.0.1/cb").expect_err("refused"),
            "invalid_redirect_uri"
        );
    }

    #[test]
    fn registrations_are_checked() {
        assert_eq!(
            registers(json!({})).expect_err("refused"),
            "invalid_client_metadata"
        );
        assert_eq!(
            registers(
                json!({"client_uri": "ftp://x.example/", "redirect_uris": ["https://x.example/"]})
            )
            .expect_err("refused"),
            "invalid_client_metadata"
        );
        assert_eq!(
            registers(json!({"client_uri": "https://x.example/", "redirect_uris": []}))
                .expect_err("refused"),
            "invalid_redirect_uri"
        );
        assert_eq!(
            registers(json!({
                "client_uri": "https://x.example/", "redirect_uris": ["https://x.example/cb"],
                "token_endpoint_auth_method": "client_secret_basic",
            }))
            .expect_err("refused"),
            "invalid_client_metadata"
        );
        assert_eq!(
            registers(json!({
                "client_uri": "https://x.example/", "redirect_uris": ["https://x.example/cb"],
                "logo_uri": "https://tracker.example/logo.png",
            }))
            .expect_err("refused"),
            "invalid_client_metadata"
        );
        let client = registers(json!({
            "client_uri": "https://x.example/", "redirect_uris": ["https://x.example/cb"],
            "client_name": "X\u{7}  App", "policy_uri": "https://x.example/policy",
            "grant_types": ["authorization_code", "refresh_token"],
        }))
        .expect("valid");
        assert_eq!(client.display_name(), "X  App");
        assert_eq!(
            client.policy_uri.as_deref(),
            Some("https://x.example/policy")
        );
        // A device-only client (the device authorization grant) needs no redirect URI.
        assert!(
            registers(json!({
                "client_uri": "https://x.example/",
                "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
            }))
            .is_ok()
        );
    }
}
