//! Server ACLs (`m.room.server_acl`): servers a room has shut out. Their requests about the
//! room are 403 and their events and EDUs for it are refused, as the spec says; this
//! server's own are never checked against it.

use std::net::IpAddr;

use ruma::{RoomId, ServerName};
use serde_json::Value;

use crate::{
    http::error::{Error, Result},
    service::Services,
};

/// A glob (`*` any run, `?` one character) against a server's host, ignoring case.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.to_lowercase().chars().collect();
    let name: Vec<char> = name.to_lowercase().chars().collect();
    // Iterative matching with backtracking to the last `*`: linear in practice, never
    // exponential, whatever the pattern.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(c) if *c == '?' || *c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Whether an ACL's content lets `server` take part (the spec's order: IP literals, then
/// deny, then allow; entries that are not strings are skipped).
pub fn acl_allows(content: &Value, server: &ServerName) -> bool {
    let host = server.host();
    let is_ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok();
    if is_ip && content["allow_ip_literals"] == false {
        return false;
    }
    let listed = |field: &str| {
        content[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|pattern| glob_matches(pattern, host))
    };
    !listed("deny") && listed("allow")
}

impl Services {
    /// 403 when the room's server ACL shuts `origin` out.
    pub async fn ensure_acl_allows(&self, origin: &ServerName, room_id: &RoomId) -> Result<()> {
        if origin == self.config.server_name {
            return Ok(());
        }
        match self.state_content(room_id, "m.room.server_acl", "").await? {
            Some(content) if !acl_allows(&content, origin) => Err(Error::forbidden(format!(
                "{origin} is denied by the server ACL of {room_id}"
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::ServerName;
    use serde_json::json;

    use super::{acl_allows, glob_matches};

    #[test]
    fn globs_match_as_the_spec_says() {
        assert!(glob_matches("*", "example.org"));
        assert!(glob_matches("*.example.org", "chat.example.org"));
        assert!(!glob_matches("*.example.org", "example.org"));
        assert!(glob_matches("ex?mple.org", "EXAMPLE.org"));
        assert!(!glob_matches("ex?mple.org", "exaample.org"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXbYY"));
        let long = "a".repeat(300);
        assert!(!glob_matches(&format!("{}b", "*a".repeat(50)), &long));
    }

    #[test]
    fn deny_beats_allow_and_ip_literals_can_be_shut_out() {
        fn server(name: &str) -> &ServerName {
            <&ServerName>::try_from(name).expect("server name")
        }
        let acl = json!({ "allow": ["*"], "deny": ["evil.example", "*.evil.example"] });
        assert!(acl_allows(&acl, server("good.example:8448")));
        assert!(!acl_allows(&acl, server("evil.example")));
        assert!(!acl_allows(&acl, server("a.evil.example:443")));
        assert!(acl_allows(&acl, server("127.0.0.1:8448")));
        let no_ips = json!({ "allow": ["*"], "allow_ip_literals": false });
        assert!(!acl_allows(&no_ips, server("127.0.0.1:8448")));
        assert!(!acl_allows(&no_ips, server("[::1]:8448")));
        assert!(acl_allows(&no_ips, server("example.org")));
        // Nothing allowed when `allow` is missing; entries that are not strings are skipped.
        assert!(!acl_allows(&json!({}), server("example.org")));
        assert!(acl_allows(
            &json!({ "allow": [1, "example.org"] }),
            server("example.org")
        ));
    }
}
