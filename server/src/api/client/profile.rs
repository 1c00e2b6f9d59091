//! Profiles: display name and avatar.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::profile::{
    get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name,
};
use serde_json::Value;

use super::ensure_self;
use crate::{
    http::{
        error::Result,
        ruma::{RouterExt, Ruma},
    },
    service::Services,
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(profile)
        .ruma(displayname)
        .ruma(set_displayname)
        .ruma(avatar_url)
        .ruma(set_avatar)
}

/// # `GET /_matrix/client/v3/profile/{userId}`
async fn profile(
    services: Arc<Services>,
    req: Ruma<get_profile::v3::Request>,
) -> Result<get_profile::v3::Response> {
    let (name, avatar) = services.profile(&req.body.user_id).await?;
    let mut response = get_profile::v3::Response::new();
    if let Some(name) = name {
        response.set("displayname".to_owned(), Value::from(name));
    }
    if let Some(avatar) = avatar {
        response.set("avatar_url".to_owned(), Value::from(avatar));
    }
    Ok(response)
}

/// # `GET /_matrix/client/v3/profile/{userId}/displayname`
async fn displayname(
    services: Arc<Services>,
    req: Ruma<get_display_name::v3::Request>,
) -> Result<get_display_name::v3::Response> {
    let (name, _) = services.profile(&req.body.user_id).await?;
    Ok(get_display_name::v3::Response::new(name))
}

/// # `PUT /_matrix/client/v3/profile/{userId}/displayname`
async fn set_displayname(
    services: Arc<Services>,
    req: Ruma<set_display_name::v3::Request>,
) -> Result<set_display_name::v3::Response> {
    ensure_self(&req.auth.user_id, &req.body.user_id)?;
    services
        .set_displayname(&req.auth.user_id, req.body.displayname.as_deref())
        .await?;
    Ok(set_display_name::v3::Response::new())
}

/// # `GET /_matrix/client/v3/profile/{userId}/avatar_url`
async fn avatar_url(
    services: Arc<Services>,
    req: Ruma<get_avatar_url::v3::Request>,
) -> Result<get_avatar_url::v3::Response> {
    let (_, avatar) = services.profile(&req.body.user_id).await?;
    Ok(get_avatar_url::v3::Response::new(avatar.map(Into::into)))
}

/// # `PUT /_matrix/client/v3/profile/{userId}/avatar_url`
async fn set_avatar(
    services: Arc<Services>,
    req: Ruma<set_avatar_url::v3::Request>,
) -> Result<set_avatar_url::v3::Response> {
    ensure_self(&req.auth.user_id, &req.body.user_id)?;
    services
        .set_avatar_url(&req.auth.user_id, req.body.avatar_url.as_ref())
        .await?;
    Ok(set_avatar_url::v3::Response::new())
}
