//! The daemon's counters: [`Stats`], read by logs, `/metrics` and tests, written by the room
//! table, the fan-out, the HTTP server and the component link.

use std::cell::Cell;

/// A counter that only goes up (wrapping at `u64::MAX`).
#[derive(Debug, Default)]
pub struct Counter(Cell<u64>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.set(self.0.get().wrapping_add(n));
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// Counters read by logs, `/metrics` and tests.
#[derive(Default)]
pub struct Stats {
    /// Events published into rings.
    pub events_in: Counter,
    /// Events written out completely to subscribers (one per event per subscriber).
    pub events_out: Counter,
    /// Bytes written to subscribers (events, heartbeats, openings).
    pub bytes_out: Counter,
    /// Subscribers dropped for falling behind their room's ring.
    pub dropped_slow: Counter,
    /// Streams refused because the subscriber table was full.
    pub rejected_full: Counter,
    /// Requests refused as malformed (400) or too large (431).
    pub rejected_bad_request: Counter,
    /// Connections closed for not sending a request head in time (408).
    pub rejected_timeout: Counter,
    /// Connections refused because too many requests were pending.
    pub rejected_pending: Counter,
    /// Connections refused because their address had too many open.
    pub rejected_per_ip: Counter,
    /// Streams refused by access control (403).
    pub rejected_forbidden: Counter,
    /// Streams accepted since start.
    pub streams_opened: Counter,
    /// The component link is up (handshake done).
    pub upstream_up: Cell<bool>,
    /// Component link sessions started after the first.
    pub reconnects: Counter,
}
