//! Push rules, pushers and the notifications list.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Request, State},
    routing::{get, post},
};
use ruma::{
    api::client::push::{
        delete_pushrule, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
        get_pushrules_all, get_pushrules_global_scope, set_pushrule, set_pushrule_actions,
        set_pushrule_enabled,
    },
    push::{RuleKind, Ruleset},
};
use serde_json::{Value, json};

use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
        ruma::{RouterExt, Ruma, json_body, query_params},
    },
    service::Services,
};

/// Most notifications one page lists.
const MAX_NOTIFICATIONS: i64 = 100;

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(all_rules)
        .ruma(global_rules)
        .ruma(get_rule)
        .ruma(set_rule)
        .ruma(delete_rule)
        .ruma(get_enabled)
        .ruma(set_enabled)
        .ruma(get_actions)
        .ruma(set_actions)
        .route("/_matrix/client/v3/pushers", get(pushers))
        .route("/_matrix/client/r0/pushers", get(pushers))
        .route("/_matrix/client/v3/pushers/set", post(set_pusher))
        .route("/_matrix/client/r0/pushers/set", post(set_pusher))
        .route("/_matrix/client/v3/notifications", get(notifications))
        .route("/_matrix/client/r0/notifications", get(notifications))
}

fn no_rule(kind: &RuleKind, rule_id: &str) -> Error {
    Error::not_found(format!("No {kind} push rule {rule_id}"))
}

/// # `GET /_matrix/client/v3/pushrules/`
async fn all_rules(
    services: Arc<Services>,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> Result<get_pushrules_all::v3::Response> {
    Ok(get_pushrules_all::v3::Response::new(
        services.push_rules(&req.auth.user_id).await?,
    ))
}

/// # `GET /_matrix/client/v3/pushrules/global/`
async fn global_rules(
    services: Arc<Services>,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<get_pushrules_global_scope::v3::Response> {
    Ok(get_pushrules_global_scope::v3::Response::new(
        services.push_rules(&req.auth.user_id).await?,
    ))
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn get_rule(
    services: Arc<Services>,
    req: Ruma<get_pushrule::v3::Request>,
) -> Result<get_pushrule::v3::Response> {
    let rules = services.push_rules(&req.auth.user_id).await?;
    let rule = rules
        .get(req.body.kind.clone(), &req.body.rule_id)
        .ok_or_else(|| no_rule(&req.body.kind, &req.body.rule_id))?;
    Ok(get_pushrule::v3::Response::new(rule.to_owned().into()))
}

/// Loads the rules, applies `change`, stores them.
async fn change_rules(
    services: &Services,
    user_id: &ruma::UserId,
    change: impl FnOnce(&mut Ruleset) -> Result<()>,
) -> Result<()> {
    let mut rules = services.push_rules(user_id).await?;
    change(&mut rules)?;
    services.set_push_rules(user_id, &rules).await
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn set_rule(
    services: Arc<Services>,
    req: Ruma<set_pushrule::v3::Request>,
) -> Result<set_pushrule::v3::Response> {
    let body = req.body;
    change_rules(&services, &req.auth.user_id, |rules| {
        rules
            .insert(body.rule, body.after.as_deref(), body.before.as_deref())
            .map_err(|e| {
                let why = e.to_string();
                if why.contains("unknown") || why.contains("not found") {
                    Error::not_found(format!("Push rule not placed: {why}"))
                } else {
                    Error::invalid_param(format!("Push rule not placed: {why}"))
                }
            })
    })
    .await?;
    Ok(set_pushrule::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn delete_rule(
    services: Arc<Services>,
    req: Ruma<delete_pushrule::v3::Request>,
) -> Result<delete_pushrule::v3::Response> {
    let (kind, rule_id) = (req.body.kind, req.body.rule_id);
    change_rules(&services, &req.auth.user_id, |rules| {
        rules.remove(kind.clone(), &rule_id).map_err(|e| match e {
            ruma::push::RemovePushRuleError::ServerDefault => {
                Error::forbidden("Server-default push rules cannot be deleted; disable them")
            }
            _ => no_rule(&kind, &rule_id),
        })
    })
    .await?;
    Ok(delete_pushrule::v3::Response::new())
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
async fn get_enabled(
    services: Arc<Services>,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<get_pushrule_enabled::v3::Response> {
    let rules = services.push_rules(&req.auth.user_id).await?;
    let rule = rules
        .get(req.body.kind.clone(), &req.body.rule_id)
        .ok_or_else(|| no_rule(&req.body.kind, &req.body.rule_id))?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled()))
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
async fn set_enabled(
    services: Arc<Services>,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<set_pushrule_enabled::v3::Response> {
    let (kind, rule_id, enabled) = (req.body.kind, req.body.rule_id, req.body.enabled);
    change_rules(&services, &req.auth.user_id, |rules| {
        rules
            .set_enabled(kind.clone(), &rule_id, enabled)
            .map_err(|_| no_rule(&kind, &rule_id))
    })
    .await?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
async fn get_actions(
    services: Arc<Services>,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<get_pushrule_actions::v3::Response> {
    let rules = services.push_rules(&req.auth.user_id).await?;
    let rule = rules
        .get(req.body.kind.clone(), &req.body.rule_id)
        .ok_or_else(|| no_rule(&req.body.kind, &req.body.rule_id))?;
    Ok(get_pushrule_actions::v3::Response::new(
        rule.actions().to_vec(),
    ))
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
async fn set_actions(
    services: Arc<Services>,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<set_pushrule_actions::v3::Response> {
    let (kind, rule_id, actions) = (req.body.kind, req.body.rule_id, req.body.actions);
    change_rules(&services, &req.auth.user_id, |rules| {
        rules
            .set_actions(kind.clone(), &rule_id, actions)
            .map_err(|_| no_rule(&kind, &rule_id))
    })
    .await?;
    Ok(set_pushrule_actions::v3::Response::new())
}

/// # `GET /_matrix/client/v3/pushers`
async fn pushers(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
) -> Result<Json<Value>> {
    let pushers: Vec<Value> = services
        .store
        .pushers(session.user_id.as_str())
        .await?
        .into_iter()
        .map(|p| {
            json!({
                "app_id": p.app_id, "pushkey": p.pushkey, "kind": p.kind,
                "app_display_name": p.app_display_name,
                "device_display_name": p.device_display_name,
                "profile_tag": p.profile_tag, "lang": p.lang,
                "data": serde_json::from_str::<Value>(&p.data).unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(json!({ "pushers": pushers })))
}

/// # `POST /_matrix/client/v3/pushers/set`
///
/// `kind: null` deletes the pusher; otherwise it is added or replaced.
async fn set_pusher(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    request: Request,
) -> Result<Json<Value>> {
    let (parts, body) = request.into_parts();
    let body: Value = json_body(&parts, body, services.config.max_request_bytes).await?;
    let append = match body.get("append") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Error::bad_json("`append` must be a boolean")),
    };
    match body.get("kind") {
        Some(Value::Null) => {
            let field = |key: &str| {
                body.get(key)
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::missing_param(format!("`{key}` is required")))
            };
            services
                .store
                .delete_pusher(
                    session.user_id.as_str(),
                    field("app_id")?,
                    field("pushkey")?,
                )
                .await?;
        }
        _ => services.set_pusher(&session.user_id, &body, append).await?,
    }
    Ok(Json(json!({})))
}

/// # `GET /_matrix/client/v3/notifications`
async fn notifications(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    uri: axum::http::Uri,
) -> Result<Json<Value>> {
    let query = query_params(uri.query());
    let from = match query.get("from") {
        Some(from) => Some(
            from.parse::<i64>()
                .map_err(|_| Error::invalid_param("from is not a token this server gave"))?,
        ),
        None => None,
    };
    let limit = match query.get("limit") {
        Some(limit) => limit
            .parse::<i64>()
            .map_err(|_| Error::invalid_param("limit must be a number"))?
            .clamp(1, MAX_NOTIFICATIONS),
        None => 20,
    };
    let only_highlight = query.get("only").is_some_and(|o| o.contains("highlight"));
    let rows = services
        .store
        .notifications(session.user_id.as_str(), from, limit, only_highlight)
        .await?;
    let ids: Vec<String> = rows.iter().map(|r| r.event_id.clone()).collect();
    let stored = services.store.events(&ids).await?;
    let events = services
        .client_events(
            &stored,
            Some((&session.user_id, session.device_id.as_str())),
            false,
        )
        .await?;
    let by_id: std::collections::HashMap<&str, &Value> = events
        .iter()
        .filter_map(|e| Some((e.get("event_id")?.as_str()?, e)))
        .collect();
    let notifications: Vec<Value> = rows
        .iter()
        .filter_map(|r| {
            let event = by_id.get(r.event_id.as_str())?;
            Some(json!({
                "actions": serde_json::from_str::<Value>(&r.actions).unwrap_or_default(),
                "event": event,
                "read": r.read,
                "room_id": r.room_id,
                "ts": r.ts,
            }))
        })
        .collect();
    let mut answer = json!({ "notifications": notifications });
    if rows.len() as i64 == limit
        && let Some(last) = rows.last()
    {
        answer["next_token"] = last.stream_ordering.to_string().into();
    }
    Ok(Json(answer))
}
