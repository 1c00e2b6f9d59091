//! Push: each new event is run through every recipient's push rules (the spec's defaults
//! unless the user changed them); notifications feed unread counts, `/notifications` and
//! HTTP pushers, which deliver to push gateways with retries and are dropped when a gateway
//! rejects them for good.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{Hash, Hasher},
    sync::{Arc, PoisonError},
    time::Duration,
};

use ruma::{
    Int, OwnedUserId, RoomId, UInt, UserId,
    power_levels::NotificationPowerLevels,
    push::{Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    room_version_rules::RoomPowerLevelsRules,
    serde::Raw,
};
use serde_json::{Value, json};

use super::{
    Services,
    push_lanes::{PushLanes, host_of},
    rooms::{EventDraft, Pdu},
};
use crate::{
    http::error::{Error, Result},
    store::{PushAction, PusherRow},
};

/// The account-data type holding a user's push rules (`{"global": Ruleset}`).
pub const PUSH_RULES_TYPE: &str = "m.push_rules";
/// Attempts per notification and pusher before giving up on it.
const DELIVERY_ATTEMPTS: u32 = 5;
/// First retry delay; doubled each time.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Time limit for one gateway request.
pub const GATEWAY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest gateway answer read.
pub const GATEWAY_MAX_BYTES: usize = 64 * 1024;
/// Most pushers one account may have.
const MAX_PUSHERS: i64 = 20;

/// A user's rules from stored account data, or the spec's defaults.
pub fn ruleset_of(user_id: &UserId, stored: Option<&str>) -> Ruleset {
    #[derive(serde::Deserialize)]
    struct Stored {
        global: Ruleset,
    }
    stored
        .and_then(|json| serde_json::from_str::<Stored>(json).ok())
        .map_or_else(
            || super::push_mentions::default_ruleset(user_id),
            |s| s.global,
        )
}

/// Most users whose parsed rules are kept; past it the cache starts again.
const RULESETS_KEPT: usize = 50_000;

/// Parsed push rules by user, with a hash of the stored JSON they came from: a send to a
/// large room runs every member's rules, and parsing stored rules (~40 µs) costs ten times
/// running them. A changed JSON hashes differently, so nothing needs invalidating.
#[derive(Default)]
pub struct RulesetCache {
    parsed: std::sync::Mutex<HashMap<OwnedUserId, (u64, Arc<Ruleset>)>>,
}

impl RulesetCache {
    /// The user's rules from their stored JSON (`None`: the spec's defaults).
    pub fn get(&self, user_id: &UserId, stored: Option<&str>) -> Arc<Ruleset> {
        let key = stored.map_or(0, |json| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            json.hash(&mut hasher);
            hasher.finish() | 1
        });
        let cached = self
            .parsed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(user_id)
            .filter(|(seen, _)| *seen == key)
            .map(|(_, ruleset)| ruleset.clone());
        if let Some(ruleset) = cached {
            return ruleset;
        }
        // Parsed without the lock held: other rooms' sends go on meanwhile.
        let ruleset = Arc::new(ruleset_of(user_id, stored));
        let mut parsed = self.parsed.lock().unwrap_or_else(PoisonError::into_inner);
        if parsed.len() >= RULESETS_KEPT {
            parsed.clear();
        }
        parsed.insert(user_id.to_owned(), (key, ruleset.clone()));
        ruleset
    }
}

fn int(v: Option<&Value>) -> Option<Int> {
    v.and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    })
    .and_then(|n| Int::try_from(n).ok())
}

impl Services {
    /// The user's push rules.
    pub async fn push_rules(&self, user_id: &UserId) -> Result<Ruleset> {
        let stored = self
            .store
            .account_data(user_id.as_str(), "", PUSH_RULES_TYPE)
            .await?;
        Ok(ruleset_of(user_id, stored.as_deref()))
    }

    /// Stores changed push rules (as account data, so clients see them in sync).
    pub async fn set_push_rules(&self, user_id: &UserId, rules: &Ruleset) -> Result<()> {
        let content = json!({ "global": rules }).to_string();
        self.store
            .set_account_data(user_id.as_str(), "", PUSH_RULES_TYPE, &content)
            .await?;
        self.bus.wake([user_id]);
        Ok(())
    }

    /// The power-level context `@room` notifications are judged with.
    async fn push_power_levels(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<PushConditionPowerLevelsCtx>> {
        let Some(room) = self.store.room(room_id.as_str()).await? else {
            return Ok(None);
        };
        let (_, rules) = super::rooms::version_rules(&room.version)?;
        let levels = self
            .state_content(room_id, "m.room.power_levels", "")
            .await?
            .unwrap_or_default();
        let users: BTreeMap<OwnedUserId, Int> = levels
            .get("users")
            .and_then(Value::as_object)
            .map(|users| {
                users
                    .iter()
                    .filter_map(|(u, l)| Some((UserId::parse(u).ok()?, int(Some(l))?)))
                    .collect()
            })
            .unwrap_or_default();
        let mut notifications = NotificationPowerLevels::new();
        if let Some(room_level) = int(levels.get("notifications").and_then(|n| n.get("room"))) {
            notifications.room = room_level;
        }
        let mut creators = Vec::new();
        if let Some(create) = self
            .store
            .current_state_event(room_id.as_str(), "m.room.create", "")
            .await?
            && let Ok(pdu) = Pdu::from_stored(&create)
        {
            creators.push(pdu.sender.clone());
            if let Some(more) = pdu
                .content_object()
                .get("additional_creators")
                .and_then(Value::as_array)
            {
                creators.extend(more.iter().filter_map(|c| UserId::parse(c.as_str()?).ok()));
            }
        }
        Ok(Some(PushConditionPowerLevelsCtx::new(
            users,
            int(levels.get("users_default")).unwrap_or_default(),
            notifications,
            RoomPowerLevelsRules::new(&rules.authorization, creators),
        )))
    }

    /// Runs an event about to be made through each recipient's push rules: the
    /// notifications to record with it. Decided from the draft (type, content, sender, state
    /// key — what rules look at), so not again each time the event is rebuilt on top of
    /// another instance's. Failures are logged: an event is never refused for them.
    pub async fn push_actions(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: &EventDraft,
    ) -> Vec<PushAction> {
        match self.push_actions_inner(room_id, sender, draft).await {
            Ok(notified) => notified,
            Err(error) => {
                tracing::warn!(%room_id, %sender, %error, "push rules not evaluated");
                Vec::new()
            }
        }
    }

    async fn push_actions_inner(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: &EventDraft,
    ) -> Result<Vec<PushAction>> {
        let kind = draft.kind.to_string();
        // An invite notifies the invitee, who is not joined yet.
        let invitee = (kind == "m.room.member"
            && draft.content.get("membership").and_then(Value::as_str) == Some("invite"))
        .then(|| draft.state_key.clone())
        .flatten();
        let recipients = self
            .store
            .push_recipients(room_id.as_str(), invitee.as_deref())
            .await?;
        let mut notified = Vec::new();
        if recipients.iter().all(|(u, ..)| u == sender.as_str()) {
            return Ok(notified);
        }
        // The invitee (when there is one) is listed too, but is not a member yet.
        let joined = recipients.iter().filter(|(.., joined)| *joined).count();
        let member_count = UInt::try_from(joined as u64).unwrap_or_default();
        let power_levels = self.push_power_levels(room_id).await?;
        let mut event = json!({
            "type": kind,
            "content": draft.content,
            "sender": sender,
            "room_id": room_id,
        });
        if let Some(state_key) = &draft.state_key {
            event["state_key"] = json!(state_key);
        }
        let raw: Raw<Value> = Raw::new(&event).map_err(|e| Error::Internal(e.into()))?;
        // Flattened once for every recipient.
        let flat = FlattenedJson::from_raw(&raw);
        let has_mentions = event["content"].get("m.mentions").is_some();
        for (user, rules, display_name, _) in recipients {
            let Ok(user_id) = UserId::parse(user.as_str()) else {
                continue;
            };
            if user_id == sender {
                continue;
            }
            let ruleset = self.rulesets.get(&user_id, rules.as_deref());
            let mut ctx = PushConditionRoomCtx::new(
                room_id.to_owned(),
                member_count,
                user_id.clone(),
                display_name.unwrap_or_else(|| user_id.localpart().to_owned()),
            );
            ctx.power_levels = power_levels.clone();
            let actions =
                super::push_mentions::actions_for(&ruleset, &flat, has_mentions, &ctx).await;
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            notified.push(PushAction {
                user_id: user,
                highlight: actions.iter().any(Action::is_highlight),
                actions: serde_json::to_string(actions).unwrap_or_else(|_| "[]".into()),
            });
        }
        Ok(notified)
    }

    /// Pushes an appended event's notifications to the recipients' gateways, after the send
    /// returns (gateways are slow). Failures are logged.
    pub async fn deliver_push(&self, pdu: &Pdu, notified: &[PushAction]) {
        if notified.is_empty() {
            return;
        }
        let notification = match self.notification_payload(pdu).await {
            Ok(notification) => notification,
            Err(error) => {
                tracing::warn!(event_id = %pdu.event_id, %error, "push notification not built");
                return;
            }
        };
        let ctx = Arc::new(PushContext {
            store: self.store.clone(),
            gateway: self.push_fetch.clone(),
            lanes: self.push_lanes.clone(),
        });
        tokio::spawn(push_to_gateways(ctx, notification, notified.to_vec()));
    }

    /// Tells the user's gateways their new unread count, with no event (a badge update, as
    /// Synapse sends when a receipt lowers it), after the request returns.
    pub async fn push_badge(&self, user_id: &UserId) {
        let ctx = Arc::new(PushContext {
            store: self.store.clone(),
            gateway: self.push_fetch.clone(),
            lanes: self.push_lanes.clone(),
        });
        let user_id = user_id.to_string();
        tokio::spawn(async move {
            let pushers = match ctx.store.pushers_of(&[user_id.as_str()]).await {
                Ok(mut pushers) => pushers.remove(&user_id).unwrap_or_default(),
                Err(error) => {
                    tracing::warn!(%error, "pushers not read");
                    return;
                }
            };
            if pushers.is_empty() {
                return;
            }
            let unread = ctx.store.total_unread(&user_id).await.unwrap_or(0);
            let badge = json!({
                "id": "", "type": null, "sender": "",
                "counts": { "unread": unread, "missed_calls": 0 },
            });
            for pusher in pushers {
                let Some(place) = ctx.lanes.enqueue() else {
                    tracing::warn!(%user_id, "push queue full: badge update dropped");
                    continue;
                };
                let (ctx, badge) = (ctx.clone(), badge.clone());
                tokio::spawn(async move {
                    deliver(&ctx, pusher, badge, "[]").await;
                    drop(place);
                });
            }
        });
    }

    /// The Push Gateway API `notification` object, without the per-recipient parts.
    async fn notification_payload(&self, pdu: &Pdu) -> Result<Value> {
        let sender_name = self
            .state_content(&pdu.room_id, "m.room.member", pdu.sender.as_str())
            .await?
            .and_then(|c| {
                c.get("displayname")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        // The room's name, else its canonical alias (as Synapse names rooms in pushes).
        let text_of = |kind: &'static str, key: &'static str| async move {
            Ok::<_, Error>(
                self.state_content(&pdu.room_id, kind, "")
                    .await?
                    .and_then(|c| c.get(key).and_then(Value::as_str).map(str::to_owned))
                    .filter(|text| !text.is_empty()),
            )
        };
        let room_name = match text_of("m.room.name", "name").await? {
            Some(name) => Some(name),
            None => text_of("m.room.canonical_alias", "alias").await?,
        };
        // `id` is the event id's legacy name, which Synapse still sends and gateways read.
        let mut notification = json!({
            "id": pdu.event_id,
            "event_id": pdu.event_id,
            "room_id": pdu.room_id,
            "type": pdu.kind.to_string(),
            "sender": pdu.sender,
            "content": Value::Object(pdu.content_object().clone()),
        });
        if let Some(name) = sender_name {
            notification["sender_display_name"] = name.into();
        }
        if let Some(name) = room_name {
            notification["room_name"] = name.into();
        }
        if pdu.kind.to_string() == "m.room.member" {
            notification["state_key"] = pdu.state_key.clone().into();
            if let Some(membership) = pdu.content_object().get("membership") {
                notification["membership"] = membership.clone();
            }
        }
        Ok(notification)
    }

    /// `POST /pushers/set` with a `kind`: validates and stores an HTTP pusher.
    pub async fn set_pusher(
        &self,
        session: &super::Session,
        body: &Value,
        append: bool,
    ) -> Result<()> {
        let user_id = &session.user_id;
        let text = |key: &str| -> Result<String> {
            body.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| Error::missing_param(format!("`{key}` is required")))
        };
        let kind = text("kind")?;
        if kind != "http" {
            return Err(Error::invalid_param(format!(
                "Only http pushers are supported, not {kind}"
            )));
        }
        let app_id = text("app_id")?;
        let pushkey = text("pushkey")?;
        if app_id.len() > 64 || pushkey.len() > 512 {
            return Err(Error::invalid_param(
                "app_id is limited to 64 bytes and pushkey to 512",
            ));
        }
        let data = body
            .get("data")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::missing_param("`data` must be an object"))?;
        let url = data
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::missing_param("An http pusher needs data.url"))?;
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::invalid_param(format!("data.url is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.path() != "/_matrix/push/v1/notify"
        {
            return Err(Error::invalid_param(
                "data.url must be an http(s) URL whose path is /_matrix/push/v1/notify",
            ));
        }
        let known = self
            .store
            .pushers(user_id.as_str())
            .await?
            .iter()
            .any(|p| p.app_id == app_id && p.pushkey == pushkey);
        if !known && self.store.pusher_count(user_id.as_str()).await? >= MAX_PUSHERS {
            return Err(Error::invalid_param(format!(
                "An account may have at most {MAX_PUSHERS} pushers; remove one first"
            )));
        }
        let pusher = PusherRow {
            user_id: user_id.to_string(),
            app_id,
            pushkey,
            kind,
            app_display_name: text("app_display_name")?,
            device_display_name: text("device_display_name")?,
            profile_tag: body
                .get("profile_tag")
                .and_then(Value::as_str)
                .map(str::to_owned),
            lang: text("lang")?,
            data: Value::Object(data.clone()).to_string(),
            created_ts: self.now_ms(),
            device_id: Some(session.device_id.to_string()),
        };
        self.store.set_pusher(&pusher, append).await?;
        Ok(())
    }
}

/// The parts of the services a delivery task holds on to.
struct PushContext {
    store: crate::store::Store,
    gateway: matrixon_chain::ens::Gateway,
    lanes: Arc<PushLanes>,
}

/// Pushes one event's notifications to the recipients' pushers: their unread badge and the
/// rule's tweaks, each pusher's delivery a task of its own that waits for its lanes (see
/// `push_lanes`), so no recipient waits behind another one's gateway.
async fn push_to_gateways(ctx: Arc<PushContext>, base: Value, notified: Vec<PushAction>) {
    let users: Vec<&str> = notified.iter().map(|a| a.user_id.as_str()).collect();
    let mut pushers = match ctx.store.pushers_of(&users).await {
        Ok(pushers) => pushers,
        Err(error) => {
            tracing::warn!(%error, "pushers not read");
            return;
        }
    };
    for action in notified {
        // Most members have no pusher (a web client, say): they cost nothing more here.
        let Some(pushers) = pushers.remove(&action.user_id) else {
            continue;
        };
        let unread = ctx.store.total_unread(&action.user_id).await.unwrap_or(0);
        let mut notification = base.clone();
        notification["prio"] = if action.highlight { "high" } else { "low" }.into();
        notification["counts"] = json!({ "unread": unread, "missed_calls": 0 });
        if let Some(target) = notification.get("state_key").cloned()
            && let Some(object) = notification.as_object_mut()
        {
            object.remove("state_key");
            object.insert(
                "user_is_target".into(),
                Value::Bool(target.as_str() == Some(action.user_id.as_str())),
            );
        }
        for pusher in pushers {
            let Some(place) = ctx.lanes.enqueue() else {
                tracing::warn!(user_id = %pusher.user_id, "push queue full: notification dropped");
                continue;
            };
            let (ctx, notification, actions) =
                (ctx.clone(), notification.clone(), action.actions.clone());
            tokio::spawn(async move {
                deliver(&ctx, pusher, notification, &actions).await;
                drop(place);
            });
        }
    }
}

/// Delivers one notification to one pusher's gateway, retrying with back-off (holding no
/// slot while it waits). A gateway that rejects the push key (or answers that the endpoint
/// is gone) gets the pusher removed; one that keeps failing is paused for everyone.
async fn deliver(ctx: &PushContext, pusher: PusherRow, mut notification: Value, actions: &str) {
    let data: Value = serde_json::from_str(&pusher.data).unwrap_or_default();
    let Some(url) = data.get("url").and_then(Value::as_str).map(str::to_owned) else {
        return;
    };
    let Some(host) = host_of(&url) else {
        return;
    };
    // Tweaks as the rules wrote them: `{"set_tweak": name, "value": …}` (highlight defaults
    // to true when it has no value).
    let tweaks: serde_json::Map<String, Value> = serde_json::from_str::<Vec<Value>>(actions)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|a| {
            let name = a.get("set_tweak")?.as_str()?.to_owned();
            let value = a.get("value").cloned().unwrap_or(Value::Bool(true));
            Some((name, value))
        })
        .collect();
    let mut device_data = data.as_object().cloned().unwrap_or_default();
    device_data.remove("url");
    if data.get("format").and_then(Value::as_str) == Some("event_id_only") {
        let keep = ["event_id", "room_id", "counts", "prio"];
        if let Some(object) = notification.as_object_mut() {
            object.retain(|k, _| keep.contains(&k.as_str()));
        }
    }
    notification["devices"] = json!([{
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.created_ts / 1000,
        "data": device_data,
        "tweaks": tweaks,
    }]);
    let body = json!({ "notification": notification });
    let mut delay = FIRST_RETRY;
    for attempt in 1..=DELIVERY_ATTEMPTS {
        let slot = match ctx.lanes.slot(&host, &pusher.user_id).await {
            Some(slot) => slot,
            None => {
                tracing::info!(%host, app_id = %pusher.app_id, "push gateway paused: notification dropped");
                return;
            }
        };
        let sent = ctx.gateway.post_json(&url, &body).await;
        drop(slot);
        // A gateway that answers (even 4xx) is alive; time-outs, refusals and 5xx are not.
        let alive = match &sent {
            Ok(_) => true,
            Err((status, _)) => status.is_some_and(|s| s < 500),
        };
        ctx.lanes.record(&host, alive);
        match sent {
            Ok(answer) => {
                let answer: Value = serde_json::from_slice(&answer).unwrap_or_default();
                let rejected = answer
                    .get("rejected")
                    .and_then(Value::as_array)
                    .is_some_and(|r| r.iter().any(|k| k.as_str() == Some(&pusher.pushkey)));
                if rejected {
                    remove(ctx, &pusher, "the gateway rejected its push key").await;
                }
                return;
            }
            Err((Some(404 | 410), _)) => {
                remove(ctx, &pusher, "the gateway endpoint is gone").await;
                return;
            }
            Err((_, why)) => {
                tracing::info!(%why, attempt, app_id = %pusher.app_id, "push gateway did not take a notification");
            }
        }
        if attempt < DELIVERY_ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    tracing::warn!(app_id = %pusher.app_id, user_id = %pusher.user_id, "push notification dropped after retries");
}

async fn remove(ctx: &PushContext, pusher: &PusherRow, why: &str) {
    tracing::info!(app_id = %pusher.app_id, user_id = %pusher.user_id, why, "removing pusher");
    if let Err(error) = ctx
        .store
        .delete_pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey)
        .await
    {
        tracing::warn!(%error, "could not remove a pusher");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_rules_are_reused_until_their_json_changes() {
        let cache = RulesetCache::default();
        let bob = ruma::owned_user_id!("@bob:localhost");
        let defaults = cache.get(&bob, None);
        assert!(Arc::ptr_eq(&defaults, &cache.get(&bob, None)));
        let mut quiet = Ruleset::server_default(&bob);
        quiet.underride.clear();
        let stored = json!({ "global": quiet }).to_string();
        let parsed = cache.get(&bob, Some(&stored));
        assert!(
            parsed.underride.is_empty(),
            "the stored rules, not the defaults"
        );
        assert!(Arc::ptr_eq(&parsed, &cache.get(&bob, Some(&stored))));
        let changed = json!({ "global": Ruleset::server_default(&bob) }).to_string();
        assert!(!cache.get(&bob, Some(&changed)).underride.is_empty());
        // Unreadable stored rules fall back to the defaults.
        assert!(!cache.get(&bob, Some("{not json")).underride.is_empty());
    }
}
