//! Unread counts for many woken syncs at once: the syncs a message wakes all ask for their
//! counts in the same room at the same moment, so the asks queued while one query runs are
//! answered together by the next (one query per room per batch, not one per sync). Only
//! woken syncs ask here; a sync's first pass reads its counts itself.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use tokio::sync::oneshot;

use crate::store::Store;

/// Most users one query asks about.
const USERS_PER_QUERY: usize = 500;

type Answer = Result<(i64, i64), String>;

/// One sync's question, and where the answer goes.
struct Ask {
    room: String,
    user: String,
    answer: oneshot::Sender<Answer>,
}

/// The queue of questions and the turn to ask the database.
#[derive(Default)]
pub struct CountBatches {
    pending: Mutex<Vec<Ask>>,
    turn: tokio::sync::Mutex<()>,
}

impl CountBatches {
    /// `(notifications, highlights)` after the user's read receipt in the room.
    pub async fn get(&self, store: &Store, room: &str, user: &str) -> anyhow::Result<(i64, i64)> {
        let (answer, mut answered) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Ask {
                room: room.to_owned(),
                user: user.to_owned(),
                answer,
            });
        {
            let _turn = self.turn.lock().await;
            // A batch that ran while we queued for the turn may have answered us already.
            if let Ok(answer) = answered.try_recv() {
                return answer.map_err(anyhow::Error::msg);
            }
            let batch =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
            // Run apart from this request, so that its client going away does not leave the
            // others of the batch unanswered.
            let _ = tokio::spawn(Self::run(store.clone(), batch)).await;
        }
        answered
            .await
            .map_err(|_| anyhow::anyhow!("unread counts were not answered"))?
            .map_err(anyhow::Error::msg)
    }

    /// Answers every ask of the batch, one query per room and chunk of users.
    async fn run(store: Store, batch: Vec<Ask>) {
        let mut by_room: HashMap<String, Vec<Ask>> = HashMap::new();
        for ask in batch {
            by_room.entry(ask.room.clone()).or_default().push(ask);
        }
        for (room, mut asks) in by_room {
            while !asks.is_empty() {
                let chunk: Vec<Ask> = asks.drain(..asks.len().min(USERS_PER_QUERY)).collect();
                let mut users: Vec<&str> = chunk.iter().map(|a| a.user.as_str()).collect();
                users.sort_unstable();
                users.dedup();
                let counts = store
                    .notification_counts(&room, &users)
                    .await
                    .map_err(|e| e.to_string());
                for ask in chunk {
                    let answer = counts
                        .as_ref()
                        .map(|c| c.get(&ask.user).copied().unwrap_or((0, 0)))
                        .map_err(Clone::clone);
                    // Only a sync that went away stops listening: nothing to tell it.
                    let _ = ask.answer.send(answer);
                }
            }
        }
    }
}
