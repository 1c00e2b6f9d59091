//! Server discovery: supported versions, well-known documents, capabilities.

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json, Router, routing::get};
use ruma::api::client::discovery::{
    discover_homeserver::{self, HomeserverInfo},
    get_capabilities::{
        self,
        v3::{
            Capabilities, ChangePasswordCapability, GetLoginTokenCapability,
            ProfileFieldsCapability,
        },
    },
    get_supported_versions,
};

use crate::{
    http::{
        error::Result,
        ruma::{RouterExt, Ruma},
    },
    service::Services,
};

/// Spec versions announced in `/versions`.
///
/// The accounts and sessions endpoints of these versions exist; rooms, sync and the rest
/// arrive with later work (see docs/FEATURES.md), and Element Web needs at least v1.5 to
/// talk to a server at all.
pub const SUPPORTED_VERSIONS: &[&str] = &["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5"];

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(versions)
        .ruma(well_known_client)
        .ruma(capabilities)
        .route("/.well-known/matrix/server", get(well_known_server))
}

/// # `GET /_matrix/client/versions`
async fn versions(
    _: Arc<Services>,
    _: Ruma<get_supported_versions::Request>,
) -> Result<get_supported_versions::Response> {
    let mut response = get_supported_versions::Response::new(
        SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
    );
    response.unstable_features =
        BTreeMap::from([("org.matrix.msc2918.refresh_token".to_owned(), true)]);
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
async fn capabilities(
    _: Arc<Services>,
    _: Ruma<get_capabilities::v3::Request>,
) -> Result<get_capabilities::v3::Response> {
    let mut capabilities = Capabilities::new();
    capabilities.change_password = ChangePasswordCapability::new(true);
    capabilities.get_login_token = GetLoginTokenCapability::new(true);
    // Profiles arrive with the rooms work; until then clients must not offer to edit them.
    capabilities.profile_fields = Some(ProfileFieldsCapability::new(false));
    Ok(get_capabilities::v3::Response::new(capabilities))
}
