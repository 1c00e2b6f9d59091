//! Wake-ups for waiting `/sync` requests.
//!
//! A waiting sync holds no database connection and no thread: only a subscription here (one
//! shared `Notify` per user with waiters, dropped with the last of them). Whoever changes
//! something a user should see wakes that user after committing it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use ruma::{OwnedUserId, UserId};
use tokio::sync::Notify;

/// Per-user wake-up signals.
#[derive(Default)]
pub struct Bus {
    waiters: Mutex<HashMap<OwnedUserId, Arc<Notify>>>,
}

/// A user's wake-up signal, held while one of their syncs waits.
pub struct Subscription<'a> {
    bus: &'a Bus,
    user_id: OwnedUserId,
    /// Fires on every wake-up of the user.
    pub notify: Arc<Notify>,
}

impl Bus {
    /// Subscribes to `user_id`'s wake-ups.
    pub fn subscribe(&self, user_id: &UserId) -> Subscription<'_> {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        let notify = waiters.entry(user_id.to_owned()).or_default().clone();
        Subscription {
            bus: self,
            user_id: user_id.to_owned(),
            notify,
        }
    }

    /// Wakes every waiting sync of these users.
    pub fn wake<'u>(&self, users: impl IntoIterator<Item = &'u UserId>) {
        let waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        for user in users {
            if let Some(notify) = waiters.get(user) {
                notify.notify_waiters();
            }
        }
    }

    /// Users with a waiting sync (for metrics and tests).
    pub fn waiting_users(&self) -> usize {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
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
        if Arc::strong_count(&self.notify) == 2 {
            waiters.remove(&self.user_id);
        }
    }
}
