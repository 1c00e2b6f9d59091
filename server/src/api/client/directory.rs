//! The room directory, the user directory, presence, timestamp lookup and room upgrades.

use std::{sync::Arc, time::Duration};

use axum::Router;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedRoomAliasId, RoomId, UInt,
    api::{
        Direction,
        client::{
            directory::{
                get_public_rooms, get_public_rooms_filtered, get_room_visibility,
                set_room_visibility,
            },
            presence::{get_presence, set_presence},
            room::{Visibility, get_event_by_timestamp, get_summary, upgrade_room},
            user_directory::search_users,
        },
    },
    directory::{PublicRoomsChunk, PublicRoomsChunkInit},
    events::room::member::MembershipState,
    presence::PresenceState,
    room::JoinRuleKind,
};

use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::{Services, directory::DirectoryRoom},
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(public_rooms)
        .ruma(public_rooms_filtered)
        .ruma(room_visibility)
        .ruma(set_visibility)
        .ruma(user_search)
        .ruma(presence)
        .ruma(update_presence)
        .ruma(timestamp_to_event)
        .ruma(upgrade)
        .ruma(summary)
}

/// Most rooms or users one directory page returns.
const MAX_PAGE: usize = 100;

fn offset(since: Option<&str>) -> Result<usize> {
    match since {
        None => Ok(0),
        Some(token) => token
            .strip_prefix('o')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::invalid_param(format!("{token} is not a directory token"))),
    }
}

/// A page size from a request's `limit`: 1 to [`MAX_PAGE`].
pub(crate) fn limit(limit: Option<UInt>) -> usize {
    limit
        .map_or(MAX_PAGE, |l| {
            usize::try_from(u64::from(l)).unwrap_or(MAX_PAGE)
        })
        .clamp(1, MAX_PAGE)
}

fn chunk(room: DirectoryRoom) -> Result<PublicRoomsChunk> {
    let room_id = RoomId::parse(&room.room_id).map_err(|e| Error::Internal(e.into()))?;
    let mut chunk: PublicRoomsChunk = PublicRoomsChunkInit {
        num_joined_members: UInt::new(room.joined).unwrap_or_default(),
        room_id,
        world_readable: room.world_readable,
        guest_can_join: room.guest_can_join,
    }
    .into();
    chunk.name = room.name;
    chunk.topic = room.topic;
    chunk.canonical_alias = room
        .canonical_alias
        .and_then(|a| OwnedRoomAliasId::try_from(a).ok());
    chunk.avatar_url = room.avatar_url.map(Into::into);
    chunk.join_rule = JoinRuleKind::from(room.join_rule.as_str());
    chunk.room_type = room.room_type.map(Into::into);
    Ok(chunk)
}

/// A directory page: rooms, next and previous tokens, total.
pub(crate) type Page = (
    Vec<PublicRoomsChunk>,
    Option<String>,
    Option<String>,
    Option<UInt>,
);

/// This server's published rooms matching `term`, a page from `since`.
pub(crate) async fn page(
    services: &Services,
    term: Option<&str>,
    since: Option<&str>,
    size: usize,
) -> Result<Page> {
    let from = offset(since)?;
    let (rooms, next, total) = services.public_rooms(term, from, size).await?;
    let chunks = rooms.into_iter().map(chunk).collect::<Result<_>>()?;
    let prev = (from > 0).then(|| format!("o{}", from.saturating_sub(size)));
    Ok((
        chunks,
        next.map(|n| format!("o{n}")),
        prev,
        UInt::new(total as u64),
    ))
}

/// The directory page of `server` (this one's, or another's over federation).
async fn page_of(
    services: &Services,
    server: Option<&ruma::ServerName>,
    term: Option<&str>,
    since: Option<&str>,
    size: usize,
) -> Result<Page> {
    match server {
        Some(server) if server != services.config.server_name => {
            services
                .remote_public_rooms(server, term, since, size)
                .await
        }
        _ => page(services, term, since, size).await,
    }
}

/// # `GET /_matrix/client/v3/publicRooms`
async fn public_rooms(
    services: Arc<Services>,
    req: Ruma<get_public_rooms::v3::Request>,
) -> Result<get_public_rooms::v3::Response> {
    let b = &req.body;
    let (chunk, next, prev, total) = page_of(
        &services,
        b.server.as_deref(),
        None,
        b.since.as_deref(),
        limit(b.limit),
    )
    .await?;
    let mut response = get_public_rooms::v3::Response::new(chunk);
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = total;
    Ok(response)
}

/// # `POST /_matrix/client/v3/publicRooms`
async fn public_rooms_filtered(
    services: Arc<Services>,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<get_public_rooms_filtered::v3::Response> {
    let b = &req.body;
    let term = b.filter.generic_search_term.as_deref();
    let (chunk, next, prev, total) = page_of(
        &services,
        b.server.as_deref(),
        term,
        b.since.as_deref(),
        limit(b.limit),
    )
    .await?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = chunk;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = total;
    Ok(response)
}

/// # `GET /_matrix/client/v3/directory/list/room/{roomId}`
async fn room_visibility(
    services: Arc<Services>,
    req: Ruma<get_room_visibility::v3::Request>,
) -> Result<get_room_visibility::v3::Response> {
    let published = services.room_published(&req.body.room_id).await?;
    Ok(get_room_visibility::v3::Response::new(if published {
        Visibility::Public
    } else {
        Visibility::Private
    }))
}

/// # `PUT /_matrix/client/v3/directory/list/room/{roomId}`
async fn set_visibility(
    services: Arc<Services>,
    req: Ruma<set_room_visibility::v3::Request>,
) -> Result<set_room_visibility::v3::Response> {
    let public = match &req.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(Error::invalid_param("visibility must be public or private")),
    };
    services
        .set_room_published(&req.body.room_id, &req.auth.user_id, public)
        .await?;
    Ok(set_room_visibility::v3::Response::new())
}

/// # `POST /_matrix/client/v3/user_directory/search`
async fn user_search(
    services: Arc<Services>,
    req: Ruma<search_users::v3::Request>,
) -> Result<search_users::v3::Response> {
    let b = &req.body;
    let size = usize::try_from(u64::from(b.limit)).unwrap_or(10);
    let (users, limited) = services
        .search_users(&req.auth.user_id, &b.search_term, size)
        .await?;
    let results = users
        .into_iter()
        .map(|user| {
            let mut entry = search_users::v3::User::new(user.user_id);
            entry.display_name = user.displayname;
            entry.avatar_url = user.avatar_url.map(Into::into);
            entry
        })
        .collect();
    Ok(search_users::v3::Response::new(results, limited))
}

/// # `GET /_matrix/client/v3/presence/{userId}/status`
async fn presence(
    services: Arc<Services>,
    req: Ruma<get_presence::v3::Request>,
) -> Result<get_presence::v3::Response> {
    let user_id = &req.body.user_id;
    services.profile(user_id).await?;
    // Presence is for people who share a room.
    if !services
        .room_peers(&req.auth.user_id)
        .await?
        .contains(user_id)
    {
        return Err(Error::forbidden(format!(
            "You share no room with {user_id}, so their presence is not yours to see"
        )));
    }
    let now = services.now_ms();
    let Some(state) = services.presence.get(user_id) else {
        return Ok(get_presence::v3::Response::new(PresenceState::Offline));
    };
    let mut response = get_presence::v3::Response::new(PresenceState::from(state.state.as_str()));
    response.status_msg = state.status_msg;
    response.currently_active = Some(state.state == "online");
    response.last_active_ago = Some(Duration::from_millis(
        u64::try_from(now.saturating_sub(state.last_active_ms)).unwrap_or(0),
    ));
    Ok(response)
}

/// # `PUT /_matrix/client/v3/presence/{userId}/status`
async fn update_presence(
    services: Arc<Services>,
    req: Ruma<set_presence::v3::Request>,
) -> Result<set_presence::v3::Response> {
    let b = &req.body;
    if b.user_id != req.auth.user_id {
        return Err(Error::forbidden("You can only set your own presence"));
    }
    services
        .set_presence(
            &b.user_id,
            b.presence.as_str(),
            Some(b.status_msg.as_deref()),
        )
        .await?;
    Ok(set_presence::v3::Response::new())
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
async fn timestamp_to_event(
    services: Arc<Services>,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<get_event_by_timestamp::v1::Response> {
    let b = &req.body;
    let (event_id, ts) = services
        .event_near_ts(
            &b.room_id,
            &req.auth.user_id,
            i64::from(b.ts.get()),
            b.dir == Direction::Forward,
        )
        .await?;
    Ok(get_event_by_timestamp::v1::Response::new(
        ruma::EventId::parse(event_id).map_err(|e| Error::Internal(e.into()))?,
        MilliSecondsSinceUnixEpoch(UInt::new(u64::try_from(ts).unwrap_or(0)).unwrap_or_default()),
    ))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
async fn upgrade(
    services: Arc<Services>,
    req: Ruma<upgrade_room::v3::Request>,
) -> Result<upgrade_room::v3::Response> {
    let b = &req.body;
    let new_room = services
        .upgrade_room(&b.room_id, &req.auth.user_id, b.new_version.as_str())
        .await?;
    Ok(upgrade_room::v3::Response::new(new_room))
}

/// # `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}` (and MSC3266's unstable path)
async fn summary(
    services: Arc<Services>,
    req: Ruma<get_summary::v1::Request>,
) -> Result<get_summary::v1::Response> {
    let room_id = super::resolve_room(&services, &req.body.room_id_or_alias).await?;
    let asker = req.auth.as_ref().map(|session| session.user_id.as_ref());
    let (summary, membership) = services.room_summary(&room_id, asker).await?;
    let mut response = get_summary::v1::Response::new(summary);
    response.membership = membership.map(|m| MembershipState::from(m.as_str()));
    Ok(response)
}
