//! Server keys: this server's own, and other servers' as a notary.

use std::sync::Arc;

use axum::Router;
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch,
    api::federation::discovery::{
        get_remote_server_keys, get_remote_server_keys_batch, get_server_keys,
    },
    serde::Raw,
};

use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::Services,
};

/// Most servers one notary query may ask about.
const MAX_QUERIED_SERVERS: usize = 50;

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma::<get_server_keys::v2::Request, _, _>(server_keys)
        // With a trailing slash, as Sydent (and old Synapse) ask for it.
        .route(
            "/_matrix/key/v2/server/",
            axum::routing::get(server_keys_slash),
        )
        // The deprecated forms naming a key id, which older servers (and SyTest) still use:
        // the id is ignored, as Synapse does.
        .route(
            "/_matrix/key/v2/server/{key_id}",
            axum::routing::get(server_keys_slash),
        )
        .route(
            "/_matrix/key/v2/query/{server_name}/{key_id}",
            axum::routing::get(query_one_by_key),
        )
        .ruma::<get_remote_server_keys::v2::Request, _, _>(query_one)
        .ruma::<get_remote_server_keys_batch::v2::Request, _, _>(query_batch)
}

fn raw<T>(document: &CanonicalJsonObject) -> Result<Raw<T>> {
    serde_json::value::to_raw_value(document)
        .map(Raw::from_json)
        .map_err(|e| Error::Internal(e.into()))
}

/// # `GET /_matrix/key/v2/server`
async fn server_keys(
    services: Arc<Services>,
    _: Ruma<get_server_keys::v2::Request>,
) -> Result<get_server_keys::v2::Response> {
    let document = services.own_key_document()?;
    Ok(get_server_keys::v2::Response::new(raw(&document)?))
}

/// # `GET /_matrix/key/v2/server/`
async fn server_keys_slash(
    axum::extract::State(services): axum::extract::State<Arc<Services>>,
) -> Result<axum::Json<CanonicalJsonObject>> {
    Ok(axum::Json(services.own_key_document()?))
}

/// # `GET /_matrix/key/v2/query/{serverName}`
async fn query_one(
    services: Arc<Services>,
    req: Ruma<get_remote_server_keys::v2::Request>,
) -> Result<get_remote_server_keys::v2::Response> {
    let minimum = i64::from(req.body.minimum_valid_until_ts.get());
    let documents = services
        .notary_documents(&req.body.server_name, minimum)
        .await;
    Ok(get_remote_server_keys::v2::Response::new(
        documents.iter().map(raw).collect::<Result<_>>()?,
    ))
}

#[derive(serde::Deserialize)]
struct Minimum {
    minimum_valid_until_ts: Option<i64>,
}

/// # `GET /_matrix/key/v2/query/{serverName}/{keyId}` (deprecated)
async fn query_one_by_key(
    axum::extract::State(services): axum::extract::State<Arc<Services>>,
    axum::extract::Path((server_name, _key_id)): axum::extract::Path<(String, String)>,
    minimum: std::result::Result<
        axum::extract::Query<Minimum>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<axum::Json<serde_json::Value>> {
    let axum::extract::Query(minimum) =
        minimum.map_err(|_| Error::invalid_param("minimum_valid_until_ts must be an integer"))?;
    let server = ruma::ServerName::parse(&server_name)
        .map_err(|_| Error::invalid_param(format!("{server_name} is not a server name")))?;
    let documents = services
        .notary_documents(&server, minimum.minimum_valid_until_ts.unwrap_or(0))
        .await;
    Ok(axum::Json(serde_json::json!({ "server_keys": documents })))
}

/// # `POST /_matrix/key/v2/query`
async fn query_batch(
    services: Arc<Services>,
    req: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> Result<get_remote_server_keys_batch::v2::Response> {
    if req.body.server_keys.len() > MAX_QUERIED_SERVERS {
        return Err(Error::bad_request(format!(
            "At most {MAX_QUERIED_SERVERS} servers per query"
        )));
    }
    let mut documents = Vec::new();
    for (server, keys) in &req.body.server_keys {
        let minimum = keys
            .values()
            .filter_map(|criteria| criteria.minimum_valid_until_ts)
            .map(|ts: MilliSecondsSinceUnixEpoch| i64::from(ts.get()))
            .max()
            .unwrap_or(0);
        for document in services.notary_documents(server, minimum).await {
            documents.push(raw(&document)?);
        }
    }
    Ok(get_remote_server_keys_batch::v2::Response::new(documents))
}
