//! Streams that merge several rooms on one connection (`GET /eventsource?room=a&room=b`), for
//! pages that would otherwise need more EventSources than a browser opens to one site.
//!
//! Each event is the room's shared multi-room frame (`"room"` first in its JSON, no `id:`)
//! preceded by a composite `id:` naming, for every room of the stream, the last event sent from
//! it: `lobby=ID1&news=ID2` (parts percent-encoded). A reconnecting EventSource sends that back
//! as `Last-Event-ID`, and every room resumes where it was. Events of different rooms go out in
//! publication order. Unlike single-room streams, the id lines make these bytes per-subscriber,
//! so pending events are gathered into a small per-stream buffer (at most [`BUFFER`] bytes
//! beyond one event) before each write.

use std::io::{self, Write};
use std::net::TcpStream;
use std::task::Poll;

use async_io::Async;

use super::access::{Guard, Standing};
use super::sse::{Ended, Step};
use super::start::{Gap, Start};
use crate::rooms::archive::Resumed;
use crate::rooms::frame::Json;
use crate::rooms::resume::EventId;
use crate::rooms::table::{JoinState, Subscription};

/// Rooms one stream may merge.
pub const MAX_ROOMS: usize = 8;
/// Bytes gathered for one write (one event may exceed it).
pub const BUFFER: usize = 16 * 1024;

/// `node=id&node=id…` for the given (node, last id) pairs.
pub fn composite<'a>(parts: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (node, id) in parts {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&super::request::percent_encode(node));
        out.push('=');
        out.push_str(&super::request::percent_encode(id));
    }
    out
}

/// Parts a composite id may have at most (a stream merges at most [`MAX_ROOMS`]; a page that
/// changed its room list may send a few more).
const MAX_PARTS: usize = 4 * MAX_ROOMS;

/// The (node, id) pairs of a composite id; `None` if it is not one this daemon can have issued:
/// every node a valid room node, every id empty or an event id (`rooms::resume`).
pub fn parse_composite(id: &str) -> Option<Vec<(String, String)>> {
    if id.split('&').count() > MAX_PARTS {
        return None;
    }
    id.split('&')
        .map(|pair| {
            let (node, id) = pair.split_once('=')?;
            let node = super::request::percent_decode(node)?.to_lowercase();
            let id = super::request::percent_decode(id)?;
            crate::config::check_room_node(&node).ok()?;
            if !id.is_empty() {
                EventId::parse(&id)?;
            }
            Some((node, id))
        })
        .collect()
}

/// Where each room of the stream starts, from the request's `Start`: a composite
/// `Last-Event-ID` resumes each room it names (an empty id: from the oldest held event), rooms
/// it does not name start live; an id that is not a composite one is unknown to every room (a
/// `gap` each); `?history=N` gives each room its last N.
pub fn starts(nodes: &[&str], start: &Start) -> Vec<Start> {
    match start {
        Start::After(id) => {
            let Some(parts) = parse_composite(id) else {
                return nodes.iter().map(|_| Start::Unknown(id.clone())).collect();
            };
            nodes
                .iter()
                .map(|node| match parts.iter().find(|(n, _)| n == node) {
                    Some((_, id)) if id.is_empty() => Start::Last(usize::MAX),
                    Some((_, id)) => Start::After(id.clone()),
                    None => Start::Live,
                })
                .collect()
        }
        other => nodes.iter().map(|_| other.clone()).collect(),
    }
}

/// One room of a stream.
pub struct Follow<'t> {
    pub sub: Subscription<'t>,
    /// Next event to send.
    pub seq: u64,
    /// Id of the last event sent (or the one before the start), for the composite id.
    pub last_id: String,
    /// The room's access epoch when this stream last checked its access to it.
    pub checked: u64,
    /// The room's flags were not known at that check: the stream sends nothing until they are.
    pub held: bool,
}

impl<'t> Follow<'t> {
    pub fn new(sub: Subscription<'t>) -> Follow<'t> {
        Follow {
            checked: sub.room().access_epoch(),
            held: false,
            sub,
            seq: 0,
            last_id: String::new(),
        }
    }
}

/// Checks access again to every room whose access epoch moved (every room: `all`); the first
/// room refused and why.
fn recheck(follows: &mut [Follow<'_>], guard: &Guard, all: bool) -> Option<(usize, &'static str)> {
    for (i, follow) in follows.iter_mut().enumerate() {
        let room = follow.sub.room();
        let epoch = room.access_epoch();
        if all || epoch != follow.checked {
            follow.checked = epoch;
            follow.held = match guard.recheck(room) {
                Standing::Refused(why) => return Some((i, why)),
                Standing::Held => true,
                Standing::Reads => false,
            };
        }
    }
    None
}

/// The response head, `retry:`, a `gap` event for each room whose resume id is no longer
/// held, and what the archive gave the rooms resumed from it (`resumed`, by room: the start the
/// client asked for and what was found); sets each follow's starting point.
pub fn opening(
    head: &str,
    retry_ms: usize,
    follows: &mut [Follow<'_>],
    starts: &[Start],
    resumed: &[Option<(Start, Resumed)>],
) -> Vec<u8> {
    let mut out = head.as_bytes().to_vec();
    if retry_ms > 0 {
        out.extend_from_slice(format!("retry: {retry_ms}\n\n").as_bytes());
    }
    for (follow, start) in follows.iter_mut().zip(starts) {
        let room = follow.sub.room();
        let ring = room.ring();
        let position = start.position(&ring);
        follow.seq = match &position {
            Ok(seq) => *seq,
            Err(gap) => {
                push_gap(&mut out, &room.node(), gap);
                gap.oldest
            }
        };
        follow.last_id = match (start, position) {
            (Start::After(id), Ok(_)) => id.clone(),
            _ => follow
                .seq
                .checked_sub(1)
                .and_then(|s| ring.entry(s))
                .map_or_else(String::new, |e| e.id.to_string()),
        };
    }
    // Rooms resumed from their archive stand at the id the client gave until their archived
    // messages are written, each with the composite id it makes.
    for (follow, resumed) in follows.iter_mut().zip(resumed) {
        if let Some((Start::After(asked), _)) = resumed {
            follow.last_id = asked.clone();
        }
    }
    for (i, resumed) in resumed.iter().enumerate() {
        let Some((Start::After(asked), found)) = resumed else {
            continue;
        };
        let node = follows[i].sub.room().node();
        for m in &found.events {
            follows[i].last_id = m.id.to_string();
            push_id(&mut out, follows);
            out.extend_from_slice(&m.event.multi(&node));
        }
        if found.short {
            crate::rooms::frame::push_gap(&mut out, &Resumed::gap_json(asked, Some(&node)));
        }
    }
    out
}

/// Appends the `id:` line naming where every room of the stream stands.
fn push_id(buf: &mut Vec<u8>, follows: &[Follow<'_>]) {
    let nodes: Vec<_> = follows.iter().map(|f| f.sub.room().node()).collect();
    let id = composite(
        nodes
            .iter()
            .zip(follows.iter())
            .map(|(node, f)| (&**node, f.last_id.as_str())),
    );
    buf.extend_from_slice(b"id: ");
    buf.extend_from_slice(id.as_bytes());
    buf.push(b'\n');
}

/// Appends the `gap` event of one room whose resume id is not held.
fn push_gap(out: &mut Vec<u8>, node: &str, gap: &Gap<'_>) {
    let json = Json::new()
        .str("room", node)
        .str("lastEventId", gap.id)
        .str(
            "reason",
            "events after this id are no longer held; some may be missing",
        )
        .finish();
    crate::rooms::frame::push_gap(out, &json);
}

/// Appends pending events, oldest first across rooms, until `buf` holds [`BUFFER`] bytes.
/// `Err(())`: a room's next event was evicted (the subscriber fell behind).
fn fill(follows: &mut [Follow<'_>], mask: u8, buf: &mut Vec<u8>) -> Result<(), ()> {
    while buf.len() < BUFFER {
        let mut best: Option<(usize, u64)> = None;
        for (i, follow) in follows.iter_mut().enumerate() {
            let ring = follow.sub.room().ring();
            if follow.seq < ring.oldest() {
                return Err(());
            }
            while let Some(entry) = ring.entry(follow.seq) {
                if entry.wanted(mask) {
                    if best.is_none_or(|(_, order)| entry.order < order) {
                        best = Some((i, entry.order));
                    }
                    break;
                }
                follow.seq += 1;
            }
        }
        let Some((i, _)) = best else {
            return Ok(());
        };
        let frame = {
            let room = follows[i].sub.room();
            let ring = room.ring();
            let entry = ring.entry(follows[i].seq).expect("chosen above");
            follows[i].last_id = entry.id.to_string();
            entry.multi_frame(&room.node())
        };
        follows[i].seq += 1;
        push_id(buf, follows);
        buf.extend_from_slice(&frame);
    }
    Ok(())
}

enum Woke {
    Retry,
    Readable,
    Heartbeat,
    Shutdown,
}

/// Streams the merged rooms until the client leaves, falls behind, every room is gone, access
/// to one of them is withdrawn (the whole stream ends: `status: forbidden` naming the room), or
/// shutdown.
pub async fn stream(
    follows: &mut [Follow<'_>],
    socket: &Async<TcpStream>,
    opening: Vec<u8>,
    mask: u8,
    guard: &Guard,
) -> Ended {
    let Some(stats) = follows.first().map(|f| f.sub.stats()) else {
        return Ended::Shutdown;
    };
    if let Some((_, why)) = recheck(follows, guard, true) {
        return Ended::Forbidden(why);
    }
    if let Err(e) = super::sse::send_opening(socket, opening, stats).await {
        return Ended::Error(e);
    }
    let mut pending = Pending::default();
    let mut beats = follows[0].sub.heartbeat();
    loop {
        if let Some((i, why)) = recheck(follows, guard, false) {
            // What the buffer holds was read before the change: it is dropped, not sent.
            let between = pending.sent == 0 || pending.drained();
            let node = follows[i].sub.room().node();
            return super::sse::forbid(socket, between, Some(&node), why, stats).await;
        }
        // A room whose flags are being read again holds the whole stream (events go out in
        // publication order across rooms), the buffer included.
        let held = follows.iter().any(|f| f.held);
        if held && follows.iter().any(|f| f.seq < f.sub.room().ring().oldest()) {
            stats.dropped_slow.add(1);
            return Ended::Lapped;
        }
        let closing = follows[0].sub.closing();
        let want_write = if held {
            false
        } else {
            match write_step(follows, socket, mask, &mut pending, closing) {
                Step::Again => continue,
                Step::Sleep { want_write } => want_write,
                Step::End(ended) => return ended,
            }
        };
        if closing {
            return Ended::Shutdown;
        }
        if !want_write
            && follows
                .iter()
                .all(|f| matches!(f.sub.room().state(), JoinState::Gone(_)))
        {
            return Ended::RoomGone;
        }
        let woke = wait(follows, socket, want_write, held, beats).await;
        if let Some(ended) = on_wake(follows, socket, woke, &pending, &mut beats) {
            return ended;
        }
    }
}

/// The bytes gathered for the stream's writes and how many of them went out.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    sent: usize,
}

impl Pending {
    /// Everything gathered has been written.
    fn drained(&self) -> bool {
        self.sent == self.buf.len()
    }
}

/// Gathers pending events once the buffer is drained, then writes once from it. After a write
/// while `closing`, the stream sleeps no more: its caller ends it.
fn write_step(
    follows: &mut [Follow<'_>],
    socket: &Async<TcpStream>,
    mask: u8,
    pending: &mut Pending,
    closing: bool,
) -> Step {
    let stats = follows[0].sub.stats();
    if pending.drained() {
        pending.buf.clear();
        pending.sent = 0;
        if fill(follows, mask, &mut pending.buf).is_err() {
            stats.dropped_slow.add(1);
            super::sse::reset_on_close(socket);
            return Step::End(Ended::Lapped);
        }
    }
    if pending.drained() {
        return Step::Sleep { want_write: false };
    }
    match socket.get_ref().write(&pending.buf[pending.sent..]) {
        Ok(0) => Step::End(Ended::ClientGone),
        Ok(n) => {
            pending.sent += n;
            stats.bytes_out.add(n as u64);
            if closing {
                Step::Sleep { want_write: false }
            } else {
                Step::Again
            }
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Sleep { want_write: true },
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Again,
        Err(e) => Step::End(Ended::Error(e)),
    }
}

/// Acts on what woke the stream: a heartbeat comment between events, or noticing the client
/// leaving. `Some` when the stream is over.
fn on_wake(
    follows: &[Follow<'_>],
    socket: &Async<TcpStream>,
    woke: Woke,
    pending: &Pending,
    beats: &mut u64,
) -> Option<Ended> {
    match woke {
        Woke::Retry | Woke::Shutdown => {}
        Woke::Heartbeat => {
            *beats = follows[0].sub.heartbeat();
            if pending.drained() {
                let _ = socket.get_ref().write(b":\n");
            }
        }
        Woke::Readable => {
            if super::sse::client_left(socket) {
                return Some(Ended::ClientGone);
            }
        }
    }
    None
}

/// Sleeps until there is something to do; `held`: new events are no reason to wake (see
/// [`Follow::held`]).
async fn wait(
    follows: &[Follow<'_>],
    socket: &Async<TcpStream>,
    want_write: bool,
    held: bool,
    beats: u64,
) -> Woke {
    std::future::poll_fn(|cx| {
        if follows[0].sub.closing() {
            return Poll::Ready(Woke::Shutdown);
        }
        for follow in follows {
            follow.sub.register(cx.waker());
            if follow.sub.room().access_epoch() != follow.checked {
                return Poll::Ready(Woke::Retry);
            }
            let ring = follow.sub.room().ring();
            if follow.seq < ring.oldest() || (!want_write && !held && ring.head() > follow.seq) {
                return Poll::Ready(Woke::Retry);
            }
        }
        if want_write && socket.poll_writable(cx).is_ready() {
            return Poll::Ready(Woke::Retry);
        }
        if follows[0].sub.heartbeat() != beats {
            return Poll::Ready(Woke::Heartbeat);
        }
        if socket.poll_readable(cx).is_ready() {
            return Poll::Ready(Woke::Readable);
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_ids_round_trip() {
        let id = composite([("lobby", "abc-1"), ("café", "x~2"), ("empty", "")].into_iter());
        assert_eq!(id, "lobby=abc-1&caf%C3%A9=x~2&empty=");
        let parts = parse_composite(&id).unwrap();
        assert_eq!(
            parts,
            vec![
                ("lobby".into(), "abc-1".into()),
                ("café".into(), "x~2".into()),
                ("empty".into(), "".into())
            ]
        );
        assert!(parse_composite("plain-id").is_none());
        for hostile in [
            "lobby=%01",
            "lobby=x%EF%BF%BE",
            "lobby=a%0Ab",
            "%01=abc",
            "lo%2Fbby=abc",
            "lobby=abc&news",
            "lobby=a~b",
        ] {
            assert!(parse_composite(hostile).is_none(), "{hostile}");
        }
        assert!(parse_composite(&vec!["a=1"; MAX_PARTS + 1].join("&")).is_none());
        assert!(parse_composite(&vec!["a=1"; MAX_PARTS].join("&")).is_some());
    }

    #[test]
    fn starts_per_room() {
        let nodes = ["a", "b", "c"];
        let s = starts(&nodes, &Start::After("a=1&b=".into()));
        assert_eq!(
            s,
            vec![
                Start::After("1".into()),
                Start::Last(usize::MAX),
                Start::Live
            ]
        );
        assert_eq!(starts(&nodes, &Start::Last(3)), vec![Start::Last(3); 3]);
        let s = starts(&nodes, &Start::After("abc-1".into()));
        assert_eq!(
            s,
            vec![Start::Unknown("abc-1".into()); 3],
            "not a composite id"
        );
    }
}
