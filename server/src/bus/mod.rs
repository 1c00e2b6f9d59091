//! Wake-ups for waiting `/sync` requests, across instances.
//!
//! A waiting sync holds no database connection and no thread: only a subscription here (one
//! shared `Notify` per user with waiters, dropped with the last of them). Whoever changes
//! something a user should see wakes that user after committing it. With `redis.url` set,
//! wake-ups (and typing notifications, which live in memory) are also published on a Redis
//! channel, so that a sync waiting on another instance wakes too.
//!
//! A wake-up says whether it is for new room events only: a sync woken by those alone can
//! answer from the shared log of recent events (see `service::sync`), while anything else
//! (receipts, account data, keys, typing…) bumps the user's change counter and sends it the
//! whole way.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::service::{ephemeral::Typing, presence::Presence};

type Waiters = Arc<Mutex<HashMap<OwnedUserId, Arc<Waiter>>>>;

/// One user's waiting syncs: their wake-up signal and a count of wake-ups that were not for
/// room events alone.
#[derive(Default)]
pub struct Waiter {
    /// Fires on every wake-up of the user.
    pub notify: Notify,
    changes: AtomicU64,
}

/// Per-user wake-up signals, shared with other instances through Redis when configured.
#[derive(Default)]
pub struct Bus {
    waiters: Waiters,
    remote: Option<Remote>,
    /// The latest event position anyone was woken for, here or on another instance.
    events_position: Arc<AtomicI64>,
    /// Cancelled when the server stops: waiting syncs answer at once rather than hold the
    /// shutdown up to their timeout.
    closing: CancellationToken,
}

/// The Redis side: a publishing connection and the task that listens.
struct Remote {
    publisher: ConnectionManager,
    channel: String,
    instance: String,
    listener: JoinHandle<()>,
}

/// What instances tell each other.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Message {
    /// The sending instance (its own messages come back and are skipped).
    from: String,
    /// Users to wake.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    wake: Vec<OwnedUserId>,
    /// The wake-up is for new room events only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    events_only: bool,
    /// The position of the event it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    position: Option<i64>,
    /// A typing change to apply before waking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typing: Option<TypingChange>,
    /// A presence change to apply before waking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    presence: Option<PresenceChange>,
}

/// Someone's presence changed.
#[derive(Debug, Serialize, Deserialize)]
struct PresenceChange {
    user: OwnedUserId,
    state: String,
    status_msg: Option<String>,
    now_ms: i64,
}

/// Someone started (until a time) or stopped typing.
#[derive(Debug, Serialize, Deserialize)]
struct TypingChange {
    room: OwnedRoomId,
    user: OwnedUserId,
    until_ms: Option<i64>,
    now_ms: i64,
}

/// A user's wake-up signal, held while one of their syncs waits.
pub struct Subscription<'a> {
    bus: &'a Bus,
    user_id: OwnedUserId,
    /// The user's signal and change counter.
    pub waiter: Arc<Waiter>,
}

impl Subscription<'_> {
    /// Wake-ups so far that were not for room events alone: unchanged between two reads
    /// means nothing but room events happened for the user in between.
    pub fn changes(&self) -> u64 {
        self.waiter.changes.load(Ordering::Acquire)
    }
}

fn wake_local(waiters: &Waiters, users: &[&UserId], events_only: bool) {
    let waiters = waiters.lock().unwrap_or_else(PoisonError::into_inner);
    for user in users {
        if let Some(waiter) = waiters.get(*user) {
            if !events_only {
                waiter.changes.fetch_add(1, Ordering::AcqRel);
            }
            waiter.notify.notify_waiters();
        }
    }
}

impl Bus {
    /// A bus that also talks to other instances over Redis at `url`, on a channel named for
    /// `server_name`; typing changes from them are applied to `typing`.
    pub async fn with_redis(
        url: &str,
        server_name: &str,
        (typing, presence): (Arc<Typing>, Arc<Presence>),
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("redis.url is not a Redis URL")?;
        let publisher = ConnectionManager::new(client.clone())
            .await
            .context("connecting to Redis (redis.url) for the bus")?;
        let channel = format!("matrixon:{server_name}:bus");
        let instance = crate::service::secrets::random_alphanumeric(16);
        let waiters = Waiters::default();
        let events_position = Arc::new(AtomicI64::new(0));
        let listener = tokio::spawn(listen(
            client,
            channel.clone(),
            instance.clone(),
            (waiters.clone(), events_position.clone()),
            (typing, presence),
        ));
        Ok(Self {
            waiters,
            events_position,
            closing: CancellationToken::new(),
            remote: Some(Remote {
                publisher,
                channel,
                instance,
                listener,
            }),
        })
    }

    /// Ends every wait: the server is stopping.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Completes once the server is stopping.
    pub fn closing(&self) -> WaitForCancellationFuture<'_> {
        self.closing.cancelled()
    }

    /// Subscribes to `user_id`'s wake-ups.
    pub fn subscribe(&self, user_id: &UserId) -> Subscription<'_> {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        let waiter = waiters.entry(user_id.to_owned()).or_default().clone();
        Subscription {
            bus: self,
            user_id: user_id.to_owned(),
            waiter,
        }
    }

    /// Wakes every waiting sync of these users, here and on other instances.
    pub fn wake<'u>(&self, users: impl IntoIterator<Item = &'u UserId>) {
        self.wake_with(users, None);
    }

    /// Wakes these users for a new room event (committed at `position`), and for nothing
    /// else.
    pub fn wake_for_events<'u>(&self, users: impl IntoIterator<Item = &'u UserId>, position: i64) {
        self.wake_with(users, Some(position));
    }

    /// The latest event position a wake-up was for: a woken sync reads at least that far.
    pub fn events_position(&self) -> i64 {
        self.events_position.load(Ordering::Acquire)
    }

    fn wake_with<'u>(&self, users: impl IntoIterator<Item = &'u UserId>, position: Option<i64>) {
        let users: Vec<&UserId> = users.into_iter().collect();
        if let Some(position) = position {
            self.events_position.fetch_max(position, Ordering::AcqRel);
        }
        wake_local(&self.waiters, &users, position.is_some());
        if self.remote.is_some() && !users.is_empty() {
            self.publish(Message {
                wake: users.iter().map(|u| (*u).to_owned()).collect(),
                events_only: position.is_some(),
                position,
                ..Message::default()
            });
        }
    }

    /// Wakes `members` after a typing change this instance applied: other instances get the
    /// change and the wake-up in one message, so they apply it before waking anyone.
    pub fn typing_changed(
        &self,
        room: &ruma::RoomId,
        user: &UserId,
        (until_ms, now_ms): (Option<i64>, i64),
        members: &[OwnedUserId],
    ) {
        let users: Vec<&UserId> = members.iter().map(|u| &**u).collect();
        wake_local(&self.waiters, &users, false);
        if self.remote.is_some() {
            self.publish(Message {
                wake: members.to_vec(),
                typing: Some(TypingChange {
                    room: room.to_owned(),
                    user: user.to_owned(),
                    until_ms,
                    now_ms,
                }),
                ..Message::default()
            });
        }
    }

    fn publish(&self, mut message: Message) {
        let Some(remote) = &self.remote else {
            return;
        };
        message.from = remote.instance.clone();
        let Ok(payload) = serde_json::to_string(&message) else {
            return;
        };
        let mut publisher = remote.publisher.clone();
        let channel = remote.channel.clone();
        // Publishing never holds up the request that caused it.
        tokio::spawn(async move {
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(payload)
                .query_async(&mut publisher)
                .await;
            if let Err(error) = sent {
                tracing::warn!(%error, "could not publish a wake-up to other instances");
            }
        });
    }

    /// Wakes `peers` after a presence change this instance applied; other instances get the
    /// change and the wake-up in one message.
    pub fn presence_changed(
        &self,
        user: &UserId,
        (state, status_msg): (&str, Option<&str>),
        now_ms: i64,
        peers: &[OwnedUserId],
    ) {
        let users: Vec<&UserId> = peers.iter().map(|u| &**u).collect();
        wake_local(&self.waiters, &users, false);
        if self.remote.is_some() {
            self.publish(Message {
                wake: peers.to_vec(),
                presence: Some(PresenceChange {
                    user: user.to_owned(),
                    state: state.to_owned(),
                    status_msg: status_msg.map(str::to_owned),
                    now_ms,
                }),
                ..Message::default()
            });
        }
    }

    /// Users with a waiting sync on this instance.
    pub fn waiting_users(&self) -> usize {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if let Some(remote) = &self.remote {
            remote.listener.abort();
        }
    }
}

/// Listens on the channel for ever, reconnecting after a pause when Redis goes away.
async fn listen(
    client: redis::Client,
    channel: String,
    instance: String,
    (waiters, events_position): (Waiters, Arc<AtomicI64>),
    (typing, presence): (Arc<Typing>, Arc<Presence>),
) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        let Ok(message) = serde_json::from_str::<Message>(&payload) else {
                            continue;
                        };
                        if message.from == instance {
                            continue;
                        }
                        if let Some(change) = &message.typing {
                            typing.apply(
                                &change.room,
                                &change.user,
                                change.until_ms,
                                change.now_ms,
                            );
                        }
                        if let Some(change) = &message.presence {
                            presence.apply(
                                &change.user,
                                &change.state,
                                Some(change.status_msg.as_deref()),
                                change.now_ms,
                            );
                        }
                        if let Some(position) = message.position {
                            events_position.fetch_max(position, Ordering::AcqRel);
                        }
                        let users: Vec<&UserId> = message.wake.iter().map(|u| &**u).collect();
                        wake_local(&waiters, &users, message.events_only);
                    }
                    tracing::warn!("the Redis bus subscription ended; reconnecting");
                }
                Err(error) => tracing::warn!(%error, "could not subscribe to the Redis bus"),
            },
            Err(error) => tracing::warn!(%error, "could not connect to the Redis bus"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut waiters = self
            .bus
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The map holds one reference and this subscription another: nobody else waits.
        if Arc::strong_count(&self.waiter) == 2 {
            waiters.remove(&self.user_id);
        }
    }
}
