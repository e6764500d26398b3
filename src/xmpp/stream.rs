//! The upstream XML stream: splits the bytes Prosody sends into the stream header, whole stanzas
//! and the stream end, and parses one stanza with `quick-xml` into a small element tree.
//!
//! Bytes may arrive in any chunks: the [`Splitter`] is a resumable byte-level scanner that only
//! finds element boundaries (tags, quotes, CDATA), so a chunk may end anywhere, also inside a
//! multi-byte UTF-8 character; decoding happens on the complete stanza. XMPP forbids DTDs,
//! comments and processing instructions (RFC 6120 §11.1): they are errors here, which also
//! rules out entity-expansion tricks. Stanza size and nesting depth are capped.

use std::fmt;

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

/// Why the upstream stream cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError(pub String);

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StreamError {}

fn error<T>(message: impl Into<String>) -> Result<T, StreamError> {
    Err(StreamError(message.into()))
}

/// One piece of the stream, borrowed from the splitter's buffer until the next call.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// The server's `<stream:stream …>` opening tag.
    Open(&'a [u8]),
    /// One complete top-level element (a stanza, `<handshake/>`, `<stream:error>`…).
    Stanza(&'a [u8]),
    /// `</stream:stream>`.
    Close,
}

/// What a finished tag completed, as a range of `buf`.
enum Found {
    Nothing,
    Open(std::ops::Range<usize>),
    Stanza(std::ops::Range<usize>),
    Close,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Text,
    Lt,
    Tag { end: bool, quote: u8, slash: bool },
    Decl { question: bool },
    Bang { matched: u8 },
    CData { brackets: u8 },
}

const CDATA_OPEN: &[u8] = b"[CDATA[";

pub struct Splitter {
    buf: Vec<u8>,
    /// Next byte to scan.
    pos: usize,
    /// Bytes at the front of `buf` already handed out or skipped; drained on the next call.
    consumed: usize,
    state: State,
    /// `<` of the tag being scanned.
    tag_start: usize,
    /// Start of the stanza being scanned (depth ≥ 1).
    stanza_start: usize,
    depth: u32,
    max_bytes: usize,
    max_depth: u32,
}

impl Splitter {
    /// `max_bytes`: largest stanza (or header) accepted; `max_depth`: deepest nesting.
    pub fn new(max_bytes: usize, max_depth: u32) -> Splitter {
        Splitter {
            buf: Vec::with_capacity(max_bytes.min(64 * 1024)),
            pos: 0,
            consumed: 0,
            state: State::Text,
            tag_start: 0,
            stanza_start: 0,
            depth: 0,
            max_bytes,
            max_depth,
        }
    }

    /// Appends received bytes. Call [`Splitter::next_piece`] until it returns `Ok(None)` after each feed.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed
    }

    fn drain(&mut self) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.pos -= self.consumed;
            self.tag_start = self.tag_start.saturating_sub(self.consumed);
            self.stanza_start = self.stanza_start.saturating_sub(self.consumed);
            self.consumed = 0;
        }
    }

    /// The next complete piece, `Ok(None)` when more bytes are needed.
    ///
    /// Longer than the ~80 lines a function in `src/` keeps to, on purpose: a byte-level state
    /// machine (one `match` arm per `State`) reads best whole, with every transition in view;
    /// split into helpers, each would need the whole splitter state anyway.
    pub fn next_piece(&mut self) -> Result<Option<Piece<'_>>, StreamError> {
        self.drain();
        while self.pos < self.buf.len() {
            let at = self.pos;
            let b = self.buf[at];
            self.pos += 1;
            // Checked at every byte, not once per feed: the limit then does not depend on how
            // the bytes were chunked (a whole oversized stanza in one read is refused too).
            if self.pos - self.consumed > self.max_bytes {
                return error(format!(
                    "stanza larger than max_stanza_bytes ({} bytes)",
                    self.max_bytes
                ));
            }
            match self.state {
                State::Text => {
                    if b == b'<' {
                        self.tag_start = at;
                        self.state = State::Lt;
                    } else if self.depth <= 1 {
                        if !matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                            return error(format!(
                                "text outside any stanza (byte 0x{b:02x}); the server is not speaking XMPP"
                            ));
                        }
                        // Whitespace keepalives between stanzas are dropped at once.
                        self.consumed = self.pos;
                    }
                }
                State::Lt => {
                    self.state = match b {
                        b'/' => State::Tag {
                            end: true,
                            quote: 0,
                            slash: false,
                        },
                        b'?' if self.depth == 0 => State::Decl { question: false },
                        b'?' => return error("processing instruction inside the stream"),
                        b'!' if self.depth >= 2 => State::Bang { matched: 0 },
                        b'!' => return error("DTD or comment in the stream (forbidden in XMPP)"),
                        _ => {
                            if self.depth == 1 {
                                self.stanza_start = self.tag_start;
                            }
                            State::Tag {
                                end: false,
                                quote: 0,
                                slash: false,
                            }
                        }
                    };
                }
                State::Tag { end, quote, slash } => {
                    if quote != 0 {
                        if b == quote {
                            self.state = State::Tag {
                                end,
                                quote: 0,
                                slash: false,
                            };
                        }
                        continue;
                    }
                    match b {
                        b'"' | b'\'' => {
                            self.state = State::Tag {
                                end,
                                quote: b,
                                slash: false,
                            }
                        }
                        b'<' => return error("`<` inside a tag"),
                        b'>' => {
                            self.state = State::Text;
                            match self.tag_done(end, slash, at)? {
                                Found::Nothing => {}
                                Found::Open(r) => return Ok(Some(Piece::Open(&self.buf[r]))),
                                Found::Stanza(r) => return Ok(Some(Piece::Stanza(&self.buf[r]))),
                                Found::Close => return Ok(Some(Piece::Close)),
                            }
                        }
                        _ => {
                            self.state = State::Tag {
                                end,
                                quote: 0,
                                slash: b == b'/',
                            }
                        }
                    }
                }
                State::Decl { question } => {
                    if question && b == b'>' {
                        self.state = State::Text;
                        self.consumed = self.pos;
                    } else {
                        self.state = State::Decl {
                            question: b == b'?',
                        };
                    }
                }
                State::Bang { matched } => {
                    if CDATA_OPEN[matched as usize] != b {
                        return error("comment or DTD inside a stanza (forbidden in XMPP)");
                    }
                    self.state = if matched as usize + 1 == CDATA_OPEN.len() {
                        State::CData { brackets: 0 }
                    } else {
                        State::Bang {
                            matched: matched + 1,
                        }
                    };
                }
                State::CData { brackets } => {
                    self.state = match b {
                        b']' => State::CData {
                            brackets: (brackets + 1).min(2),
                        },
                        b'>' if brackets == 2 => State::Text,
                        _ => State::CData { brackets: 0 },
                    };
                }
            }
        }
        Ok(None)
    }

    /// A tag ended at `at` (its `>`): track depth, and hand out a piece if one is complete.
    fn tag_done(&mut self, end: bool, slash: bool, at: usize) -> Result<Found, StreamError> {
        let start = self.tag_start;
        if end {
            match self.depth {
                0 => return error("closing tag before the stream header"),
                1 => {
                    self.depth = 0;
                    self.consumed = at + 1;
                    return Ok(Found::Close);
                }
                _ => self.depth -= 1,
            }
            if self.depth == 1 {
                self.consumed = at + 1;
                return Ok(Found::Stanza(self.stanza_start..at + 1));
            }
            return Ok(Found::Nothing);
        }
        match (self.depth, slash) {
            (0, true) => error("self-closed stream header"),
            (0, false) => {
                self.depth = 1;
                self.consumed = at + 1;
                Ok(Found::Open(start..at + 1))
            }
            (1, true) => {
                self.consumed = at + 1;
                Ok(Found::Stanza(start..at + 1))
            }
            (_, true) => Ok(Found::Nothing),
            (depth, false) => {
                if depth >= self.max_depth {
                    return error(format!("elements nested deeper than {}", self.max_depth));
                }
                self.depth += 1;
                Ok(Found::Nothing)
            }
        }
    }
}

/// A parsed element: local name, namespace, attributes, child elements and direct text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub ns: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// First child with this local name and namespace.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name && c.ns == ns)
    }

    /// Parses one complete element (a stanza from [`Splitter`]). `parent_ns` is the default
    /// namespace in force around it (`jabber:component:accept` for stanzas).
    pub fn parse(bytes: &[u8], parent_ns: &str) -> Result<Element, StreamError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| StreamError(format!("stanza is not valid UTF-8 ({e})")))?;
        let mut reader = quick_xml::Reader::from_str(text);
        reader.config_mut().check_end_names = true;
        let mut stack: Vec<Element> = Vec::new();
        loop {
            let event = reader
                .read_event()
                .map_err(|e| StreamError(format!("malformed XML: {e}")))?;
            match event {
                Event::Start(start) => {
                    let ns = stack
                        .last()
                        .map_or(parent_ns, |p| p.ns.as_str())
                        .to_string();
                    stack.push(open(&start, &ns, &stack)?);
                }
                Event::Empty(start) => {
                    let ns = stack
                        .last()
                        .map_or(parent_ns, |p| p.ns.as_str())
                        .to_string();
                    let element = open(&start, &ns, &stack)?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => return Ok(element),
                    }
                }
                Event::End(_) => {
                    let element = stack
                        .pop()
                        .ok_or_else(|| StreamError("unbalanced end tag".into()))?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => return Ok(element),
                    }
                }
                Event::Text(t) => push_text(&mut stack, &t.xml_content(XmlVersion::Implicit1_0))?,
                Event::CData(t) => push_text(&mut stack, &t.xml_content(XmlVersion::Implicit1_0))?,
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        Ok(None) => quick_xml::escape::resolve_predefined_entity(
                            &r.xml_content(XmlVersion::Implicit1_0),
                        )
                        .ok_or_else(|| {
                            StreamError(
                                "undefined entity reference (XMPP allows only the predefined five)"
                                    .into(),
                            )
                        })?
                        .to_string(),
                        Err(e) => return error(format!("bad character reference: {e}")),
                    };
                    push_text(&mut stack, &resolved)?;
                }
                Event::Eof => return error("stanza ended early"),
                Event::Comment(_) | Event::DocType(_) | Event::PI(_) | Event::Decl(_) => {
                    return error("comment, DTD or processing instruction (forbidden in XMPP)");
                }
            }
        }
    }

    /// Parses the server's stream opening tag (`<stream:stream …>`), returning its attributes.
    pub fn parse_open(bytes: &[u8]) -> Result<Element, StreamError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| StreamError(format!("stream header is not valid UTF-8 ({e})")))?;
        let mut reader = quick_xml::Reader::from_str(text);
        match reader.read_event() {
            Ok(Event::Start(start)) => open(&start, "", &[]),
            Ok(other) => error(format!("expected the stream header, got {other:?}")),
            Err(e) => error(format!("malformed stream header: {e}")),
        }
    }
}

/// Whether every character is an XML 1.0 `Char`: no C0 controls but tab, LF and CR, no
/// U+FFFE/U+FFFF (Rust `char`s are never surrogates). This also bounds JSON escaping of text
/// to two bytes per stanza byte.
fn xml_chars(text: &str) -> bool {
    text.chars()
        .all(|c| matches!(c, '\t' | '\n' | '\r' | ' '..='\u{fffd}' | '\u{10000}'..))
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), StreamError> {
    if !xml_chars(text) {
        return error("a character XML does not allow (a control character)");
    }
    match stack.last_mut() {
        Some(e) => {
            e.text.push_str(text);
            Ok(())
        }
        None => error("text outside the stanza element"),
    }
}

fn open(
    start: &BytesStart<'_>,
    inherited_ns: &str,
    ancestors: &[Element],
) -> Result<Element, StreamError> {
    let qname = start.name().into_inner().to_string();
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| StreamError(format!("malformed attribute: {e}")))?;
        let key = attr.key.into_inner().to_string();
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| StreamError(format!("attribute `{key}`: {e}")))?
            .into_owned();
        if !xml_chars(&value) {
            return error(format!(
                "attribute `{key}` holds a character XML does not allow"
            ));
        }
        attrs.push((key, value));
    }
    let find = |key: &str, attrs: &[(String, String)]| {
        attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    let (name, ns) = match qname.split_once(':') {
        Some((prefix, local)) => {
            let decl = format!("xmlns:{prefix}");
            let ns = find(&decl, &attrs)
                .or_else(|| ancestors.iter().rev().find_map(|a| find(&decl, &a.attrs)))
                .or_else(|| {
                    (prefix == "stream").then(|| "http://etherx.jabber.org/streams".to_string())
                })
                .unwrap_or_default();
            (local.to_string(), ns)
        }
        None => {
            let ns = find("xmlns", &attrs).unwrap_or_else(|| inherited_ns.to_string());
            (qname, ns)
        }
    };
    Ok(Element {
        name,
        ns,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='a1b2' from='sse.localhost'>\
<handshake/> \n\
<message from='lobby@conference.localhost/al&apos;ice' to='sse.localhost' type='groupchat' id='m1'><body>héllo &lt;b&gt; 🎉 <![CDATA[<raw> ]] ]>]]> e\u{301}</body><x xmlns='jabber:x:oob'><url>u</url></x></message>\
<presence from='lobby@conference.localhost/bob'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='participant'/><status code='110'/></x></presence>\
</stream:stream>";

    /// Feeds `input` in the given chunks and describes everything that comes out.
    fn run(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = Splitter::new(1 << 16, 16);
        let mut out = Vec::new();
        for chunk in chunks {
            s.feed(chunk);
            while let Some(piece) = s.next_piece().unwrap() {
                out.push(match piece {
                    Piece::Open(b) => format!(
                        "open {}",
                        Element::parse_open(b).unwrap().attr("id").unwrap()
                    ),
                    Piece::Stanza(b) => {
                        let e = Element::parse(b, "jabber:component:accept").unwrap();
                        format!(
                            "{} {:?}",
                            e.name,
                            e.children.first().map(|c| c.text.clone())
                        )
                    }
                    Piece::Close => "close".to_string(),
                });
            }
        }
        out
    }

    #[test]
    fn whole_sample_in_one_chunk() {
        let out = run(&[SAMPLE.as_bytes()]);
        assert_eq!(
            out,
            vec![
                "open a1b2".to_string(),
                "handshake None".into(),
                format!("message {:?}", Some("héllo <b> 🎉 <raw> ]] ]> e\u{301}")),
                "presence Some(\"\")".into(),
                "close".into()
            ]
        );
    }

    #[test]
    fn every_split_point_gives_the_same_pieces() {
        let bytes = SAMPLE.as_bytes();
        let expected = run(&[bytes]);
        for i in 0..=bytes.len() {
            assert_eq!(run(&[&bytes[..i], &bytes[i..]]), expected, "split at {i}");
        }
        for j in 1..bytes.len() - 1 {
            let i = j / 2;
            assert_eq!(
                run(&[&bytes[..i], &bytes[i..j], &bytes[j..]]),
                expected,
                "split at {i},{j}"
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&singles), expected, "byte by byte");
    }

    #[test]
    fn namespaces_attributes_and_text() {
        let mut s = Splitter::new(4096, 16);
        s.feed(SAMPLE.as_bytes());
        let mut stanzas = Vec::new();
        while let Some(p) = s.next_piece().unwrap() {
            if let Piece::Stanza(b) = p {
                stanzas.push(Element::parse(b, "jabber:component:accept").unwrap());
            }
        }
        let msg = &stanzas[1];
        assert_eq!(msg.ns, "jabber:component:accept");
        assert_eq!(msg.attr("from"), Some("lobby@conference.localhost/al'ice"));
        assert_eq!(
            msg.child("x", "jabber:x:oob").unwrap().children[0].text,
            "u"
        );
        let x = stanzas[2]
            .child("x", "http://jabber.org/protocol/muc#user")
            .unwrap();
        assert_eq!(
            x.child("status", "http://jabber.org/protocol/muc#user")
                .unwrap()
                .attr("code"),
            Some("110")
        );
    }

    fn first_error(input: &[u8], max: usize) -> String {
        let mut s = Splitter::new(max, 8);
        s.feed(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' id='x'>");
        s.feed(input);
        loop {
            match s.next_piece() {
                Ok(Some(Piece::Stanza(b))) => {
                    if let Err(e) = Element::parse(b, "jabber:component:accept") {
                        return e.0;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return "no error".into(),
                Err(e) => return e.0,
            }
        }
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        assert!(first_error(b"<!DOCTYPE x [<!ENTITY a 'b'>]>", 4096).contains("DTD"));
        assert!(first_error(b"<m><!-- c --></m>", 4096).contains("comment"));
        assert!(first_error(b"<m>&lol;</m>", 4096).contains("entity"));
        assert!(first_error(b"<m><?pi x?></m>", 4096).contains("processing"));
        assert!(first_error(b"garbage", 4096).contains("text outside"));
        assert!(first_error(b"<a><b></a></b>", 4096).contains("malformed"));
        assert!(first_error(b"<m>\xff\xfe</m>", 4096).contains("UTF-8"));
        assert!(first_error(&b"<a>".repeat(20), 4096).contains("nested"));
        let big = format!("<m>{}", "x".repeat(5000));
        assert!(first_error(big.as_bytes(), 4096).contains("max_stanza_bytes"));
        assert_eq!(first_error(b"<m>&#x1F389;&amp;</m>  ", 4096), "no error");
        assert!(first_error(b"<m>a\x01b</m>", 4096).contains("control"));
        assert!(first_error(b"<m>&#1;</m>", 4096).contains("control"));
        assert!(first_error(b"<m a='&#x1b;'/>", 4096).contains("does not allow"));
    }

    #[test]
    fn keepalive_whitespace_does_not_accumulate() {
        let mut s = Splitter::new(4096, 8);
        s.feed(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>");
        assert!(matches!(s.next_piece().unwrap(), Some(Piece::Open(_))));
        for _ in 0..10_000 {
            s.feed(b" \n");
            assert!(s.next_piece().unwrap().is_none());
        }
        assert_eq!(s.buffered(), 0);
    }
}
