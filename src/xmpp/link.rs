//! The XEP-0114 component link itself: connect to the server, the stream header and the SHA-1
//! handshake, the socket and stanza splitter of one session ([`Upstream`]), and the reconnect
//! back-off. What travels over the link is the component's business (`component.rs`).

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};

use super::stream::{Element, Piece, Splitter, StreamError};
use super::text::XmlText;
use crate::config::Config;

pub const NS_COMPONENT: &str = "jabber:component:accept";
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// Deepest element nesting accepted upstream (real stanzas use fewer than 10 levels).
pub const MAX_DEPTH: u32 = 32;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one session ended.
#[derive(Debug)]
pub enum End {
    Shutdown,
    AuthRejected(String),
    Lost(String),
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> End {
        End::Lost(format!("I/O error: {e}"))
    }
}

impl From<StreamError> for End {
    fn from(e: StreamError) -> End {
        End::Lost(format!("bad XML from the server: {e}"))
    }
}

/// One session's socket and the stanzas read from it.
pub struct Upstream {
    pub socket: Async<TcpStream>,
    pub splitter: Splitter,
    pub last_write: Instant,
    pub last_read: Instant,
    /// When the link ping still unanswered was sent.
    pub ping_sent: Option<Instant>,
}

impl Upstream {
    pub fn new(socket: Async<TcpStream>, config: &Config) -> Upstream {
        Upstream {
            socket,
            splitter: Splitter::new(config.max_stanza_bytes, MAX_DEPTH),
            last_write: Instant::now(),
            last_read: Instant::now(),
            ping_sent: None,
        }
    }

    /// Writes a stanza (logged at trace level, secrets masked: see [`redact`]).
    pub async fn send(&mut self, xml: &str) -> io::Result<()> {
        if log::log_enabled!(log::Level::Trace) {
            log::trace!("upstream <- {}", redact(xml));
        }
        (&self.socket).write_all(xml.as_bytes()).await?;
        self.last_write = Instant::now();
        Ok(())
    }

    /// Reads until the splitter yields a piece, returned parsed (used during the handshake).
    async fn next_parsed(&mut self, buf: &mut [u8]) -> Result<Parsed, End> {
        loop {
            match self.splitter.next_piece()? {
                Some(Piece::Open(b)) => return Ok(Parsed::Open(Element::parse_open(b)?)),
                Some(Piece::Stanza(b)) => {
                    return Ok(Parsed::Stanza(Element::parse(b, NS_COMPONENT)?));
                }
                Some(Piece::Close) => return Ok(Parsed::Closed),
                None => {}
            }
            let n = (&self.socket).read(buf).await?;
            if n == 0 {
                return Ok(Parsed::Closed);
            }
            self.splitter.feed(&buf[..n]);
        }
    }
}

/// `xml` with the text of `<password>` and `<handshake>` replaced by `…`: the trace log never
/// holds a room password or the handshake digest (which would allow an offline guess of the
/// component secret).
pub fn redact(xml: &str) -> std::borrow::Cow<'_, str> {
    let mut out = std::borrow::Cow::Borrowed(xml);
    for tag in ["password", "handshake"] {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        if let Some(start) = out.find(&open)
            && let Some(len) = out[start..].find(&close)
        {
            let text = start + open.len()..start + len;
            out.to_mut().replace_range(text, "…");
        }
    }
    out
}

enum Parsed {
    Open(Element),
    Stanza(Element),
    Closed,
}

/// Opens a TCP connection to `upstream`, trying each address it resolves to.
pub async fn connect(config: &Config) -> Result<Async<TcpStream>, End> {
    let addrs: Vec<_> = config
        .upstream
        .to_socket_addrs()
        .map_err(|e| {
            End::Lost(format!(
                "cannot resolve `upstream = {}`: {e}; check the host name",
                config.upstream
            ))
        })?
        .collect();
    let mut last = String::from("no address");
    for addr in addrs {
        let attempt = future::or(
            async { Some(Async::<TcpStream>::connect(addr).await) },
            async {
                Timer::after(CONNECT_TIMEOUT).await;
                None
            },
        )
        .await;
        match attempt {
            Some(Ok(socket)) => return Ok(socket),
            Some(Err(e)) => last = format!("{addr}: {e}"),
            None => last = format!("{addr}: no answer within {CONNECT_TIMEOUT:?}"),
        }
    }
    Err(End::Lost(format!(
        "cannot connect to `upstream = {}` ({last}); is the XMPP server running with its component port there (Prosody: component_ports; ejabberd: an ejabberd_service listener)?",
        config.upstream
    )))
}

/// Reads the stream header and does the handshake. Returns when stanzas may flow.
pub async fn handshake(config: &Config, up: &mut Upstream, buf: &mut [u8]) -> Result<(), End> {
    let to = XmlText::new(&config.component)
        .map_err(|e| End::Lost(format!("`component` cannot be sent: it {e}")))?;
    up.send(&format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_COMPONENT}' xmlns:stream='{NS_STREAMS}' to='{to}'>"
    ))
    .await?;
    let id = match up.next_parsed(buf).await? {
        Parsed::Open(header) => header
            .attr("id")
            .map(str::to_string)
            .ok_or_else(|| End::Lost("the server's stream header has no id".into()))?,
        Parsed::Stanza(e) => {
            return Err(End::Lost(format!(
                "expected a stream header, got <{}>",
                e.name
            )));
        }
        Parsed::Closed => {
            return Err(End::Lost(
                "the server closed the stream before its header".into(),
            ));
        }
    };
    let digest = sha1_smol::Sha1::from(format!("{id}{}", config.secret)).digest();
    up.send(&format!("<handshake>{digest}</handshake>")).await?;
    match up.next_parsed(buf).await? {
        Parsed::Stanza(reply) if reply.name == "handshake" => Ok(()),
        Parsed::Stanza(reply) => {
            let condition = stream_error_condition(&reply);
            if condition == "not-authorized" {
                return Err(End::AuthRejected(condition));
            }
            if condition == "host-unknown" || condition == "conflict" {
                return Err(End::Lost(format!(
                    "the XMPP server refused the component name `{}`: {condition}; is it configured there as a component (Prosody: `Component \"{}\"`; ejabberd: under an ejabberd_service listener's `hosts`), and no other process connected as it?",
                    config.component, config.component
                )));
            }
            Err(End::Lost(format!("handshake refused: {condition}")))
        }
        Parsed::Closed => Err(End::Lost(
            "the server closed the stream without answering the handshake".into(),
        )),
        Parsed::Open(_) => Err(End::Lost("second stream header".into())),
    }
}

/// The condition of a `<stream:error/>` (or the element's name if it is something else).
pub fn stream_error_condition(e: &Element) -> String {
    e.children
        .iter()
        .find(|c| c.ns == NS_STREAM_ERRORS && c.name != "text")
        .map_or_else(|| format!("<{}>", e.name), |c| c.name.clone())
}

/// Exponential reconnect delay between `reconnect_min` and `reconnect_max`, with ±25 %
/// jitter so many daemons restarted together do not reconnect in step. It starts again from
/// the minimum once a session has been established (handshake accepted, rooms joined).
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new(config: &Config) -> Backoff {
        Backoff {
            next: config.reconnect_min,
        }
    }

    /// The session got as far as it should: the next outage starts from the minimum.
    pub fn reset(&mut self, config: &Config) {
        self.next = config.reconnect_min;
    }

    /// How long to wait now; the wait after this one doubles, up to `reconnect_max`.
    pub fn next_wait(&mut self, config: &Config) -> Duration {
        let base = self.next.clamp(config.reconnect_min, config.reconnect_max);
        self.next = (base * 2).min(config.reconnect_max);
        base.mul_f64(0.75 + fastrand::f64() * 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_the_trace_log() {
        let join = "<presence to='r@c/n'><x xmlns='http://jabber.org/protocol/muc'><password>hunter2</password></x></presence>";
        let shown = redact(join);
        assert!(!shown.contains("hunter2") && shown.contains("<password>…</password>"));
        assert_eq!(
            redact("<handshake>0123abcd</handshake>"),
            "<handshake>…</handshake>"
        );
        assert_eq!(redact("<iq id='a'/>"), "<iq id='a'/>");
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let mut config = crate::config::parse(
            "t",
            "component = s.l\nsecret = x\nmuc = conference.localhost\nrooms = lobby\n",
        )
        .unwrap();
        config.reconnect_min = Duration::from_secs(1);
        config.reconnect_max = Duration::from_secs(8);
        let mut b = Backoff::new(&config);
        let waits: Vec<f64> = (0..6).map(|_| b.next_wait(&config).as_secs_f64()).collect();
        for (wait, base) in waits.iter().zip([1.0, 2.0, 4.0, 8.0, 8.0, 8.0]) {
            assert!(*wait >= base * 0.75 && *wait <= base * 1.25, "{waits:?}");
        }
        b.reset(&config);
        assert!(b.next_wait(&config) <= Duration::from_millis(1250));
    }
}
