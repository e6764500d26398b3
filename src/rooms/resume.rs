//! Event ids and resume ids: the only shapes of id this daemon issues, and the parser that
//! accepts a client's `Last-Event-ID` only in one of them.
//!
//! An event id is a base and an optional `~<n>` suffix (a named event published `n` events after
//! the message the base names). The base is empty (no message yet), minted by a run of this
//! daemon (`<run>-<n>`, see `RoomTable::mint_id`), or a room's XEP-0359 stanza-id: 1 to
//! [`MAX_STANZA_ID`] ASCII letters, digits, `-` and `_` (Prosody's are 16 or 24 base64url
//! characters, ejabberd's 16 decimal digits, others UUIDs). A stanza-id in any other shape is
//! never used as an event id (the feed mints one instead), so every id a client can have been
//! given passes [`EventId::parse`]; anything else a client sends is an unknown id, answered
//! with a `gap` event and never sent upstream.
//!
//! Only a stanza-id base goes to a room's archive, and only when it has the [`Shape`] of the
//! stanza-ids that room has issued ([`Shapes`]): an archive that never answers "unknown id"
//! (ejabberd) would otherwise replay itself from its start for a foreign id.

/// Longest stanza-id used as an event id (a UUID is 36 bytes).
pub const MAX_STANZA_ID: usize = 64;
/// Most digits of a `~<n>` suffix or of the counter of a minted id.
const MAX_DIGITS: usize = 20;
/// Minted run prefixes are a start time in seconds, base 36: from 2017 (`oo…`) on.
const RUN_FROM_SECS: u64 = 1_500_000_000;

/// What an event id names before its `~<n>` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base<'a> {
    /// No message had been published yet (`~<n>`).
    Empty,
    /// `<run>-<n>`, minted by a run of this daemon for a room without stanza-ids.
    Minted(&'a str),
    /// A room's XEP-0359 stanza-id.
    Stanza(&'a str),
}

/// An id in one of the shapes this daemon issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId<'a> {
    pub base: Base<'a>,
    /// The `~<n>` of a named event.
    pub named: Option<u64>,
}

impl<'a> EventId<'a> {
    /// Parses `id`; `None` when no event this daemon issues can have it.
    pub fn parse(id: &'a str) -> Option<EventId<'a>> {
        let (base, named) = match id.split_once('~') {
            Some((base, n)) => (base, Some(digits(n)?)),
            None => (id, None),
        };
        let base = if base.is_empty() {
            named?;
            Base::Empty
        } else if is_minted(base) {
            Base::Minted(base)
        } else if stanza_charset(base) {
            Base::Stanza(base)
        } else {
            return None;
        };
        Some(EventId { base, named })
    }

    /// The base as text (empty for [`Base::Empty`]).
    pub fn base_str(&self) -> &'a str {
        match self.base {
            Base::Empty => "",
            Base::Minted(s) | Base::Stanza(s) => s,
        }
    }
}

/// True when a room's stanza-id can be used as an event id as it is: it parses as a plain
/// stanza-id (no suffix, not in the minted shape).
pub fn is_stanza_id(id: &str) -> bool {
    matches!(
        EventId::parse(id),
        Some(EventId {
            base: Base::Stanza(_),
            named: None
        })
    )
}

/// A decimal number of 1 to [`MAX_DIGITS`] digits.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > MAX_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn stanza_charset(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_STANZA_ID
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `<run>-<n>`: `run` is a plausible start time (seconds since 1970, base 36, lower-case, from
/// 2017 to a day from now), `n` a counter.
fn is_minted(s: &str) -> bool {
    let Some((run, n)) = s.split_once('-') else {
        return false;
    };
    if digits(n).is_none() || run.is_empty() || run.len() > 8 {
        return false;
    }
    let mut secs: u64 = 0;
    for b in run.bytes() {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'z' => b - b'a' + 10,
            _ => return false,
        };
        secs = secs * 36 + u64::from(d);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (RUN_FROM_SECS..=now + 86_400).contains(&secs)
}

/// Characters a stanza-id is made of, narrowest first: each class holds the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Charset {
    /// `0-9` (ejabberd: a microsecond timestamp).
    Digits,
    /// `0-9 a-f A-F -` (UUIDs).
    Hex,
    /// `0-9 a-z A-Z - _` (Prosody: base64url).
    Word,
}

/// The length class and character class of a stanza-id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub len: u8,
    pub charset: Charset,
}

impl Shape {
    /// The shape of a plain stanza-id ([`is_stanza_id`]); `None` for any other id.
    pub fn of(id: &str) -> Option<Shape> {
        if !is_stanza_id(id) {
            return None;
        }
        let charset = if id.bytes().all(|b| b.is_ascii_digit()) {
            Charset::Digits
        } else if id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            Charset::Hex
        } else {
            Charset::Word
        };
        Some(Shape {
            len: id.len() as u8,
            charset,
        })
    }

    /// Whether an id of shape `self` could have been issued by a room whose ids have `issued`.
    fn fits(self, issued: Shape) -> bool {
        self.len == issued.len && self.charset <= issued.charset
    }
}

/// The shapes of the stanza-ids a room has issued (a few: a server changing its id scheme adds
/// one; beyond [`Shapes::MAX`] the oldest is forgotten).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shapes {
    seen: [Option<Shape>; Shapes::MAX],
}

impl Shapes {
    pub const MAX: usize = 4;

    /// Notes the shape of a stanza-id the room issued (one that is not a plain stanza-id is
    /// ignored). A wider charset of the same length replaces a narrower one.
    pub fn record(&mut self, id: &str) {
        let Some(shape) = Shape::of(id) else {
            return;
        };
        for slot in self.seen.iter_mut().flatten() {
            if shape.fits(*slot) {
                return;
            }
            if slot.fits(shape) {
                *slot = shape;
                return;
            }
        }
        self.seen.rotate_right(1);
        self.seen[0] = Some(shape);
    }

    /// Whether `id` is a plain stanza-id in a shape the room has issued.
    pub fn admits(&self, id: &str) -> bool {
        Shape::of(id).is_some_and(|s| self.seen.iter().flatten().any(|&seen| s.fits(seen)))
    }

    pub fn is_empty(&self) -> bool {
        self.seen.iter().all(Option::is_none)
    }
}

/// The id to ask a room's archive for the messages after, for a client resuming from `id`:
/// the stanza-id base, stripped of a `~<n>` suffix, in a shape the room's stanza-ids have.
/// `None` for everything else (unknown shapes, empty or minted bases): those never leave the
/// process, and the client is told of a gap.
pub fn archive_after<'a>(id: &'a str, issued: &Shapes) -> Option<&'a str> {
    match EventId::parse(id)?.base {
        Base::Stanza(base) if issued.admits(base) => Some(base),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROSODY: &str = "8A46VJWqkYPaAFxkY_vLKDTL";
    const EJABBERD: &str = "1796411435116677";
    const UUID: &str = "0b7c4e8a-5d2f-4c1e-9a3b-7f6e5d4c3b2a";

    fn minted() -> String {
        crate::rooms::table::RoomTable::new(crate::rooms::table::Sizes {
            rooms: 1,
            ring_events: 1,
            ring_bytes: 64,
            subscribers: 1,
        })
        .mint_id(7)
    }

    #[test]
    fn ids_the_daemon_issues_parse() {
        for id in [PROSODY, EJABBERD, UUID, "s1", "sid-2"] {
            assert_eq!(
                EventId::parse(id),
                Some(EventId {
                    base: Base::Stanza(id),
                    named: None
                }),
                "{id}"
            );
            assert!(is_stanza_id(id), "{id}");
        }
        let m = minted();
        assert_eq!(EventId::parse(&m).unwrap().base, Base::Minted(&m));
        assert!(!is_stanza_id(&m), "a minted-looking stanza-id is not used");
        let named = format!("{PROSODY}~3");
        assert_eq!(
            EventId::parse(&named),
            Some(EventId {
                base: Base::Stanza(PROSODY),
                named: Some(3)
            })
        );
        let named = format!("{m}~12");
        assert_eq!(EventId::parse(&named).unwrap().base_str(), m);
        assert_eq!(
            EventId::parse("~3"),
            Some(EventId {
                base: Base::Empty,
                named: Some(3)
            })
        );
    }

    #[test]
    fn anything_else_is_unknown() {
        let long = "a".repeat(MAX_STANZA_ID + 1);
        let huge = "x".repeat(8000);
        for id in [
            "",
            "~",
            "x~",
            "x~y",
            "x~5~5",
            "~-1",
            "\u{1}",
            "x\u{fffe}",
            "\u{1b}[2J",
            "a\nb",
            "a b",
            " a",
            "a=b",
            "lobby=a&news=b",
            "é",
            "x data: {y",
            &long,
            &huge,
            "1~123456789012345678901",
        ] {
            assert_eq!(EventId::parse(id), None, "{id:?}");
            assert!(!is_stanza_id(id), "{id:?}");
        }
        assert!(!is_stanza_id("x~5"), "a suffix is not part of a stanza-id");
        assert!(!is_stanza_id("~5"));
        // Not a plausible run: before 2017, or in the future.
        assert!(matches!(
            EventId::parse("zzzzzzzz-1").unwrap().base,
            Base::Stanza(_)
        ));
        assert!(matches!(
            EventId::parse("abc-1").unwrap().base,
            Base::Stanza(_)
        ));
    }

    #[test]
    fn shapes_admit_only_ids_like_the_rooms_own() {
        let mut s = Shapes::default();
        assert!(s.is_empty());
        assert!(!s.admits(PROSODY), "nothing issued yet");
        s.record(PROSODY);
        assert!(s.admits("ZZZZZZZZZZZZZZZZZZZZZZZZ"));
        assert!(
            s.admits("012345678901234567890123"),
            "digits fit a wider charset"
        );
        assert!(!s.admits("ZZZZZZZZZZZZZZZZZZZZZZZ"), "another length");
        assert!(!s.admits(EJABBERD));
        assert!(
            !s.admits(&format!("{PROSODY}~1")),
            "only a base goes to the archive"
        );
        let mut e = Shapes::default();
        e.record(EJABBERD);
        assert!(e.admits("1796411400000000"));
        assert!(
            !e.admits("179641140000000a"),
            "ejabberd's ids are digits only"
        );
        assert!(!e.admits(&minted()));
        e.record("bad id");
        e.record(&minted());
        assert_eq!(
            e.seen.iter().flatten().count(),
            1,
            "only stanza-ids are recorded"
        );
        // A wider charset of the same length replaces the narrower one.
        e.record("179641143511667a");
        assert_eq!(e.seen.iter().flatten().count(), 1);
        assert!(e.admits("1796411400000000") && e.admits("a79641140000000b"));
        let mut u = Shapes::default();
        for i in 0..10 {
            u.record(&"a".repeat(i + 1));
        }
        assert_eq!(u.seen.iter().flatten().count(), Shapes::MAX);
        assert!(u.admits("bbbbbbbbbb") && !u.admits("b"));
    }

    #[test]
    fn what_goes_to_the_archive() {
        let mut s = Shapes::default();
        s.record(PROSODY);
        let other = "ZZZZZZZZZZZZZZZZZZZZZZZZ";
        assert_eq!(archive_after(PROSODY, &s), Some(PROSODY));
        assert_eq!(
            archive_after(&format!("{other}~5"), &s),
            Some(other),
            "the suffix is stripped"
        );
        for id in [
            "~3".to_string(),
            "x~5".into(),
            minted(),
            format!("{}~2", minted()),
            EJABBERD.into(),
            "\u{1}".into(),
            format!("{PROSODY}\u{fffe}"),
            "lobby=a".into(),
        ] {
            assert_eq!(archive_after(&id, &s), None, "{id:?}");
        }
        assert_eq!(archive_after(PROSODY, &Shapes::default()), None);
    }
}
