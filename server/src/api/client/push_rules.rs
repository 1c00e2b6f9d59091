//! Push rules: `GET/PUT/DELETE /pushrules/…`.
//!
//! The push-rule endpoints read their paths themselves, as Synapse does: one route per
//! prefix takes `{scope}/{kind}/{ruleId}/{attr}`, a trailing slash lists (`global/room/`),
//! and a path that names nothing is 400 `M_UNRECOGNIZED`.
//!
//! Room and sender rule ids may be any string (Synapse takes `#spam:example.com` as a room
//! rule), but ruma's `Ruleset`, stored as `m.push_rules` and what pushes are decided with,
//! holds only room and user IDs there: a stored `m.push_rules` with any other id would not
//! parse. So the full room and sender lists, in order, are kept in
//! [`SIMPLE_RULES_TYPE`] once one of them has another id, and `m.push_rules` holds the rules
//! with real IDs. The others can never match an event (their condition compares the
//! event's room ID or sender with the id), so nothing is lost for pushing.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{StatusCode, Uri},
    routing::get,
};
use ruma::{
    RoomId, UserId,
    api::error::ErrorKind,
    push::{
        Action, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule, NewPushRule,
        PushCondition, RemovePushRuleError, RuleKind, Ruleset, SimplePushRule, SimplePushRuleInit,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
        ruma::{json_body, query_params},
    },
    service::Services,
};

/// Account data holding every room and sender rule, in order, once one has an id that is
/// not a room or user ID (see the module documentation).
const SIMPLE_RULES_TYPE: &str = "io.matrixon.push_rules.room_sender";

/// The rule kinds, as paths and rulesets name them.
const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

pub(super) fn routes(mut router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    for version in ["r0", "v3"] {
        for path in ["pushrules/", "pushrules/{*path}"] {
            router = router.route(
                &format!("/_matrix/client/{version}/{path}"),
                get(get_rules).put(put_rule).delete(delete_rule),
            );
        }
    }
    router
}

/// 400 `M_UNRECOGNIZED`: Synapse's answer to a push-rule path it cannot read.
fn unrecognized(message: impl Into<String>) -> Error {
    Error::new(StatusCode::BAD_REQUEST, ErrorKind::Unrecognized, message)
}

/// A scope or kind without the trailing slash that would list it.
fn trailing_slash() -> Error {
    unrecognized("Unrecognized request: you probably wanted a trailing slash")
}

fn no_rule(kind: Kind, rule_id: &str) -> Error {
    Error::not_found(format!("No {} push rule {rule_id}", kind.as_str()))
}

fn internal(err: serde_json::Error) -> Error {
    Error::Internal(err.into())
}

/// A push rule kind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Override,
    Underride,
    Content,
    Room,
    Sender,
}

impl Kind {
    /// The kind a path segment names; 400 `M_UNRECOGNIZED` for anything else.
    fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "override" => Self::Override,
            "underride" => Self::Underride,
            "content" => Self::Content,
            "room" => Self::Room,
            "sender" => Self::Sender,
            _ => return Err(unrecognized(format!("Unknown push rule kind {name:?}"))),
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Override => "override",
            Self::Underride => "underride",
            Self::Content => "content",
            Self::Room => "room",
            Self::Sender => "sender",
        }
    }

    /// The kinds ruma's `Ruleset` holds with any rule id; room and sender rules are kept in
    /// [`Rules`]' own lists.
    fn ruma(self) -> Option<RuleKind> {
        match self {
            Self::Override => Some(RuleKind::Override),
            Self::Underride => Some(RuleKind::Underride),
            Self::Content => Some(RuleKind::Content),
            Self::Room | Self::Sender => None,
        }
    }
}

/// The percent-decoded segments after `/pushrules/` (`[""]` for the prefix itself), split
/// before decoding so that an encoded `/` stays inside its segment.
fn segments(uri: &Uri) -> Result<Vec<String>> {
    let rest = uri
        .path()
        .split_once("/pushrules/")
        .map_or("", |(_, rest)| rest);
    rest.split('/').map(decoded).collect()
}

/// One path segment with its `%XX` escapes decoded (a `%` starting no escape is kept).
fn decoded(segment: &str) -> Result<String> {
    let mut bytes = Vec::with_capacity(segment.len());
    let mut rest = segment.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%'
            && let [hi, lo, after @ ..] = tail
            && let (Some(hi), Some(lo)) = (hex(*hi), hex(*lo))
        {
            bytes.push((hi << 4) | lo);
            rest = after;
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    let decoded = String::from_utf8(bytes)
        .map_err(|_| Error::invalid_param("The push rule path is not UTF-8 once decoded"))?;
    if decoded.contains('\0') {
        return Err(Error::invalid_param("The path contains a NUL character"));
    }
    Ok(decoded)
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// What a PUT or DELETE changes: the whole rule or one attribute.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attr {
    Rule,
    Enabled,
    Actions,
}

/// The rule a PUT or DELETE path names: `global/{kind}/{ruleId}[/{attr}]`.
struct Target {
    kind: Kind,
    rule_id: String,
    attr: Attr,
}

impl Target {
    /// Reads the path as Synapse does: the scope must be `global`, the rule id non-empty,
    /// and an empty attribute (a trailing slash) names the rule itself.
    fn parse(segments: Vec<String>) -> Result<Self> {
        let mut segments = segments.into_iter();
        match segments.next().as_deref() {
            Some("global") => {}
            None | Some("") => return Err(unrecognized("A push rule path needs a scope")),
            Some(scope) => {
                return Err(unrecognized(format!(
                    "Unknown push rule scope {scope:?}: only global is supported"
                )));
            }
        }
        let kind = segments
            .next()
            .ok_or_else(|| unrecognized("A push rule path needs a kind"))?;
        let kind = Kind::parse(&kind)?;
        let rule_id = segments
            .next()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| unrecognized("A push rule path needs a rule ID"))?;
        let attr = match segments.next().as_deref() {
            None | Some("") => Attr::Rule,
            Some("enabled") => Attr::Enabled,
            Some("actions") => Attr::Actions,
            Some(attr) => {
                return Err(unrecognized(format!(
                    "Push rules have no attribute {attr:?} to change"
                )));
            }
        };
        if segments.next().is_some() {
            return Err(unrecognized("The push rule path is too long"));
        }
        Ok(Self {
            kind,
            rule_id,
            attr,
        })
    }

    fn not_found(&self) -> Error {
        no_rule(self.kind, &self.rule_id)
    }
}

/// A room or sender rule with any rule id (ruma's `SimplePushRule` wants a room or user ID).
#[derive(Clone, Deserialize, Serialize)]
struct SimpleRule {
    actions: Vec<Action>,
    default: bool,
    enabled: bool,
    rule_id: String,
}

impl SimpleRule {
    /// A new user rule, enabled.
    fn new(rule_id: String, actions: Vec<Action>) -> Self {
        Self {
            actions,
            default: false,
            enabled: true,
            rule_id,
        }
    }

    fn of<T: AsRef<str>>(rule: &SimplePushRule<T>) -> Self {
        Self {
            actions: rule.actions.clone(),
            default: rule.default,
            enabled: rule.enabled,
            rule_id: rule.rule_id.as_ref().to_owned(),
        }
    }

    fn typed<T>(&self, rule_id: T) -> SimplePushRule<T> {
        SimplePushRuleInit {
            actions: self.actions.clone(),
            default: self.default,
            enabled: self.enabled,
            rule_id,
        }
        .into()
    }
}

/// The content of [`SIMPLE_RULES_TYPE`].
#[derive(Default, Deserialize, Serialize)]
struct SimpleLists {
    #[serde(default)]
    room: Vec<SimpleRule>,
    #[serde(default)]
    sender: Vec<SimpleRule>,
}

fn is_room_id(id: &str) -> bool {
    RoomId::parse(id).is_ok()
}

fn is_user_id(id: &str) -> bool {
    UserId::parse(id).is_ok()
}

/// The room or sender rules in their stored order: rules with IDs ruma holds come from the
/// `Ruleset` (ones the list lacks go first, ones it lost are gone), the others from the list.
fn merged(
    held: Vec<SimpleRule>,
    listed: Vec<SimpleRule>,
    is_held: fn(&str) -> bool,
) -> Vec<SimpleRule> {
    let mut merged: Vec<SimpleRule> = held
        .iter()
        .filter(|h| !listed.iter().any(|l| l.rule_id == h.rule_id))
        .cloned()
        .collect();
    for rule in listed {
        let rule = if is_held(&rule.rule_id) {
            held.iter().find(|h| h.rule_id == rule.rule_id).cloned()
        } else {
            Some(rule)
        };
        if let Some(rule) = rule
            && !merged.iter().any(|m| m.rule_id == rule.rule_id)
        {
            merged.push(rule);
        }
    }
    merged
}

/// Adds or replaces `rule` as ruma's `Ruleset::insert` does: a replaced rule keeps its place
/// and enabled state unless `after`/`before` move it; a new one comes first.
fn place(
    list: &mut Vec<SimpleRule>,
    mut rule: SimpleRule,
    after: Option<&str>,
    before: Option<&str>,
) -> Result<(), InsertPushRuleError> {
    if after.is_some_and(|id| id.starts_with('.')) || before.is_some_and(|id| id.starts_with('.')) {
        return Err(InsertPushRuleError::RelativeToServerDefaultRule);
    }
    let mut rest = list.clone();
    let mut to = 0;
    if let Some(at) = rest.iter().position(|r| r.rule_id == rule.rule_id) {
        rule.enabled = rest.remove(at).enabled;
        to = at;
    }
    let index_of = |id: &str| {
        rest.iter()
            .position(|r| r.rule_id == id)
            .ok_or(InsertPushRuleError::UnknownRuleId)
    };
    if let Some(after) = after {
        to = index_of(after)? + 1;
    }
    if let Some(before) = before {
        let at = index_of(before)?;
        if after.is_some() && at < to {
            return Err(InsertPushRuleError::BeforeHigherThanAfter);
        }
        to = at;
    }
    rest.insert(to, rule);
    *list = rest;
    Ok(())
}

/// A user's rules as the endpoints see them: ruma's `Ruleset` for override, content and
/// underride rules, and every room and sender rule in order (see the module documentation).
struct Rules {
    ruleset: Ruleset,
    room: Vec<SimpleRule>,
    sender: Vec<SimpleRule>,
    /// [`SIMPLE_RULES_TYPE`] as stored, so that an unchanged one is not rewritten.
    stored: Option<String>,
}

impl Rules {
    async fn load(services: &Services, user_id: &UserId) -> Result<Self> {
        let ruleset = services.push_rules(user_id).await?;
        let stored = services
            .store
            .account_data(user_id.as_str(), "", SIMPLE_RULES_TYPE)
            .await?;
        let lists: SimpleLists = stored
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        let room = merged(
            ruleset.room.iter().map(SimpleRule::of).collect(),
            lists.room,
            is_room_id,
        );
        let sender = merged(
            ruleset.sender.iter().map(SimpleRule::of).collect(),
            lists.sender,
            is_user_id,
        );
        Ok(Self {
            ruleset,
            room,
            sender,
            stored,
        })
    }

    /// Stores the rules: the lists when needed, then `m.push_rules` (which wakes syncs).
    async fn save(self, services: &Services, user_id: &UserId) -> Result<()> {
        let Self {
            mut ruleset,
            room,
            sender,
            stored,
        } = self;
        let mut other_ids = false;
        ruleset.room.clear();
        for rule in &room {
            match RoomId::parse(&rule.rule_id) {
                Ok(room_id) => {
                    ruleset.room.insert(rule.typed(room_id));
                }
                Err(_) => other_ids = true,
            }
        }
        ruleset.sender.clear();
        for rule in &sender {
            match UserId::parse(&rule.rule_id) {
                Ok(sender_id) => {
                    ruleset.sender.insert(rule.typed(sender_id));
                }
                Err(_) => other_ids = true,
            }
        }
        if other_ids || stored.is_some() {
            let lists = serde_json::to_string(&SimpleLists { room, sender }).map_err(internal)?;
            if stored.as_deref() != Some(lists.as_str()) {
                services
                    .store
                    .set_account_data(user_id.as_str(), "", SIMPLE_RULES_TYPE, &lists)
                    .await?;
            }
        }
        services.set_push_rules(user_id, &ruleset).await
    }

    /// The global ruleset as clients see it, every kind listed (empty ones too, as Synapse).
    fn global(&self) -> Result<Value> {
        let mut global = serde_json::to_value(&self.ruleset).map_err(internal)?;
        let kinds = global.as_object_mut().ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("push rules did not serialize as an object"))
        })?;
        kinds.insert(
            "room".to_owned(),
            serde_json::to_value(&self.room).map_err(internal)?,
        );
        kinds.insert(
            "sender".to_owned(),
            serde_json::to_value(&self.sender).map_err(internal)?,
        );
        for kind in KINDS {
            kinds
                .entry(kind)
                .or_insert_with(|| Value::Array(Vec::new()));
        }
        Ok(global)
    }

    /// The room or sender list `target` names (404 for other kinds: callers ask ruma first).
    fn list_mut(&mut self, target: &Target) -> Result<&mut Vec<SimpleRule>> {
        match target.kind {
            Kind::Room => Ok(&mut self.room),
            Kind::Sender => Ok(&mut self.sender),
            _ => Err(target.not_found()),
        }
    }

    /// The room or sender rule `target` names.
    fn simple_rule(&mut self, target: &Target) -> Result<&mut SimpleRule> {
        self.list_mut(target)?
            .iter_mut()
            .find(|r| r.rule_id == target.rule_id)
            .ok_or_else(|| target.not_found())
    }
}

/// What a GET path names, read as Synapse reads it: a trailing slash lists a scope or kind
/// (none is 400), and a rule's attribute may be any of its fields.
fn select(global: Value, segments: &[String]) -> Result<Value> {
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let rest = match segments.as_slice() {
        [""] => return Ok(json!({ "global": global })),
        ["global", rest @ ..] => rest,
        [scope, ..] => {
            return Err(unrecognized(format!(
                "Unknown push rule scope {scope:?}: only global is supported"
            )));
        }
        [] => return Err(trailing_slash()),
    };
    let (kind, rest) = match rest {
        [] => return Err(trailing_slash()),
        [""] => return Ok(global),
        [kind, rest @ ..] => (Kind::parse(kind)?, rest),
    };
    let list = global
        .get(kind.as_str())
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (rule_id, rest) = match rest {
        [] => return Err(trailing_slash()),
        [""] => return Ok(Value::Array(list)),
        [rule_id, rest @ ..] => (*rule_id, rest),
    };
    let rule = list
        .into_iter()
        .find(|r| r.get("rule_id").and_then(Value::as_str) == Some(rule_id))
        .ok_or_else(|| no_rule(kind, rule_id))?;
    match rest {
        [] => Ok(rule),
        [attr] => {
            let value = rule
                .get(*attr)
                .cloned()
                .ok_or_else(|| unrecognized(format!("Push rules have no attribute {attr:?}")))?;
            let mut one = serde_json::Map::new();
            one.insert((*attr).to_owned(), value);
            Ok(Value::Object(one))
        }
        _ => Err(unrecognized("The push rule path is too long")),
    }
}

/// A ruma type from request JSON, through its text (ruma's deserializers read raw JSON).
fn ruma_from<T: serde::de::DeserializeOwned>(value: &Value, what: &str) -> Result<T> {
    serde_json::from_str(&value.to_string())
        .map_err(|e| Error::bad_json(format!("Invalid {what}: {e}")))
}

/// A rule's `actions`, checked as Synapse checks them: `notify`, the legacy `dont_notify` and
/// `coalesce` (kept, and ignored when pushing), or a `set_tweak` object.
fn actions_of(content: &Value) -> Result<Vec<Action>> {
    let actions = content
        .get("actions")
        .ok_or_else(|| Error::missing_param("Push rules need `actions`"))?;
    let list = actions
        .as_array()
        .ok_or_else(|| Error::bad_json("`actions` must be a list"))?;
    for action in list {
        let known = match action {
            Value::String(name) => matches!(name.as_str(), "notify" | "dont_notify" | "coalesce"),
            Value::Object(fields) => fields.contains_key("set_tweak"),
            _ => false,
        };
        if !known {
            return Err(Error::bad_json(format!("Unrecognised action {action}")));
        }
    }
    ruma_from(actions, "actions")
}

/// An override or underride rule from its body: `conditions`, each with a `kind`.
fn conditional(rule_id: String, content: &Value) -> Result<NewConditionalPushRule> {
    let conditions = content
        .get("conditions")
        .ok_or_else(|| Error::missing_param("Override and underride rules need `conditions`"))?;
    let list = conditions
        .as_array()
        .ok_or_else(|| Error::bad_json("`conditions` must be a list"))?;
    if list
        .iter()
        .any(|c| c.get("kind").and_then(Value::as_str).is_none())
    {
        return Err(Error::bad_json("Every condition needs a `kind`"));
    }
    let conditions: Vec<PushCondition> = ruma_from(conditions, "conditions")?;
    Ok(NewConditionalPushRule::new(
        rule_id,
        conditions,
        actions_of(content)?,
    ))
}

/// A content rule from its body: a `pattern`.
fn patterned(rule_id: String, content: &Value) -> Result<NewPatternedPushRule> {
    let pattern = content
        .get("pattern")
        .ok_or_else(|| Error::missing_param("Content rules need a `pattern`"))?
        .as_str()
        .ok_or_else(|| Error::bad_json("`pattern` must be a string"))?;
    Ok(NewPatternedPushRule::new(
        rule_id,
        pattern.to_owned(),
        actions_of(content)?,
    ))
}

/// # `GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/{attr}` (each part optional)
async fn get_rules(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    uri: Uri,
) -> Result<Json<Value>> {
    let segments = segments(&uri)?;
    let rules = Rules::load(&services, &session.user_id).await?;
    select(rules.global()?, &segments).map(Json)
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}[/enabled|/actions]`
async fn put_rule(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    request: Request,
) -> Result<Json<Value>> {
    let (parts, body) = request.into_parts();
    let target = Target::parse(segments(&parts.uri)?)?;
    if target.rule_id.contains(['/', '\\']) {
        return Err(Error::invalid_param(
            "Push rule IDs may not contain slashes",
        ));
    }
    let content: Value = json_body(&parts, body, services.config.max_request_bytes).await?;
    let user_id = &session.user_id;
    let attr = target.attr;
    match attr {
        Attr::Rule => {
            let query = query_params(parts.uri.query());
            // An empty `before` or `after` is none, as Synapse reads it.
            let after = query.get("after").filter(|a| !a.is_empty());
            let before = query.get("before").filter(|b| !b.is_empty());
            let (after, before) = (after.map(String::as_str), before.map(String::as_str));
            set_rule(&services, user_id, target, &content, after, before).await?;
        }
        Attr::Enabled => set_enabled(&services, user_id, &target, &content).await?,
        Attr::Actions => set_actions(&services, user_id, &target, &content).await?,
    }
    Ok(Json(json!({})))
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn set_rule(
    services: &Services,
    user_id: &UserId,
    target: Target,
    content: &Value,
    after: Option<&str>,
    before: Option<&str>,
) -> Result<()> {
    if target.rule_id.starts_with('.') {
        return Err(Error::invalid_param(
            "Rule IDs starting with '.' are reserved for server-default rules",
        ));
    }
    let mut rules = Rules::load(services, user_id).await?;
    let rule_id = target.rule_id;
    let placed = match target.kind {
        Kind::Override => rules.ruleset.insert(
            NewPushRule::Override(conditional(rule_id, content)?),
            after,
            before,
        ),
        Kind::Underride => rules.ruleset.insert(
            NewPushRule::Underride(conditional(rule_id, content)?),
            after,
            before,
        ),
        Kind::Content => rules.ruleset.insert(
            NewPushRule::Content(patterned(rule_id, content)?),
            after,
            before,
        ),
        Kind::Room => place(
            &mut rules.room,
            SimpleRule::new(rule_id, actions_of(content)?),
            after,
            before,
        ),
        Kind::Sender => place(
            &mut rules.sender,
            SimpleRule::new(rule_id, actions_of(content)?),
            after,
            before,
        ),
    };
    placed.map_err(|e| Error::invalid_param(format!("Push rule not placed: {e}")))?;
    rules.save(services, user_id).await
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
///
/// `{"enabled": bool}`, or a bare boolean as Synapse also takes.
async fn set_enabled(
    services: &Services,
    user_id: &UserId,
    target: &Target,
    content: &Value,
) -> Result<()> {
    let enabled = content
        .get("enabled")
        .unwrap_or(content)
        .as_bool()
        .ok_or_else(|| Error::bad_json("`enabled` must be a boolean"))?;
    let mut rules = Rules::load(services, user_id).await?;
    match target.kind.ruma() {
        Some(kind) => rules
            .ruleset
            .set_enabled(kind, &target.rule_id, enabled)
            .map_err(|_| target.not_found())?,
        None => rules.simple_rule(target)?.enabled = enabled,
    }
    rules.save(services, user_id).await
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
async fn set_actions(
    services: &Services,
    user_id: &UserId,
    target: &Target,
    content: &Value,
) -> Result<()> {
    if !content.is_object() {
        return Err(Error::bad_json("The body must be an object with `actions`"));
    }
    let actions = actions_of(content)?;
    let mut rules = Rules::load(services, user_id).await?;
    match target.kind.ruma() {
        Some(kind) => rules
            .ruleset
            .set_actions(kind, &target.rule_id, actions)
            .map_err(|_| target.not_found())?,
        None => rules.simple_rule(target)?.actions = actions,
    }
    rules.save(services, user_id).await
}

/// # `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn delete_rule(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    uri: Uri,
) -> Result<Json<Value>> {
    let target = Target::parse(segments(&uri)?)?;
    if target.attr != Attr::Rule {
        return Err(unrecognized("Only whole push rules can be deleted"));
    }
    let mut rules = Rules::load(&services, &session.user_id).await?;
    match target.kind.ruma() {
        Some(kind) => rules
            .ruleset
            .remove(kind, &target.rule_id)
            .map_err(|e| match e {
                RemovePushRuleError::ServerDefault => {
                    Error::forbidden("Server-default push rules cannot be deleted; disable them")
                }
                _ => target.not_found(),
            })?,
        None => {
            let list = rules.list_mut(&target)?;
            let at = list
                .iter()
                .position(|r| r.rule_id == target.rule_id)
                .ok_or_else(|| target.not_found())?;
            list.remove(at);
        }
    }
    rules.save(&services, &session.user_id).await?;
    Ok(Json(json!({})))
}
