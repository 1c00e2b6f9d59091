//! What a guest may call: reading and taking part in the rooms that let guests in, its own
//! profile, keys and settings. Everything else answers 403 `M_GUEST_ACCESS_FORBIDDEN`, as
//! on Synapse.

use http::{Method, StatusCode};
use ruma::api::error::ErrorKind;

use super::error::{Error, Result};

/// 403 `M_GUEST_ACCESS_FORBIDDEN` unless guests may make this request.
pub fn ensure_guest_may(method: &Method, path: &str) -> Result<()> {
    if guest_may(method, path) {
        return Ok(());
    }
    Err(Error::new(
        StatusCode::FORBIDDEN,
        ErrorKind::GuestAccessForbidden,
        "Guests cannot do this: register an account first",
    ))
}

/// Whether a guest may call `method path` (a Client-Server or media path).
fn guest_may(method: &Method, path: &str) -> bool {
    let Some(rest) = ["/_matrix/client/", "/_matrix/media/"]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
    else {
        return false;
    };
    // Past the version (`r0`, `v1`, `v3`, `unstable` and an MSC's namespace).
    let mut segments: Vec<&str> = rest.split('/').skip(1).collect();
    if rest.starts_with("unstable/") && segments.first().is_some_and(|s| s.contains('.')) {
        segments.remove(0);
    }
    let read = method == Method::GET;
    match segments.as_slice() {
        ["sync"] | ["events"] | ["account", "whoami"] | ["logout"] | ["voip", "turnServer"] => true,
        ["rooms", _, what, ..] => matches!(
            *what,
            "initialSync"
                | "messages"
                | "state"
                | "members"
                | "joined_members"
                | "context"
                | "event"
                | "send"
                | "join"
                | "leave"
                | "typing"
                | "receipt"
                | "read_markers"
                | "relations"
                | "threads"
                | "summary"
        ),
        ["join", _] => true,
        ["profile", ..] | ["presence", ..] | ["pushrules", ..] => true,
        ["user", _, "filter", ..] | ["user", _, "account_data", ..] => true,
        ["user", _, "rooms", _, "account_data" | "tags", ..] => true,
        ["keys", "upload" | "query" | "claim" | "changes"] | ["sendToDevice", ..] => true,
        ["directory", "room", _] | ["publicRooms"] | ["room_summary", _] => read,
        [
            "media",
            "config" | "download" | "thumbnail" | "preview_url",
            ..,
        ] => read,
        ["config" | "download" | "thumbnail", ..] => read,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_take_part_but_do_not_create_or_administer() {
        let allowed = [
            (Method::GET, "/_matrix/client/v3/sync"),
            (Method::GET, "/_matrix/client/r0/events"),
            (Method::POST, "/_matrix/client/v3/join/!a:b"),
            (
                Method::PUT,
                "/_matrix/client/v3/rooms/!a:b/send/m.room.message/1",
            ),
            (Method::GET, "/_matrix/client/v3/rooms/!a:b/initialSync"),
            (Method::PUT, "/_matrix/client/v3/profile/@1:b/displayname"),
            (Method::GET, "/_matrix/client/v1/media/download/b/x"),
            (Method::POST, "/_matrix/client/unstable/keys/query"),
            (Method::GET, "/_matrix/client/v1/room_summary/!a:b"),
            (
                Method::GET,
                "/_matrix/client/unstable/im.nheko.summary/rooms/!a:b/summary",
            ),
        ];
        for (method, path) in allowed {
            assert!(guest_may(&method, path), "{method} {path}");
        }
        let refused = [
            (Method::POST, "/_matrix/client/v3/createRoom"),
            (Method::GET, "/_matrix/client/v3/devices"),
            (Method::POST, "/_matrix/client/v3/rooms/!a:b/invite"),
            (Method::PUT, "/_matrix/client/v3/directory/room/#a:b"),
            (Method::POST, "/_matrix/client/v3/pushers/set"),
            (Method::POST, "/_matrix/media/v3/upload"),
            (Method::GET, "/_synapse/admin/v1/users"),
        ];
        for (method, path) in refused {
            assert!(!guest_may(&method, path), "{method} {path}");
        }
    }
}
