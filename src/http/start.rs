//! Where a new stream starts: the [`Start`] a request asks for (parsed by
//! [`super::routes::start`]) and the one mapping from it to a position in a room's ring, shared
//! by single-room ([`super::sse`]) and multi-room ([`super::multi`]) streams.

use crate::rooms::ring::Ring;

/// Where a new stream starts in its room's ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// With the next event.
    Live,
    /// After the event with this id (`Last-Event-ID`, or `?lastEventId=`): an id in a shape
    /// this daemon issues (`rooms::resume`; a composite id for a stream of several rooms).
    After(String),
    /// After an id this daemon cannot have issued: the stream says `gap` and starts with the
    /// oldest event held. Such an id is never looked up anywhere else.
    Unknown(String),
    /// With the last `n` events held (`?history=n`).
    Last(usize),
    /// With this ring sequence number (after messages fetched from the room's archive).
    FromSeq(u64),
}

/// A resume id the ring does not hold (no longer, or never: [`Start::Unknown`]): the stream
/// says `gap` for `id` and starts with the oldest event held, `oldest`.
#[derive(Debug, PartialEq, Eq)]
pub struct Gap<'s> {
    pub id: &'s str,
    pub oldest: u64,
}

impl Start {
    /// The ring sequence of the first event a stream starting here sends, or the [`Gap`] it
    /// reports first.
    pub fn position(&self, ring: &Ring) -> Result<u64, Gap<'_>> {
        let gap = |id| Gap {
            id,
            oldest: ring.oldest(),
        };
        match self {
            Start::Live => Ok(ring.head()),
            Start::Last(n) => Ok(ring.head().saturating_sub(*n as u64).max(ring.oldest())),
            Start::FromSeq(seq) => Ok((*seq).clamp(ring.oldest(), ring.head())),
            Start::After(id) => ring.resume_point(id).ok_or_else(|| gap(id)),
            Start::Unknown(id) => Err(gap(id)),
        }
    }
}
