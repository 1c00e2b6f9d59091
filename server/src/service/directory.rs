//! The public room directory and the user directory.

use std::collections::{HashMap, HashSet};

use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::Value;

use super::Services;
use crate::http::error::{Error, Result};

/// A room as the directory lists it.
#[derive(Debug, Clone)]
pub struct DirectoryRoom {
    /// The room.
    pub room_id: String,
    /// `m.room.name`.
    pub name: Option<String>,
    /// `m.room.topic`.
    pub topic: Option<String>,
    /// `m.room.canonical_alias`.
    pub canonical_alias: Option<String>,
    /// `m.room.avatar`.
    pub avatar_url: Option<String>,
    /// `m.room.join_rules`.
    pub join_rule: String,
    /// History is world readable.
    pub world_readable: bool,
    /// Guests may join.
    pub guest_can_join: bool,
    /// Joined members.
    pub joined: u64,
    /// `type` of the create event (spaces).
    pub room_type: Option<String>,
}

/// A user as the user directory lists them.
#[derive(Debug, Clone)]
pub struct DirectoryUser {
    /// The account.
    pub user_id: OwnedUserId,
    /// Display name.
    pub displayname: Option<String>,
    /// Avatar.
    pub avatar_url: Option<String>,
}

fn text(content: Option<Value>, key: &str) -> Option<String> {
    content?.get(key)?.as_str().map(str::to_owned)
}

/// Most users matching a search term that are checked for visibility.
const MAX_USER_CANDIDATES: usize = 1000;

impl Services {
    /// Whether anyone may find a room's members in the user directory: its join rule is
    /// public or its history world-readable.
    async fn is_public_room(&self, room: &str) -> Result<bool> {
        let Ok(room_id) = RoomId::parse(room) else {
            return Ok(false);
        };
        let field = |content: Option<Value>, key: &str| {
            content.and_then(|c| c.get(key).and_then(Value::as_str).map(str::to_owned))
        };
        let join_rule = field(
            self.state_content(&room_id, "m.room.join_rules", "")
                .await?,
            "join_rule",
        );
        let history = field(
            self.state_content(&room_id, "m.room.history_visibility", "")
                .await?,
            "history_visibility",
        );
        Ok(join_rule.as_deref() == Some("public") || history.as_deref() == Some("world_readable"))
    }

    /// Published rooms whose name, topic or alias contains `term`, most members first:
    /// `(page, next offset, total)`.
    pub async fn public_rooms(
        &self,
        term: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<DirectoryRoom>, Option<usize>, usize)> {
        let term = term.map(str::to_lowercase).filter(|t| !t.is_empty());
        let mut rooms = Vec::new();
        for room in self.store.published_rooms().await? {
            let Ok(room_id) = RoomId::parse(room.as_str()) else {
                continue;
            };
            let entry = self.room_card(&room_id).await?;
            let matches = term.as_deref().is_none_or(|term| {
                [&entry.name, &entry.topic, &entry.canonical_alias]
                    .iter()
                    .any(|field| {
                        field
                            .as_deref()
                            .is_some_and(|f| f.to_lowercase().contains(term))
                    })
            });
            if matches {
                rooms.push(entry);
            }
        }
        rooms.sort_by(|a, b| {
            b.joined
                .cmp(&a.joined)
                .then_with(|| a.room_id.cmp(&b.room_id))
        });
        let total = rooms.len();
        let page: Vec<DirectoryRoom> = rooms.into_iter().skip(offset).take(limit).collect();
        let next = (offset + page.len() < total).then_some(offset + page.len());
        Ok((page, next, total))
    }

    /// What the directory and room previews show of a room, from its current state.
    pub async fn room_card(&self, room_id: &RoomId) -> Result<DirectoryRoom> {
        let state = |kind: &'static str| self.state_content(room_id, kind, "");
        Ok(DirectoryRoom {
            name: text(state("m.room.name").await?, "name"),
            topic: text(state("m.room.topic").await?, "topic"),
            canonical_alias: text(state("m.room.canonical_alias").await?, "alias"),
            avatar_url: text(state("m.room.avatar").await?, "url"),
            join_rule: text(state("m.room.join_rules").await?, "join_rule")
                .unwrap_or_else(|| "invite".to_owned()),
            world_readable: text(
                state("m.room.history_visibility").await?,
                "history_visibility",
            )
            .as_deref()
                == Some("world_readable"),
            guest_can_join: text(state("m.room.guest_access").await?, "guest_access").as_deref()
                == Some("can_join"),
            room_type: text(state("m.room.create").await?, "type"),
            joined: self
                .store
                .room_members(room_id.as_str(), "join")
                .await?
                .len() as u64,
            room_id: room_id.to_string(),
        })
    }

    /// Whether the room is published.
    pub async fn room_published(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self
            .store
            .room(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("No room {room_id}")))?
            .published)
    }

    /// Publishes or unpublishes a room: members with the power to set its canonical alias may.
    pub async fn set_room_published(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        published: bool,
    ) -> Result<()> {
        self.room_published(room_id).await?;
        self.ensure_joined(room_id, user_id).await?;
        if !self
            .has_power_for_state(room_id, user_id, "m.room.canonical_alias")
            .await?
        {
            return Err(Error::forbidden(
                "You need the power to set the room's alias to list it in the directory",
            ));
        }
        self.store
            .set_room_published(room_id.as_str(), published)
            .await?;
        Ok(())
    }

    /// Local users whose ID or display name contains `term` and whom `searcher` may find:
    /// others sharing a room with them, anyone in a public room (as Synapse's default):
    /// `(users, limited)`.
    pub async fn search_users(
        &self,
        searcher: &UserId,
        term: &str,
        limit: usize,
    ) -> Result<(Vec<DirectoryUser>, bool)> {
        let limit = limit.clamp(1, 100);
        let candidates = self
            .store
            .search_users(term, i64::try_from(MAX_USER_CANDIDATES).unwrap_or(1000))
            .await?;
        let joined = |rooms: Vec<(String, String, i64)>| -> HashSet<String> {
            rooms
                .into_iter()
                .filter(|(_, membership, _)| membership == "join")
                .map(|(room, _, _)| room)
                .collect()
        };
        let own_rooms = joined(self.store.user_rooms(searcher.as_str()).await?);
        let mut public: HashMap<String, bool> = HashMap::new();
        let mut found = Vec::new();
        for candidate in candidates {
            if found.len() > limit {
                break;
            }
            let rooms = joined(self.store.user_rooms(&candidate.0).await?);
            // Searchers find themselves only as others would, through a public room (as
            // Synapse: sharing a private room with oneself does not count).
            let mut visible = candidate.0 != searcher.as_str() && !own_rooms.is_disjoint(&rooms);
            for room in &rooms {
                if visible {
                    break;
                }
                visible = match public.get(room) {
                    Some(known) => *known,
                    None => {
                        let known = self.is_public_room(room).await?;
                        public.insert(room.clone(), known);
                        known
                    }
                };
            }
            if visible {
                found.push(candidate);
            }
        }
        let limited = found.len() > limit;
        let users = found
            .into_iter()
            .take(limit)
            .filter_map(|(user_id, displayname, avatar_url)| {
                let user_id = UserId::parse(user_id).ok()?;
                Some(DirectoryUser {
                    displayname: displayname.or_else(|| Some(user_id.localpart().to_owned())),
                    user_id,
                    avatar_url,
                })
            })
            .collect();
        Ok((users, limited))
    }
}
