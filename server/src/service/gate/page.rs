//! The gate page's public calls, for visitors not signed in yet: a room's gate and roles
//! described (with the names and symbols its tokens give themselves on chain, and the ENS
//! names of the addresses it names), and the dry run for a connected wallet's address.

use std::collections::BTreeMap;

use matrixon_chain::{
    gate::{Rule, Scope, judge_together, parse_address, token_names},
    siwe::Address,
};
use ruma::{OwnedRoomId, RoomId, RoomOrAliasId};
use serde_json::{Value, json};

use super::{Gate, ROLES_EVENT_TYPE, unavailable};
use crate::{
    http::error::{Error, Result},
    service::{Limit, Services},
};

/// Most addresses of a rule looked up for ENS names (allowlists may hold thousands).
const MAX_NAMED: usize = 20;

impl Services {
    /// The room a visitor names (id or alias), if it may be previewed by anyone: its join
    /// rule lets anyone join or knock, or its history is world-readable (404 otherwise).
    async fn visited_room(&self, room: &RoomOrAliasId) -> Result<(OwnedRoomId, Value)> {
        let room_id = match <&RoomId>::try_from(room) {
            Ok(id) => id.to_owned(),
            Err(alias) => self
                .resolve_alias(alias)
                .await?
                .ok_or_else(|| Error::not_found(format!("No room {alias}")))?,
        };
        let (summary, _) = self.room_summary(&room_id, None).await?;
        let summary = serde_json::to_value(summary).map_err(anyhow::Error::new)?;
        Ok((room_id, summary))
    }

    /// A room's gate and roles for the gate page: the room's summary, the rules as set, the
    /// names of their tokens and the ENS names of their addresses, and where to open the room.
    pub async fn gate_description(&self, room: &RoomOrAliasId, ip: &str) -> Result<Value> {
        let key = format!("ip:{ip}");
        self.rate_limit(Limit::LookupsPerUser, &key)?;
        let (room_id, summary) = self.visited_room(room).await?;
        let gate = self.room_gate(&room_id).await?;
        let gate_content = self
            .state_content(&room_id, super::GATE_EVENT_TYPE, "")
            .await?;
        let roles = self.room_roles(&room_id).await.map_err(|_| unavailable())?;
        let roles_content = self.state_content(&room_id, ROLES_EVENT_TYPE, "").await?;
        let mut rules: Vec<&Rule> = gate.iter().map(|g| &g.rule).collect();
        if let Some((roles, _)) = &roles {
            rules.extend(roles.roles.iter().map(|r| &r.gate.rule));
        }
        let mut contracts: Vec<(u64, Address)> = rules.iter().flat_map(|r| r.contracts()).collect();
        contracts.sort();
        contracts.dedup();
        self.charge_reads_of(&key, 3 * contracts.len())?;
        let names = token_names(&self.chains, &contracts, self.config.gate.batch_size)
            .await
            .map_err(|e| {
                tracing::warn!(%room_id, error = %e, "gate page: token names cannot be read");
                unavailable()
            })?;
        let tokens: BTreeMap<String, Value> = names
            .into_iter()
            .map(|((chain, address), names)| {
                (
                    format!("eip155:{chain}:{}", address.to_checksum(None)),
                    json!(names),
                )
            })
            .collect();
        let mut named: Vec<Address> = Vec::new();
        for rule in &rules {
            rule.walk(&mut |leaf| match leaf {
                Rule::Paid(paid) => named.push(paid.recipient.0),
                Rule::Allowlist(list) => named.extend(list.iter().map(|a| a.0)),
                _ => {}
            });
        }
        named.sort();
        named.dedup();
        named.truncate(MAX_NAMED);
        let mut ens = BTreeMap::new();
        for address in named {
            // ENS may not be configured here, or the chain may be down: then no names.
            if let Ok(Some(name)) = self.ens_primary_name(&format!("{address:#x}")).await {
                ens.insert(address.to_checksum(None), name);
            }
        }
        let chains: BTreeMap<String, String> = self
            .chains
            .iter()
            .map(|c| (c.caip2.clone(), c.name.clone()))
            .collect();
        let target = summary["canonical_alias"]
            .as_str()
            .unwrap_or(room_id.as_str())
            .to_owned();
        Ok(json!({
            "room_id": room_id,
            "summary": summary,
            "gate": gate_content.filter(|_| gate.is_some()),
            "roles": roles_content.filter(|_| roles.is_some()),
            "tokens": tokens,
            "ens_names": ens,
            "chains": chains,
            "open_url": self.config.gate.client_url.replace("{room}", &target),
        }))
    }

    /// The dry run for a visitor's wallet: the room's gate, and the level its roles would
    /// give, for one address. Charged to the visitor's address (IP) like a signed-in dry run.
    pub async fn gate_visitor_check(
        &self,
        room: &RoomOrAliasId,
        address: &str,
        ip: &str,
    ) -> Result<Value> {
        let key = format!("ip:{ip}");
        self.rate_limit(Limit::LookupsPerUser, &key)?;
        let (room_id, _) = self.visited_room(room).await?;
        let address: Address = parse_address(address).map_err(Error::invalid_param)?;
        let subject = [(address, Scope::Own)];
        let gate = self.room_gate(&room_id).await?;
        let roles = self.room_roles(&room_id).await.map_err(|_| unavailable())?;
        let mut judged: Vec<&Gate> = gate.iter().collect();
        if let Some((roles, _)) = &roles {
            judged.extend(roles.roles.iter().map(|r| &r.gate));
        }
        let reads: usize = judged.iter().map(|g| g.rule.reads_per_address()).sum();
        self.charge_reads_of(&key, reads)?;
        let mut verdicts = Vec::with_capacity(judged.len());
        for gate in &judged {
            let mut verdict = self.gate_verdicts(gate, &subject).await.map_err(|e| {
                tracing::warn!(%room_id, error = %e, "gate page: the chain could not be asked");
                unavailable()
            })?;
            judge_together(&gate.rule, &mut verdict);
            verdicts.push(verdict.pop());
        }
        let mut verdicts = verdicts.into_iter();
        let gate_verdict = if gate.is_some() {
            verdicts.next().flatten()
        } else {
            None
        };
        let roles: Vec<Value> = roles
            .iter()
            .flat_map(|(r, _)| r.roles.iter())
            .zip(verdicts)
            .map(|(role, verdict)| json!({"power_level": role.power_level, "verdict": verdict}))
            .collect();
        Ok(json!({
            "room_id": room_id,
            "pass": gate_verdict.as_ref().is_none_or(|v| v.pass),
            "gate": gate_verdict,
            "roles": roles,
        }))
    }
}
