//! Other servers joining this server's rooms and pushing events into them.

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::{
    membership::{RawStrippedState, create_invite, create_join_event, prepare_join_event},
    transactions::send_transaction_message,
};

use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::{
        Services,
        federation::{MAX_EDUS, MAX_PDUS},
    },
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma::<prepare_join_event::v1::Request, _, _>(make_join)
        .ruma::<create_join_event::v2::Request, _, _>(send_join)
        .ruma::<send_transaction_message::v1::Request, _, _>(send_transaction)
        .ruma::<create_invite::v2::Request, _, _>(invite)
}

/// # `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
async fn make_join(
    services: Arc<Services>,
    req: Ruma<prepare_join_event::v1::Request>,
) -> Result<prepare_join_event::v1::Response> {
    let versions: Vec<String> = req.body.ver.iter().map(ToString::to_string).collect();
    let (version, template) = services
        .make_join(&req.auth, &req.body.room_id, &req.body.user_id, &versions)
        .await?;
    let event =
        serde_json::value::to_raw_value(&template).map_err(|e| Error::Internal(e.into()))?;
    let mut response = prepare_join_event::v1::Response::new(event);
    response.room_version = Some(crate::service::rooms::version_rules(&version)?.0);
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
