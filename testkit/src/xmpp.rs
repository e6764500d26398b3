//! A minimal blocking XMPP c2s client for tests: owns the TCP stream to Prosody, login (SASL
//! PLAIN without TLS, bind, session), top-level stanza framing, and the MUC occupant/owner
//! actions tests need (join, leave, groupchat, subject, room configuration).
//!
//! Framing is string scanning, not a full XML parser: received bytes accumulate in a buffer and
//! are cut into complete top-level elements (children of `<stream:stream>`) by tracking element
//! depth, honouring quoted attribute values; a stanza split across reads is only delivered once
//! complete. Prosody serialises attributes with single quotes (`code='110'`) and escapes text
//! and attribute values with `&amp; &lt; &gt; &quot; &apos;`; needles given to
//! [`XmppClient::wait_for`] must be written accordingly.

use crate::server::Server;
use crate::tail;
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Default bound for every internal wait (login, join, configure…).
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct XmppClient {
    stream: TcpStream,
    /// Bytes received but not yet cut into stanzas.
    buf: Vec<u8>,
    /// Complete top-level elements not yet consumed by a wait.
    stanzas: VecDeque<String>,
    /// Whether the `<stream:stream …>` opening of the current stream was seen.
    in_stream: bool,
    closed: bool,
    /// Full JID bound by the server (`user@localhost/resource`).
    pub jid: String,
    /// `conference.localhost`.
    pub muc: String,
    /// Nick per joined room node.
    nicks: HashMap<String, String>,
    next_id: u64,
}

impl XmppClient {
    /// A user of the tests: registers `name` (password `pw`), connects, and joins `rooms` as
    /// `name`.
    pub fn user(server: &dyn Server, name: &str, rooms: &[&str]) -> XmppClient {
        server.register(name, "pw");
        let mut c = XmppClient::connect(server, name, "pw");
        for room in rooms {
            c.join(room, name);
        }
        c
    }

    /// Connects to the server's c2s port (Prosody or ejabberd) and logs in as
    /// `user@localhost` with `pass` (SASL PLAIN over plaintext, stream restart, resource bind,
    /// session if offered). Panics on failure.
    pub fn connect(server: &dyn Server, user: &str, pass: &str) -> XmppClient {
        let stream = TcpStream::connect(server.c2s_addr()).unwrap_or_else(|e| {
            panic!(
                "connect to {} c2s {}: {e}",
                server.name(),
                server.c2s_addr()
            )
        });
        stream.set_nodelay(true).ok();
        stream
            .set_write_timeout(Some(TIMEOUT))
            .expect("set_write_timeout");
        let mut c = XmppClient {
            stream,
            buf: Vec::new(),
            stanzas: VecDeque::new(),
            in_stream: false,
            closed: false,
            jid: String::new(),
            muc: server.muc().to_string(),
            nicks: HashMap::new(),
            next_id: 0,
        };
        let domain = server.domain();
        c.open_stream(domain);
        let features = c.wait_for("</stream:features>", TIMEOUT);
        if !features.contains("<mechanism>PLAIN</mechanism>") {
            panic!("server offers no SASL PLAIN for {user}: {features}");
        }
        let creds = base64(format!("\0{user}\0{pass}").as_bytes());
        c.send_raw(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
        ));
        let reply = c.wait_any(&["<success", "<failure"], TIMEOUT);
        if !reply.contains("<success") {
            panic!("SASL PLAIN failed for {user}@{domain}: {reply}");
        }
        // Stream restart: a new header, a new stream opening from the server.
        c.in_stream = false;
        c.open_stream(domain);
        let features = c.wait_for("</stream:features>", TIMEOUT);
        let id = c.id("bind");
        c.send_raw(&format!(
            "<iq type='set' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>test-{}</resource></bind></iq>",
            crate::random_hex(4)
        ));
        let reply = c.wait_iq(&id, TIMEOUT);
        if stanza_attr(&reply, "type").as_deref() != Some("result") {
            panic!("resource bind failed for {user}: {reply}");
        }
        c.jid = element_text(&reply, "jid")
            .unwrap_or_else(|| panic!("no <jid> in bind result: {reply}"));
        if features.contains("urn:ietf:params:xml:ns:xmpp-session") {
            let id = c.id("sess");
            c.send_raw(&format!(
                "<iq type='set' id='{id}'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
            ));
            let reply = c.wait_iq(&id, TIMEOUT);
            if stanza_attr(&reply, "type").as_deref() != Some("result") {
                panic!("session establishment failed for {user}: {reply}");
            }
        }
        c
    }

    fn open_stream(&mut self, domain: &str) {
        self.send_raw(&format!(
            "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        ));
    }

    /// A fresh stanza id `<prefix>-<n>`.
    pub fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    /// `node@conference.localhost`.
    pub fn room_jid(&self, room_node: &str) -> String {
        format!("{room_node}@{}", self.muc)
    }

    /// Writes `xml` as is. Panics if the connection is broken.
    pub fn send_raw(&mut self, xml: &str) {
        if let Err(e) = self.stream.write_all(xml.as_bytes()) {
            panic!(
                "XMPP write failed for {}: {e}; unread: {}",
                self.jid,
                self.pending_text()
            );
        }
    }

    /// Joins `room_node@conference.localhost` as `nick` and waits for the self-presence
    /// (status 110). Panics with the received text on an error presence or timeout.
    pub fn join(&mut self, room_node: &str, nick: &str) {
        self.join_with(room_node, nick, "");
    }

    /// Like [`XmppClient::join`] with extra children inside the `<x xmlns='…muc'>` element,
    /// e.g. `<password>secret</password>` or `<history maxstanzas='0'/>`.
    pub fn join_with(&mut self, room_node: &str, nick: &str, muc_children: &str) {
        if let Err(reply) = self.try_join(room_node, nick, muc_children) {
            panic!(
                "{} could not join {}/{nick}: {reply}",
                self.jid,
                self.room_jid(room_node)
            );
        }
    }

    /// Sends the join presence; `Ok(received text)` on self-presence (status 110), `Err(text)`
    /// with the error presence (e.g. `<registration-required/>`, `<not-authorized/>`).
    /// Panics on timeout. The nick must be unchanged by resourceprep (Prosody answers from the
    /// prepared occupant JID, which is what is matched).
    pub fn try_join(
        &mut self,
        room_node: &str,
        nick: &str,
        muc_children: &str,
    ) -> Result<String, String> {
        let occupant = format!("{}/{nick}", self.room_jid(room_node));
        let to = xml_escape(&occupant);
        self.send_raw(&format!(
            "<presence to='{to}'><x xmlns='http://jabber.org/protocol/muc'>{muc_children}</x></presence>"
        ));
        let (text, stanza) = self.wait_match(
            |s| {
                s.starts_with("<presence")
                    && stanza_attr(s, "from").as_deref() == Some(occupant.as_str())
                    && (is_self_presence(s) || stanza_attr(s, "type").as_deref() == Some("error"))
            },
            TIMEOUT,
            &format!("self-presence from {occupant}"),
        );
        if stanza_attr(&stanza, "type").as_deref() == Some("error") {
            Err(text)
        } else {
            self.nicks.insert(room_node.to_string(), nick.to_string());
            Ok(text)
        }
    }

    /// Leaves the room (unavailable presence) and waits for the self unavailable presence.
    pub fn leave(&mut self, room_node: &str) {
        let nick = self
            .nicks
            .remove(room_node)
            .unwrap_or_else(|| panic!("leave({room_node}): not joined"));
        let occupant = format!("{}/{nick}", self.room_jid(room_node));
        self.send_raw(&format!(
            "<presence to='{}' type='unavailable'/>",
            xml_escape(&occupant)
        ));
        self.wait_match(
            |s| {
                s.starts_with("<presence")
                    && stanza_attr(s, "from").as_deref() == Some(occupant.as_str())
                    && stanza_attr(s, "type").as_deref() == Some("unavailable")
                    && is_self_presence(s)
            },
            TIMEOUT,
            &format!("self unavailable presence from {occupant}"),
        );
    }

    /// Sends a groupchat message with `body` (XML-escaped; `\n`, `\r` and any Unicode are sent
    /// literally — XML parsers normalise a literal CR to LF). Returns the message id.
    /// Characters XML 1.0 forbids (most C0 controls) are sent as is and will get the stream
    /// closed by Prosody; use [`XmppClient::send_raw`] deliberately for that.
    pub fn send_groupchat(&mut self, room_node: &str, body: &str) -> String {
        let id = self.id("msg");
        let to = self.room_jid(room_node);
        self.send_raw(&format!(
            "<message to='{to}' type='groupchat' id='{id}'><body>{}</body></message>",
            xml_escape(body)
        ));
        id
    }

    /// Sets the room subject and waits for the room to broadcast it back (panics on an error
    /// reply, e.g. `<forbidden/>` when occupants may not change the subject).
    pub fn set_subject(&mut self, room_node: &str, subject: &str) {
        let id = self.id("subj");
        let room = self.room_jid(room_node);
        self.send_raw(&format!(
            "<message to='{room}' type='groupchat' id='{id}'><subject>{}</subject></message>",
            xml_escape(subject)
        ));
        let wanted = normalize_newlines(subject);
        let (text, stanza) = self.wait_match(
            |s| {
                let from = stanza_attr(s, "from").unwrap_or_default();
                s.starts_with("<message")
                    && (from == room || from.starts_with(&format!("{room}/")))
                    && ((stanza_attr(s, "type").as_deref() == Some("error")
                        && stanza_attr(s, "id").as_deref() == Some(id.as_str()))
                        || element_text(s, "subject").map(|t| xml_unescape(&t))
                            == Some(wanted.clone()))
            },
            TIMEOUT,
            &format!("subject echo from {room}"),
        );
        if stanza_attr(&stanza, "type").as_deref() == Some("error") {
            panic!("setting the subject of {room} failed: {text}");
        }
    }

    /// Submits the `muc#roomconfig` owner form (`jabber:x:data` type `submit`) with `fields`
    /// (`("muc#roomconfig_membersonly", "1")`, `("muc#roomconfig_roomsecret", "pw")`, …;
    /// consecutive pairs with the same var become one multi-value field). Waits for the iq
    /// result; panics with the reply on error. Needs owner affiliation (the room creator).
    pub fn configure_room(&mut self, room_node: &str, fields: &[(&str, &str)]) {
        let mut form = String::from(
            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>",
        );
        let mut i = 0;
        while i < fields.len() {
            let var = fields[i].0;
            form.push_str(&format!("<field var='{}'>", xml_escape(var)));
            while i < fields.len() && fields[i].0 == var {
                form.push_str(&format!("<value>{}</value>", xml_escape(fields[i].1)));
                i += 1;
            }
            form.push_str("</field>");
        }
        let id = self.id("cfg");
        let room = self.room_jid(room_node);
        self.send_raw(&format!(
            "<iq type='set' to='{room}' id='{id}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>{form}</x></query></iq>"
        ));
        let reply = self.wait_iq(&id, TIMEOUT);
        if stanza_attr(&reply, "type").as_deref() != Some("result") {
            panic!("configuring {room} with {fields:?} failed: {reply}");
        }
    }

    /// Sends an iq built by the caller (it must carry `id='<id>'`) and returns the reply
    /// stanza (result or error) without judging it.
    pub fn iq(&mut self, id: &str, xml: &str) -> String {
        self.send_raw(xml);
        self.wait_iq(id, TIMEOUT)
    }

    /// Sends a disco#info query to room `room_node` and returns the reply (result or error,
    /// e.g. `item-not-found` for a room that does not exist).
    pub fn disco_info(&mut self, room_node: &str) -> String {
        let id = self.id("disco");
        let jid = self.room_jid(room_node);
        self.iq(
            &id,
            &format!(
                "<iq type='get' to='{jid}' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
            ),
        )
    }

    /// Waits for the `<iq>` reply with `id` and returns that stanza (result or error).
    pub fn wait_iq(&mut self, id: &str, timeout: Duration) -> String {
        self.wait_match(
            |s| s.starts_with("<iq") && stanza_attr(s, "id").as_deref() == Some(id),
            timeout,
            &format!("iq reply {id}"),
        )
        .1
    }

    /// Returns the text received up to and including the first stanza containing `needle`
    /// (the stanzas before it are consumed too; stanzas are separated by `\n`). Panics on
    /// timeout or connection close with everything received meanwhile.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_match(|s| s.contains(needle), timeout, needle).0
    }

    /// Like [`XmppClient::wait_for`] for the first stanza containing any of `needles`.
    pub fn wait_any(&mut self, needles: &[&str], timeout: Duration) -> String {
        self.wait_match(
            |s| needles.iter().any(|n| s.contains(n)),
            timeout,
            &format!("any of {needles:?}"),
        )
        .0
    }

    /// Like [`XmppClient::wait_for`] but returns `None` instead of panicking on timeout or close
    /// (the stanzas read meanwhile are consumed).
    pub fn try_wait_for(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        self.try_wait_match(|s| s.contains(needle), timeout)
            .ok()
            .map(|(all, _)| all)
    }

    /// Waits for the first stanza for which `pred` holds; returns `(all text received up to and
    /// including it, that stanza)`. Panics on timeout/close with `what` and everything received.
    pub fn wait_match(
        &mut self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
        what: &str,
    ) -> (String, String) {
        match self.try_wait_match(pred, timeout) {
            Ok(found) => found,
            Err(text) => panic!(
                "{}: timed out after {timeout:?} (or stream closed: {}) waiting for {what}\nreceived:\n{}\nunparsed: {}",
                if self.jid.is_empty() {
                    "xmpp"
                } else {
                    &self.jid
                },
                self.closed,
                tail(&text, 200),
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// `Ok((text up to and including the match, the matching stanza))`, or `Err(everything
    /// consumed)` on timeout or close.
    pub fn try_wait_match(
        &mut self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<(String, String), String> {
        let deadline = Instant::now() + timeout;
        let mut acc = String::new();
        loop {
            while let Some(s) = self.stanzas.pop_front() {
                acc.push_str(&s);
                acc.push('\n');
                if pred(&s) {
                    return Ok((acc, s));
                }
            }
            let now = Instant::now();
            if self.closed || now >= deadline {
                return Err(acc);
            }
            self.read_some(deadline - now);
        }
    }

    /// Consumes and returns every complete stanza that arrives within `duration`.
    pub fn drain(&mut self, duration: Duration) -> Vec<String> {
        let deadline = Instant::now() + duration;
        loop {
            let now = Instant::now();
            if self.closed || now >= deadline {
                break;
            }
            self.read_some(deadline - now);
        }
        self.stanzas.drain(..).collect()
    }

    /// Whether the server closed the TCP connection.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Sends `</stream:stream>` and shuts the socket down.
    pub fn close(mut self) {
        let _ = self.stream.write_all(b"</stream:stream>");
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.closed = true;
    }

    fn pending_text(&self) -> String {
        let mut s: Vec<&str> = self.stanzas.iter().map(|s| s.as_str()).collect();
        let rest = String::from_utf8_lossy(&self.buf);
        s.push(&rest);
        s.join("\n")
    }

    /// One read (bounded by `max_wait`), then cut complete stanzas out of the buffer.
    fn read_some(&mut self, max_wait: Duration) {
        let wait = max_wait.clamp(Duration::from_millis(1), Duration::from_millis(200));
        self.stream.set_read_timeout(Some(wait)).ok();
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => self.closed = true,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.split_stanzas();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => self.closed = true,
        }
    }

    fn split_stanzas(&mut self) {
        loop {
            let Some((kind, text)) = cut_element(&mut self.buf, self.in_stream) else {
                return;
            };
            match kind {
                Item::Prolog => {}
                Item::StreamOpen => {
                    self.in_stream = true;
                    self.stanzas.push_back(text);
                }
                Item::Element => self.stanzas.push_back(text),
            }
        }
    }
}

/// Drops leading whitespace (keepalives) from `buf`, then cuts the first complete top-level
/// item off it ([`scan_element`]); `None` (and `buf` kept) while it is incomplete.
pub(crate) fn cut_element(buf: &mut Vec<u8>, in_stream: bool) -> Option<(Item, String)> {
    let start = buf
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(buf.len());
    buf.drain(..start);
    if buf.is_empty() {
        return None;
    }
    let found = scan_element(buf, in_stream)?;
    let text = String::from_utf8_lossy(&buf[..found.len]).into_owned();
    buf.drain(..found.len);
    Some((found.kind, text))
}

/// What [`scan_element`] found at the start of a buffer.
#[derive(Debug, PartialEq)]
pub(crate) enum Item {
    /// `<?xml …?>`
    Prolog,
    /// `<stream:stream …>` (never closed until the end of the stream).
    StreamOpen,
    /// A complete top-level element, or `</stream:stream>`.
    Element,
}

pub(crate) struct Scanned {
    pub(crate) len: usize,
    pub(crate) kind: Item,
}

/// Finds the end of the first top-level item in `buf` (which starts with `<`).
/// `None` if it is not complete yet. The one XML tag scanner of the harness: the c2s client and
/// the fake upstream (which reads the daemon's side of the component stream) both cut with it.
pub(crate) fn scan_element(buf: &[u8], in_stream: bool) -> Option<Scanned> {
    if buf.starts_with(b"<?") {
        let end = find(buf, b"?>")?;
        return Some(Scanned {
            len: end + 2,
            kind: Item::Prolog,
        });
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < buf.len() {
        if buf[i] != b'<' {
            i += 1;
            continue;
        }
        if buf[i..].starts_with(b"<!--") {
            i += find(&buf[i..], b"-->")? + 3;
            continue;
        }
        if buf[i..].starts_with(b"<![CDATA[") {
            i += find(&buf[i..], b"]]>")? + 3;
            continue;
        }
        // A tag: find its '>' outside quotes.
        let mut j = i + 1;
        let mut quote = 0u8;
        loop {
            let b = *buf.get(j)?;
            if quote != 0 {
                if b == quote {
                    quote = 0;
                }
            } else if b == b'\'' || b == b'"' {
                quote = b;
            } else if b == b'>' {
                break;
            }
            j += 1;
        }
        let tag = &buf[i..=j];
        let closing = tag.starts_with(b"</");
        let self_closing = tag.ends_with(b"/>");
        if depth == 0 && !closing && !in_stream && tag.starts_with(b"<stream:stream") {
            return Some(Scanned {
                len: j + 1,
                kind: Item::StreamOpen,
            });
        }
        if closing {
            if depth <= 1 {
                // End of the element (or `</stream:stream>` at depth 0).
                return Some(Scanned {
                    len: j + 1,
                    kind: Item::Element,
                });
            }
            depth -= 1;
        } else if self_closing {
            if depth == 0 {
                return Some(Scanned {
                    len: j + 1,
                    kind: Item::Element,
                });
            }
        } else {
            depth += 1;
        }
        i = j + 1;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether a presence stanza carries MUC status code 110 (self-presence).
fn is_self_presence(s: &str) -> bool {
    s.contains("code='110'") || s.contains("code=\"110\"")
}

/// The (unescaped) value of attribute `name` on the stanza's own opening tag (not on its
/// children). Accepts both quote styles.
pub fn stanza_attr(stanza: &str, name: &str) -> Option<String> {
    let s = stanza.trim_start();
    let mut rest = s.strip_prefix('<')?;
    // Skip the element name.
    let name_end = rest.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
    rest = &rest[name_end..];
    loop {
        rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with('>') || rest.starts_with('/') {
            return None;
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        rest = rest[eq + 1..].trim_start();
        let quote = rest.chars().next()?;
        if quote != '\'' && quote != '"' {
            return None;
        }
        let end = rest[1..].find(quote)? + 1;
        let value = &rest[1..end];
        if key == name {
            return Some(xml_unescape(value));
        }
        rest = &rest[end + 1..];
    }
}

/// The `id` of the first `<stanza-id>` child in `stanza` (the archive id a server with
/// mod_muc_mam stamps on a room message), if there is one.
pub fn stanza_id(stanza: &str) -> Option<String> {
    let at = stanza.find("<stanza-id")?;
    stanza_attr(&stanza[at..], "id")
}

/// CRLF and lone CR to LF, as an XML parser does with literal line ends.
pub fn normalize_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// Escapes `& < > " '` for XML text and attribute values. Everything else (newlines, CR, any
/// Unicode) is passed through unchanged.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses XML escaping: the five predefined entities and decimal/hex character references.
pub fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(|d| d.parse::<u32>()))
                .and_then(|r| r.ok())
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The raw (still escaped) text content of the first `<name>…</name>` or `<name …>…</name>`
/// element in `stanza`; `Some("")` for `<name/>`. No nesting support (fine for body, subject,
/// jid).
pub fn element_text(stanza: &str, name: &str) -> Option<String> {
    let open = format!("<{name}");
    let mut from = 0;
    while let Some(pos) = stanza[from..].find(&open) {
        let start = from + pos;
        let after = &stanza[start + open.len()..];
        match after.chars().next() {
            Some('>') | Some(' ') | Some('/') | Some('\t') | Some('\n') | Some('\r') => {}
            _ => {
                from = start + open.len();
                continue;
            }
        }
        let gt = after.find('>')?;
        if after[..gt].ends_with('/') {
            return Some(String::new());
        }
        let content = &after[gt + 1..];
        let close = format!("</{name}>");
        let end = content.find(&close)?;
        return Some(content[..end].to_string());
    }
    None
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
