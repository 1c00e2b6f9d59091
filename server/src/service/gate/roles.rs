//! Roles from holdings: `io.matrixon.room.roles` maps rules (the gate's language) to power
//! levels, and a server-controlled member of the room — its roles bot — keeps the room's
//! `m.room.power_levels` in line with what each local member holds: when they join, at every
//! re-check, and when a transfer involves them. Levels outside the roles' range (set by hand
//! above it, or an administrator's) are never touched.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Mutex, PoisonError},
};

use matrixon_chain::{
    gate::{AddressVerdict, Scope, judge_together},
    siwe::Address,
};
use ruma::{OwnedUserId, RoomId, ServerName, UserId};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;

use super::{
    Gate, OnFail, check_interval, default_interval, join_path,
    sweep::{SweepOutcome, lapse},
};
use crate::{
    http::error::{Error, Result},
    service::{
        Services,
        rooms::{EventDraft, MembershipChange, STATE_CHANGED, level},
    },
    store::{AccountKind, ProfileField},
};

/// The state event type (state key `""`) that holds a room's roles.
pub const ROLES_EVENT_TYPE: &str = "io.matrixon.room.roles";
/// Most roles in one room: each is a rule evaluated for every member.
const MAX_ROLES: usize = 16;
/// Power levels are integers canonical JSON carries exactly.
const MAX_LEVEL: i64 = (1 << 53) - 1;
/// The display name of every room's roles bot.
const BOT_NAME: &str = "Roles";

/// One role: members whose wallets meet the rule get the level.
#[derive(Clone, Debug)]
pub struct Role {
    /// The rule, as a gate (its verdicts are cached like a gate's).
    pub gate: Gate,
    /// The level its holders get.
    pub power_level: i64,
}

/// A room's roles, in order: a member gets the level of the first role they meet, the room's
/// `users_default` when they meet none.
#[derive(Clone, Debug)]
pub struct Roles {
    /// The roles, first match wins.
    pub roles: Vec<Role>,
    /// Seconds between re-checks of every member.
    pub recheck_interval_s: u64,
}

impl Roles {
    /// The levels the roles manage: from the lowest role's (or `users_default`, when lower)
    /// to the highest role's (or `users_default`, when higher).
    fn range(&self, users_default: i64) -> (i64, i64) {
        let levels = self.roles.iter().map(|r| r.power_level);
        let low = levels.clone().min().unwrap_or(users_default);
        let high = levels.max().unwrap_or(users_default);
        (low.min(users_default), high.max(users_default))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesContent {
    roles: Vec<RoleContent>,
    #[serde(default = "default_interval")]
    recheck_interval_s: u64,
    #[serde(default)]
    include_delegations: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleContent {
    rule: Value,
    power_level: i64,
}

/// Local members who joined a room since the roles were last applied to them; the re-check
/// job applies them at its next tick instead of making the join wait for the chain.
#[derive(Debug, Default)]
pub struct RoleJoins(Mutex<BTreeSet<(String, String)>>);

impl RoleJoins {
    /// Remembers a local user's join.
    pub fn note(&self, room_id: &str, user_id: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((room_id.to_owned(), user_id.to_owned()));
    }

    fn take(&self) -> BTreeSet<(String, String)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The server-controlled user that applies a room's roles, one per room so that its power
/// reaches no other room: `@_matrixon_roles_<first 16 hex digits of SHA-256(room id)>`.
pub fn roles_bot(room_id: &RoomId, server_name: &ServerName) -> Result<OwnedUserId> {
    let digest = sha2::Sha256::digest(room_id.as_str().as_bytes());
    let localpart = format!("_matrixon_roles_{}", hex::encode(&digest[..8]));
    UserId::parse_with_server_name(localpart, server_name)
        .map_err(|e| Error::Internal(anyhow::Error::new(e)))
}

/// The level a room's power levels ask for sending the state event `kind`.
fn state_level(levels: &Value, kind: &str) -> i64 {
    level(levels.get("events").and_then(|e| e.get(kind)))
        .or(level(levels.get("state_default")))
        .unwrap_or(50)
}

/// Where a member stands while the roles are tried in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// No role decided yet.
    Open,
    /// This level: a role they meet, or the default after meeting none.
    Level(i64),
    /// A role could not be read before one was met: left as they are.
    Unknown,
}

impl Services {
    /// Parses roles content as sent; `None` for `{}` (the roles removed). Errors are
    /// `M_BAD_JSON` naming the path of the fault.
    pub fn parse_roles(&self, content: &Value) -> Result<Option<Roles>> {
        if content.as_object().is_some_and(serde_json::Map::is_empty) {
            return Ok(None);
        }
        let bad = |path: &str, message: &str| {
            Error::bad_json(format!("Invalid {ROLES_EVENT_TYPE} at {path}: {message}"))
        };
        let parsed: RolesContent = serde_path_to_error::deserialize(content)
            .map_err(|e| bad(&e.path().to_string(), &e.inner().to_string()))?;
        if parsed.roles.is_empty() || parsed.roles.len() > MAX_ROLES {
            return Err(bad(
                "roles",
                &format!("list between 1 and {MAX_ROLES} roles, or send {{}} to remove them"),
            ));
        }
        check_interval(parsed.recheck_interval_s).map_err(|m| bad("recheck_interval_s", &m))?;
        let mut roles = Vec::with_capacity(parsed.roles.len());
        for (i, role) in parsed.roles.into_iter().enumerate() {
            let (rule, key) = self.compile_rule(&role.rule).map_err(|(path, message)| {
                bad(&join_path(&format!("roles[{i}].rule"), &path), &message)
            })?;
            if !(-MAX_LEVEL..=MAX_LEVEL).contains(&role.power_level) {
                return Err(bad(
                    &format!("roles[{i}].power_level"),
                    "a power level is an integer of at most 2^53 - 1",
                ));
            }
            roles.push(Role {
                gate: Gate {
                    rule,
                    recheck_interval_s: parsed.recheck_interval_s,
                    on_fail: OnFail::None,
                    include_delegations: parsed.include_delegations,
                    grace_s: 0,
                    key,
                },
                power_level: role.power_level,
            });
        }
        Ok(Some(Roles {
            roles,
            recheck_interval_s: parsed.recheck_interval_s,
        }))
    }

    /// The room's current roles and who set them. Roles this server can no longer evaluate
    /// (a chain left the configuration) are an error: nobody's level is changed on them.
    pub async fn room_roles(&self, room_id: &RoomId) -> Result<Option<(Roles, OwnedUserId)>> {
        let Some(stored) = self
            .store
            .current_state_event(room_id.as_str(), ROLES_EVENT_TYPE, "")
            .await?
        else {
            return Ok(None);
        };
        let pdu = crate::service::rooms::Pdu::from_stored(&stored).map_err(Error::Internal)?;
        Ok(self
            .parse_roles(&Value::Object(pdu.content_object()))?
            .map(|roles| (roles, pdu.sender)))
    }

    /// Refuses roles content before it becomes an event: the sender needs the power to
    /// change the power levels, and no role may reach that level (roles never make room
    /// administrators, who could rewrite the roles).
    pub(crate) async fn validate_roles_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        state_key: Option<&str>,
        content: &Value,
    ) -> Result<()> {
        if state_key != Some("") {
            return Err(Error::bad_json(format!(
                "{ROLES_EVENT_TYPE} is a state event with the state key \"\""
            )));
        }
        let roles = self.parse_roles(content)?;
        let (own, levels) = self.power_level(room_id, sender).await?;
        let admin = state_level(&levels, "m.room.power_levels");
        if own < admin {
            return Err(Error::forbidden(format!(
                "Setting {ROLES_EVENT_TYPE} needs the power to change m.room.power_levels \
                 ({admin})"
            )));
        }
        for (i, role) in roles.iter().flat_map(|r| r.roles.iter()).enumerate() {
            if role.power_level >= admin {
                return Err(Error::bad_json(format!(
                    "Invalid {ROLES_EVENT_TYPE} at roles[{i}].power_level: must be below \
                     {admin}, the level that changes m.room.power_levels (roles do not make \
                     room administrators)"
                )));
            }
        }
        Ok(())
    }

    /// After a roles event: schedule the room so every member's level is applied now.
    pub(crate) async fn roles_event_appended(
        &self,
        room_id: &RoomId,
        content: &Value,
    ) -> Result<()> {
        if content.as_object().is_some_and(serde_json::Map::is_empty) {
            self.store.remove_role_room(room_id.as_str()).await?;
        } else {
            self.store
                .set_role_room(room_id.as_str(), &content.to_string(), self.now_ms())
                .await?;
        }
        Ok(())
    }

    /// Applies the roles of the rooms local users joined since the last tick, to them.
    pub async fn apply_roles_to_joins(&self) -> Result<()> {
        for (room, user) in self.role_joins.take() {
            let (Ok(room_id), Ok(user_id)) = (RoomId::parse(&room), UserId::parse(&user)) else {
                continue;
            };
            // Roles that cannot be read here are applied by the next re-check, if ever.
            let Ok(Some((roles, setter))) = self.room_roles(&room_id).await else {
                continue;
            };
            if let Err(e) = self
                .sync_roles(&room_id, &roles, &setter, Some(user_id))
                .await
            {
                tracing::warn!(%room_id, %user, error = %e, "applying roles to a new member");
            }
        }
        Ok(())
    }

    /// Brings local members' levels in line with the roles (`only`: just that member): one
    /// `m.room.power_levels` event, sent by the room's roles bot, for every change. Members
    /// outside the roles' range, room administrators, and members a role could not be read
    /// for are left as they are; when the chain cannot be asked nobody's level changes.
    pub async fn sync_roles(
        &self,
        room_id: &RoomId,
        roles: &Roles,
        setter: &UserId,
        only: Option<OwnedUserId>,
    ) -> Result<SweepOutcome> {
        let Some(bot) = self.ensure_roles_bot(room_id, setter).await? else {
            return Ok(SweepOutcome::Done);
        };
        let (bot_level, levels) = self.power_level(room_id, &bot).await?;
        let users_default = level(levels.get("users_default")).unwrap_or(0);
        let admin = state_level(&levels, "m.room.power_levels");
        // Checked again now, whoever sent the roles and whatever the power levels became
        // since: a role that would make administrators is not applied.
        let usable = Roles {
            roles: roles
                .roles
                .iter()
                .filter(|r| r.power_level < admin.min(bot_level))
                .cloned()
                .collect(),
            recheck_interval_s: roles.recheck_interval_s,
        };
        if usable.roles.len() < roles.roles.len() {
            tracing::warn!(%room_id, admin, "roles at or above the level that changes power levels are not applied");
        }
        let roles = &usable;
        if roles.roles.is_empty() {
            return Ok(SweepOutcome::Done);
        }
        let (low, high) = roles.range(users_default);
        let candidates: Vec<OwnedUserId> = match only {
            Some(user) => vec![user],
            None => self
                .store
                .room_members(room_id.as_str(), "join")
                .await?
                .iter()
                .filter_map(|m| UserId::parse(m.as_str()).ok())
                .collect(),
        };
        let mut members: Vec<(OwnedUserId, i64)> = Vec::new();
        for user in candidates {
            if user == bot
                || user.server_name() != self.config.server_name
                || self.membership(room_id, &user).await?.as_deref() != Some("join")
            {
                continue;
            }
            // Creators of version 12 rooms read as unlimited: above any range.
            let current = self.power_level(room_id, &user).await?.0;
            if (low..=high).contains(&current) && current < admin {
                members.push((user, current));
            }
        }
        if members.is_empty() {
            return Ok(SweepOutcome::Done);
        }
        let mut standing = vec![Standing::Open; members.len()];
        let mut lapses: Option<i64> = None;
        let mut blocks: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); members.len()];
        for role in &roles.roles {
            let open: Vec<usize> = (0..members.len())
                .filter(|i| standing[*i] == Standing::Open)
                .collect();
            if open.is_empty() {
                break;
            }
            let users: Vec<OwnedUserId> = open.iter().map(|i| members[*i].0.clone()).collect();
            let verdicts = match self.role_verdicts(&role.gate, &users).await {
                Ok(verdicts) => verdicts,
                Err(e) => {
                    tracing::warn!(%room_id, error = %e, "roles not applied: the chain cannot be asked");
                    let detail = json!({"error": e.to_string(), "during": "roles"});
                    self.audit(room_id, None, "unavailable", &BTreeMap::new(), &detail)
                        .await?;
                    return Ok(SweepOutcome::Unavailable);
                }
            };
            for (i, mine) in open.into_iter().zip(verdicts) {
                if let Some(first) = mine.first() {
                    blocks[i].clone_from(&first.blocks);
                }
                if mine.iter().any(|v| v.pass) {
                    standing[i] = Standing::Level(role.power_level);
                    if let Some(at) = lapse(&mine.iter().collect::<Vec<_>>()) {
                        lapses = Some(lapses.map_or(at, |l: i64| l.min(at)));
                    }
                } else if mine.iter().any(|v| v.unreadable) {
                    standing[i] = Standing::Unknown;
                }
            }
        }
        let changes: Vec<RoleChange> = members
            .into_iter()
            .zip(standing)
            .zip(blocks)
            .filter_map(|(((user, from), standing), blocks)| {
                let to = match standing {
                    Standing::Level(to) => to,
                    Standing::Open => users_default,
                    Standing::Unknown => return None,
                };
                (to != from).then_some((user, from, to, blocks))
            })
            .collect();
        self.apply_role_levels(room_id, &bot, changes).await?;
        // A role held on a payment is looked at again when the payment lapses.
        if let Some(at) = lapses {
            self.store.make_gate_room_due(room_id.as_str(), at).await?;
        }
        Ok(SweepOutcome::Done)
    }

    /// For each user, the verdicts of their addresses (own wallets and delegating vaults)
    /// under one role's rule, judged together.
    async fn role_verdicts(
        &self,
        gate: &Gate,
        users: &[OwnedUserId],
    ) -> std::result::Result<Vec<Vec<AddressVerdict>>, matrixon_chain::rpc::ChainError> {
        let holdings = self.gate_holdings(users, gate).await?;
        let mut all: Vec<(Address, Scope)> =
            holdings.iter().flat_map(|h| h.subjects.clone()).collect();
        all.sort();
        all.dedup();
        let verdicts = self.gate_verdicts(gate, &all).await?;
        let by_subject: HashMap<(Address, Scope), AddressVerdict> =
            all.into_iter().zip(verdicts).collect();
        Ok(holdings
            .iter()
            .map(|h| {
                let mut mine: Vec<AddressVerdict> = h
                    .subjects
                    .iter()
                    .filter_map(|s| by_subject.get(s).cloned())
                    .collect();
                judge_together(&gate.rule, &mut mine);
                mine
            })
            .collect())
    }

    /// Sends the level changes as one power-levels event by the roles bot, computed on the
    /// levels as they are and appended only while they still are (a member whose level
    /// someone changed since it was read is left out; an edit made meanwhile is kept).
    async fn apply_role_levels(
        &self,
        room_id: &RoomId,
        bot: &UserId,
        changes: Vec<RoleChange>,
    ) -> Result<()> {
        for _ in 0..3 {
            if changes.is_empty() {
                return Ok(());
            }
            let (current, levels) = self.current_power_levels(room_id).await?;
            let (levels, applied) = with_role_levels(levels, &changes);
            if applied.is_empty() {
                return Ok(());
            }
            let mut draft = EventDraft::state("m.room.power_levels", "", levels);
            draft.replaces = Some(current);
            match self.append(room_id, bot, draft, None).await {
                Ok(_) => {}
                Err(Error::Detailed { errcode, .. }) if errcode == STATE_CHANGED => continue,
                Err(e) => return Err(e),
            }
            for (user, from, to, blocks) in applied {
                let detail = json!({"from": from, "to": to, "by": bot});
                self.audit(room_id, Some(user), "role", blocks, &detail)
                    .await?;
            }
            return Ok(());
        }
        tracing::info!(%room_id, "the power levels kept changing: roles wait for the next re-check");
        Ok(())
    }

    /// The room's power-levels event id (`None`: none) and its content.
    async fn current_power_levels(&self, room_id: &RoomId) -> Result<(Option<String>, Value)> {
        let Some(stored) = self
            .store
            .current_state_event(room_id.as_str(), "m.room.power_levels", "")
            .await?
        else {
            return Ok((None, json!({})));
        };
        let pdu = crate::service::rooms::Pdu::from_stored(&stored).map_err(Error::Internal)?;
        Ok((Some(stored.event_id), Value::Object(pdu.content_object())))
    }

    /// The room's roles bot, joined with the level that changes power levels: created, invited
    /// (unless the room is public), joined and raised by `setter` — who set the roles — as
    /// needed. `None` (with a warning) when that cannot be done, e.g. the setter lost the power.
    async fn ensure_roles_bot(
        &self,
        room_id: &RoomId,
        setter: &UserId,
    ) -> Result<Option<OwnedUserId>> {
        let bot = roles_bot(room_id, &self.config.server_name)?;
        let unmanaged = |step: &str, e: &dyn std::fmt::Display| {
            tracing::warn!(%room_id, %bot, %setter, error = %e, step, "the room's roles cannot be applied");
        };
        // Only a member of this server, with the power the roles need now, acts for them (this
        // server signs only its own users' events).
        if setter.server_name() != self.config.server_name {
            unmanaged("setter", &"the roles were set by another server's member");
            return Ok(None);
        }
        let (setter_level, levels) = self.power_level(room_id, setter).await?;
        if setter_level < state_level(&levels, "m.room.power_levels") {
            unmanaged(
                "setter",
                &"the member who set the roles may no longer change power levels",
            );
            return Ok(None);
        }
        // The bot's account is one this server made: no password, no devices.
        if let Some(account) = self.store.user(&bot).await?
            && (account.password_hash.is_some() || !self.store.devices(&bot).await?.is_empty())
        {
            unmanaged("account", &"an account with the bot's name is someone's");
            return Ok(None);
        }
        let membership = self.membership(room_id, &bot).await?;
        if membership.as_deref() != Some("join") {
            if membership.as_deref() == Some("ban") {
                unmanaged("join", &"the roles bot is banned");
                return Ok(None);
            }
            let created = self
                .store
                .create_account(&bot, None, AccountKind::User, None, self.now_ms())
                .await?;
            if created == crate::store::CreateAccount::Created {
                self.store
                    .set_profile_field(bot.as_str(), ProfileField::Displayname, Some(BOT_NAME))
                    .await?;
            }
            let public = self
                .state_content(room_id, "m.room.join_rules", "")
                .await?
                .is_some_and(|c| c.get("join_rule").and_then(Value::as_str) == Some("public"));
            if !public
                && membership.as_deref() != Some("invite")
                && let Err(e) = self
                    .change_membership(room_id, setter, &bot, MembershipChange::Invite, None)
                    .await
            {
                unmanaged("invite", &e);
                return Ok(None);
            }
            if let Err(e) = self.join(room_id, &bot, serde_json::Map::new(), &[]).await {
                unmanaged("join", &e);
                return Ok(None);
            }
        }
        let (own, _) = self.power_level(room_id, &bot).await?;
        let (current, mut levels) = self.current_power_levels(room_id).await?;
        let admin = state_level(&levels, "m.room.power_levels");
        if own < admin {
            if !levels.get("users").is_some_and(Value::is_object) {
                levels["users"] = json!({});
            }
            levels["users"][bot.as_str()] = Value::from(admin);
            let mut draft = EventDraft::state("m.room.power_levels", "", levels);
            draft.replaces = Some(current);
            if let Err(e) = self.append(room_id, setter, draft, None).await {
                unmanaged("power", &e);
                return Ok(None);
            }
        }
        Ok(Some(bot))
    }
}

/// A member's level change: who, from, to, and the blocks the deciding verdict was read at.
type RoleChange = (OwnedUserId, i64, i64, BTreeMap<String, u64>);

/// `levels` with the changes of members still at the level they were read at, and only to
/// levels below the one that changes power levels in `levels` (they may have changed while the
/// chain was read); the changes made.
fn with_role_levels(mut levels: Value, changes: &[RoleChange]) -> (Value, Vec<&RoleChange>) {
    let users_default = level(levels.get("users_default")).unwrap_or(0);
    let admin = state_level(&levels, "m.room.power_levels");
    if !levels.get("users").is_some_and(Value::is_object) {
        levels["users"] = json!({});
    }
    let mut applied = Vec::new();
    if let Some(users) = levels.get_mut("users").and_then(Value::as_object_mut) {
        for change in changes {
            let (user, from, to, _) = change;
            if *to >= admin || level(users.get(user.as_str())).unwrap_or(users_default) != *from {
                continue;
            }
            if *to == users_default {
                users.remove(user.as_str());
            } else {
                users.insert(user.to_string(), Value::from(*to));
            }
            applied.push(change);
        }
    }
    (levels, applied)
}
