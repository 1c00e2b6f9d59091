//! Transactions: events other servers push to this one (`PUT /send/{txnId}`), and the queue
//! that pushes this server's events to the others, one transaction in flight per destination,
//! backing off (capped) from a destination that fails, and surviving restarts.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ruma::{OwnedEventId, RoomId, ServerName, UserId};
use serde_json::{Value, value::RawValue as RawJsonValue};
use tokio::sync::watch;

use super::FederationError;
use crate::{http::error::Result, service::Services};

/// Most PDUs one transaction may carry, both ways.
pub const MAX_PDUS: usize = 50;
/// Most EDUs one transaction may carry.
pub const MAX_EDUS: usize = 100;
/// Longest back-off from a failing destination.
const MAX_BACKOFF_MS: i64 = 3_600_000;
/// How often the queue is looked at without being woken (other instances' events, retries).
const POLL: Duration = Duration::from_secs(1);
/// How long another server's user is shown typing without being told again.
const REMOTE_TYPING: Duration = Duration::from_secs(30);
/// Most destinations sent to at once.
const DESTINATIONS_AT_ONCE: i64 = 32;
/// How long an instance holds a destination's queue after its last send: another instance
/// takes over once this lapses (the holder stopped).
const SENDER_LEASE_MS: i64 = 60_000;

#[derive(serde::Deserialize)]
struct RoomOf {
    room_id: Option<String>,
    sender: Option<String>,
}

impl Services {
    /// Takes the PDUs of a transaction from `origin`, each on its own: a bad one is refused
    /// with its reason and the rest still processed. `(event id, error)` per PDU.
    pub async fn receive_transaction(
        &self,
        origin: &ServerName,
        pdus: &[Box<RawJsonValue>],
    ) -> BTreeMap<OwnedEventId, Result<(), String>> {
        let mut results = BTreeMap::new();
        for raw in pdus {
            match self.receive_pdu(origin, raw).await {
                Ok((event_id, outcome)) => {
                    results.insert(event_id, outcome);
                }
                Err(why) => tracing::info!(%origin, %why, "dropped a PDU without an id"),
            }
        }
        results
    }

    /// One PDU: `Err` only when not even its id can be known.
    async fn receive_pdu(
        &self,
        origin: &ServerName,
        raw: &RawJsonValue,
    ) -> Result<(OwnedEventId, Result<(), String>), String> {
        let header: RoomOf = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        let room_id = header
            .room_id
            .as_deref()
            .and_then(|r| RoomId::parse(r).ok())
            .ok_or("the event names no room")?;
        let room = self
            .store
            .room(room_id.as_str())
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no room {room_id} here"))?;
        let event_id = super::pdu::event_id_of(&room.version, raw)?;
        if let Err(denied) = self.ensure_acl_allows(origin, &room_id).await {
            return Ok((event_id, Err(denied.to_string())));
        }
        // A server may only push events into rooms it is in (or its own user's join): asked
        // first, so that events for other rooms cost no key fetches.
        let sender_server = header
            .sender
            .as_deref()
            .and_then(|s| UserId::parse(s).ok())
            .map(|u| u.server_name().to_owned());
        let in_room = match self.servers_in_room(&room_id).await {
            Ok(servers) => servers.iter().any(|s| s == origin),
            Err(e) => return Ok((event_id, Err(e.to_string()))),
        };
        if !in_room && sender_server.as_deref() != Some(origin) {
            return Ok((event_id, Err(format!("{origin} is not in {room_id}"))));
        }
        let checked = match self.checked_pdu(&room.version, raw).await {
            Ok(checked) => checked,
            Err(error) => {
                tracing::info!(%origin, %event_id, %error, "refused a PDU");
                return Ok((event_id, Err(error.to_string())));
            }
        };
        // Its predecessors first, when they never arrived here.
        match self.unknown_prev_events(&checked.object).await {
            Ok(unknown) if !unknown.is_empty() => {
                if let Err(error) = self
                    .fill_gap(origin, &room_id, &room.version, &checked.event_id)
                    .await
                {
                    tracing::info!(%origin, %event_id, %error, "the gap before a PDU stays");
                }
            }
            Ok(_) => {}
            Err(error) => return Ok((event_id, Err(error.to_string()))),
        }
        let outcome = self
            .append_remote(&room_id, &checked.event_id, &checked.json)
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        if let Err(why) = &outcome {
            tracing::info!(%origin, %event_id, %why, "refused a PDU");
        }
        Ok((event_id, outcome))
    }

    /// Applies the EDUs of a transaction from `origin`: typing and read receipts of its own
    /// users in rooms they are joined to here, their presence, device-list changes and
    /// to-device messages; anything else (or anything wrong) is ignored.
    pub async fn receive_edus(
        &self,
        origin: &ServerName,
        edus: &[ruma::serde::Raw<ruma::api::federation::transactions::edu::Edu>],
    ) {
        for raw in edus {
            let Ok(edu) = serde_json::from_str::<Value>(raw.json().get()) else {
                continue;
            };
            let content = &edu["content"];
            match edu["edu_type"].as_str() {
                Some("m.typing") => {
                    let (Some(room), Some(user)) = (
                        content["room_id"]
                            .as_str()
                            .and_then(|r| RoomId::parse(r).ok()),
                        content["user_id"]
                            .as_str()
                            .and_then(|u| UserId::parse(u).ok()),
                    ) else {
                        continue;
                    };
                    if user.server_name() != origin
                        || self.ensure_acl_allows(origin, &room).await.is_err()
                    {
                        continue;
                    }
                    let timeout = (content["typing"] == true).then_some(REMOTE_TYPING);
                    if let Err(error) = self.set_typing(&room, &user, timeout).await {
                        tracing::debug!(%origin, %error, "ignored a typing EDU");
                    }
                }
                Some("m.receipt") => {
                    let Some(rooms) = content.as_object() else {
                        continue;
                    };
                    for (room, kinds) in rooms.iter().take(MAX_EDUS) {
                        let Ok(room) = RoomId::parse(room.as_str()) else {
                            continue;
                        };
                        if self.ensure_acl_allows(origin, &room).await.is_err() {
                            continue;
                        }
                        let Some(readers) = kinds["m.read"].as_object() else {
                            continue;
                        };
                        for (user, receipt) in readers.iter().take(MAX_EDUS) {
                            let Ok(user) = UserId::parse(user.as_str()) else {
                                continue;
                            };
                            if user.server_name() != origin {
                                continue;
                            }
                            let Some(event_id) = receipt["event_ids"]
                                .as_array()
                                .and_then(|ids| ids.last())
                                .and_then(Value::as_str)
                                .and_then(|id| ruma::EventId::parse(id).ok())
                            else {
                                continue;
                            };
                            let thread = receipt["data"]["thread_id"]
                                .as_str()
                                .filter(|t| *t != "main");
                            if let Err(error) = self
                                .set_receipt(
                                    &room,
                                    &user,
                                    crate::service::ephemeral::ReceiptKind::Read,
                                    &event_id,
                                    thread,
                                )
                                .await
                            {
                                tracing::debug!(%origin, %error, "ignored a receipt EDU");
                            }
                        }
                    }
                }
                Some("m.device_list_update" | "m.signing_key_update") => {
                    if let Err(error) = self.receive_device_list_update(origin, content).await {
                        tracing::debug!(%origin, %error, "ignored a device-list EDU");
                    }
                }
                Some("m.presence") => {
                    if let Err(error) = self.receive_presence_edu(origin, content).await {
                        tracing::debug!(%origin, %error, "ignored a presence EDU");
                    }
                }
                Some("m.direct_to_device") => {
                    if let Err(error) = self.receive_to_device(origin, content).await {
                        tracing::debug!(%origin, %error, "ignored a to-device EDU");
                    }
                }
                _ => {}
            }
        }
    }

    /// Sends an EDU about `room_id` to its other servers (best effort: not kept over a
    /// restart, dropped for a server that is backing off).
    pub(crate) async fn send_edu_to_room(&self, room_id: &RoomId, edu: Value) -> Result<()> {
        if !self.config.federation.enabled {
            return Ok(());
        }
        let servers = self.servers_in_room(room_id).await?;
        self.federation
            .send_edu(servers.iter().map(|s| s.as_str()), &edu);
        Ok(())
    }

    /// Queues an EDU that must arrive (to-device messages, device-list updates) for
    /// `servers`, kept in the database until each acknowledges it.
    pub(crate) async fn send_kept_edu(&self, servers: &[&str], edu: &Value) -> Result<()> {
        if servers.is_empty() {
            return Ok(());
        }
        let json = serde_json::to_string(edu)
            .map_err(|e| crate::http::error::Error::Internal(e.into()))?;
        self.store
            .queue_edu_for_servers(&json, servers, self.now_ms())
            .await?;
        self.federation.outbox_wake.notify_one();
        Ok(())
    }

    /// Queues an event just appended for every other server in its room (and a remote
    /// member event's target), except the server it came from.
    pub(crate) async fn queue_for_federation(
        &self,
        room_id: &RoomId,
        event_id: &str,
        sender: &UserId,
        target: Option<&str>,
    ) -> Result<()> {
        if !self.config.federation.enabled {
            return Ok(());
        }
        let mut servers: Vec<String> = self
            .servers_in_room(room_id)
            .await?
            .iter()
            .map(ToString::to_string)
            .collect();
        if let Some(target) = target.and_then(|t| UserId::parse(t).ok())
            && target.server_name() != self.config.server_name
        {
            servers.push(target.server_name().to_string());
        }
        servers.retain(|s| s.as_str() != sender.server_name().as_str());
        servers.sort();
        servers.dedup();
        self.store
            .queue_for_servers(event_id, &servers, self.now_ms())
            .await?;
        if !servers.is_empty() {
            self.federation.outbox_wake.notify_one();
        }
        Ok(())
    }

    /// Sends what is queued for `destination`, a transaction at a time, until nothing is
    /// left or it fails (then it backs off).
    async fn drain_destination(&self, destination: &str) -> Result<(), FederationError> {
        let server = ServerName::parse(destination)
            .map_err(|e| FederationError::Internal(format!("queued for {destination}: {e}")))?;
        loop {
            // The shared queue is sent by one instance at a time; EDUs (kept in each
            // instance's memory) go from every instance.
            let now = self.now_ms();
            let holds = self
                .store
                .claim_destination(
                    destination,
                    &self.federation.sender_id,
                    now,
                    now.saturating_add(SENDER_LEASE_MS),
                )
                .await?;
            let (queued, kept) = if holds {
                (
                    self.store.queued_for(destination, MAX_PDUS as i64).await?,
                    self.store
                        .queued_edus_for(destination, MAX_EDUS as i64)
                        .await?,
                )
            } else {
                (Vec::new(), Vec::new())
            };
            let mut edus: Vec<Value> = kept
                .iter()
                .filter_map(|(_, json)| serde_json::from_str(json).ok())
                .collect();
            let mut passing = self.federation.take_edus(destination);
            passing.truncate(MAX_EDUS.saturating_sub(edus.len()));
            edus.extend(passing);
            if queued.is_empty() && edus.is_empty() {
                return Ok(());
            }
            let range = queued
                .first()
                .zip(queued.last())
                .map(|((f, _), (l, _))| (*f, *l));
            let kept_range = kept
                .first()
                .zip(kept.last())
                .map(|((f, _), (l, _))| (*f, *l));
            let ids: Vec<String> = queued.iter().map(|(_, id)| id.clone()).collect();
            let mut events = self.store.events(&ids).await?;
            events.sort_by_key(|e| e.stream_ordering);
            let pdus: Vec<Value> = events
                .iter()
                .filter_map(|e| serde_json::from_str(&e.json).ok())
                .collect();
            let body = serde_json::json!({
                "origin": self.config.server_name.as_str(),
                "origin_server_ts": self.now_ms(),
                "pdus": pdus,
                "edus": edus,
            });
            let txn_id = match (range, kept_range) {
                (Some((first, last)), None) => format!("{first}-{last}"),
                (Some((first, last)), Some((kf, kl))) => format!("{first}-{last}d{kf}-{kl}"),
                (None, Some((first, last))) => format!("d{first}-{last}"),
                (None, None) => format!(
                    "e{}-{}",
                    self.now_ms(),
                    crate::service::secrets::random_alphanumeric(6)
                ),
            };
            // The same queue ranges are the same transaction id, so a retry is recognised.
            let path = format!("/_matrix/federation/v1/send/{txn_id}");
            let sent = self
                .federation_json(
                    &server,
                    http::Method::PUT,
                    &path,
                    Some(&body),
                    self.federation.timeout,
                )
                .await;
            match sent {
                Ok(_) => {
                    if let Some((_, last)) = range {
                        self.store.sent_to(destination, last).await?;
                    }
                    if let Some((_, last)) = kept_range {
                        self.store.edus_sent_to(destination, last).await?;
                    }
                }
                Err(error) => {
                    let failures = self
                        .store
                        .send_failed(destination, |failures| {
                            let backoff = 1_000_i64
                                .saturating_mul(1 << failures.clamp(0, 12))
                                .min(MAX_BACKOFF_MS);
                            self.now_ms().saturating_add(backoff)
                        })
                        .await?;
                    tracing::info!(%destination, failures, %error, "sending to a server failed: backing off");
                    return Err(error);
                }
            }
        }
    }
}

/// The sender: wakes when events are queued (or every second), sends to every due
/// destination, one transaction in flight per destination.
pub async fn run_sender(
    services: Arc<Services>,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    if !services.config.federation.enabled {
        return Ok(());
    }
    let mut in_flight: tokio::task::JoinSet<String> = tokio::task::JoinSet::new();
    let mut busy = std::collections::HashSet::new();
    loop {
        tokio::select! {
            () = services.federation.outbox_wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                if let Ok(destination) = done {
                    busy.remove(&destination);
                }
                continue;
            }
            _ = stopped.wait_for(|stop| *stop) => break,
        }
        let due = match services
            .store
            .due_destinations(services.now_ms(), DESTINATIONS_AT_ONCE)
            .await
        {
            Ok(mut due) => {
                for destination in services.federation.edu_destinations() {
                    // EDUs for a server that is backing off are dropped, not held.
                    if services
                        .store
                        .backing_off(&destination, services.now_ms())
                        .await
                        .unwrap_or(true)
                    {
                        services.federation.take_edus(&destination);
                    } else {
                        due.push(destination);
                    }
                }
                due
            }
            Err(error) => {
                tracing::warn!(%error, "reading the federation queue failed");
                continue;
            }
        };
        for destination in due {
            if !busy.insert(destination.clone()) {
                continue;
            }
            let services = services.clone();
            in_flight.spawn(async move {
                let _ = services.drain_destination(&destination).await;
                destination
            });
        }
    }
    in_flight.abort_all();
    Ok(())
}
