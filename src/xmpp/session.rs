//! The state of one session with the XMPP server, shared by the parts that act on it: the
//! link ([`Upstream`]), each room's link state ([`RoomLink`], [`Phase`]) and the archive
//! queries in flight ([`Query`]). `component.rs` runs the session; `observer.rs` (rooms),
//! `archive.rs` (archive queries) and `component.rs` (IQ dispatch) add its methods.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use super::link::Upstream;
use crate::config::Config;
use crate::rooms::archive::{Archived, Fetch};
use crate::rooms::feed::{Feed, OwnedMessage};
use crate::rooms::table::RoomTable;
use crate::settings::Settings;

/// One session with the server after the handshake: the link, the rooms, the queries in flight.
pub struct Session<'a> {
    pub(super) settings: &'a Settings,
    /// The configuration in force (SIGHUP may replace it between two wake-ups).
    pub(super) config: Rc<Config>,
    pub(super) table: &'a RoomTable,
    pub(super) up: Upstream,
    pub(super) links: &'a mut Vec<RoomLink>,
    /// Resume fetches by query number, fills by room index.
    pub(super) resumes: HashMap<u64, Query>,
    pub(super) fills: HashMap<usize, Query>,
    pub(super) resumes_sent: u64,
}

/// Per-room state the link keeps (the room table keeps what the HTTP side needs to see).
pub struct RoomLink {
    pub nick: String,
    pub phase: Phase,
    pub retry_at: Option<Instant>,
    pub feed: Feed,
    /// When the room last sent us anything (for XEP-0410 self-ping after silence).
    pub last_heard: Instant,
    /// When the self-ping still unanswered was sent.
    pub self_ping_sent: Option<Instant>,
    /// When the disco#info still unanswered was sent.
    pub disco_sent: Option<Instant>,
    /// The room table entry's generation this link belongs to, and that room's JID.
    pub generation: u32,
    pub jid: Rc<str>,
    /// An on-demand room's last subscriber left (or its disco#info came back) at this time.
    pub idle_since: Option<Instant>,
    /// Nicks of the other occupants, as seen from presence (at most
    /// [`MAX_OCCUPANTS_TRACKED`]).
    pub occupants: HashSet<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    /// disco#info sent: does the room exist?
    Checking,
    /// Join presence sent.
    Joining,
    Joined,
    /// Waiting for `retry_at` to check and join again.
    Waiting,
    /// Banned or the room was destroyed: not retried until restart.
    GaveUp,
    /// Not wanted now: a free entry, or an on-demand room nobody reads.
    Idle,
}

impl RoomLink {
    pub fn new(config: &Config, room: &crate::rooms::table::Room) -> RoomLink {
        let idle = room.is_free();
        RoomLink {
            nick: config.nick.clone(),
            phase: if idle { Phase::Idle } else { Phase::Checking },
            retry_at: None,
            feed: Feed::default(),
            last_heard: Instant::now(),
            self_ping_sent: None,
            disco_sent: None,
            occupants: HashSet::new(),
            generation: room.generation(),
            jid: room.jid(),
            idle_since: None,
        }
    }
}

/// An archive query in flight.
pub enum Query {
    /// For a client resuming from an id the ring no longer holds.
    Resume {
        room: usize,
        fetch: Rc<Fetch>,
        messages: Vec<Archived>,
    },
    /// Filling a room's hole after a re-join.
    Fill {
        generation: u32,
        page: u32,
        sent: Instant,
        messages: Vec<OwnedMessage>,
        fetched: usize,
    },
}
