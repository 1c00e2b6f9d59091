//! The latest events of every room, read once for all the syncs a send wakes: a woken sync
//! takes its new events from here instead of asking the database itself.

use std::sync::{Arc, PoisonError, RwLock};

use super::super::rooms::Pdu;
use crate::store::{Store, StoredEvent};

/// Most events kept; a sync that waited longer than this many events reads the database.
const CAPACITY: usize = 2048;
/// Events read per database round trip when catching up.
const BATCH: i64 = 512;

/// An event of the log, read once for every sync that sends it.
pub struct Recent {
    /// As stored.
    pub stored: StoredEvent,
    /// Parsed (`None` for one that does not parse: such a sync goes the whole way).
    pub pdu: Option<Pdu>,
}

/// Every event after `low` up to `high`, in stream order, with no gaps.
#[derive(Default)]
pub struct Window {
    /// Events after this position are all here (none before it are).
    pub low: i64,
    /// The last position read.
    pub high: i64,
    /// The events in `(low, high]`, oldest first.
    pub events: Vec<Arc<Recent>>,
}

impl Window {
    /// The events after `after`, when the window holds all of them.
    pub fn after(&self, after: i64) -> Option<&[Arc<Recent>]> {
        if after < self.low || after > self.high {
            return None;
        }
        let start = self
            .events
            .partition_point(|e| e.stored.stream_ordering <= after);
        Some(&self.events[start..])
    }
}

/// The shared log. Reading it costs one database query per burst of wake-ups, however many
/// syncs woke: the first reads, the others find what it read.
#[derive(Default)]
pub struct RecentEvents {
    reading: tokio::sync::Mutex<()>,
    window: RwLock<Option<Arc<Window>>>,
}

impl RecentEvents {
    /// A window holding every event up to `needed` (the position the sync was woken for).
    pub async fn current(&self, store: &Store, needed: i64) -> Result<Arc<Window>, sqlx::Error> {
        let last = || {
            self.window
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        };
        if let Some(window) = last().filter(|w| w.high >= needed) {
            return Ok(window);
        }
        let _reading = self.reading.lock().await;
        let last = last();
        if let Some(window) = last.as_ref().filter(|w| w.high >= needed) {
            return Ok(window.clone());
        }
        // Appends commit in stream order: a read now sees every event up to `needed`.
        let latest = store.max_stream_ordering().await?;
        let next = match last {
            // Not too far behind: read what came since.
            Some(window) if latest - window.high <= CAPACITY as i64 => {
                Self::extend(store, &window).await?
            }
            // The first read, or after a long quiet spell with many events elsewhere: start
            // afresh a little back (the syncs already waiting usually need only that).
            _ => {
                let start = latest.saturating_sub(BATCH).max(0);
                let empty = Window {
                    low: start,
                    high: start,
                    ..Window::default()
                };
                Self::extend(store, &empty).await?
            }
        };
        let next = Arc::new(next);
        *self.window.write().unwrap_or_else(PoisonError::into_inner) = Some(next.clone());
        Ok(next)
    }

    /// `window` with the events committed since, trimmed to the capacity.
    async fn extend(store: &Store, window: &Window) -> Result<Window, sqlx::Error> {
        let mut events = window.events.clone();
        let mut low = window.low;
        let mut high = window.high;
        loop {
            let read = store.events_after(high, BATCH).await?;
            let full = read.len() as i64 == BATCH;
            for stored in read {
                high = stored.stream_ordering;
                if stored.outlier {
                    continue;
                }
                // A redaction changes an earlier event: what came before it is read from
                // the database again.
                if stored.kind == "m.room.redaction" {
                    events.clear();
                    low = high.saturating_sub(1);
                }
                let pdu = Pdu::from_stored(&stored).ok();
                events.push(Arc::new(Recent { stored, pdu }));
            }
            if events.len() > CAPACITY {
                let cut = events.len() - CAPACITY;
                low = events[cut - 1].stored.stream_ordering;
                events.drain(..cut);
            }
            if !full {
                break;
            }
        }
        Ok(Window { low, high, events })
    }
}
