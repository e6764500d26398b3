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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::fanout::tests::ring_with;

    #[test]
    fn every_start_maps_to_one_position_in_the_ring() {
        // Ten events in a ring of eight: e0 and e1 are evicted, seq 2..10 are held.
        let frames: Vec<String> = (0..10).map(|i| format!("data: {i}\n\n")).collect();
        let ring = ring_with(&frames.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!((ring.oldest(), ring.head()), (2, 10));
        assert_eq!(Start::Live.position(&ring), Ok(10));
        assert_eq!(Start::Last(3).position(&ring), Ok(7));
        assert_eq!(Start::Last(99).position(&ring), Ok(2));
        assert_eq!(Start::FromSeq(0).position(&ring), Ok(2));
        assert_eq!(Start::FromSeq(5).position(&ring), Ok(5));
        assert_eq!(Start::FromSeq(99).position(&ring), Ok(10));
        assert_eq!(Start::After("e5".into()).position(&ring), Ok(6));
        assert_eq!(Start::After("e9".into()).position(&ring), Ok(10));
        let evicted = Start::After("e0".into());
        assert_eq!(
            evicted.position(&ring),
            Err(Gap {
                id: "e0",
                oldest: 2
            })
        );
        let unknown = Start::Unknown("e5".into());
        assert_eq!(
            unknown.position(&ring),
            Err(Gap {
                id: "e5",
                oldest: 2
            }),
            "an unknown id is never looked up"
        );
    }
}
