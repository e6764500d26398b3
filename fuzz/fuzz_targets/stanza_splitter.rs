//! The upstream XML stream splitter and stanza parser.
//!
//! Input: `[max, depth, chunk_cap, seed_lo, seed_hi, payload…]`. The stream fed to the
//! [`Splitter`] is a fixed, valid `<stream:stream …>` header followed by the payload. It is fed
//! once in a single chunk (the reference) and once in chunks of 1..=chunk_cap bytes drawn from
//! the seed. Checked:
//! * nothing panics (splitter, `Element::parse`, `Element::parse_open`);
//! * both feeds give the same pieces (Open/Stanza bytes/Close), in the same order, and end the
//!   same way: the same error (same message, so at the same point), or none;
//! * the bytes held between two feeds never exceed `max_bytes`, so after a feed at most
//!   `max_bytes + chunk` are buffered;
//! * the first piece is the header, and it parses.
#![no_main]

use fuzz_support::Rng;
use libfuzzer_sys::fuzz_target;
use muc_eventsource::xmpp::stream::{Element, Piece, Splitter};

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='fuzz1' from='sse.localhost'>";
const NS: &str = "jabber:component:accept";

#[derive(PartialEq, Eq)]
enum Out {
    Open(Vec<u8>),
    Stanza(Vec<u8>),
    Close,
}

/// Pieces shown as text, so that a failing assertion can be read.
impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Out::Open(b) => write!(f, "Open({:?})", String::from_utf8_lossy(b)),
            Out::Stanza(b) => write!(f, "Stanza({:?})", String::from_utf8_lossy(b)),
            Out::Close => f.write_str("Close"),
        }
    }
}

#[derive(Debug)]
struct Run {
    pieces: Vec<Out>,
    error: Option<String>,
}

/// Takes every piece out of the splitter until it needs more bytes or fails.
fn drain(s: &mut Splitter, run: &mut Run) -> bool {
    loop {
        match s.next_piece() {
            Ok(None) => return true,
            Ok(Some(piece)) => run.pieces.push(match piece {
                Piece::Open(b) => {
                    let _ = Element::parse_open(b);
                    Out::Open(b.to_vec())
                }
                Piece::Stanza(b) => {
                    if let Ok(e) = Element::parse(b, NS) {
                        // Exercise the accessors the MUC code uses.
                        let _ = e.attr("from");
                        let _ = e.child("body", NS);
                    }
                    Out::Stanza(b.to_vec())
                }
                Piece::Close => Out::Close,
            }),
            Err(e) => {
                run.error = Some(e.0);
                return false;
            }
        }
    }
}

fn feed_all(stream: &[u8], sizes: &mut dyn FnMut() -> usize, max: usize, depth: u32) -> Run {
    let mut s = Splitter::new(max, depth);
    let mut run = Run {
        pieces: Vec::new(),
        error: None,
    };
    let mut rest = stream;
    while !rest.is_empty() {
        let n = sizes().min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let before = s.buffered();
        assert!(
            before <= max,
            "{before} bytes held between feeds, max_bytes is {max}"
        );
        s.feed(chunk);
        assert_eq!(s.buffered(), before + chunk.len());
        if !drain(&mut s, &mut run) {
            break;
        }
        assert!(
            s.buffered() <= max,
            "Ok(None) with {} bytes held, max_bytes is {max}",
            s.buffered()
        );
    }
    run
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    // Small limits, so that the fuzzer reaches them with small inputs.
    let max = HEADER.len() + 16 * data[0] as usize;
    let depth = 1 + u32::from(data[1] % 40);
    let cap = 1 + data[2] as usize;
    let seed = u64::from(u16::from_le_bytes([data[3], data[4]]));
    let payload = &data[5..];
    let mut stream = HEADER.to_vec();
    stream.extend_from_slice(payload);

    let whole = feed_all(&stream, &mut || usize::MAX, max, depth);
    let mut rng = Rng::new(seed);
    let chunked = feed_all(&stream, &mut || rng.size(cap), max, depth);

    assert_eq!(
        whole.pieces.first(),
        Some(&Out::Open(HEADER[21..].to_vec())),
        "the header is the first piece"
    );
    assert!(Element::parse_open(&HEADER[21..]).is_ok());
    assert_eq!(
        whole.pieces, chunked.pieces,
        "one chunk vs chunks of 1..={cap} (seed {seed}) give different pieces"
    );
    assert_eq!(
        whole.error, chunked.error,
        "one chunk vs chunks of 1..={cap} (seed {seed}) end differently"
    );
});
