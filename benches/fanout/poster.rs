//! The XMPP user that posts the messages: a real c2s session to Prosody (SASL PLAIN, bind,
//! session, MUC join, the same steps as the harness's `XmppClient`), but with the socket split
//! in two so that sending can be paced precisely on one thread while another thread keeps
//! reading. Prosody reflects every groupchat message back to its sender, so that reader sees
//! each message come back through Prosody's own c2s delivery path: its latency is Prosody's
//! part of the end-to-end figure, and its throughput is what Prosody alone can deliver to one
//! c2s occupant.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::stats::{Hist, now_us};
use testkit::Prosody;
use testkit::xmpp::base64;

/// Body length in bytes (ANCHORS.md: ~35-byte bodies, ~80-byte SSE events).
pub const BODY_LEN: usize = 35;

/// `s=<seq, 8 digits> t=<send time in µs, 12 digits> ` padded with `x` to `len` bytes.
pub fn body(seq: u64, t_us: u64, len: usize) -> String {
    let mut b = format!("s={seq:08} t={t_us:012} ");
    while b.len() < len {
        b.push('x');
    }
    b
}

/// Finds `s=dddddddd t=dddddddddddd` at the start of `b`.
pub fn parse_stamp(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() < 25 || &b[..2] != b"s=" || &b[10..13] != b" t=" {
        return None;
    }
    Some((digits(&b[2..10])?, digits(&b[13..25])?))
}

fn digits(b: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
    }
    Some(v)
}

pub struct Poster {
    w: TcpStream,
    muc: String,
    echoes: Arc<AtomicU64>,
    reader: Option<JoinHandle<Hist>>,
}

/// What one paced send did.
pub struct Sent {
    /// Messages sent per room index.
    pub per_room: Vec<u64>,
    pub total: u64,
    pub first_us: u64,
    pub last_us: u64,
}

impl Sent {
    /// Achieved send rate (messages per second between the first and the last write).
    pub fn rate(&self) -> f64 {
        if self.total < 2 {
            return 0.0;
        }
        (self.total - 1) as f64 / ((self.last_us - self.first_us).max(1) as f64 / 1e6)
    }
}

const TIMEOUT: Duration = Duration::from_secs(15);

impl Poster {
    /// Logs in as `user` and joins every room in `rooms` as nick `user` (no history).
    pub fn connect(prosody: &Prosody, user: &str, pass: &str, rooms: &[String]) -> Poster {
        let mut s = TcpStream::connect(prosody.c2s_addr()).expect("connect to Prosody c2s");
        s.set_nodelay(true).ok();
        s.set_read_timeout(Some(Duration::from_millis(200))).ok();
        let mut buf = Vec::new();
        let domain = &prosody.domain;
        let open = format!(
            "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        );
        s.write_all(open.as_bytes()).unwrap();
        read_until(&mut s, &mut buf, "</stream:features>");
        let creds = base64(format!("\0{user}\0{pass}").as_bytes());
        s.write_all(
            format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
            )
            .as_bytes(),
        )
        .unwrap();
        let reply = read_until_any(&mut s, &mut buf, &["<success", "<failure"]);
        assert!(
            reply.contains("<success"),
            "SASL failed for {user}: {reply}"
        );
        s.write_all(open.as_bytes()).unwrap();
        let features = read_until(&mut s, &mut buf, "</stream:features>");
        s.write_all(b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>fanout</resource></bind></iq>").unwrap();
        let reply = read_until(&mut s, &mut buf, "</iq>");
        assert!(reply.contains("type='result'"), "bind failed: {reply}");
        if features.contains("urn:ietf:params:xml:ns:xmpp-session") {
            s.write_all(b"<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>").unwrap();
            read_until(&mut s, &mut buf, "sess1");
        }
        for room in rooms {
            let occupant = format!("{room}@{}/{user}", prosody.muc);
            s.write_all(format!("<presence to='{occupant}'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>").as_bytes()).unwrap();
            // The self-presence (status 110) comes from our occupant JID.
            loop {
                let text = read_until(&mut s, &mut buf, "</presence>");
                if text.contains("code='110'") && text.contains(&format!("from='{occupant}'")) {
                    break;
                }
                assert!(
                    !text.contains("type='error'"),
                    "joining {occupant} failed: {text}"
                );
            }
        }
        let r = s.try_clone().expect("clone c2s socket");
        r.set_read_timeout(None).ok();
        let echoes = Arc::new(AtomicU64::new(0));
        let count = echoes.clone();
        let reader = std::thread::Builder::new()
            .name("fanout-echo".into())
            .spawn(move || echo_reader(r, buf, count))
            .expect("spawn echo reader");
        Poster {
            w: s,
            muc: prosody.muc.clone(),
            echoes,
            reader: Some(reader),
        }
    }

    /// Sends `count` messages numbered from `first_seq`, message `i` to room `i % rooms.len()`,
    /// paced at `rate` per second (`rate <= 0`: as fast as the socket takes them). Each body
    /// carries its sequence number and the time of its write.
    pub fn send(&mut self, rooms: &[String], first_seq: u64, count: u64, rate: f64) -> Sent {
        let mut per_room = vec![0; rooms.len()];
        let to: Vec<String> = rooms.iter().map(|r| format!("{r}@{}", self.muc)).collect();
        let start = Instant::now();
        let interval = if rate > 0.0 { 1.0 / rate } else { 0.0 };
        let (mut first_us, mut last_us) = (0, 0);
        let mut out = String::with_capacity(256);
        for i in 0..count {
            let due = start + Duration::from_secs_f64(interval * i as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let seq = first_seq + i;
            let room = (i % rooms.len() as u64) as usize;
            let t = now_us();
            out.clear();
            out.push_str("<message to='");
            out.push_str(&to[room]);
            out.push_str("' type='groupchat'><body>");
            out.push_str(&body(seq, t, BODY_LEN));
            out.push_str("</body></message>");
            self.w.write_all(out.as_bytes()).expect("c2s write");
            if i == 0 {
                first_us = t;
            }
            last_us = t;
            per_room[room] += 1;
        }
        Sent {
            per_room,
            total: count,
            first_us,
            last_us,
        }
    }

    /// Echoes (own messages reflected by the room) received so far.
    pub fn echoes(&self) -> u64 {
        self.echoes.load(Ordering::Relaxed)
    }

    /// Waits until `n` echoes arrived; false on timeout.
    pub fn wait_echoes(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.echoes() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Closes the session; returns the echo latency histogram.
    pub fn finish(mut self) -> Hist {
        let _ = self.w.write_all(b"</stream:stream>");
        std::thread::sleep(Duration::from_millis(50));
        let _ = self.w.shutdown(Shutdown::Both);
        self.reader
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_else(Hist::new)
    }
}

/// Reads the c2s stream until it closes, timing every reflected `<body>s=… t=…`.
fn echo_reader(mut r: TcpStream, mut buf: Vec<u8>, count: Arc<AtomicU64>) -> Hist {
    const NEEDLE: &[u8] = b"<body>s=";
    let mut hist = Hist::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut pos = 0;
        while let Some(i) = find(&buf[pos..], NEEDLE) {
            let at = pos + i + 6;
            if buf.len() < at + 25 {
                pos += i;
                break;
            }
            if let Some((_, t)) = parse_stamp(&buf[at..at + 25]) {
                hist.record(now_us().saturating_sub(t));
                count.fetch_add(1, Ordering::Relaxed);
            }
            pos = at;
        }
        // Keep a possibly split needle.
        let keep_from = if find(&buf[pos..], NEEDLE).is_some() {
            pos
        } else {
            buf.len().saturating_sub(NEEDLE.len() + 25).max(pos)
        };
        buf.drain(..keep_from);
        match r.read(&mut chunk) {
            Ok(0) => return hist,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return hist,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, needle: &str) -> String {
    read_until_any(s, buf, &[needle])
}

/// Reads until one of `needles` is in `buf`; returns (and removes) the text up to its end.
fn read_until_any(s: &mut TcpStream, buf: &mut Vec<u8>, needles: &[&str]) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut chunk = [0u8; 16384];
    loop {
        let hit = needles
            .iter()
            .filter_map(|n| find(buf, n.as_bytes()).map(|i| i + n.len()))
            .min();
        if let Some(end) = hit {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "c2s: no {needles:?} within {TIMEOUT:?}; got: {}",
            String::from_utf8_lossy(buf)
        );
        match s.read(&mut chunk) {
            Ok(0) => panic!(
                "c2s: Prosody closed the stream; got: {}",
                String::from_utf8_lossy(buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("c2s read: {e}"),
        }
    }
}
