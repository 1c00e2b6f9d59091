//! Display names and avatars; a change is carried into every room the user is joined to.

use super::{Services, rooms::EventDraft};
use crate::{
    http::error::{Error, Result},
    store::ProfileField,
};
use ruma::{OwnedMxcUri, UserId};

/// Longest display name accepted.
const MAX_DISPLAYNAME: usize = 256;
/// Longest avatar URL taken (Synapse's limit).
const MAX_AVATAR_URL: usize = 1000;

impl Services {
    /// `(displayname, avatar_url)` of a user, asking their server over federation when they
    /// are not local: 404 `M_NOT_FOUND` for unknown users.
    pub async fn profile(&self, user_id: &UserId) -> Result<(Option<String>, Option<String>)> {
        if user_id.server_name() != self.config.server_name && self.config.federation.enabled {
            let request = ruma::api::federation::query::get_profile_information::v1::Request::new(
                user_id.to_owned(),
            );
            let answer = self.send_federation(user_id.server_name(), request).await?;
            let text = |field: &str| {
                answer
                    .get(field)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            return Ok((text("displayname"), text("avatar_url")));
        }
        self.local_profile(user_id).await
    }

    /// `(displayname, avatar_url)` of a local user: 404 `M_NOT_FOUND` for unknown users.
    pub async fn local_profile(
        &self,
        user_id: &UserId,
    ) -> Result<(Option<String>, Option<String>)> {
        if user_id.server_name() != self.config.server_name
            || self.store.user(user_id).await?.is_none()
        {
            return Err(Error::not_found(format!("No profile for {user_id}")));
        }
        let (displayname, avatar_url) = self.store.profile(user_id.as_str()).await?;
        Ok((
            displayname.or_else(|| Some(user_id.localpart().to_owned())),
            avatar_url,
        ))
    }

    /// Sets the user's display name (`None` clears it) and updates their rooms.
    pub async fn set_displayname(&self, user_id: &UserId, name: Option<&str>) -> Result<()> {
        if let Some(name) = name
            && (name.chars().count() > MAX_DISPLAYNAME || name.chars().any(char::is_control))
        {
            return Err(Error::bad_json(format!(
                "A display name has at most {MAX_DISPLAYNAME} characters and no control characters"
            )));
        }
        self.store
            .set_profile_field(user_id.as_str(), ProfileField::Displayname, name)
            .await?;
        self.propagate_profile(user_id).await
    }

    /// Sets the user's avatar (`None` clears it) and updates their rooms. Any URL up to
    /// 1,000 bytes is taken, as Synapse takes it (clients show only `mxc://` ones).
    pub async fn set_avatar_url(&self, user_id: &UserId, url: Option<&OwnedMxcUri>) -> Result<()> {
        if let Some(url) = url
            && (url.as_str().len() > MAX_AVATAR_URL || url.as_str().chars().any(char::is_control))
        {
            return Err(Error::bad_json(format!(
                "An avatar URL has at most {MAX_AVATAR_URL} bytes and no control characters"
            )));
        }
        self.store
            .set_profile_field(
                user_id.as_str(),
                ProfileField::AvatarUrl,
                url.map(|u| u.as_str()),
            )
            .await?;
        self.propagate_profile(user_id).await
    }

    /// A new join event with the current profile in every room the user is joined to.
    async fn propagate_profile(&self, user_id: &UserId) -> Result<()> {
        let content = self.member_content(user_id, "join").await?;
        for room_id in self.joined_rooms(user_id).await? {
            let current = self
                .state_content(&room_id, "m.room.member", user_id.as_str())
                .await?;
            if current.as_ref() == Some(&content) {
                continue;
            }
            let draft = EventDraft::state("m.room.member", user_id.as_str(), content.clone());
            if let Err(error) = self.append(&room_id, user_id, draft, None).await {
                // One room refusing (say, a power-level rule) must not block the others.
                tracing::warn!(%room_id, %user_id, %error, "profile change not carried into a room");
            }
        }
        Ok(())
    }
}
