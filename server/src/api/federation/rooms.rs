//! Other servers joining this server's rooms and pushing events into them.

use std::sync::Arc;

use axum::Router;
use ruma::{
    MilliSecondsSinceUnixEpoch,
    api::federation::{
        authorization::get_event_authorization,
        backfill::get_backfill,
        event::{
            get_event, get_event_by_timestamp, get_missing_events, get_room_state,
            get_room_state_ids,
        },
        membership::{
            RawStrippedState, create_invite, create_join_event, create_knock_event,
            create_leave_event, prepare_join_event, prepare_knock_event, prepare_leave_event,
        },
        transactions::send_transaction_message,
    },
};

use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::{
        Services,
        federation::{MAX_EDUS, MAX_PDUS, Walk, raw_pdu},
    },
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma::<prepare_join_event::v1::Request, _, _>(make_join)
        .ruma::<create_join_event::v2::Request, _, _>(send_join)
        .ruma::<prepare_leave_event::v1::Request, _, _>(make_leave)
        .ruma::<create_leave_event::v2::Request, _, _>(send_leave)
        .ruma::<prepare_knock_event::v1::Request, _, _>(make_knock)
        .ruma::<create_knock_event::v1::Request, _, _>(send_knock)
        .ruma::<send_transaction_message::v1::Request, _, _>(send_transaction)
        .ruma::<create_invite::v2::Request, _, _>(invite)
        .ruma::<get_event::v1::Request, _, _>(event)
        .ruma::<get_room_state_ids::v1::Request, _, _>(state_ids)
        .ruma::<get_room_state::v1::Request, _, _>(state)
        .ruma::<get_event_authorization::v1::Request, _, _>(event_auth)
        .ruma::<get_backfill::v1::Request, _, _>(backfill)
        .ruma::<get_missing_events::v1::Request, _, _>(missing_events)
        .ruma::<get_event_by_timestamp::v1::Request, _, _>(timestamp_to_event)
}

/// # `GET /_matrix/federation/v1/timestamp_to_event/{roomId}`
async fn timestamp_to_event(
    services: Arc<Services>,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<get_event_by_timestamp::v1::Response> {
    let b = &req.body;
    let ts = i64::from(b.ts.get());
    let forward = b.dir == ruma::api::Direction::Forward;
    let (event_id, at) = services
        .event_near_ts_for_server(&req.auth, &b.room_id, ts, forward)
        .await?;
    Ok(get_event_by_timestamp::v1::Response::new(
        ruma::EventId::parse(event_id).map_err(|e| Error::Internal(e.into()))?,
        MilliSecondsSinceUnixEpoch(
            ruma::UInt::try_from(at.max(0)).map_err(|e| Error::Internal(e.into()))?,
        ),
    ))
}

/// # `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
async fn make_join(
    services: Arc<Services>,
    req: Ruma<prepare_join_event::v1::Request>,
) -> Result<prepare_join_event::v1::Response> {
    let versions: Vec<String> = req.body.ver.iter().map(ToString::to_string).collect();
    let made = services
        .make_join(&req.auth, &req.body.room_id, &req.body.user_id, &versions)
        .await?;
    let (version, event) = template(made)?;
    let mut response = prepare_join_event::v1::Response::new(event);
    response.room_version = Some(version);
    Ok(response)
}

/// # `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
async fn send_join(
    services: Arc<Services>,
    req: Ruma<create_join_event::v2::Request>,
) -> Result<create_join_event::v2::Response> {
    let joined = services
        .send_join(
            &req.auth,
            &req.body.room_id,
            &req.body.event_id,
            &req.body.pdu,
        )
        .await?;
    let mut state = create_join_event::v2::RoomState::new();
    state.state = joined.state;
    state.auth_chain = joined.auth_chain;
    state.event = Some(joined.event);
    state.servers_in_room = Some(joined.servers);
    Ok(create_join_event::v2::Response::new(state))
}

/// The template as a raw event and its room version.
fn template(
    (version, template): (String, ruma::CanonicalJsonValue),
) -> Result<(ruma::RoomVersionId, Box<serde_json::value::RawValue>)> {
    let event =
        serde_json::value::to_raw_value(&template).map_err(|e| Error::Internal(e.into()))?;
    Ok((crate::service::rooms::version_rules(&version)?.0, event))
}

/// # `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`
async fn make_leave(
    services: Arc<Services>,
    req: Ruma<prepare_leave_event::v1::Request>,
) -> Result<prepare_leave_event::v1::Response> {
    let b = &req.body;
    let made = services
        .make_membership(&req.auth, &b.room_id, &b.user_id, "leave", None)
        .await?;
    let (version, event) = template(made)?;
    Ok(prepare_leave_event::v1::Response::new(Some(version), event))
}

/// # `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`
async fn send_leave(
    services: Arc<Services>,
    req: Ruma<create_leave_event::v2::Request>,
) -> Result<create_leave_event::v2::Response> {
    let b = &req.body;
    services
        .send_membership(&req.auth, &b.room_id, &b.event_id, &b.pdu, "leave")
        .await?;
    Ok(create_leave_event::v2::Response::new())
}

/// # `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`
async fn make_knock(
    services: Arc<Services>,
    req: Ruma<prepare_knock_event::v1::Request>,
) -> Result<prepare_knock_event::v1::Response> {
    let b = &req.body;
    let versions: Vec<String> = b.ver.iter().map(ToString::to_string).collect();
    let made = services
        .make_membership(&req.auth, &b.room_id, &b.user_id, "knock", Some(&versions))
        .await?;
    let (version, event) = template(made)?;
    Ok(prepare_knock_event::v1::Response::new(version, event))
}

/// # `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`
async fn send_knock(
    services: Arc<Services>,
    req: Ruma<create_knock_event::v1::Request>,
) -> Result<create_knock_event::v1::Response> {
    let b = &req.body;
    services
        .send_membership(&req.auth, &b.room_id, &b.event_id, &b.pdu, "knock")
        .await?;
    let shown = services.knock_room_state(&b.room_id).await?;
    Ok(create_knock_event::v1::Response::new(
        shown.into_iter().map(RawStrippedState::Pdu).collect(),
    ))
}

/// # `PUT /_matrix/federation/v1/send/{txnId}`
async fn send_transaction(
    services: Arc<Services>,
    req: Ruma<send_transaction_message::v1::Request>,
) -> Result<send_transaction_message::v1::Response> {
    if req.body.origin != req.auth {
        return Err(Error::forbidden(
            "The transaction's origin is not the server that signed it",
        ));
    }
    if req.body.pdus.len() > MAX_PDUS || req.body.edus.len() > MAX_EDUS {
        return Err(Error::bad_request(format!(
            "A transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"
        )));
    }
    let results = services
        .receive_transaction(&req.auth, &req.body.pdus)
        .await;
    services.receive_edus(&req.auth, &req.body.edus).await;
    Ok(send_transaction_message::v1::Response::new(results))
}

/// # `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
async fn invite(
    services: Arc<Services>,
    req: Ruma<create_invite::v2::Request>,
) -> Result<create_invite::v2::Response> {
    let b = &req.body;
    let stripped: Vec<serde_json::Value> = b
        .invite_room_state
        .iter()
        .filter_map(|state| {
            #[allow(
                deprecated,
                reason = "servers before Matrix 1.16 still send stripped events"
            )]
            let json = match state {
                RawStrippedState::Stripped(raw) => raw.json().get(),
                RawStrippedState::Pdu(raw) => raw.get(),
                _ => return None,
            };
            serde_json::from_str(json).ok()
        })
        .collect();
    let signed = services
        .receive_invite(
            &req.auth,
            &b.room_id,
            &b.event_id,
            b.room_version.as_str(),
            &b.event,
            &stripped,
        )
        .await?;
    let event = serde_json::value::to_raw_value(&signed).map_err(|e| Error::Internal(e.into()))?;
    Ok(create_invite::v2::Response::new(event))
}

/// # `GET /_matrix/federation/v1/event/{eventId}`
async fn event(
    services: Arc<Services>,
    req: Ruma<get_event::v1::Request>,
) -> Result<get_event::v1::Response> {
    let event = services
        .federation_event(&req.auth, &req.body.event_id)
        .await?;
    Ok(get_event::v1::Response::new(
        services.config.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        raw_pdu(event)?,
    ))
}

/// # `GET /_matrix/federation/v1/state_ids/{roomId}`
async fn state_ids(
    services: Arc<Services>,
    req: Ruma<get_room_state_ids::v1::Request>,
) -> Result<get_room_state_ids::v1::Response> {
    let (state, chain) = services
        .state_at_event(&req.auth, &req.body.room_id, &req.body.event_id)
        .await?;
    let ids = |events: Vec<crate::store::StoredEvent>| {
        events
            .into_iter()
            .filter_map(|e| ruma::EventId::parse(e.event_id).ok())
            .collect()
    };
    Ok(get_room_state_ids::v1::Response::new(
        ids(chain),
        ids(state),
    ))
}

/// # `GET /_matrix/federation/v1/state/{roomId}`
async fn state(
    services: Arc<Services>,
    req: Ruma<get_room_state::v1::Request>,
) -> Result<get_room_state::v1::Response> {
    let (state, chain) = services
        .state_at_event(&req.auth, &req.body.room_id, &req.body.event_id)
        .await?;
    Ok(get_room_state::v1::Response::new(
        chain.into_iter().map(raw_pdu).collect::<Result<_>>()?,
        state.into_iter().map(raw_pdu).collect::<Result<_>>()?,
    ))
}

/// # `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
async fn event_auth(
    services: Arc<Services>,
    req: Ruma<get_event_authorization::v1::Request>,
) -> Result<get_event_authorization::v1::Response> {
    let chain = services
        .event_auth_chain(&req.auth, &req.body.room_id, &req.body.event_id)
        .await?;
    Ok(get_event_authorization::v1::Response::new(
        chain.into_iter().map(raw_pdu).collect::<Result<_>>()?,
    ))
}

/// # `GET /_matrix/federation/v1/backfill/{roomId}`
async fn backfill(
    services: Arc<Services>,
    req: Ruma<get_backfill::v1::Request>,
) -> Result<get_backfill::v1::Response> {
    let from: Vec<String> = req.body.v.iter().map(ToString::to_string).collect();
    let limit = usize::try_from(u64::from(req.body.limit)).unwrap_or(usize::MAX);
    let events = services
        .walk_back(
            &req.auth,
            &req.body.room_id,
            Walk {
                from: &from,
                stop: &[],
                include_start: true,
                min_depth: 0,
                limit,
            },
        )
        .await?;
    Ok(get_backfill::v1::Response::new(
        services.config.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        events.into_iter().map(raw_pdu).collect::<Result<_>>()?,
    ))
}

/// # `POST /_matrix/federation/v1/get_missing_events/{roomId}`
async fn missing_events(
    services: Arc<Services>,
    req: Ruma<get_missing_events::v1::Request>,
) -> Result<get_missing_events::v1::Response> {
    let b = &req.body;
    let from: Vec<String> = b.latest_events.iter().map(ToString::to_string).collect();
    let stop: Vec<String> = b.earliest_events.iter().map(ToString::to_string).collect();
    let limit = usize::try_from(u64::from(b.limit)).unwrap_or(usize::MAX);
    let min_depth = i64::try_from(u64::from(b.min_depth)).unwrap_or(i64::MAX);
    let mut events = services
        .walk_back(
            &req.auth,
            &b.room_id,
            Walk {
                from: &from,
                stop: &stop,
                include_start: false,
                min_depth,
                limit,
            },
        )
        .await?;
    // Oldest first, as Synapse answers.
    events.reverse();
    Ok(get_missing_events::v1::Response::new(
        events.into_iter().map(raw_pdu).collect::<Result<_>>()?,
    ))
}
