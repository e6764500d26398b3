//! The room table: every room the daemon serves, its ring, its join state, and the fixed-size
//! subscriber table with the wake-up lists that connect a room's new events to its writers.
//!
//! Both tables are allocated once by [`RoomTable::new`] from the configuration and never grow.
//! Everything here is single-threaded (`Cell`/`RefCell`): it lives on the one executor thread.
//! Writers (the XMPP side) call [`RoomTable::publish`]; readers (SSE subscribers) hold a
//! [`Subscription`] and read frames from the ring by sequence number.
//!
//! The fan-out: a subscriber that is caught up parks its socket and cursor in its slot
//! ([`Mode::Parked`]). Publishing an event writes it straight to every parked socket of the
//! room ([`fanout::write_pending`]), so an event costs one `writev` per subscriber and no task
//! wake-ups; only a subscriber whose socket is full, who fell behind, or whose write failed has
//! its task woken. While a [`Batch`] is held (one upstream read), publishing only marks the room,
//! and the writes happen once for all the events of the batch.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::Waker;

use super::fanout::{self, Cursor, Out, Outlet, Wrote};
use super::ring::{Entry, Ring};
use super::stats::Stats;

/// Where the daemon stands with a room upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinState {
    /// Not joined yet (or the component link is down).
    Joining,
    /// Self-presence received: events are flowing.
    Joined,
    /// The MUC service refused or removed us; the text says why.
    Failed(&'static str),
    /// The room is gone for good (destroyed): streams end, requests get `204`.
    Gone(&'static str),
}

/// Why a room is in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// An unused entry.
    Free,
    /// Listed in `rooms`.
    Configured,
    /// Found by disco#items (`rooms = *`).
    Discovered,
    /// Asked for by a subscriber (`on_demand = yes`).
    OnDemand,
}

/// The reason a room that does not exist is `Failed` with.
pub const ROOM_MISSING: &str = "the room does not exist";

pub struct Room {
    /// Room node, lower-case (`lobby`); empty for a free entry.
    node: RefCell<Rc<str>>,
    /// Room bare JID (`lobby@conference.example.org`).
    jid: RefCell<Rc<str>>,
    origin: Cell<Origin>,
    /// Counts the rooms this entry has held, so the XMPP side notices a reused entry.
    generation: Cell<u32>,
    ring: RefCell<Ring>,
    state: Cell<JoinState>,
    /// First subscriber slot of this room's wake-up list, or [`NONE`].
    first: Cell<u32>,
    subscribers: Cell<usize>,
    /// What the room told us about itself (disco#info), its subject and occupants.
    pub info: RefCell<RoomInfo>,
    /// The join sequence is complete (history replayed, subject received): the ring holds what
    /// a resuming client may ask for.
    synced: Cell<bool>,
    /// The ring's head when the room's subscribers were last written to (see [`Batch`]).
    flushed: Cell<u64>,
    /// Events were published since then.
    dirty: Cell<bool>,
    /// Bytes of frames published since then.
    held_bytes: Cell<usize>,
    /// Counts the changes of what decides who may read the room (its flags, tokens, policy):
    /// a stream that checked its access at another value checks again before it writes.
    access_epoch: Cell<u64>,
    /// A fan-out pass in progress (see [`SLICE`]): the next slot it visits, or [`NONE`].
    resume: Cell<u32>,
    /// The ring's head when that pass started (`flushed` once it completes).
    pass_head: Cell<u64>,
}

/// Subscribers one fan-out pass visits before it lets other tasks run (accept, the component
/// link, other rooms): at about 10 µs a `writev`, a few milliseconds. The rest of the pass is
/// continued by `flusher::continue_passes`; without that task every pass runs whole.
pub const SLICE: usize = 256;

/// Facts about a room for pages, metrics and access control; written by the XMPP side.
#[derive(Debug, Default, Clone)]
pub struct RoomInfo {
    /// disco#info said `muc_public` (not hidden).
    pub public: bool,
    /// disco#info said `muc_membersonly`.
    pub members_only: bool,
    /// disco#info said `muc_passwordprotected`.
    pub password: bool,
    /// disco#info said `urn:xmpp:mam:2`: the room keeps an archive to fill resume gaps from.
    pub mam: bool,
    /// disco#info was answered (the flags above are known).
    pub known: bool,
    /// The shapes of the stanza-ids the room has issued: only resume ids in one of them are
    /// looked up in its archive.
    pub stanza_shapes: super::resume::Shapes,
    pub subject: String,
    /// Other occupants present (our own occupant not counted), as seen from presence.
    pub occupants: u32,
    /// When the last message event was published.
    pub last_message: Option<std::time::SystemTime>,
}

impl Room {
    /// Room node, lower-case (`lobby`).
    pub fn node(&self) -> Rc<str> {
        self.node.borrow().clone()
    }

    /// Room bare JID.
    pub fn jid(&self) -> Rc<str> {
        self.jid.borrow().clone()
    }

    pub fn origin(&self) -> Origin {
        self.origin.get()
    }

    pub fn generation(&self) -> u32 {
        self.generation.get()
    }

    pub fn is_free(&self) -> bool {
        self.origin.get() == Origin::Free
    }

    pub fn ring(&self) -> std::cell::Ref<'_, Ring> {
        self.ring.borrow()
    }

    pub fn state(&self) -> JoinState {
        self.state.get()
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.get()
    }

    /// See [`Room::set_synced`].
    pub fn synced(&self) -> bool {
        self.synced.get()
    }

    /// Set when the join sequence ends (the subject arrives), cleared when the link or the
    /// membership is lost.
    pub fn set_synced(&self, synced: bool) {
        self.synced.set(synced);
    }

    /// See [`RoomTable::access_changed`].
    pub fn access_epoch(&self) -> u64 {
        self.access_epoch.get()
    }
}

const NONE: u32 = u32::MAX;

/// How the room table treats a subscriber when its room publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Its task is woken for every new event (multi-room streams; a task that is running).
    Wake,
    /// Caught up and idle: new events are written straight to its socket from the slot's
    /// cursor; the task is woken only when such a write does not complete.
    Parked,
    /// Its socket is full and its task waits for it to drain: woken by the table only when the
    /// ring evicts the event it needs next.
    Blocked,
}

struct Slot {
    room: u32,
    next: u32,
    prev: u32,
    waker: Option<Waker>,
    mode: Cell<Mode>,
    /// Where the subscriber is in its room's ring (single-room streams).
    cursor: Cell<Cursor>,
    /// The frame it is mid-way through writing ([`fanout::Pin`]).
    pin: Cell<fanout::Pin>,
    /// Event kinds it wants.
    mask: u8,
    /// Its socket, for writes from the fan-out while parked.
    outlet: Option<Rc<dyn Outlet>>,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            room: NONE,
            next: NONE,
            prev: NONE,
            waker: None,
            mode: Cell::new(Mode::Wake),
            cursor: Cell::new(Cursor::default()),
            pin: Cell::new(None),
            mask: 0,
            outlet: None,
        }
    }
}

struct Subscribers {
    slots: Box<[Slot]>,
    free: Vec<u32>,
}

pub struct RoomTable {
    rooms: Box<[Room]>,
    used: Cell<usize>,
    subs: RefCell<Subscribers>,
    closing: Cell<bool>,
    heartbeat: Cell<u64>,
    /// Subscribers one room may have (0 = only the table's size limits them).
    room_cap: Cell<usize>,
    /// Prefix of the event ids this process mints (its start time), so ids minted by an earlier
    /// run are never mistaken for this run's.
    epoch: String,
    pub stats: Stats,
    /// Requests to fill resume gaps from rooms' archives.
    pub archive: super::archive::Archive,
    /// [`Batch`]es open: publishing defers the fan-out until the last one closes.
    batches: Cell<u32>,
    /// `fanout_delay_ms` is set: published events wait for `flusher::delayed` to write them.
    delayed: Cell<bool>,
    /// The task of `flusher::delayed`, waiting for a room to have unwritten events.
    flusher: RefCell<Option<Waker>>,
    /// Some room holds back half a ring of unwritten events (see [`Batch::pressing`]).
    pressed: Cell<bool>,
    /// The task of `flusher::continue_passes`, once it runs: passes are then cut in slices.
    continuer: RefCell<Option<Waker>>,
}

/// Defers the fan-out of published events until dropped, so that events arriving together (one
/// upstream read) share one `writev` per subscriber. A room whose unwritten events would be
/// evicted by the next publish is written at once, so no parked subscriber is lapped by it.
pub struct Batch<'t> {
    table: &'t RoomTable,
}

impl Batch<'_> {
    /// Whether some room has held back events filling half its ring (by count or bytes): the
    /// caller should [`Batch::flush`] and let the woken tasks run before publishing more.
    pub fn pressing(&self) -> bool {
        self.table.pressed.get()
    }

    /// Writes every held-back event now.
    pub fn flush(&self) {
        self.table.flush_dirty();
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        let t = self.table;
        t.batches.set(t.batches.get() - 1);
        if t.batches.get() == 0 && !t.delayed.get() {
            t.flush_dirty();
        }
    }
}

/// A subscriber's place in the table; frees the slot when dropped.
pub struct Subscription<'t> {
    table: &'t RoomTable,
    slot: u32,
    room: usize,
}

/// The fixed sizes of the tables, set once at start-up (`max_rooms`, `ring_events`,
/// `ring_bytes`, `max_subscribers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Room entries, each with its ring.
    pub rooms: usize,
    /// Events each ring keeps.
    pub ring_events: usize,
    /// Bytes of frames each ring keeps (the newest frame is always kept).
    pub ring_bytes: usize,
    /// Subscriber slots, all rooms together.
    pub subscribers: usize,
}

/// Userspace bytes one connected subscriber costs: its task, its slot, its socket handle.
/// The fan-out bench measured 0.8–1.0 KiB of RSS per connected subscriber on top of its
/// preallocated 80-byte slot (docs/BENCHMARKS.md); this rounds that up.
pub const SUBSCRIBER_BYTES: usize = 1152;

impl Sizes {
    /// Most heap the rings can hold, frames being at most `max_frame` bytes. Each ring may go
    /// over its byte budget by one frame (the newest is always kept), and each frame may have
    /// its multi-room twin; plus one evicted frame that subscribers are still writing (pinned:
    /// see `rooms::fanout::Pin`). Saturating: on 32-bit targets large settings would overflow.
    pub fn rings_ceiling(&self, max_frame: usize) -> usize {
        // A slot, plus its event's id and origin strings.
        let slots = self
            .ring_events
            .saturating_mul(std::mem::size_of::<Option<super::ring::Entry>>() + 3 * 256);
        self.rooms.saturating_mul(
            (self.ring_bytes.saturating_add(max_frame))
                .saturating_mul(2)
                .saturating_add(max_frame)
                .saturating_add(slots + 512),
        )
    }

    /// Most heap the connected subscribers cost.
    pub fn subscribers_ceiling(&self) -> usize {
        self.subscribers.saturating_mul(SUBSCRIBER_BYTES)
    }
}

impl RoomTable {
    /// Allocates `sizes.rooms` rooms (each with its ring) and `sizes.subscribers` subscriber
    /// slots.
    pub fn new(sizes: Sizes) -> RoomTable {
        let Sizes {
            rooms: max_rooms,
            ring_events,
            ring_bytes,
            subscribers: max_subscribers,
        } = sizes;
        let rooms = (0..max_rooms)
            .map(|_| Room {
                node: RefCell::new(Rc::from("")),
                jid: RefCell::new(Rc::from("")),
                origin: Cell::new(Origin::Free),
                generation: Cell::new(0),
                ring: RefCell::new(Ring::new(ring_events, ring_bytes)),
                state: Cell::new(JoinState::Joining),
                first: Cell::new(NONE),
                subscribers: Cell::new(0),
                info: RefCell::new(RoomInfo::default()),
                synced: Cell::new(false),
                flushed: Cell::new(0),
                dirty: Cell::new(false),
                held_bytes: Cell::new(0),
                access_epoch: Cell::new(0),
                resume: Cell::new(NONE),
                pass_head: Cell::new(0),
            })
            .collect();
        let slots = (0..max_subscribers).map(|_| Slot::empty()).collect();
        RoomTable {
            rooms,
            used: Cell::new(0),
            subs: RefCell::new(Subscribers {
                slots,
                free: (0..max_subscribers as u32).rev().collect(),
            }),
            closing: Cell::new(false),
            heartbeat: Cell::new(0),
            room_cap: Cell::new(0),
            epoch: epoch_prefix(),
            stats: Stats::default(),
            archive: super::archive::Archive::default(),
            batches: Cell::new(0),
            delayed: Cell::new(false),
            flusher: RefCell::new(None),
            pressed: Cell::new(false),
            continuer: RefCell::new(None),
        }
    }

    /// A small table for unit tests: `capacity` rooms (4 events, 4 KiB, 4 subscribers), with
    /// `rooms` added as configured rooms of `conference.localhost`.
    #[cfg(test)]
    pub fn for_tests(capacity: usize, rooms: &[&str]) -> RoomTable {
        let t = RoomTable::new(Sizes {
            rooms: capacity,
            ring_events: 4,
            ring_bytes: 4096,
            subscribers: 4,
        });
        for room in rooms {
            t.add(room, "conference.localhost", Origin::Configured);
        }
        t
    }

    /// Gives a room an entry (or returns the one it has; a configured room stays configured).
    /// Entries never used come first; then, for a configured room or when the table is full,
    /// the entry of a discovered or on-demand room nobody reads and we are not in. Returns
    /// `None` when no entry can be had. Callers check `node` with `config::check_room_node`.
    pub fn add(&self, node: &str, muc: &str, origin: Origin) -> Option<usize> {
        let node = node.to_lowercase();
        let found = self.find_node(&node);
        if let Some(index) = found
            && !self.rooms[index].is_free()
        {
            if origin == Origin::Configured {
                self.rooms[index].origin.set(origin);
            }
            return Some(index);
        }
        let used = self.used.get();
        let reusable = |i: usize| {
            let r = &self.rooms[i];
            r.subscribers.get() == 0
                && (r.is_free()
                    || (matches!(r.origin.get(), Origin::Discovered | Origin::OnDemand)
                        && r.state.get() != JoinState::Joined))
        };
        let index = if let Some(i) = found.filter(|&i| reusable(i)) {
            i
        } else if let Some(i) = (0..used).find(|&i| self.rooms[i].is_free() && reusable(i)) {
            i
        } else if used < self.rooms.len() {
            self.used.set(used + 1);
            used
        } else {
            (0..used).find(|&i| reusable(i))?
        };
        let room = &self.rooms[index];
        *room.jid.borrow_mut() = Rc::from(format!("{node}@{}", muc.to_lowercase()));
        *room.node.borrow_mut() = Rc::from(node);
        room.origin.set(origin);
        room.generation.set(room.generation.get().wrapping_add(1));
        room.state.set(JoinState::Joining);
        room.synced.set(false);
        *room.info.borrow_mut() = RoomInfo::default();
        room.ring.borrow_mut().clear();
        Some(index)
    }

    /// Stops serving a room (it left the configuration): its subscribers get a last `status`
    /// event and their streams end; the URL answers `204` until the entry is reused; the XMPP
    /// side leaves the room.
    pub fn retire(&self, index: usize, reason: &'static str) {
        let json = super::frame::Json::new()
            .str("status", "removed")
            .str("reason", reason)
            .finish();
        self.publish(index, |seq| {
            let id = format!("~{seq}");
            Entry::new(
                super::frame::Event::new(Some("status"), &id, &json),
                id,
                super::ring::kind::STATUS,
            )
        });
        let room = &self.rooms()[index];
        room.state.set(JoinState::Gone(reason));
        room.origin.set(Origin::Free);
        room.generation.set(room.generation.get().wrapping_add(1));
        self.wake_room(index);
    }

    /// A retired entry also forgets its name: a room dropped on demand (missing, refused,
    /// unread) answers like any room the table does not hold, not `204`.
    pub fn forget(&self, index: usize) {
        let room = &self.rooms()[index];
        if room.is_free() {
            *room.node.borrow_mut() = Rc::from("");
            *room.jid.borrow_mut() = Rc::from("");
        }
    }

    /// Entries in use or used before (free ones included: check [`Room::is_free`]), by index.
    pub fn rooms(&self) -> &[Room] {
        &self.rooms[..self.used.get()]
    }

    /// The rooms being served, with their indices.
    pub fn active(&self) -> impl Iterator<Item = (usize, &Room)> {
        self.rooms()
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_free())
    }

    pub fn room(&self, index: usize) -> &Room {
        &self.rooms()[index]
    }

    /// Index of the room with this node (case-insensitive, as XMPP node names are).
    pub fn find_node(&self, node: &str) -> Option<usize> {
        if node.is_empty() {
            return None;
        }
        self.rooms().iter().position(|r| {
            let own = r.node.borrow();
            own.eq_ignore_ascii_case(node) || **own == *node.to_lowercase()
        })
    }

    /// Index of the room with this bare JID.
    pub fn find_jid(&self, jid: &str) -> Option<usize> {
        if jid.is_empty() {
            return None;
        }
        self.rooms().iter().position(|r| {
            let own = r.jid.borrow();
            own.eq_ignore_ascii_case(jid) || **own == *jid.to_lowercase()
        })
    }

    /// Appends the entry `make` builds (given the event's sequence number) to a room's ring and
    /// sends it to that room's subscribers (at the end of the [`Batch`], if one is open).
    /// Returns the sequence number.
    pub fn publish(&self, room: usize, make: impl FnOnce(u64) -> Entry) -> u64 {
        let r = &self.rooms()[room];
        let mut entry = make(r.ring.borrow().head());
        // Events of all rooms in publication order, for streams that merge several rooms.
        entry.order = self.stats.events_in.get();
        if (r.dirty.get() || r.resume.get() != NONE)
            && r.ring.borrow().oldest_after_push(entry.frame().len()) > r.flushed.get()
        {
            // The push would evict an event parked subscribers have not been sent yet.
            self.finish_room(room);
        }
        r.held_bytes.set(r.held_bytes.get() + entry.frame().len());
        let seq = r.ring.borrow_mut().push(entry);
        self.stats.events_in.add(1);
        r.dirty.set(true);
        if self.batches.get() > 0 || self.delayed.get() {
            let ring = r.ring.borrow();
            let held = ring.head() - r.flushed.get().max(ring.oldest());
            if 2 * held >= ring.capacity() as u64 || 2 * r.held_bytes.get() >= ring.max_bytes() {
                self.pressed.set(true);
            }
        }
        if self.delayed.get() {
            if let Some(flusher) = &*self.flusher.borrow() {
                flusher.wake_by_ref();
            }
        } else if self.batches.get() == 0 {
            self.flush_room(room);
        }
        seq
    }

    /// Leaves the writing of published events to `flusher::delayed` (`fanout_delay_ms`).
    pub fn set_delayed(&self, delayed: bool) {
        self.delayed.set(delayed);
    }

    /// Ready when some room has events not yet written to its subscribers; otherwise `waker`
    /// is woken at the next publish.
    pub fn poll_dirty(&self, waker: &Waker) -> std::task::Poll<()> {
        if self.rooms().iter().any(|r| r.dirty.get()) {
            return std::task::Poll::Ready(());
        }
        *self.flusher.borrow_mut() = Some(waker.clone());
        std::task::Poll::Pending
    }

    /// Opens a [`Batch`]: publishing defers its fan-out until the batch is dropped.
    pub fn batch(&self) -> Batch<'_> {
        self.batches.set(self.batches.get() + 1);
        Batch { table: self }
    }

    /// Writes every room's unwritten events to its subscribers.
    pub fn flush_dirty(&self) {
        self.pressed.set(false);
        for room in 0..self.rooms().len() {
            if self.rooms()[room].dirty.get() {
                self.flush_room(room);
            }
        }
    }

    /// Sends a room's new events to its subscribers: written directly to parked ones, their
    /// tasks woken for the others (see [`Mode`]). The pass visits at most [`SLICE`]
    /// subscribers when `flusher::continue_passes` runs, which continues it; while a pass is
    /// in progress, new events wait for the next one.
    fn flush_room(&self, room: usize) {
        let r = &self.rooms()[room];
        if r.resume.get() != NONE {
            r.dirty.set(true);
            self.wake_continuer();
            return;
        }
        self.start_pass(room);
        let budget = if self.continuer.borrow().is_some() {
            SLICE
        } else {
            usize::MAX
        };
        self.run_pass(room, budget);
    }

    /// Completes a room's fan-out now: the pass in progress, then one for newer events.
    fn finish_room(&self, room: usize) {
        let r = &self.rooms()[room];
        if r.resume.get() != NONE {
            self.run_pass(room, usize::MAX);
        }
        if r.dirty.get() {
            self.start_pass(room);
            self.run_pass(room, usize::MAX);
        }
    }

    fn start_pass(&self, room: usize) {
        let r = &self.rooms()[room];
        r.dirty.set(false);
        r.held_bytes.set(0);
        r.pass_head.set(r.ring.borrow().head());
        r.resume.set(r.first.get());
        if r.resume.get() == NONE {
            r.flushed.set(r.pass_head.get());
        }
    }

    fn wake_continuer(&self) {
        if let Some(waker) = &*self.continuer.borrow() {
            waker.wake_by_ref();
        }
    }

    /// Ready when a room has a fan-out pass to continue, or events that arrived during one;
    /// otherwise `waker` is woken when there is (`flusher::continue_passes`). Registering
    /// turns slicing on.
    pub fn poll_unfinished(&self, waker: &Waker) -> std::task::Poll<()> {
        *self.continuer.borrow_mut() = Some(waker.clone());
        let unfinished = self
            .rooms()
            .iter()
            .any(|r| r.resume.get() != NONE || self.next_pass_due(r));
        if unfinished {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// Continues every room's pass in progress by one [`SLICE`]; starts the next pass of a
    /// room whose pass ended with newer events waiting (unless `fanout_delay_ms` holds them).
    pub fn flush_unfinished(&self) {
        for room in 0..self.rooms().len() {
            let r = &self.rooms()[room];
            if r.resume.get() == NONE {
                if !self.next_pass_due(r) {
                    continue;
                }
                self.start_pass(room);
            }
            self.run_pass(room, SLICE);
        }
    }

    /// Whether events that arrived during a room's last pass are for the continuing task to
    /// write: not while a [`Batch`] or `fanout_delay_ms` holds them back.
    fn next_pass_due(&self, r: &Room) -> bool {
        r.dirty.get() && !self.delayed.get() && self.batches.get() == 0
    }

    /// Visits up to `budget` subscribers of the room's pass in progress.
    fn run_pass(&self, room: usize, budget: usize) {
        let r = &self.rooms()[room];
        let ring = r.ring.borrow();
        let subs = self.subs.borrow();
        let mut at = r.resume.get();
        let mut visited = 0;
        while at != NONE {
            if visited == budget {
                r.resume.set(at);
                self.wake_continuer();
                return;
            }
            visited += 1;
            let slot = &subs.slots[at as usize];
            at = slot.next;
            let wake = match slot.mode.get() {
                Mode::Wake => true,
                Mode::Blocked => slot.cursor.get().needs() < ring.oldest(),
                Mode::Parked => {
                    let Some(outlet) = &slot.outlet else {
                        slot.mode.set(Mode::Wake);
                        continue;
                    };
                    let mut cursor = slot.cursor.get();
                    let mut pin = slot.pin.take();
                    let wrote = fanout::write_pending(
                        &ring,
                        &mut cursor,
                        &mut pin,
                        slot.mask,
                        Out(&**outlet),
                        Some(&self.stats),
                    );
                    slot.cursor.set(cursor);
                    slot.pin.set(pin);
                    // Anything but a complete write is for the task to deal with.
                    let done = matches!(wrote, Ok(Wrote::CaughtUp));
                    if !done {
                        slot.mode.set(Mode::Wake);
                    }
                    !done
                }
            };
            if wake && let Some(waker) = &slot.waker {
                waker.wake_by_ref();
            }
        }
        r.resume.set(NONE);
        r.flushed.set(r.pass_head.get());
    }

    /// The table's counters, for the HTTP side.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The id this process gives event `seq` of a room whose MUC supplies no stanza-id.
    pub fn mint_id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.epoch)
    }

    /// Limits the subscribers of any one room (0 = no limit beyond the table's size).
    pub fn set_room_cap(&self, cap: usize) {
        self.room_cap.set(cap);
    }

    /// What decides who may read `room` (every room: `None`) has changed: its disco#info flags,
    /// or the tokens, private-room policy or CORS origins (a reload). Bumps the rooms' access
    /// epoch and hands every subscriber of them back to its task in [`Mode::Wake`] (so the
    /// fan-out no longer writes to parked ones), so that each checks its access again, with the
    /// credential it opened with, before anything more is written to it.
    pub fn access_changed(&self, room: Option<usize>) {
        let rooms = match room {
            Some(index) if index < self.rooms().len() => index..index + 1,
            Some(_) => return,
            None => 0..self.rooms().len(),
        };
        let subs = self.subs.borrow();
        for index in rooms {
            let r = &self.rooms()[index];
            r.access_epoch.set(r.access_epoch.get().wrapping_add(1));
            let mut at = r.first.get();
            while at != NONE {
                let slot = &subs.slots[at as usize];
                at = slot.next;
                // Parked ones would be written by the fan-out; blocked ones are checked now too
                // rather than when their socket drains.
                slot.mode.set(Mode::Wake);
                if let Some(waker) = &slot.waker {
                    waker.wake_by_ref();
                }
            }
        }
    }

    /// Counts a heartbeat and wakes every subscriber to send its keep-alive comment.
    pub fn beat(&self) {
        self.heartbeat.set(self.heartbeat.get() + 1);
        for room in 0..self.rooms().len() {
            self.wake_room(room);
        }
    }

    /// Heartbeats so far.
    pub fn heartbeat(&self) -> u64 {
        self.heartbeat.get()
    }

    /// Sets a room's join state. `Gone` wakes its subscribers, whose streams then end.
    pub fn set_state(&self, room: usize, state: JoinState) {
        self.rooms()[room].state.set(state);
        if let JoinState::Gone(_) = state {
            self.wake_room(room);
        }
    }

    /// Wakes every subscriber of one room.
    pub fn wake_room(&self, room: usize) {
        let subs = self.subs.borrow();
        let mut at = self.rooms()[room].first.get();
        while at != NONE {
            let slot = &subs.slots[at as usize];
            if let Some(waker) = &slot.waker {
                waker.wake_by_ref();
            }
            at = slot.next;
        }
    }

    /// Asks every subscriber to finish (shutdown) and wakes them all.
    pub fn close_all(&self) {
        self.closing.set(true);
        for room in 0..self.rooms().len() {
            self.wake_room(room);
        }
    }

    pub fn closing(&self) -> bool {
        self.closing.get()
    }

    /// Subscribers connected, all rooms.
    pub fn subscriber_count(&self) -> usize {
        let subs = self.subs.borrow();
        subs.slots.len() - subs.free.len()
    }

    /// Takes a subscriber slot for `room`; `None` when the subscriber table is full.
    pub fn subscribe(&self, room: usize) -> Option<Subscription<'_>> {
        let mut subs = self.subs.borrow_mut();
        let cap = self.room_cap.get();
        if cap > 0 && self.rooms()[room].subscribers.get() >= cap {
            self.stats.rejected_full.add(1);
            return None;
        }
        let Some(slot) = subs.free.pop() else {
            self.stats.rejected_full.add(1);
            return None;
        };
        let r = &self.rooms()[room];
        let old_first = r.first.get();
        subs.slots[slot as usize] = Slot {
            room: room as u32,
            next: old_first,
            ..Slot::empty()
        };
        if old_first != NONE {
            subs.slots[old_first as usize].prev = slot;
        }
        r.first.set(slot);
        r.subscribers.set(r.subscribers.get() + 1);
        Some(Subscription {
            table: self,
            slot,
            room,
        })
    }

    fn unsubscribe(&self, slot: u32) {
        let mut subs = self.subs.borrow_mut();
        let Slot {
            room, next, prev, ..
        } = std::mem::replace(&mut subs.slots[slot as usize], Slot::empty());
        let r = &self.rooms()[room as usize];
        if r.resume.get() == slot {
            // The fan-out pass in progress was to visit it next.
            r.resume.set(next);
        }
        if prev == NONE {
            r.first.set(next);
        } else {
            subs.slots[prev as usize].next = next;
        }
        if next != NONE {
            subs.slots[next as usize].prev = prev;
        }
        r.subscribers.set(r.subscribers.get() - 1);
        subs.free.push(slot);
    }
}

/// This run's id prefix: start time in seconds, base 36 (`t5x1k2m`).
fn epoch_prefix() -> String {
    let mut n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

impl<'t> Subscription<'t> {
    pub fn room(&self) -> &'t Room {
        self.table.room(self.room)
    }

    /// Stores the waker to call when the room has news (cheap when it is the same task's).
    pub fn register(&self, waker: &Waker) {
        let mut subs = self.table.subs.borrow_mut();
        let slot = &mut subs.slots[self.slot as usize];
        match &slot.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
    }

    pub fn closing(&self) -> bool {
        self.table.closing()
    }

    /// Hands the room table this subscriber's socket and filter, and where it starts, so that
    /// new events can be written to it directly while it is [`Mode::Parked`].
    pub fn attach(&self, outlet: Rc<dyn Outlet>, mask: u8, first: u64) {
        let mut subs = self.table.subs.borrow_mut();
        let slot = &mut subs.slots[self.slot as usize];
        slot.outlet = Some(outlet);
        slot.mask = mask;
        slot.cursor.set(Cursor {
            seq: first,
            offset: 0,
        });
        slot.pin.set(None);
    }

    fn own_slot(&self) -> std::cell::Ref<'_, Slot> {
        std::cell::Ref::map(self.table.subs.borrow(), |s| &s.slots[self.slot as usize])
    }

    /// Where the subscriber is in its room's ring.
    pub fn cursor(&self) -> Cursor {
        self.own_slot().cursor.get()
    }

    pub fn set_cursor(&self, cursor: Cursor) {
        self.own_slot().cursor.set(cursor);
    }

    /// Takes the frame the cursor is mid-way through (give it back with [`Self::set_pin`]).
    pub fn take_pin(&self) -> fanout::Pin {
        self.own_slot().pin.take()
    }

    pub fn set_pin(&self, pin: fanout::Pin) {
        self.own_slot().pin.set(pin);
    }

    pub fn mode(&self) -> Mode {
        self.own_slot().mode.get()
    }

    /// How the table is to treat this subscriber while its task sleeps.
    pub fn set_mode(&self, mode: Mode) {
        self.own_slot().mode.set(mode);
    }

    pub fn heartbeat(&self) -> u64 {
        self.table.heartbeat()
    }

    /// The table's counters.
    pub fn stats(&self) -> &'t Stats {
        &self.table.stats
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        self.table.unsubscribe(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn table() -> RoomTable {
        let t = RoomTable::new(Sizes {
            rooms: 2,
            ring_events: 4,
            ring_bytes: 1 << 16,
            subscribers: 3,
        });
        t.add("Lobby", "conference.localhost", Origin::Configured)
            .unwrap();
        t.add("news", "conference.localhost", Origin::Configured)
            .unwrap();
        assert!(
            t.add("extra", "conference.localhost", Origin::OnDemand)
                .is_none()
        );
        t
    }

    #[test]
    fn rooms_are_found_case_insensitively() {
        let t = table();
        assert_eq!(t.find_node("lobby"), Some(0));
        assert_eq!(t.find_node("LOBBY"), Some(0));
        assert_eq!(t.find_jid("news@Conference.localhost"), Some(1));
        assert_eq!(t.find_node("nope"), None);
    }

    #[test]
    fn publish_wakes_only_that_rooms_subscribers() {
        let t = table();
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let sa = t.subscribe(0).unwrap();
        let sb = t.subscribe(1).unwrap();
        sa.register(&Waker::from(a.clone()));
        sb.register(&Waker::from(b.clone()));
        for n in 1..=2 {
            t.publish(0, |seq| {
                Entry::new(
                    crate::rooms::frame::Event::raw(format!("data: {n}\n\n").into_bytes().into()),
                    t.mint_id(seq),
                    crate::rooms::ring::kind::MESSAGE,
                )
            });
        }
        assert_eq!(t.room(0).ring().find_id(&t.mint_id(1)), Some(1));
        assert_eq!(a.0.load(Ordering::SeqCst), 2);
        assert_eq!(b.0.load(Ordering::SeqCst), 0);
        t.close_all();
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
    }

    /// A socket for the fan-out: takes at most `room` bytes in total, then would block.
    struct FakeSocket {
        data: RefCell<Vec<u8>>,
        room: Cell<usize>,
        writes: Cell<usize>,
    }

    impl Outlet for FakeSocket {
        fn write_vectored(&self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
            self.writes.set(self.writes.get() + 1);
            if self.room.get() == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.room.get());
                self.data.borrow_mut().extend_from_slice(&b[..take]);
                self.room.set(self.room.get() - take);
                n += take;
            }
            Ok(n)
        }
    }

    fn socket(room: usize) -> Rc<FakeSocket> {
        Rc::new(FakeSocket {
            data: RefCell::new(Vec::new()),
            room: Cell::new(room),
            writes: Cell::new(0),
        })
    }

    fn say(t: &RoomTable, room: usize, text: &str) -> u64 {
        t.publish(room, |seq| {
            Entry::new(
                crate::rooms::frame::Event::raw(format!("data: {text}\n\n").into_bytes().into()),
                t.mint_id(seq),
                crate::rooms::ring::kind::MESSAGE,
            )
        })
    }

    fn parked<'t>(
        t: &'t RoomTable,
        room: usize,
        sock: &Rc<FakeSocket>,
    ) -> (Subscription<'t>, Arc<Count>) {
        let sub = t.subscribe(room).unwrap();
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        sub.register(&Waker::from(woken.clone()));
        sub.attach(
            sock.clone(),
            crate::rooms::ring::kind::DEFAULT,
            t.room(room).ring().head(),
        );
        sub.set_mode(Mode::Parked);
        (sub, woken)
    }

    #[test]
    fn parked_subscribers_are_written_directly_without_a_wake() {
        let t = table();
        let (a, b) = (socket(1 << 20), socket(1 << 20));
        let (sa, wa) = parked(&t, 0, &a);
        let (sb, wb) = parked(&t, 0, &b);
        say(&t, 0, "one");
        say(&t, 0, "two");
        for (sock, sub, woken) in [(&a, &sa, &wa), (&b, &sb, &wb)] {
            assert_eq!(*sock.data.borrow(), b"data: one\n\ndata: two\n\n");
            assert_eq!(sock.writes.get(), 2);
            assert_eq!(woken.0.load(Ordering::SeqCst), 0);
            assert_eq!(sub.mode(), Mode::Parked);
            assert_eq!(sub.cursor(), Cursor { seq: 2, offset: 0 });
        }
        assert_eq!(t.stats.events_out.get(), 4);
    }

    #[test]
    fn a_full_socket_hands_the_stream_back_to_its_task() {
        let t = table();
        let (full, fine) = (socket(13), socket(1 << 20));
        let (sf, wf) = parked(&t, 0, &full);
        let (_ok, wok) = parked(&t, 0, &fine);
        say(&t, 0, "one");
        say(&t, 0, "two");
        // 11 bytes of "one" and 2 of "two" went out; then the task was woken to finish.
        assert_eq!(*full.data.borrow(), b"data: one\n\nda");
        assert_eq!(sf.mode(), Mode::Wake);
        assert_eq!(sf.cursor(), Cursor { seq: 1, offset: 2 });
        assert_eq!(wf.0.load(Ordering::SeqCst), 1);
        assert_eq!(wok.0.load(Ordering::SeqCst), 0);
        // Blocked (waiting for the socket): woken only once an event it needs is evicted;
        // "two", which it is mid-way through, is pinned, so that is the one after it.
        sf.set_mode(Mode::Blocked);
        for word in ["three", "four", "five", "six"] {
            say(&t, 0, word);
        }
        assert_eq!(t.room(0).ring().oldest(), 2);
        assert_eq!(wf.0.load(Ordering::SeqCst), 1);
        say(&t, 0, "seven");
        assert_eq!(t.room(0).ring().oldest(), 3);
        assert_eq!(wf.0.load(Ordering::SeqCst), 2);
        let words = ["one", "two", "three", "four", "five", "six", "seven"];
        let expected: String = words.iter().map(|w| format!("data: {w}\n\n")).collect();
        assert_eq!(*fine.data.borrow(), expected.as_bytes());
    }

    #[test]
    fn a_batch_writes_its_events_together_and_never_laps_parked_subscribers() {
        let t = table();
        let a = socket(1 << 20);
        let (sa, _wa) = parked(&t, 0, &a);
        {
            let batch = t.batch();
            say(&t, 0, "1");
            say(&t, 0, "2");
            assert_eq!(a.writes.get(), 0);
            assert!(batch.pressing(), "2 of a 4-event ring held back");
        }
        assert_eq!(a.writes.get(), 1);
        assert_eq!(*a.data.borrow(), b"data: 1\n\ndata: 2\n\n");
        // A burst of 10 into a 4-event ring in one batch: written before anything unsent is
        // evicted, so nothing is lost and nobody is lapped.
        {
            let _batch = t.batch();
            for n in 3..=12 {
                say(&t, 0, &n.to_string());
            }
        }
        let text = String::from_utf8(a.data.borrow().clone()).unwrap();
        let got: Vec<&str> = text.split("\n\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(got.len(), 12, "{text}");
        assert!(a.writes.get() < 12, "{} writes", a.writes.get());
        assert_eq!(sa.mode(), Mode::Parked);
        assert_eq!(sa.cursor().seq, 12);
    }

    #[test]
    fn with_a_fanout_delay_events_wait_for_the_flusher() {
        let t = table();
        t.set_delayed(true);
        let a = socket(1 << 20);
        let (_sa, wa) = parked(&t, 0, &a);
        let flusher = Arc::new(Count(AtomicUsize::new(0)));
        assert!(t.poll_dirty(&Waker::from(flusher.clone())).is_pending());
        say(&t, 0, "1");
        say(&t, 0, "2");
        drop(t.batch());
        assert_eq!(a.writes.get(), 0);
        assert!(flusher.0.load(Ordering::SeqCst) >= 1);
        assert!(t.poll_dirty(&Waker::from(flusher.clone())).is_ready());
        t.flush_dirty();
        assert_eq!(a.writes.get(), 1);
        assert_eq!(*a.data.borrow(), b"data: 1\n\ndata: 2\n\n");
        assert_eq!(wa.0.load(Ordering::SeqCst), 0);
        assert!(t.poll_dirty(&Waker::from(flusher)).is_pending());
        // Still never lapped: a burst past the ring is written before it is evicted.
        for n in 3..=12 {
            say(&t, 0, &n.to_string());
        }
        t.flush_dirty();
        let text = String::from_utf8(a.data.borrow().clone()).unwrap();
        assert_eq!(text.matches("data: ").count(), 12, "{text}");
    }

    /// A table whose passes are sliced (the continuing task registered), with `n` parked
    /// subscribers of room 0 on roomy sockets.
    fn sliced(n: usize, ring_events: usize) -> (RoomTable, Arc<Count>) {
        let t = RoomTable::new(Sizes {
            rooms: 1,
            ring_events,
            ring_bytes: 1 << 20,
            subscribers: n,
        });
        t.add("big", "conference.localhost", Origin::Configured)
            .unwrap();
        let continuer = Arc::new(Count(AtomicUsize::new(0)));
        assert!(
            t.poll_unfinished(&Waker::from(continuer.clone()))
                .is_pending()
        );
        (t, continuer)
    }

    fn written(socks: &[Rc<FakeSocket>]) -> Vec<String> {
        socks
            .iter()
            .map(|s| String::from_utf8(s.data.borrow().clone()).unwrap())
            .collect()
    }

    #[test]
    fn a_pass_over_many_subscribers_yields_after_a_slice_and_is_continued() {
        let n = SLICE + 44;
        let (t, continuer) = sliced(n, 16);
        let socks: Vec<_> = (0..n).map(|_| socket(1 << 20)).collect();
        let subs: Vec<_> = socks.iter().map(|s| parked(&t, 0, s)).collect();
        say(&t, 0, "one");
        let got = written(&socks);
        assert_eq!(got.iter().filter(|d| !d.is_empty()).count(), SLICE);
        assert_eq!(
            continuer.0.load(Ordering::SeqCst),
            1,
            "the continuing task woken"
        );
        // Published during the pass: waits for the next one.
        say(&t, 0, "two");
        assert_eq!(written(&socks), got);
        let mut rounds = 0;
        let noop = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        while t.poll_unfinished(&noop).is_ready() {
            t.flush_unfinished();
            rounds += 1;
            assert!(rounds < 10);
        }
        assert!(rounds >= 2, "{rounds}");
        for d in written(&socks) {
            assert_eq!(d, "data: one\n\ndata: two\n\n");
        }
        for (sub, woken) in &subs {
            assert_eq!(sub.mode(), Mode::Parked);
            assert_eq!(woken.0.load(Ordering::SeqCst), 0);
        }
    }

    #[test]
    fn a_subscriber_leaving_where_a_sliced_pass_resumes_does_not_break_it() {
        let n = SLICE + 3;
        let (t, _continuer) = sliced(n, 16);
        let socks: Vec<_> = (0..n).map(|_| socket(1 << 20)).collect();
        let mut subs: Vec<_> = socks.iter().map(|s| Some(parked(&t, 0, s))).collect();
        say(&t, 0, "one");
        // The newest subscriber is visited first: the pass stopped before subscriber 2.
        assert!(socks[2].data.borrow().is_empty() && !socks[3].data.borrow().is_empty());
        subs[2] = None;
        let noop = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        while t.poll_unfinished(&noop).is_ready() {
            t.flush_unfinished();
        }
        let got = written(&socks);
        assert_eq!(got[2], "");
        for (i, d) in got.iter().enumerate().filter(|(i, _)| *i != 2) {
            assert_eq!(d, "data: one\n\n", "subscriber {i}");
        }
        drop(subs);
    }

    #[test]
    fn a_sliced_pass_is_completed_before_an_eviction_would_lap_its_parked_subscribers() {
        let n = SLICE + 10;
        let (t, _continuer) = sliced(n, 4);
        let socks: Vec<_> = (0..n).map(|_| socket(1 << 20)).collect();
        let _subs: Vec<_> = socks.iter().map(|s| parked(&t, 0, s)).collect();
        let words = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        for w in words {
            say(&t, 0, w);
        }
        let noop = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        while t.poll_unfinished(&noop).is_ready() {
            t.flush_unfinished();
        }
        let all: String = words.iter().map(|w| format!("data: {w}\n\n")).collect();
        for d in written(&socks) {
            assert_eq!(d, all);
        }
        assert_eq!(t.stats.dropped_slow.get(), 0);
    }

    #[test]
    fn access_changes_hand_parked_subscribers_back_to_their_tasks() {
        let t = table();
        let (a, b) = (socket(1 << 20), socket(1 << 20));
        let (sa, wa) = parked(&t, 0, &a);
        let (sb, wb) = parked(&t, 1, &b);
        let epochs = (t.room(0).access_epoch(), t.room(1).access_epoch());
        t.access_changed(Some(0));
        assert_eq!(t.room(0).access_epoch(), epochs.0 + 1);
        assert_eq!(t.room(1).access_epoch(), epochs.1, "only that room");
        assert_eq!((sa.mode(), wa.0.load(Ordering::SeqCst)), (Mode::Wake, 1));
        assert_eq!((sb.mode(), wb.0.load(Ordering::SeqCst)), (Mode::Parked, 0));
        // Not re-checked yet: the fan-out writes nothing to it, it only wakes its task.
        say(&t, 0, "after");
        assert!(a.data.borrow().is_empty());
        assert_eq!(wa.0.load(Ordering::SeqCst), 2);
        t.access_changed(None);
        assert_eq!(t.room(1).access_epoch(), epochs.1 + 1);
        assert_eq!(sb.mode(), Mode::Wake);
        say(&t, 1, "after");
        assert!(b.data.borrow().is_empty());
        t.access_changed(Some(99));
    }

    #[test]
    fn a_subscriber_slot_fits_the_memory_budget() {
        // `SUBSCRIBER_BYTES` counts 80 bytes for the preallocated slot.
        assert!(
            std::mem::size_of::<Slot>() <= 80,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }

    #[test]
    fn subscriber_table_is_fixed_and_slots_are_reused() {
        let t = table();
        let s1 = t.subscribe(0).unwrap();
        let s2 = t.subscribe(0).unwrap();
        let s3 = t.subscribe(1).unwrap();
        assert!(t.subscribe(1).is_none());
        assert_eq!(t.stats.rejected_full.get(), 1);
        t.set_room_cap(2);
        assert_eq!((t.room(0).subscribers(), t.subscriber_count()), (2, 3));
        drop(s2);
        let s4 = t.subscribe(0).unwrap();
        assert!(t.subscribe(0).is_none(), "room cap");
        t.set_room_cap(0);
        drop(s1);
        drop(s4);
        assert_eq!(t.room(0).subscribers(), 0);
        assert_eq!(t.room(0).first.get(), NONE);
        drop(s3);
        assert_eq!(t.subscriber_count(), 0);
    }
}
