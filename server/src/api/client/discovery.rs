//! Server discovery: supported versions, well-known documents, capabilities.

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json, Router, routing::get};
use ruma::api::client::discovery::{
    discover_homeserver::{self, HomeserverInfo},
    get_supported_versions,
};
use serde_json::{Value, json};

use crate::{
    http::{
        auth::Authenticated,
        error::Result,
        ruma::{RouterExt, Ruma},
    },
    service::{Services, rooms::SUPPORTED_ROOM_VERSIONS},
};

/// Spec versions announced in `/versions`: those whose mandatory parts all exist here
/// (v1.11 is authenticated media, which clients use only when it is announced).
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2",
    "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12", "v1.13",
    "v1.14", "v1.15",
];

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(versions)
        .ruma(well_known_client)
        .route("/.well-known/matrix/server", get(well_known_server))
        .route("/_matrix/client/r0/capabilities", get(capabilities))
        .route("/_matrix/client/v3/capabilities", get(capabilities))
}

/// # `GET /_matrix/client/versions`
async fn versions(
    _: Arc<Services>,
    _: Ruma<get_supported_versions::Request>,
) -> Result<get_supported_versions::Response> {
    let mut response = get_supported_versions::Response::new(
        SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
    );
    response.unstable_features = BTreeMap::from([
        ("org.matrix.msc2918.refresh_token".to_owned(), true),
        ("org.matrix.simplified_msc3575".to_owned(), true),
        // QR code login: the rendezvous, with the OAuth device authorization grant.
        ("org.matrix.msc4108".to_owned(), true),
    ]);
    Ok(response)
}

/// # `GET /.well-known/matrix/client`
async fn well_known_client(
    services: Arc<Services>,
    _: Ruma<discover_homeserver::Request>,
) -> Result<discover_homeserver::Response> {
    Ok(discover_homeserver::Response::new(HomeserverInfo::new(
        services.config.public_baseurl(),
    )))
}

/// # `GET /.well-known/matrix/server`
async fn well_known_server(
    axum::extract::State(services): axum::extract::State<Arc<Services>>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "m.server": services.config.federation_address() }))
}

/// # `GET /_matrix/client/v3/capabilities`
///
/// Written out by hand: ruma leaves out capabilities at their default value, and SyTest and
/// some clients look for `m.change_password` and the profile capabilities by name.
async fn capabilities(
    axum::extract::State(services): axum::extract::State<Arc<Services>>,
    Authenticated(_): Authenticated,
) -> Json<Value> {
    // Without `m.room_versions` clients take the spec's default (version 1) and warn that
    // rooms are unstable.
    let available: serde_json::Map<String, Value> = SUPPORTED_ROOM_VERSIONS
        .iter()
        .map(|v| ((*v).to_owned(), Value::from("stable")))
        .collect();
    Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.room_versions": {
                "default": services.config.default_room_version,
                "available": available,
            },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": true },
        }
    }))
}
