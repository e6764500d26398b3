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
use futures_lite::AsyncWriteExt;

use super::routes::Start;
use super::sse::Ended;
use crate::rooms::frame::Json;
use crate::rooms::table::{JoinState, Subscription, count};

/// Rooms one stream may merge.
pub const MAX_ROOMS: usize = 8;
/// Bytes gathered for one write (one event may exceed it).
pub const BUFFER: usize = 16 * 1024;

fn encode(part: &str, out: &mut String) {
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:@+/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// `node=id&node=id…` for the given (node, last id) pairs.
pub fn composite<'a>(parts: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (node, id) in parts {
        if !out.is_empty() {
            out.push('&');
        }
        encode(node, &mut out);
        out.push('=');
        encode(id, &mut out);
    }
    out
}

/// The (node, id) pairs of a composite id; `None` if it is not one.
pub fn parse_composite(id: &str) -> Option<Vec<(String, String)>> {
    id.split('&')
        .map(|pair| {
            let (node, id) = pair.split_once('=')?;
            Some((
                super::request::percent_decode(node)?.to_lowercase(),
                super::request::percent_decode(id)?,
            ))
        })
        .collect()
}

/// Where each room of the stream starts, from the request's `Start`: a composite
/// `Last-Event-ID` resumes each room it names (an empty id: from the oldest held event), rooms
/// it does not name start live; `?history=N` gives each room its last N.
pub fn starts(nodes: &[&str], start: &Start) -> Vec<Start> {
    match start {
        Start::After(id) => {
            let parts = parse_composite(id).unwrap_or_default();
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
}

/// The response head, `retry:`, and a `gap` event for each room whose resume id is no longer
/// held; sets each follow's starting point.
pub fn opening(
    head: &str,
    retry_ms: usize,
    follows: &mut [Follow<'_>],
    starts: &[Start],
) -> Vec<u8> {
    let mut out = head.as_bytes().to_vec();
    if retry_ms > 0 {
        out.extend_from_slice(format!("retry: {retry_ms}\n\n").as_bytes());
    }
    for (follow, start) in follows.iter_mut().zip(starts) {
        let room = follow.sub.room();
        let ring = room.ring();
        follow.seq = match start {
            Start::Live => ring.head(),
            Start::Last(n) => ring.head().saturating_sub(*n as u64).max(ring.oldest()),
            Start::FromSeq(seq) => (*seq).clamp(ring.oldest(), ring.head()),
            Start::After(id) => match ring.resume_point(id) {
                Some(seq) => seq,
                None => {
                    let json = Json::new()
                        .str("room", &room.node())
                        .str("lastEventId", id)
                        .str(
                            "reason",
                            "events after this id are no longer held; some may be missing",
                        )
                        .finish();
                    crate::rooms::frame::push_gap(&mut out, &json);
                    ring.oldest()
                }
            },
        };
        follow.last_id = match start {
            Start::After(id) if ring.resume_point(id).is_some() => id.clone(),
            _ => follow
                .seq
                .checked_sub(1)
                .and_then(|s| ring.entry(s))
                .map_or_else(String::new, |e| e.id.to_string()),
        };
    }
    out
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

/// Streams the merged rooms until the client leaves, falls behind, every room is gone, or
/// shutdown.
pub async fn stream(
    follows: &mut [Follow<'_>],
    socket: &Async<TcpStream>,
    opening: Vec<u8>,
    mask: u8,
) -> Ended {
    let Some(stats) = follows.first().map(|f| f.sub.stats()) else {
        return Ended::Shutdown;
    };
    let mut writer = socket;
    if let Err(e) = writer.write_all(&opening).await {
        return Ended::Error(e);
    }
    count(&stats.bytes_out, opening.len() as u64);
    count(&stats.streams_opened, 1);
    let mut buf: Vec<u8> = Vec::new();
    let mut sent = 0;
    let mut beats = follows[0].sub.heartbeat();
    loop {
        let closing = follows[0].sub.closing();
        if sent == buf.len() {
            buf.clear();
            sent = 0;
            if fill(follows, mask, &mut buf).is_err() {
                count(&stats.dropped_slow, 1);
                super::sse::reset_on_close(socket);
                return Ended::Lapped;
            }
        }
        let mut want_write = false;
        if sent < buf.len() {
            match socket.get_ref().write(&buf[sent..]) {
                Ok(0) => return Ended::ClientGone,
                Ok(n) => {
                    sent += n;
                    count(&stats.bytes_out, n as u64);
                    if !closing {
                        continue;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => want_write = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Ended::Error(e),
            }
        }
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
        match wait(follows, socket, want_write, beats).await {
            Woke::Retry | Woke::Shutdown => {}
            Woke::Heartbeat => {
                beats = follows[0].sub.heartbeat();
                if sent == buf.len() {
                    let _ = socket.get_ref().write(b":\n");
                }
            }
            Woke::Readable => {
                if super::sse::client_left(socket) {
                    return Ended::ClientGone;
                }
            }
        }
    }
}

async fn wait(
    follows: &[Follow<'_>],
    socket: &Async<TcpStream>,
    want_write: bool,
    beats: u64,
) -> Woke {
    std::future::poll_fn(|cx| {
        if follows[0].sub.closing() {
            return Poll::Ready(Woke::Shutdown);
        }
        for follow in follows {
            follow.sub.register(cx.waker());
            let ring = follow.sub.room().ring();
            if follow.seq < ring.oldest() || (!want_write && ring.head() > follow.seq) {
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
        let id = composite([("lobby", "abc-1"), ("caf&é", "x=y"), ("empty", "")].into_iter());
        assert_eq!(id, "lobby=abc-1&caf%26%C3%A9=x%3Dy&empty=");
        let parts = parse_composite(&id).unwrap();
        assert_eq!(
            parts,
            vec![
                ("lobby".into(), "abc-1".into()),
                ("caf&é".into(), "x=y".into()),
                ("empty".into(), "".into())
            ]
        );
        assert!(parse_composite("plain-id").is_none());
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
    }
}
