//! A room's feed: turns what happens in a room (live messages, history replayed on join, subject
//! changes, our own status with the room) into ring entries, each with its event id, and keeps
//! every one of them from being emitted twice.
//!
//! Event ids: the room's XEP-0359 stanza-id when its disco#info announces `urn:xmpp:sid:0`
//! (Prosody does with `mod_muc_mam`), so they are the same on every instance and survive our
//! restarts; otherwise `<run>-<seq>`, minted by the room table (see `RoomTable::mint_id`).
//!
//! History de-duplication after a re-join: a replayed message whose stanza-id is in the ring, or
//! whose delay stamp is older than the last live message we saw, or that matches (in order) a
//! message already in the ring by (nick, body), is skipped; what remains is the in-order suffix
//! that was missed while we were away.
//!
//! Continuity across a re-join: after the first join, every later join (upstream reconnect,
//! kick, self-ping, on-demand) *holds* the messages it receives until the join sequence ends
//! (the subject). If the held history contains the last message published before, nothing was
//! missed and the held messages go through the de-duplication above. Otherwise the room's
//! archive fills the hole (the component asks it, see [`Settled::Fill`]) or, where there is no
//! archive, an `event: gap` is published before the first message that may not follow its
//! predecessor. Never a silent loss: exactly once, or a gap.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use super::frame::{self, Json};
use super::ring::{Entry, kind};
use super::table::RoomTable;

/// Per-room publishing state; lives as long as the process (across upstream reconnects).
#[derive(Debug, Default)]
pub struct Feed {
    /// The room announces `urn:xmpp:sid:0`: its stanza-ids are trusted as event ids.
    pub stanza_ids: bool,
    last_subject: Option<String>,
    last_status: Option<&'static str>,
    /// UTC stamp (`YYYY-MM-DDTHH:MM:SS`) of the last live message.
    last_live: Option<String>,
    /// Ring sequence the next replayed history message is matched from.
    history_from: u64,
    /// Id of the last message published, and named events published since (for their ids).
    last_message_id: String,
    since_message: u32,
    /// Identity of the last message published (see [`message_key`]); 0 before the first.
    last_message_key: u64,
    /// Whether the last message published had the room's stanza-id as its id.
    last_message_archived: bool,
    /// A join sequence has ended once in this process: later joins are re-joins.
    joined_before: bool,
    /// Messages held back during a re-join (see the module comment); `None`: publishing.
    held: Option<Held>,
}

/// Messages received during a re-join, not published yet.
#[derive(Debug, Default)]
struct Held {
    messages: Vec<OwnedMessage>,
    bytes: usize,
}

/// A [`Message`] that outlives its stanza.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedMessage {
    pub nick: Option<String>,
    pub body: String,
    pub stanza_id: Option<String>,
    pub delay: Option<String>,
    pub origin_id: Option<String>,
}

impl OwnedMessage {
    pub fn borrow(&self) -> Message<'_> {
        Message {
            nick: self.nick.as_deref(),
            body: &self.body,
            stanza_id: self.stanza_id.as_deref(),
            delay: self.delay.as_deref(),
            origin_id: self.origin_id.as_deref(),
        }
    }
}

/// What the end of a join sequence decided (see [`Feed::settle`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// Everything is published: continuity is proven, or a gap said it is not.
    Done,
    /// Ask the room's archive for the messages after this stanza-id, then call
    /// [`Feed::filled`] (still holding live messages meanwhile).
    Fill { after: String },
}

/// Messages before the last one seen that must match too, when finding it in replayed history.
const MATCH_WINDOW: usize = 4;

/// Identity of a message for de-duplication.
fn message_key(nick: Option<&str>, body: &str) -> u64 {
    let mut h = DefaultHasher::new();
    nick.hash(&mut h);
    body.hash(&mut h);
    // 0 marks entries that are not messages.
    h.finish().max(1)
}

impl Feed {
    /// Called when a join is sent: history that follows is matched against the whole ring.
    /// After the first join, starts holding messages until [`Feed::settle`].
    pub fn joining(&mut self, table: &RoomTable, room: usize) {
        self.history_from = table.room(room).ring().oldest();
        self.held = self.joined_before.then(Held::default);
    }

    /// Whether a re-join is still settling continuity (the room is not in sync yet).
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// The join sequence ended (the room sent its subject), having asked for `history`
    /// messages of history. Publishes what was held if nothing can be missing; otherwise asks
    /// for an archive fill (`archive`: the room keeps one) or publishes a `gap` first.
    pub fn settle(
        &mut self,
        table: &RoomTable,
        room: usize,
        history: usize,
        archive: bool,
    ) -> Settled {
        self.joined_before = true;
        let Some(held) = &self.held else {
            return Settled::Done;
        };
        let history_held = held.messages.iter().filter(|m| m.delay.is_some()).count();
        let last_seen = self.last_seen_in(table, room, &held.messages);
        let continuous = if self.last_message_key == 0 {
            // Nothing seen before: the whole history fits in what was asked for.
            history > 0 && history_held < history
        } else {
            last_seen.is_some()
        };
        if continuous {
            if let (Some(at), Some(held)) = (last_seen, &mut self.held) {
                held.messages.drain(..=at);
                // What is left is new, even where it repeats an older message's words.
                self.history_from = table.room(room).ring().head();
            }
            self.release(table, room, None);
            return Settled::Done;
        }
        if archive && self.last_message_archived && !self.last_message_id.is_empty() {
            return Settled::Fill {
                after: self.last_message_id.clone(),
            };
        }
        let why = if archive {
            "re-joined the room after an outage; its archive cannot say what was missed"
        } else {
            "re-joined the room after an outage; messages sent meanwhile beyond its history may be missing (the room keeps no archive)"
        };
        self.release(table, room, Some(why));
        Settled::Done
    }

    /// Where the last message published is in the history `held` replays, if it is: by its
    /// stanza-id, else by (nick, body) together with the messages before it (up to
    /// [`MATCH_WINDOW`] of them, as the ring holds them), so a repeated "ok" is not taken for
    /// the one we saw. What follows that position is exactly what was missed.
    fn last_seen_in(&self, table: &RoomTable, room: usize, held: &[OwnedMessage]) -> Option<usize> {
        let history = |i: usize| held.get(i).filter(|m| m.delay.is_some());
        if self.last_message_archived && self.stanza_ids {
            return (0..held.len()).rev().find(|&i| {
                history(i).is_some_and(|m| m.stanza_id.as_deref() == Some(&*self.last_message_id))
            });
        }
        let ring = table.room(room).ring();
        let mut recent: Vec<u64> = (ring.oldest()..ring.head())
            .rev()
            .filter_map(|seq| ring.entry(seq).map(|e| e.key).filter(|&k| k != 0))
            .take(MATCH_WINDOW)
            .collect();
        if recent.first() != Some(&self.last_message_key) {
            recent = vec![self.last_message_key];
        }
        let key = |m: &OwnedMessage| message_key(m.nick.as_deref(), &m.body);
        (0..held.len()).rev().find(|&i| {
            recent
                .iter()
                .enumerate()
                .all(|(back, want)| match i.checked_sub(back) {
                    Some(j) => history(j).is_some_and(|m| key(m) == *want),
                    // The history starts within the window: what it holds matched.
                    None => true,
                })
        })
    }

    /// Messages from the room's archive, oldest first, filling the hole after a re-join (those
    /// already published are skipped by stanza-id). Returns how many were published.
    pub fn fill(&mut self, table: &RoomTable, room: usize, messages: &[OwnedMessage]) -> usize {
        let mut published = 0;
        for m in messages {
            let live = Message {
                delay: None,
                ..m.borrow()
            };
            if self.publish_message(table, room, &live).is_some() {
                published += 1;
            }
        }
        published
    }

    /// The archive fill is over: `gap` says why it could not reach the live messages, if so.
    /// Publishes the gap, then what was held.
    pub fn filled(&mut self, table: &RoomTable, room: usize, gap: Option<&str>) {
        self.release(table, room, gap);
    }

    /// Stops holding: an `event: gap` first if `gap`, then the held messages in order.
    fn release(&mut self, table: &RoomTable, room: usize, gap: Option<&str>) {
        let Some(held) = self.held.take() else {
            return;
        };
        if let Some(reason) = gap {
            self.gap(table, room, reason);
        }
        for m in &held.messages {
            self.message(table, room, &m.borrow());
        }
    }

    /// Publishes `event: gap`: messages between the last event and the next may be missing.
    pub fn gap(&mut self, table: &RoomTable, room: usize, reason: &str) -> u64 {
        let json = Json::new()
            .str("lastEventId", &self.last_message_id)
            .str("reason", reason)
            .finish();
        log::warn!(
            "{}: {reason}; subscribers are told of a gap",
            table.room(room).jid()
        );
        self.publish_typed(table, room, kind::STATUS, "gap", &json)
    }

    /// A groupchat message with a body; `delay` is set for history. Returns the sequence
    /// number if it was published, `None` if it was a duplicate.
    pub fn message(&mut self, table: &RoomTable, room: usize, m: &Message<'_>) -> Option<u64> {
        if let Some(held) = &mut self.held {
            let ring = table.room(room).ring();
            let (count, bytes) = (ring.capacity(), ring.max_bytes());
            drop(ring);
            if held.messages.len() < count && held.bytes + m.body.len() <= bytes {
                held.bytes += m.body.len();
                held.messages.push(OwnedMessage {
                    nick: m.nick.map(str::to_string),
                    body: m.body.to_string(),
                    stanza_id: m.stanza_id.map(str::to_string),
                    delay: m.delay.map(str::to_string),
                    origin_id: m.origin_id.map(str::to_string),
                });
                return None;
            }
            // More than a ring's worth arrived before the join settled.
            self.release(
                table,
                room,
                Some("re-joined the room after an outage; more messages arrived than can be held while checking what was missed"),
            );
        }
        self.publish_message(table, room, m)
    }

    /// [`Feed::message`] without holding: de-duplicates and publishes.
    fn publish_message(&mut self, table: &RoomTable, room: usize, m: &Message<'_>) -> Option<u64> {
        let Message {
            nick,
            body,
            stanza_id,
            delay,
            origin_id,
        } = *m;
        let key = message_key(nick, body);
        // A stanza-id in a shape this daemon does not issue is replaced by a minted id.
        let room_id = stanza_id.filter(|id| self.stanza_ids && frame::valid_id(id));
        if room_id.is_some_and(|id| table.room(room).ring().find_id(id).is_some()) {
            // Already published (history or an archive fill overlapping live messages).
            return None;
        }
        if let Some(id) = room_id {
            table.room(room).info.borrow_mut().stanza_shapes.record(id);
        }
        if let Some(stamp) = delay {
            let ring = table.room(room).ring();
            if let (Some(last), Some(stamp)) = (&self.last_live, stamp_seconds(stamp))
                && stamp < last.as_str()
            {
                return None;
            }
            let matched = (self.history_from.max(ring.oldest())..ring.head())
                .find(|&seq| ring.entry(seq).is_some_and(|e| e.key == key));
            if let Some(seq) = matched {
                self.history_from = seq + 1;
                return None;
            }
        } else {
            self.last_live = Some(utc_stamp(SystemTime::now()));
        }
        table.room(room).info.borrow_mut().last_message = Some(SystemTime::now());
        let seq = table.publish(room, |seq| {
            let id = room_id.map_or_else(|| table.mint_id(seq), str::to_string);
            self.last_message_id = id.clone();
            self.last_message_key = key;
            self.last_message_archived = room_id.is_some();
            self.since_message = 0;
            let mut entry = Entry::new(frame::Event::message(&id, nick, body), id, kind::MESSAGE);
            entry.key = key;
            entry.origin = origin_id.map(|o| (o.into(), nick.unwrap_or("").into()));
            entry
        });
        if delay.is_some() {
            self.history_from = seq + 1;
        }
        Some(seq)
    }

    /// The room's subject (sent on every join, and on every change): an `event: subject` when
    /// it differs from the last one published.
    pub fn subject(
        &mut self,
        table: &RoomTable,
        room: usize,
        nick: Option<&str>,
        subject: &str,
    ) -> Option<u64> {
        if self.last_subject.as_deref() == Some(subject)
            || (self.last_subject.is_none() && subject.is_empty())
        {
            return None;
        }
        self.last_subject = Some(subject.to_string());
        table.room(room).info.borrow_mut().subject = subject.to_string();
        let json = Json::new()
            .str("subject", subject)
            .opt("nick", nick)
            .finish();
        Some(self.publish_typed(table, room, kind::SUBJECT, "subject", &json))
    }

    /// Our standing with the room changed: an `event: status` when it differs from the last.
    pub fn status(
        &mut self,
        table: &RoomTable,
        room: usize,
        status: &'static str,
        reason: Option<&str>,
    ) -> Option<u64> {
        if self.last_status == Some(status) {
            return None;
        }
        self.last_status = Some(status);
        let json = Json::new()
            .str("status", status)
            .opt("reason", reason)
            .finish();
        Some(self.publish_typed(table, room, kind::STATUS, "status", &json))
    }

    /// XEP-0308: `nick` replaced its message whose stanza `id` was `replaces` with `body`.
    /// The event names the original event's id when the ring still holds that message.
    pub fn correction(
        &mut self,
        table: &RoomTable,
        room: usize,
        nick: Option<&str>,
        body: &str,
        replaces: &str,
    ) -> u64 {
        let original = {
            let ring = table.room(room).ring();
            (ring.oldest()..ring.head()).rev().find_map(|seq| {
                let e = ring.entry(seq)?;
                let (origin, by) = e.origin.as_ref()?;
                (&**origin == replaces && Some(&**by) == nick).then(|| e.id.clone())
            })
        };
        let json = Json::new()
            .opt("id", original.as_deref())
            .str("replaces", replaces)
            .opt("nick", nick)
            .str("body", body)
            .finish();
        self.publish_typed(table, room, kind::CORRECTION, "correction", &json)
    }

    /// XEP-0424/0425: the message whose event id (the room's stanza-id) is `target` was
    /// retracted by its author `nick`, or moderated by the room (`moderated`). The original is
    /// no longer sent to anyone who has not had it. Returns `None` when the ring does not hold
    /// that message or the retraction is not legitimate (another occupant's message).
    pub fn retraction(
        &mut self,
        table: &RoomTable,
        room: usize,
        target: &str,
        nick: Option<&str>,
        moderated: bool,
        reason: Option<&str>,
    ) -> Option<u64> {
        {
            let ring = table.room(room).ring();
            let seq = ring.find_id(target)?;
            let entry = ring.entry(seq)?;
            let author = entry.origin.as_ref().map(|(_, by)| &**by);
            if entry.kind != kind::MESSAGE || (!moderated && author != nick) {
                return None;
            }
            entry.retracted.set(true);
        }
        let json = Json::new()
            .str("id", target)
            .bool("moderated", moderated)
            .opt("reason", reason)
            .finish();
        Some(self.publish_typed(table, room, kind::RETRACTION, "retraction", &json))
    }

    /// Another occupant joined (`joined`) or left the room.
    pub fn occupant(&mut self, table: &RoomTable, room: usize, nick: &str, joined: bool) -> u64 {
        let json = Json::new().str("nick", nick).finish();
        if joined {
            self.publish_typed(table, room, kind::JOIN, "join", &json)
        } else {
            self.publish_typed(table, room, kind::LEAVE, "leave", &json)
        }
    }
}

impl Feed {
    /// Publishes a named event. Its id is the last message's id, `~`, and a count
    /// (`<stanza-id>~2`): a client resuming from it after our restart, when this run's events
    /// are gone, resumes after that message, which the room's history brings back.
    fn publish_typed(
        &mut self,
        table: &RoomTable,
        room: usize,
        kind: u8,
        event_type: &str,
        json: &[u8],
    ) -> u64 {
        self.since_message += 1;
        let id = format!("{}~{}", self.last_message_id, self.since_message);
        table.publish(room, |_| {
            Entry::new(
                frame::Event::new(Some(event_type), &id, json),
                id.as_str(),
                kind,
            )
        })
    }
}

/// A groupchat message with a body, as the feed needs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Message<'a> {
    pub nick: Option<&'a str>,
    pub body: &'a str,
    /// XEP-0359 stanza-id by the room.
    pub stanza_id: Option<&'a str>,
    /// XEP-0203 delay stamp (history).
    pub delay: Option<&'a str>,
    /// The stanza's own `id` attribute (what a XEP-0308 correction refers to).
    pub origin_id: Option<&'a str>,
}

/// The `YYYY-MM-DDTHH:MM:SS` part of an XEP-0082 UTC stamp (`…Z`, fractions allowed).
fn stamp_seconds(stamp: &str) -> Option<&str> {
    let head = stamp.get(..19)?;
    let rest = &stamp[19..];
    let utc = rest.ends_with('Z') || rest.ends_with("+00:00") || rest.is_empty();
    (utc && head.as_bytes()[10] == b'T').then_some(head)
}

/// `t` as `YYYY-MM-DDTHH:MM:SS` in UTC.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian; H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn msg<'a>(
        nick: &'a str,
        body: &'a str,
        stanza_id: Option<&'a str>,
        delay: Option<&'a str>,
    ) -> Message<'a> {
        Message {
            nick: Some(nick),
            body,
            stanza_id,
            delay,
            origin_id: Some(body),
        }
    }

    fn table() -> RoomTable {
        let t = RoomTable::new(crate::rooms::table::Sizes {
            rooms: 1,
            ring_events: 16,
            ring_bytes: 1 << 16,
            subscribers: 4,
        });
        t.add("lobby", "c", crate::rooms::table::Origin::Configured);
        t
    }

    fn bodies(t: &RoomTable) -> Vec<String> {
        let ring = t.room(0).ring();
        (ring.oldest()..ring.head())
            .map(|s| String::from_utf8(ring.get(s).unwrap().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "1970-01-01T00:00:00");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(utc_stamp(t), "2023-11-14T22:13:20");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_stamp(t), "2000-02-29T00:00:00");
        assert_eq!(
            stamp_seconds("2026-11-27T03:10:48.123Z"),
            Some("2026-11-27T03:10:48")
        );
        assert_eq!(stamp_seconds("2026-11-27T03:10:48+02:00"), None);
    }

    #[test]
    fn history_after_a_rejoin_is_only_the_missed_suffix() {
        let t = table();
        let mut f = Feed::default();
        f.joining(&t, 0);
        // First join: history seeds the ring.
        let old = Some("2000-01-01T00:00:00Z");
        assert!(f.message(&t, 0, &msg("a", "h1", None, old)).is_some());
        assert!(f.message(&t, 0, &msg("a", "h2", None, old)).is_some());
        // Live.
        f.message(&t, 0, &msg("b", "live1", None, None)).unwrap();
        f.message(&t, 0, &msg("b", "ok", None, None)).unwrap();
        // Re-join: the room replays h2, live1, ok (seen) and ok, missed (sent while away),
        // stamped now or later.
        f.joining(&t, 0);
        let now = format!("{}Z", utc_stamp(SystemTime::now() + Duration::from_secs(5)));
        let replay = ["h2", "live1", "ok", "ok", "missed"];
        let nicks = ["a", "b", "b", "b", "c"];
        let published: Vec<bool> = replay
            .iter()
            .zip(nicks)
            .map(|(body, nick)| {
                f.message(&t, 0, &msg(nick, body, None, Some(&now)))
                    .is_some()
            })
            .collect();
        assert_eq!(published, vec![false, false, false, true, true]);
        let all = bodies(&t);
        assert_eq!(all.len(), 6);
        assert!(all[4].contains("\"ok\"") && all[5].contains("\"missed\""));
    }

    fn held_rejoin(t: &RoomTable, f: &mut Feed, replay: &[(&str, Option<&str>)]) {
        f.joining(t, 0);
        assert!(f.holding());
        let stamp = format!("{}Z", utc_stamp(SystemTime::now() + Duration::from_secs(5)));
        for (body, sid) in replay {
            assert_eq!(f.message(t, 0, &msg("n", body, *sid, Some(&stamp))), None);
        }
    }

    fn gaps(t: &RoomTable) -> usize {
        bodies(t)
            .iter()
            .filter(|b| b.starts_with("event: gap\n"))
            .count()
    }

    #[test]
    fn a_rejoin_whose_history_reaches_the_last_message_is_continuous() {
        let t = table();
        let mut f = Feed::default();
        f.joining(&t, 0);
        assert!(
            !f.holding(),
            "the first join has nothing to be continuous with"
        );
        f.message(&t, 0, &msg("n", "old", None, None)).unwrap();
        f.message(&t, 0, &msg("n", "seen", None, None)).unwrap();
        assert_eq!(f.settle(&t, 0, 20, false), Settled::Done);
        held_rejoin(
            &t,
            &mut f,
            &[
                ("old", None),
                ("seen", None),
                ("missed", None),
                ("seen", None),
            ],
        );
        assert_eq!(f.settle(&t, 0, 20, true), Settled::Done);
        assert!(!f.holding());
        let all = bodies(&t);
        assert_eq!(gaps(&t), 0, "{all:?}");
        assert!(
            all[2].contains("\"missed\"") && all[3].contains("\"seen\""),
            "{all:?}"
        );
        assert_eq!(
            all.len(),
            4,
            "what follows the last message seen is new: {all:?}"
        );
    }

    #[test]
    fn a_rejoin_that_cannot_reach_back_fills_from_the_archive_or_says_gap() {
        let t = table();
        let mut f = Feed {
            stanza_ids: true,
            ..Feed::default()
        };
        f.joining(&t, 0);
        f.message(&t, 0, &msg("n", "seen", Some("s1"), None))
            .unwrap();
        f.settle(&t, 0, 2, true);
        // The history (2 messages) starts after the hole.
        held_rejoin(&t, &mut f, &[("m3", Some("s3")), ("m4", Some("s4"))]);
        let after = match f.settle(&t, 0, 2, true) {
            Settled::Fill { after } => after,
            other => panic!("{other:?}"),
        };
        assert_eq!(after, "s1");
        // A live message while the archive is asked is held too.
        assert_eq!(f.message(&t, 0, &msg("n", "m5", Some("s5"), None)), None);
        let archived: Vec<OwnedMessage> = ["s2", "s3", "s4"]
            .iter()
            .map(|id| OwnedMessage {
                nick: Some("n".into()),
                body: format!("m{}", &id[1..]),
                stanza_id: Some(id.to_string()),
                ..OwnedMessage::default()
            })
            .collect();
        assert_eq!(f.fill(&t, 0, &archived), 3);
        f.filled(&t, 0, None);
        let ids: Vec<String> = bodies(&t)
            .iter()
            .map(|b| b.lines().find(|l| l.starts_with("id: ")).unwrap()[4..].to_string())
            .collect();
        assert_eq!(ids, ["s1", "s2", "s3", "s4", "s5"], "each once, in order");

        // Without an archive: a gap before what the history brought.
        held_rejoin(&t, &mut f, &[("m9", Some("s9"))]);
        assert_eq!(f.settle(&t, 0, 1, false), Settled::Done);
        let all = bodies(&t);
        assert_eq!(gaps(&t), 1);
        assert!(
            all[all.len() - 2].starts_with("event: gap\nid: s5~1\n"),
            "{all:?}"
        );
        assert!(all[all.len() - 1].contains("m9"));
    }

    #[test]
    fn more_than_a_ring_held_is_released_after_a_gap() {
        let t = table();
        let mut f = Feed::default();
        f.joining(&t, 0);
        f.message(&t, 0, &msg("n", "seen", None, None)).unwrap();
        f.settle(&t, 0, 20, false);
        f.joining(&t, 0);
        let capacity = t.room(0).ring().capacity();
        for i in 0..capacity {
            assert_eq!(
                f.message(&t, 0, &msg("n", &format!("l{i}"), None, None)),
                None
            );
        }
        assert!(
            f.message(&t, 0, &msg("n", "one more", None, None))
                .is_some()
        );
        assert!(!f.holding());
        // seen, gap, the held ones, one more (the ring keeps the newest of them).
        assert_eq!(t.room(0).ring().head(), 1 + 1 + capacity as u64 + 1);
        assert!(bodies(&t).last().unwrap().contains("one more"));
    }

    #[test]
    fn stanza_ids_are_used_when_the_room_announces_them() {
        let t = table();
        let mut f = Feed::default();
        f.message(&t, 0, &msg("a", "x", Some("sid-1"), None));
        assert!(bodies(&t)[0].starts_with("id: "), "minted");
        assert!(!bodies(&t)[0].contains("sid-1"));
        f.stanza_ids = true;
        f.message(&t, 0, &msg("a", "y", Some("sid-2"), None));
        assert!(bodies(&t)[1].starts_with("id: sid-2\n"));
        // The same message replayed as history is recognised by its id.
        f.joining(&t, 0);
        let replay = msg("a", "y", Some("sid-2"), Some("2999-01-01T00:00:00Z"));
        assert!(f.message(&t, 0, &replay).is_none());
        // An id that would break the stream, or that is in no shape this daemon issues, is
        // not used; the ids used are recorded as the room's shapes.
        let hostile = [
            "bad\nid",
            "x data: {y",
            "a~1",
            "b=c",
            "\u{fffe}",
            &"l".repeat(65),
        ];
        for (i, id) in hostile.iter().enumerate() {
            f.message(&t, 0, &msg("a", "z", Some(id), None));
            let frame = &bodies(&t)[2 + i];
            assert!(
                frame.starts_with(&format!("id: {}\n", t.mint_id(2 + i as u64))),
                "{frame}"
            );
        }
        let info = t.room(0).info.borrow();
        assert!(info.stanza_shapes.admits("sid-9") && !info.stanza_shapes.admits("sid-10"));
    }

    #[test]
    fn corrections_and_retractions() {
        let t = table();
        let mut f = Feed {
            stanza_ids: true,
            ..Feed::default()
        };
        f.message(&t, 0, &msg("a", "tpyo", Some("s1"), None));
        f.correction(&t, 0, Some("a"), "typo", "tpyo");
        // Only the author may retract; the room may moderate.
        assert!(f.retraction(&t, 0, "s1", Some("b"), false, None).is_none());
        assert!(
            f.retraction(&t, 0, "nope", Some("a"), false, None)
                .is_none()
        );
        assert!(f.retraction(&t, 0, "s1", Some("a"), false, None).is_some());
        let all = bodies(&t);
        assert!(all[1].starts_with("event: correction\n"), "{}", all[1]);
        assert!(
            all[1]
                .contains("{\"id\":\"s1\",\"replaces\":\"tpyo\",\"nick\":\"a\",\"body\":\"typo\"}")
        );
        assert!(
            all[2].contains("{\"id\":\"s1\",\"moderated\":false}"),
            "{}",
            all[2]
        );
        assert!(t.room(0).ring().entry(0).unwrap().retracted.get());
        // A moderation by the room of another message.
        f.message(&t, 0, &msg("b", "spam", Some("s2"), None));
        assert!(
            f.retraction(&t, 0, "s2", None, true, Some("spam"))
                .is_some()
        );
    }

    #[test]
    fn subject_and_status_events_only_on_change() {
        let t = table();
        let mut f = Feed::default();
        assert!(f.subject(&t, 0, None, "").is_none());
        assert!(f.subject(&t, 0, Some("o"), "Welcome").is_some());
        assert!(f.subject(&t, 0, None, "Welcome").is_none());
        assert!(f.status(&t, 0, "joined", None).is_some());
        assert!(f.status(&t, 0, "joined", None).is_none());
        assert!(f.status(&t, 0, "reconnecting", Some("link lost")).is_some());
        let all = bodies(&t);
        assert!(all[0].starts_with("event: subject\nid: "), "{}", all[0]);
        assert!(all[0].ends_with("data: {\"subject\":\"Welcome\",\"nick\":\"o\"}\n\n"));
        assert!(all[2].contains("{\"status\":\"reconnecting\",\"reason\":\"link lost\"}"));
    }

    #[test]
    fn every_id_the_feed_issues_is_one_a_client_may_resume_from() {
        let t = table();
        let mut f = Feed::default();
        f.status(&t, 0, "joined", None);
        f.message(&t, 0, &msg("a", "minted", None, None));
        f.subject(&t, 0, None, "s");
        f.stanza_ids = true;
        f.message(
            &t,
            0,
            &msg("a", "sid", Some("8A46VJWqkYPaAFxkY_vLKDTL"), None),
        );
        f.message(&t, 0, &msg("a", "bad", Some("x\u{fffe}"), None));
        f.occupant(&t, 0, "b", true);
        f.status(&t, 0, "reconnecting", None);
        t.retire(0, "gone");
        let ring = t.room(0).ring();
        for seq in ring.oldest()..ring.head() {
            let id = &ring.entry(seq).unwrap().id;
            assert!(
                crate::rooms::resume::EventId::parse(id).is_some(),
                "{id:?} is not in a shape the daemon takes back"
            );
            assert_eq!(ring.resume_point(id), Some(seq + 1), "{id:?}");
        }
        assert_eq!(ring.len(), 8);
    }
}
