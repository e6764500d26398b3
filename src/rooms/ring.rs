//! The bounded ring of one room's recent event frames.
//!
//! Events are numbered by a sequence that only grows. The ring keeps at most `capacity` events
//! and at most `max_bytes` of frames (the newest event is always kept, whatever its size), so a
//! room's memory has a ceiling. A subscriber is a sequence number into this ring; one whose next
//! event has been evicted has fallen behind and is dropped by its writer.

use std::cell::{Cell, OnceCell};
use std::rc::Rc;

use super::frame::Event;
use super::resume::{Base, EventId};

/// Event kinds, as bits: a subscriber's filter is a set of them.
pub mod kind {
    pub const MESSAGE: u8 = 1;
    pub const SUBJECT: u8 = 2;
    pub const STATUS: u8 = 4;
    pub const JOIN: u8 = 8;
    pub const LEAVE: u8 = 16;
    pub const CORRECTION: u8 = 32;
    pub const RETRACTION: u8 = 64;
    /// What every stream gets unless it asks for more (join/leave are opt-in).
    pub const DEFAULT: u8 = MESSAGE | SUBJECT | STATUS | CORRECTION | RETRACTION;

    /// The bit for an `events=` / config name.
    pub fn from_name(name: &str) -> Option<u8> {
        Some(match name {
            "message" => MESSAGE,
            "subject" => SUBJECT,
            "status" => STATUS,
            "join" => JOIN,
            "leave" => LEAVE,
            "correction" => CORRECTION,
            "retraction" => RETRACTION,
            _ => return None,
        })
    }
}

/// One event held by the ring.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The SSE bytes (shared with every subscriber writing them) and where their parts lie.
    event: Event,
    /// The event's `id:` (what a client sends back as `Last-Event-ID`).
    pub id: Box<str>,
    /// One of the [`kind`] bits.
    pub kind: u8,
    /// Identity of a message for history de-duplication (0 for other events).
    pub key: u64,
    /// A message's own stanza `id` attribute and its nick, to find it for a correction.
    pub origin: Option<(Box<str>, Box<str>)>,
    /// Retracted or moderated: no longer sent to anyone who has not had it yet.
    pub retracted: Cell<bool>,
    /// Position among the events of all rooms (set by the room table when published).
    pub order: u64,
    /// The frame for streams of several rooms: no `id:` line (those streams write composite
    /// ids), `"room"` first in the JSON. Made from the event's parts the first time one is
    /// needed.
    multi: OnceCell<Rc<[u8]>>,
}

impl Entry {
    pub fn new(event: Event, id: impl Into<Box<str>>, kind: u8) -> Entry {
        Entry {
            event,
            id: id.into(),
            kind,
            key: 0,
            origin: None,
            retracted: Cell::new(false),
            order: 0,
            multi: OnceCell::new(),
        }
    }

    /// The SSE bytes every single-room subscriber is sent.
    pub fn frame(&self) -> &Rc<[u8]> {
        &self.event.frame
    }

    /// This event as sent on a stream of several rooms (see [`Event::multi`]).
    pub fn multi_frame(&self, node: &str) -> Rc<[u8]> {
        self.multi.get_or_init(|| self.event.multi(node)).clone()
    }

    /// Whether a subscriber with filter `mask` is to be sent this event.
    pub fn wanted(&self, mask: u8) -> bool {
        self.kind & mask != 0 && !self.retracted.get()
    }
}

pub struct Ring {
    slots: Box<[Option<Entry>]>,
    /// Sequence number the next pushed event gets.
    head: u64,
    /// Events held: `head - len .. head`.
    len: usize,
    bytes: usize,
    max_bytes: usize,
}

impl Ring {
    /// All slots are allocated here, once.
    pub fn new(capacity: usize, max_bytes: usize) -> Ring {
        assert!(capacity > 0, "ring capacity is validated by the config");
        Ring {
            slots: vec![None; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
            bytes: 0,
            max_bytes,
        }
    }

    /// Drops every event (the entry now holds another room). Sequence numbers go on.
    pub fn clear(&mut self) {
        while self.len > 0 {
            self.evict_oldest();
        }
    }

    /// Sequence number of the next event.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Sequence number of the oldest event still held (`== head()` when empty).
    pub fn oldest(&self) -> u64 {
        self.head - self.len as u64
    }

    /// Bytes of frames held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Events the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Bytes of frames the ring holds at most (the newest event is kept whatever its size).
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// What [`Ring::oldest`] would be after pushing a frame of `len` bytes.
    pub fn oldest_after_push(&self, len: usize) -> u64 {
        let (mut held, mut bytes, mut oldest) = (self.len, self.bytes, self.oldest());
        while held == self.slots.len() || (held > 0 && bytes + len > self.max_bytes) {
            bytes -= self.get(oldest).map_or(0, |f| f.len());
            held -= 1;
            oldest += 1;
        }
        oldest
    }

    /// Adds an event, evicting the oldest ones as the count or byte budget requires.
    /// Returns its sequence number.
    pub fn push(&mut self, entry: Entry) -> u64 {
        let oldest = self.oldest_after_push(entry.frame().len());
        while self.oldest() < oldest {
            self.evict_oldest();
        }
        let seq = self.head;
        let cap = self.slots.len();
        self.bytes += entry.frame().len();
        self.slots[(seq % cap as u64) as usize] = Some(entry);
        self.head += 1;
        self.len += 1;
        seq
    }

    fn evict_oldest(&mut self) {
        let cap = self.slots.len() as u64;
        let index = (self.oldest() % cap) as usize;
        if let Some(entry) = self.slots[index].take() {
            self.bytes -= entry.frame().len();
        }
        self.len -= 1;
    }

    /// The frame with sequence number `seq`, if still held.
    pub fn get(&self, seq: u64) -> Option<&Rc<[u8]>> {
        self.entry(seq).map(Entry::frame)
    }

    /// The entry with sequence number `seq`, if still held.
    pub fn entry(&self, seq: u64) -> Option<&Entry> {
        if seq < self.oldest() || seq >= self.head {
            return None;
        }
        self.slots[(seq % self.slots.len() as u64) as usize].as_ref()
    }

    /// Where a client that last had event `id` resumes: after that event; or, for a named
    /// event's id (`<message id>~<n>`) from an earlier run, after that message. `None`: not
    /// held, or in no shape this daemon issues (the caller reports a gap). A `~<n>` id with no
    /// message before it that the ring does not hold is not held either: the ring may have
    /// moved past what followed it.
    pub fn resume_point(&self, id: &str) -> Option<u64> {
        let parsed = EventId::parse(id)?;
        if let Some(seq) = self.find_id(id) {
            return Some(seq + 1);
        }
        parsed.named?;
        match parsed.base {
            Base::Empty => None,
            Base::Minted(base) | Base::Stanza(base) => self.find_id(base).map(|seq| seq + 1),
        }
    }

    /// Sequence number of the held event whose id is `id` (newest first).
    pub fn find_id(&self, id: &str) -> Option<u64> {
        (self.oldest()..self.head)
            .rev()
            .find(|&seq| self.entry(seq).is_some_and(|e| &*e.id == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Entry {
        Entry::new(
            Event::raw(vec![b'x'; n].into()),
            format!("id{n}"),
            kind::MESSAGE,
        )
    }

    #[test]
    fn keeps_the_newest_events_by_count() {
        let mut r = Ring::new(3, 1 << 20);
        for i in 0..5 {
            assert_eq!(r.push(frame(i + 1)), i as u64);
        }
        assert_eq!((r.oldest(), r.head(), r.len()), (2, 5, 3));
        assert!(r.get(1).is_none());
        assert_eq!(r.get(2).unwrap().len(), 3);
        assert_eq!(r.get(4).unwrap().len(), 5);
        assert!(r.get(5).is_none());
        assert_eq!(r.bytes(), 3 + 4 + 5);
        assert_eq!(r.find_id("id4"), Some(3));
        assert_eq!(r.find_id("id1"), None);
        assert_eq!(r.resume_point("id4"), Some(4));
        assert_eq!(r.resume_point("id4~2"), Some(4), "a named event after id4");
        assert_eq!(
            r.resume_point("~3"),
            None,
            "named events before any message, not held"
        );
        assert_eq!(r.resume_point("id4\u{1}"), None);
        assert_eq!(r.resume_point("id1~1"), None);
        assert_eq!(r.resume_point("id4~x"), None);
    }

    #[test]
    fn multi_room_frames_come_from_the_parts() {
        // An id that holds `data: {` (B1: the frame used to be searched for it, and panicked).
        let e = Entry::new(
            Event::message("x data: {y", Some("a"), "hi"),
            "x data: {y",
            kind::MESSAGE,
        );
        assert_eq!(
            &*e.multi_frame("lobby"),
            b"data: {\"room\":\"lobby\",\"nick\":\"a\",\"body\":\"hi\"}\n\n"
        );
        assert_eq!(
            &**e.frame(),
            b"id: x data: {y\ndata: {\"nick\":\"a\",\"body\":\"hi\"}\n\n"
        );
    }

    #[test]
    fn byte_budget_evicts_but_keeps_the_newest() {
        let mut r = Ring::new(10, 100);
        r.push(frame(40));
        r.push(frame(40));
        r.push(frame(40));
        assert_eq!((r.oldest(), r.len(), r.bytes()), (1, 2, 80));
        r.push(frame(500));
        assert_eq!((r.oldest(), r.len(), r.bytes()), (3, 1, 500));
        r.push(frame(10));
        assert_eq!((r.oldest(), r.len(), r.bytes()), (4, 1, 10));
    }
}
