//! Built-in media: files the server itself refers to by `mxc://` URI (the wallet identity
//! provider's icon), served before any media repository exists. Nothing else is stored.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};

use super::sso::LOGO_SVG;
use crate::{
    http::error::{Error, Result},
    service::Services,
};

/// The media id of the Ethereum logo, `mxc://<server_name>/<id>`.
pub const LOGO_MEDIA_ID: &str = "matrixon-ethereum-logo";

/// Download and thumbnail routes, authenticated (v1) and legacy; the logo is public.
pub fn routes() -> Router<Arc<Services>> {
    let mut router = Router::new();
    for prefix in [
        "/_matrix/client/v1/media",
        "/_matrix/media/v3",
        "/_matrix/media/r0",
    ] {
        router = router
            .route(
                &format!("{prefix}/download/{{server}}/{{id}}"),
                get(built_in),
            )
            .route(
                &format!("{prefix}/download/{{server}}/{{id}}/{{file_name}}"),
                get(built_in_named),
            )
            .route(
                &format!("{prefix}/thumbnail/{{server}}/{{id}}"),
                get(built_in),
            );
    }
    router
}

async fn built_in_named(
    services: State<Arc<Services>>,
    Path((server, id, _)): Path<(String, String, String)>,
) -> Result<Response> {
    built_in(services, Path((server, id))).await
}

/// An SVG can carry script: served sandboxed, so opening it directly runs nothing.
async fn built_in(
    State(services): State<Arc<Services>>,
    Path((server, id)): Path<(String, String)>,
) -> Result<Response> {
    if server != services.config.server_name.as_str() || id != LOGO_MEDIA_ID {
        return Err(Error::not_found("No such media"));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (
                header::CONTENT_SECURITY_POLICY,
                "sandbox; default-src 'none'; style-src 'unsafe-inline'",
            ),
            (
                header::CONTENT_DISPOSITION,
                "inline; filename=\"ethereum.svg\"",
            ),
            (header::CACHE_CONTROL, "public, max-age=86400"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        LOGO_SVG,
    )
        .into_response())
}
