//! Room membership: join, invite, leave, forget, kick, ban, unban, knock, member lists.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use ruma::{
    RoomId, UserId,
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, get_member_events, invite_user, join_room_by_id,
            join_room_by_id_or_alias, joined_rooms, kick_user, leave_room, unban_user,
        },
    },
};
use serde_json::{Value, json};

use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
        ruma::{RouterExt, Ruma, to_raw},
    },
    service::{Limit, Services, rooms::MembershipChange},
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = router
        .ruma(join_by_id)
        .ruma(join_by_id_or_alias)
        .ruma(invite)
        .ruma(leave)
        .ruma(forget)
        .ruma(kick)
        .ruma(ban)
        .ruma(unban)
        .ruma(knock)
        .ruma(members)
        .ruma(joined_rooms);
    ["r0", "v3"].iter().fold(router, |router, version| {
        router.route(
            &format!("/_matrix/client/{version}/rooms/{{room_id}}/joined_members"),
            get(joined_members),
        )
    })
}

/// The keys of a join's body that go into the member event as they are (everything but what
/// the server sets), as Synapse keeps them.
fn custom_member_content(raw_body: &[u8]) -> serde_json::Map<String, Value> {
    let mut content: serde_json::Map<String, Value> =
        serde_json::from_slice(raw_body).unwrap_or_default();
    for key in [
        "membership",
        "displayname",
        "avatar_url",
        "join_authorised_via_users_server",
        "third_party_signed",
    ] {
        content.remove(key);
    }
    content
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/join`
async fn join_by_id(
    services: Arc<Services>,
    req: Ruma<join_room_by_id::v3::Request>,
) -> Result<join_room_by_id::v3::Response> {
    let room_id = req.body.room_id;
    services
        .join(
            &room_id,
            &req.auth.user_id,
            custom_member_content(&req.raw_body),
            &[],
        )
        .await?;
    Ok(join_room_by_id::v3::Response::new(room_id))
}

/// # `POST /_matrix/client/v3/join/{roomIdOrAlias}`
async fn join_by_id_or_alias(
    services: Arc<Services>,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<join_room_by_id_or_alias::v3::Response> {
    let (room_id, mut via) =
        super::resolve_room_and_servers(&services, &req.body.room_id_or_alias).await?;
    via.extend(req.body.via.iter().cloned());
    services
        .join(
            &room_id,
            &req.auth.user_id,
            custom_member_content(&req.raw_body),
            &via,
        )
        .await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/invite`
async fn invite(
    services: Arc<Services>,
    req: Ruma<invite_user::v3::Request>,
) -> Result<invite_user::v3::Response> {
    let (invitee, reason) = match &req.body.recipient {
        invite_user::v3::InvitationRecipient::UserId(recipient) => {
            (recipient.user_id.clone(), recipient.reason.as_deref())
        }
        invite_user::v3::InvitationRecipient::ThirdPartyId(by_address) => {
            // The identity server is asked on the user's behalf.
            services.rate_limit(Limit::LookupsPerUser, req.auth.user_id.as_str())?;
            (services.third_party_invitee(by_address).await?, None)
        }
        _ => return Err(Error::bad_json("An invite needs a user_id or a 3PID")),
    };
    services
        .change_membership(
            &req.body.room_id,
            &req.auth.user_id,
            &invitee,
            MembershipChange::Invite,
            reason,
        )
        .await?;
    Ok(invite_user::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/leave`
async fn leave(
    services: Arc<Services>,
    req: Ruma<leave_room::v3::Request>,
) -> Result<leave_room::v3::Response> {
    let user = &req.auth.user_id;
    services
        .change_membership(
            &req.body.room_id,
            user,
            user,
            MembershipChange::Leave,
            req.body.reason.as_deref(),
        )
        .await?;
    Ok(leave_room::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/forget`
async fn forget(
    services: Arc<Services>,
    req: Ruma<forget_room::v3::Request>,
) -> Result<forget_room::v3::Response> {
    services
        .forget(&req.body.room_id, &req.auth.user_id)
        .await?;
    Ok(forget_room::v3::Response::new())
}

async fn change(
    services: &Services,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    change: MembershipChange,
    reason: Option<&str>,
) -> Result<()> {
    services
        .change_membership(room_id, sender, target, change, reason)
        .await
        .map(drop)
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/kick`
async fn kick(
    services: Arc<Services>,
    req: Ruma<kick_user::v3::Request>,
) -> Result<kick_user::v3::Response> {
    let b = &req.body;
    change(
        &services,
        &b.room_id,
        &req.auth.user_id,
        &b.user_id,
        MembershipChange::Leave,
        b.reason.as_deref(),
    )
    .await?;
    Ok(kick_user::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/ban`
async fn ban(
    services: Arc<Services>,
    req: Ruma<ban_user::v3::Request>,
) -> Result<ban_user::v3::Response> {
    let b = &req.body;
    change(
        &services,
        &b.room_id,
        &req.auth.user_id,
        &b.user_id,
        MembershipChange::Ban,
        b.reason.as_deref(),
    )
    .await?;
    Ok(ban_user::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/unban`
async fn unban(
    services: Arc<Services>,
    req: Ruma<unban_user::v3::Request>,
) -> Result<unban_user::v3::Response> {
    let b = &req.body;
    change(
        &services,
        &b.room_id,
        &req.auth.user_id,
        &b.user_id,
        MembershipChange::Unban,
        b.reason.as_deref(),
    )
    .await?;
    Ok(unban_user::v3::Response::new())
}

/// # `POST /_matrix/client/v3/knock/{roomIdOrAlias}`
async fn knock(
    services: Arc<Services>,
    req: Ruma<knock_room::v3::Request>,
) -> Result<knock_room::v3::Response> {
    let (room_id, mut via) =
        super::resolve_room_and_servers(&services, &req.body.room_id_or_alias).await?;
    via.extend(req.body.via.iter().cloned());
    services
        .knock(
            &room_id,
            &req.auth.user_id,
            req.body.reason.as_deref(),
            &via,
        )
        .await?;
    Ok(knock_room::v3::Response::new(room_id))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/members`
async fn members(
    services: Arc<Services>,
    req: Ruma<get_member_events::v3::Request>,
) -> Result<get_member_events::v3::Response> {
    let b = &req.body;
    let user = &req.auth.user_id;
    let Some(upto) = services.visible_upto(&b.room_id, user).await? else {
        return Err(Error::forbidden(format!(
            "You are not a member of {}",
            b.room_id
        )));
    };
    let at = match &b.at {
        Some(token) => Some(services.parse_position(token)?),
        None => None,
    };
    // A token's position is "before event N": the state after event N - 1.
    let position = at.map_or(i64::MAX, |at| at.saturating_sub(1)).min(upto);
    let state = if position == i64::MAX {
        services.store.current_state(b.room_id.as_str()).await?
    } else {
        services
            .ensure_visible_at(&b.room_id, user, position)
            .await?;
        services.state_at(&b.room_id, position).await?
    };
    let ids: Vec<String> = state
        .iter()
        .filter(|((kind, _), _)| kind == "m.room.member")
        .map(|(_, id)| id.clone())
        .collect();
    let events = services.store.events(&ids).await?;
    let mut chunk = Vec::new();
    for event in services.client_events(&events, None, false).await? {
        let membership = event["content"]["membership"].as_str().unwrap_or_default();
        if b.membership
            .as_ref()
            .is_some_and(|m| m.as_str() != membership)
            || b.not_membership
                .as_ref()
                .is_some_and(|m| m.as_str() == membership)
        {
            continue;
        }
        chunk.push(to_raw(&event)?);
    }
    Ok(get_member_events::v3::Response::new(chunk))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
///
/// Both profile fields of every member, `null` when unset (as Synapse; SyTest and client
/// schemas look for the keys). Members see it, and so does anyone when the room's history is
/// world-readable (room previews read it, as on Synapse).
async fn joined_members(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Path(room_id): Path<String>,
) -> Result<Json<Value>> {
    let room_id = super::path_room_id(&room_id)?;
    if services.current_visibility(&room_id).await? != "world_readable" {
        services.ensure_joined(&room_id, &session.user_id).await?;
    }
    let mut joined = serde_json::Map::new();
    for member in services
        .store
        .room_members(room_id.as_str(), "join")
        .await?
    {
        let content = services
            .state_content(&room_id, "m.room.member", member.as_str())
            .await?
            .unwrap_or_default();
        let field = |key: &str| content.get(key).filter(|v| v.is_string()).cloned();
        joined.insert(
            member,
            json!({
                "display_name": field("displayname"),
                "avatar_url": field("avatar_url"),
            }),
        );
    }
    Ok(Json(json!({ "joined": joined })))
}

/// # `GET /_matrix/client/v3/joined_rooms`
async fn joined_rooms(
    services: Arc<Services>,
    req: Ruma<joined_rooms::v3::Request>,
) -> Result<joined_rooms::v3::Response> {
    Ok(joined_rooms::v3::Response::new(
        services.joined_rooms(&req.auth.user_id).await?,
    ))
}
