//! Support code shared by the fuzz targets: the harness's WHATWG-conformant event-stream parser
//! (`testkit::sse`, to check what a browser's `EventSource` makes of our frames; the same one the
//! integration tests use) and a tiny deterministic PRNG (to draw chunk sizes from a seed taken
//! from the fuzz input).

pub use testkit::sse::{SseEvent, SseParser, parse_sse};

/// xorshift64*: small, deterministic, good enough to draw chunk sizes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that 0 and small seeds are fine.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `1..=max` (`max` ≥ 1).
    pub fn size(&mut self, max: usize) -> usize {
        1 + (self.next_u64() % max as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(data: &str) -> SseEvent {
        SseEvent {
            event_type: "message".into(),
            data: data.into(),
            last_event_id: String::new(),
        }
    }

    #[test]
    fn html_standard_examples() {
        // §9.2.6: "data: YHOO\ndata: +2\ndata: 10\n\n" is one event "YHOO\n+2\n10".
        assert_eq!(
            parse_sse(b"data: YHOO\ndata: +2\ndata: 10\n\n"),
            vec![ev("YHOO\n+2\n10")]
        );
        // Comment, id persistence, and the event without a blank line at EOF is dropped.
        let events = parse_sse(b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    last_event_id: "1".into(),
                    ..ev("first event")
                },
                ev("second event")
            ]
        );
        // Two events: "" (not dispatched: empty data buffer with just "data" gives "\n" → "")
        assert_eq!(
            parse_sse(b"data\n\ndata\ndata\n\ndata:\n"),
            vec![ev(""), ev("\n")]
        );
        // "data:test" and "data: test" are the same.
        assert_eq!(
            parse_sse(b"data:test\n\ndata: test\n\n"),
            vec![ev("test"), ev("test")]
        );
    }

    #[test]
    fn line_ends_and_chunking() {
        let stream = b"\xEF\xBB\xBFdata: a\r\ndata: b\rdata: c\n\r\nevent: x\rdata:\xff\r\r";
        let whole = parse_sse(stream);
        assert_eq!(
            whole,
            vec![
                ev("a\nb\nc"),
                SseEvent {
                    event_type: "x".into(),
                    ..ev("\u{fffd}")
                }
            ]
        );
        for i in 0..=stream.len() {
            let mut p = SseParser::new();
            let mut got = p.feed(&stream[..i]);
            got.extend(p.feed(&stream[i..]));
            assert_eq!(got, whole, "split at {i}");
        }
        let mut p = SseParser::new();
        let got: Vec<_> = stream.iter().flat_map(|b| p.feed(&[*b])).collect();
        assert_eq!(got, whole);
    }

    #[test]
    fn id_retry_and_pending() {
        let mut p = SseParser::new();
        assert!(
            p.feed(b"id: a\0b\nretry: 12x\nretry: 34\ndata: d")
                .is_empty()
        );
        assert_eq!(p.retry, Some(34));
        assert!(p.has_pending());
        assert_eq!(p.feed(b"\n\n"), vec![ev("d")]);
        assert!(!p.has_pending());
    }
}
