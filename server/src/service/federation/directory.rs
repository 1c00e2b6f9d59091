//! Other servers' public room directories, for this server's users.

use ruma::{ServerName, UInt, directory::PublicRoomsChunk};
use serde_json::Value;

use crate::{
    http::error::{Error, Result},
    service::Services,
};

/// A page of another server's directory: rooms, next and previous tokens, total.
pub type RemoteDirectory = (
    Vec<PublicRoomsChunk>,
    Option<String>,
    Option<String>,
    Option<UInt>,
);

/// Most rooms taken from one answer.
const MAX_ROOMS: usize = 100;

impl Services {
    /// A page of `server`'s public room directory (`POST /publicRooms` over federation).
    pub async fn remote_public_rooms(
        &self,
        server: &ServerName,
        term: Option<&str>,
        since: Option<&str>,
        limit: usize,
    ) -> Result<RemoteDirectory> {
        let mut body = serde_json::json!({ "limit": limit });
        if let Some(since) = since {
            body["since"] = Value::from(since);
        }
        if let Some(term) = term {
            body["filter"] = serde_json::json!({ "generic_search_term": term });
        }
        let answer = self
            .federation_json(
                server,
                http::Method::POST,
                "/_matrix/federation/v1/publicRooms",
                Some(&body),
                self.federation.timeout,
            )
            .await?;
        let bad = |e: serde_json::Error| {
            Error::new(
                http::StatusCode::BAD_GATEWAY,
                ruma::api::error::ErrorKind::Unknown,
                format!("{server}'s directory is malformed: {e}"),
            )
        };
        let mut chunk: Vec<PublicRoomsChunk> =
            serde_json::from_value(answer["chunk"].clone()).map_err(bad)?;
        chunk.truncate(MAX_ROOMS.min(limit));
        let token = |key: &str| answer[key].as_str().map(str::to_owned);
        let total = answer["total_room_count_estimate"]
            .as_u64()
            .and_then(UInt::new);
        Ok((chunk, token("next_batch"), token("prev_batch"), total))
    }
}
