//! The latest events of every room, read once for all the syncs a send wakes: a woken sync
//! takes its new events from here instead of asking the database itself.

use std::sync::{
    Arc, PoisonError, RwLock,
    atomic::{AtomicU64, Ordering},
};

use crate::store::{Store, StoredEvent};

/// Most events kept; a sync that waited longer than this many events reads the database.
const CAPACITY: usize = 2048;
/// Events read per database round trip when catching up.
const BATCH: i64 = 512;

/// Every event after `low` up to `high`, in stream order, with no gaps.
#[derive(Default)]
pub struct Window {
    /// Events after this position are all here (none before it are).
    pub low: i64,
    /// The last position read.
    pub high: i64,
    /// The events in `(low, high]`, oldest first.
    pub events: Vec<Arc<StoredEvent>>,
    /// Every ticket up to this one was taken before the read that made this window began.
    covers: u64,
}

impl Window {
    /// The events after `after`, when the window holds all of them.
    pub fn after(&self, after: i64) -> Option<&[Arc<StoredEvent>]> {
        if after < self.low || after > self.high {
            return None;
        }
        let start = self.events.partition_point(|e| e.stream_ordering <= after);
        Some(&self.events[start..])
    }
}

/// The shared log. Reading it costs one database query per burst of wake-ups, however many
/// syncs woke: whoever comes first reads, the others take what it read.
#[derive(Default)]
pub struct RecentEvents {
    tickets: AtomicU64,
    reading: tokio::sync::Mutex<()>,
    window: RwLock<Option<Arc<Window>>>,
}

impl RecentEvents {
    /// A window holding every event committed before this call.
    pub async fn current(&self, store: &Store) -> Result<Arc<Window>, sqlx::Error> {
        // Appends commit in stream order, so a read that starts after this ticket sees every
        // event committed before it.
        let ticket = self.tickets.fetch_add(1, Ordering::AcqRel) + 1;
        let _reading = self.reading.lock().await;
        let last = self
            .window
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(window) = &last
            && window.covers >= ticket
        {
            return Ok(window.clone());
        }
        let covers = self.tickets.load(Ordering::Acquire);
        let next = match last {
            Some(window) => Self::extend(store, &window, covers).await?,
            None => {
                // The first read starts a little back, for the syncs already waiting.
                let start = store
                    .max_stream_ordering()
                    .await?
                    .saturating_sub(BATCH)
                    .max(0);
                let empty = Window {
                    low: start,
                    high: start,
                    ..Window::default()
                };
                Self::extend(store, &empty, covers).await?
            }
        };
        let next = Arc::new(next);
        *self.window.write().unwrap_or_else(PoisonError::into_inner) = Some(next.clone());
        Ok(next)
    }

    /// `window` with the events committed since, trimmed to the capacity.
    async fn extend(store: &Store, window: &Window, covers: u64) -> Result<Window, sqlx::Error> {
        let mut events = window.events.clone();
        let mut low = window.low;
        let mut high = window.high;
        loop {
            let read = store.events_after(high, BATCH).await?;
            let full = read.len() as i64 == BATCH;
            for event in read {
                high = event.stream_ordering;
                // A redaction changes an earlier event: what came before it is read from
                // the database again.
                if event.kind == "m.room.redaction" {
                    events.clear();
                    low = high.saturating_sub(1);
                }
                events.push(Arc::new(event));
            }
            if events.len() > CAPACITY {
                let cut = events.len() - CAPACITY;
                low = events[cut - 1].stream_ordering;
                events.drain(..cut);
            }
            if !full {
                break;
            }
        }
        Ok(Window {
            low,
            high,
            events,
            covers,
        })
    }
}
