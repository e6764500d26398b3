//! The configuration file: its format, the settings it gives ([`Config`]) and the rules that join
//! several keys. Each key itself (default, bounds, help, reload class) is defined once, in
//! [`KEYS`] (`config/keys.rs`).
//!
//! Format: one `key = value` per line, `#` starts a comment, blank lines are ignored, keys are
//! lower-case words with `_`. Every error names the file, the line, the key and what was expected.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// What to do when Prosody rejects the component secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// Exit with status 2 (systemd/procd restart us after their own delay).
    Exit,
    /// Keep retrying with the reconnect back-off.
    Retry,
}

/// The effective settings, after defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// Component JID Prosody knows us as (`Component "sse.example.org"`).
    pub component: String,
    /// The `component_secret` of that component.
    pub secret: String,
    /// Prosody's component port, `host:port`.
    pub upstream: String,
    /// The MUC service, e.g. `conference.example.org`.
    pub muc: String,
    /// Room nodes to watch (`lobby` for `lobby@conference.example.org`).
    pub rooms: Vec<String>,
    /// `rooms` held `*`: every public room of the MUC service, found by disco#items.
    pub all_rooms: bool,
    /// Any existing room is joined when a subscriber first asks for it.
    pub on_demand: bool,
    /// How long an on-demand room is kept joined after its last subscriber left.
    pub on_demand_grace: Duration,
    /// How often the MUC service's room list is fetched (`rooms = *`).
    pub discover_every: Duration,
    /// Nickname used in every room.
    pub nick: String,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: log::LevelFilter,
    /// Room table capacity (at least `rooms.len()`).
    pub max_rooms: usize,
    /// Subscriber table capacity, all rooms together.
    pub max_subscribers: usize,
    /// HTTP connections still sending their request head, at most.
    pub max_pending_requests: usize,
    /// Of those, from one client address (0 = no limit beyond `max_pending_requests`).
    pub max_pending_per_ip: usize,
    /// Streams merging several rooms, at most (each has a write buffer).
    pub max_multi_streams: usize,
    /// Subscribers of one room, at most (0 = only `max_subscribers` limits them).
    pub max_subscribers_per_room: usize,
    /// Connections from one address, at most (0 = no limit).
    pub max_connections_per_ip: usize,
    /// Events kept per room for subscribers that are behind.
    pub ring_events: usize,
    /// Bytes of event frames kept per room (the newest event is always kept).
    pub ring_bytes: usize,
    /// Largest upstream stanza accepted, in bytes.
    pub max_stanza_bytes: usize,
    /// Largest HTTP request head accepted, in bytes.
    pub max_head_bytes: usize,
    /// Kernel send buffer of each stream's socket (0 = the kernel's default): bounds what a
    /// reader that stopped reading holds in the kernel, and how soon it falls off the ring.
    pub send_buffer_bytes: usize,
    /// How long new events wait before they are written to subscribers, so that the events of
    /// that window share one write each (zero: written as each upstream read is processed).
    pub fanout_delay: Duration,
    /// Time a client has to send its request head.
    pub header_timeout: Duration,
    /// Whitespace keepalive interval on the component link; after as long without anything
    /// read, the link is pinged.
    pub keepalive: Duration,
    /// Time a link ping or a self-ping may go unanswered.
    pub ping_timeout: Duration,
    /// Silence from a joined room after which we check we are still in it (XEP-0410).
    pub self_ping: Duration,
    /// First reconnect delay; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
    /// Reaction to a rejected secret.
    pub auth_failure: AuthFailure,
    /// Messages of MUC history asked for on join, to seed the ring (at most `ring_events`).
    pub history: usize,
    /// `retry:` sent at the start of every stream, in milliseconds (0 = none).
    pub retry_ms: usize,
    /// Interval of the keep-alive comment on idle streams (`None` = off).
    pub heartbeat: Option<Duration>,
    /// Event kinds every stream gets on top of the default ones (`events = join, leave`).
    pub events: u8,
    /// A read token every stream needs (`?token=` or `Authorization: Bearer`), if set.
    pub token: Option<String>,
    /// Per-room read tokens (`token.<room> = …`), in place of the global one for that room.
    pub room_tokens: Vec<(String, String)>,
    /// Passwords of password-protected rooms (`password.<room> = …`), sent when joining.
    pub room_passwords: Vec<(String, String)>,
    /// Stream rooms that are hidden, members-only or password-protected even without a token.
    pub private_rooms: bool,
    /// Origins allowed to read streams from a page (CORS); `None` = any (`*`).
    pub cors_origins: Option<Vec<String>>,
    /// The operator's token: `/`, `/metrics` and `/healthz` show every room to it (without it
    /// they show only the rooms an anonymous reader may stream). Opens no stream.
    pub status_token: Option<String>,
}

impl Config {
    /// The sizes of the room and subscriber tables.
    pub fn sizes(&self) -> crate::rooms::table::Sizes {
        crate::rooms::table::Sizes {
            rooms: self.max_rooms,
            ring_events: self.ring_events,
            ring_bytes: self.ring_bytes,
            subscribers: self.max_subscribers,
        }
    }

    /// The read token a room needs, if any: its own, else the global one.
    pub fn token_for(&self, room: &str) -> Option<&str> {
        self.room_token(room).or(self.token.as_deref())
    }

    /// The room's own read token (`token.<room>`), if it has one.
    pub fn room_token(&self, room: &str) -> Option<&str> {
        self.room_tokens
            .iter()
            .find(|(r, _)| r == room)
            .map(|(_, t)| t.as_str())
    }

    /// The password to join a room with, if configured.
    pub fn password_for(&self, room: &str) -> Option<&str> {
        self.room_passwords
            .iter()
            .find(|(r, _)| r == room)
            .map(|(_, p)| p.as_str())
    }
}

/// A configuration error, pointing at the place to fix.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line, 0 when the error is about a missing key.
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: key `{}`: {}", self.file, self.key, self.message)
        } else {
            write!(
                f,
                "{}:{}: key `{}`: {}",
                self.file, self.line, self.key, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

mod keys;

pub use keys::{KEYS, Key, Reload, Value};

/// Parses configuration text. `file` is only used in error messages.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let mut values: Vec<(&'static str, String, usize)> = Vec::new();
    // `token.<room>` and `password.<room>`: (prefix, room, value, line).
    let mut per_room: Vec<(&'static str, String, String, usize)> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        let err = |key: &str, message: String| ConfigError {
            file: file.to_string(),
            line,
            key: key.to_string(),
            message,
        };
        let Some((key, value)) = content.split_once('=') else {
            return Err(err(
                content,
                "expected `key = value` (a `#` starts a comment)".into(),
            ));
        };
        let key = key.trim();
        // Prosody's config is Lua, where strings are quoted: `secret = "s3cret"` copied from
        // it means `s3cret`. Matching quotes around a whole value are removed, for every key.
        let list = keys::find(key).is_some_and(|k| matches!(k.value, Value::List(_)));
        let value = unquote(value.trim(), list).map_err(|why| err(key, why))?;
        if value.starts_with('#') {
            // `key =#v` would mean `#v`, `key = #v` an empty value: refuse the ambiguity, so
            // every value reads back the same however it is written (`describe()` included).
            return Err(err(
                key,
                "a value cannot start with `#` (after a space it starts a comment)".into(),
            ));
        }
        if let Some((prefix, room)) = key.split_once('.') {
            let prefix = per_room_prefix(prefix).ok_or_else(|| {
                let hint = did_you_mean(key);
                err(
                    key,
                    format!(
                        "unknown key{hint}; per-room keys are token.<room> and password.<room>"
                    ),
                )
            })?;
            if value.is_empty() {
                return Err(err(key, "empty value".into()));
            }
            let room = room.to_lowercase();
            if per_room
                .iter()
                .any(|(p, r, _, _)| *p == prefix && *r == room)
            {
                return Err(err(key, "given twice; keep one".into()));
            }
            per_room.push((prefix, room, value.to_string(), line));
            continue;
        }
        let Some(known) = keys::find(key).map(|k| k.name) else {
            return Err(err(
                key,
                format!(
                    "unknown key{}; known keys are: {}",
                    did_you_mean(key),
                    key_list()
                ),
            ));
        };
        if values.iter().any(|(k, _, _)| *k == known) {
            return Err(err(key, "given twice; keep one".into()));
        }
        values.push((known, value.to_string(), line));
    }
    let mut config = build(file, &values)?;
    add_per_room(&mut config, file, per_room)?;
    Ok(config)
}

/// `token` or `password`, the prefixes of the per-room keys.
fn per_room_prefix(prefix: &str) -> Option<&'static str> {
    ["token", "password"].into_iter().find(|p| *p == prefix)
}

/// Adds the `token.<room>` and `password.<room>` lines (`(prefix, room, value, line)`), whose
/// rooms must be in `rooms`.
fn add_per_room(
    config: &mut Config,
    file: &str,
    per_room: Vec<(&'static str, String, String, usize)>,
) -> Result<(), ConfigError> {
    for (prefix, room, value, line) in per_room {
        if !config.rooms.contains(&room) {
            return Err(ConfigError {
                file: file.to_string(),
                line,
                key: format!("{prefix}.{room}"),
                message: format!("`{room}` is not in `rooms`; add it there or remove this line"),
            });
        }
        let list = if prefix == "token" {
            &mut config.room_tokens
        } else {
            &mut config.room_passwords
        };
        list.push((room, value));
    }
    Ok(())
}

/// Cuts a `#` comment: at the start of the line or after whitespace, so `secret = a#b` keeps its `#`.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

/// A value without the quotes around it: `"s3cret"` and `'s3cret'` read as `s3cret`, as in
/// Prosody's Lua config. A quote left alone at either end (`"s3cret`, usually a ` #` inside
/// quotes that started a comment) is refused, so no quote ever becomes part of a secret by
/// accident. Quotes inside a value (`a"b`) are kept. List values (`rooms = "a", "b"`) have
/// each item unquoted by [`unquote_item`].
fn unquote(value: &str, list: bool) -> Result<&str, String> {
    if let Some(inner) = quoted(value) {
        return Ok(inner);
    }
    if list {
        // A list; its items are checked one by one where the list is read.
        return Ok(value);
    }
    // Not echoed: the value may be a secret, a token or a password.
    lone_quote(value, "the value")
}

/// One item of a list value (`rooms`, `events`, `cors_origins`): without its matching quotes;
/// a lone quote at either end is an error naming the item.
fn unquote_item(item: &str) -> Result<&str, String> {
    quoted(item).map_or_else(|| lone_quote(item, &format!("`{item}`")), Ok)
}

/// `text` itself, or the error for a quote alone at either end of it, naming it as `what`.
fn lone_quote<'a>(text: &'a str, what: &str) -> Result<&'a str, String> {
    let quote = |c: Option<char>| matches!(c, Some('"' | '\''));
    if quote(text.chars().next()) || quote(text.chars().next_back()) {
        return Err(format!(
            "unbalanced quote in {what}: values need no quotes, remove them (inside quotes, \
             a `#` after a space still starts a comment)"
        ));
    }
    Ok(text)
}

/// The text between a matching pair of quotes that encloses all of `value`, if it does.
fn quoted(value: &str) -> Option<&str> {
    ['"', '\''].into_iter().find_map(|q| {
        value
            .strip_prefix(q)
            .and_then(|v| v.strip_suffix(q))
            .filter(|inner| !inner.contains(q))
    })
}

/// Every key a file may hold, per-room forms included, for error messages.
fn key_list() -> String {
    KEYS.iter()
        .map(|k| k.name)
        .chain(["token.<room>", "password.<room>"])
        .collect::<Vec<_>>()
        .join(", ")
}

/// ` (did you mean `x`?)` when a known key is close to `key` (a typo, a wrong case, `-` for
/// `_`), else nothing. `tokn.lobby` suggests `token.lobby`.
fn did_you_mean(key: &str) -> String {
    if key.len() > 64 {
        return String::new(); // no key is that long; and the distance is quadratic
    }
    if let Some((prefix, room)) = key.split_once('.') {
        return ["token", "password"]
            .into_iter()
            .find(|p| close(prefix, p))
            .map(|p| format!(" (did you mean `{p}.{room}`?)"))
            .unwrap_or_default();
    }
    KEYS.iter()
        .map(|k| k.name)
        .filter(|k| close(key, k))
        .min_by_key(|k| edit_distance(&key.to_lowercase().replace('-', "_"), k))
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// A typo apart: at most 2 edits (1 for keys of up to 4 letters), ignoring case and `-`/`_`.
fn close(typed: &str, known: &str) -> bool {
    let typed = typed.to_lowercase().replace('-', "_");
    let limit = if known.len() <= 4 { 1 } else { 2 };
    edit_distance(&typed, known) <= limit
}

/// Levenshtein distance between two short strings, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The settings from the lines given (`(key, value, line)`), every other key at its default,
/// then the rules that join several keys.
fn build(file: &str, values: &[(&'static str, String, usize)]) -> Result<Config, ConfigError> {
    let fail = |key: &str, line: usize, message: String| ConfigError {
        file: file.to_string(),
        line,
        key: key.to_string(),
        message,
    };
    let mut config = Config::blank();
    for key in KEYS {
        let (text, line) = match values.iter().find(|(k, _, _)| *k == key.name) {
            Some((_, v, line)) => (v.as_str(), *line),
            None => match key.default {
                Some(d) => (d, 0),
                None => {
                    let message = format!("missing; add `{} = ...` ({})", key.name, key.help);
                    return Err(fail(key.name, 0, message));
                }
            },
        };
        key.read(&mut config, text)
            .map_err(|why| fail(key.name, line, why))?;
    }
    let line_of = |key: &str| values.iter().find(|(k, _, _)| *k == key).map_or(0, |v| v.2);
    check(&mut config, &line_of).map_err(|(key, why)| fail(key, line_of(key), why))?;
    Ok(config)
}

/// The rules that join several keys; `line_of` gives a key's line (0: not in the file). The
/// error names the key to fix.
fn check(
    config: &mut Config,
    line_of: &dyn Fn(&str) -> usize,
) -> Result<(), (&'static str, String)> {
    if config.rooms.is_empty() && !config.all_rooms && !config.on_demand {
        let what = if line_of("rooms") == 0 {
            "missing; add"
        } else {
            "expected"
        };
        return Err((
            "rooms",
            format!(
                "{what} room nodes (`rooms = lobby, news`), `*` for every public room, or `on_demand = yes`"
            ),
        ));
    }
    if config.max_rooms == 0 && (config.all_rooms || config.on_demand) {
        config.max_rooms = config.rooms.len().max(64);
    } else if config.max_rooms == 0 {
        config.max_rooms = config.rooms.len();
    }
    if config.rooms.len() > config.max_rooms {
        return Err((
            "max_rooms",
            format!(
                "{} rooms are listed but the table holds {}; raise max_rooms",
                config.rooms.len(),
                config.max_rooms
            ),
        ));
    }
    if config.reconnect_max < config.reconnect_min {
        return Err((
            "reconnect_max_secs",
            "must not be smaller than reconnect_min_secs".into(),
        ));
    }
    // The default history shrinks to a small ring; an explicit one must fit.
    if line_of("history") == 0 {
        config.history = config.history.min(config.ring_events);
    }
    if config.history > config.ring_events {
        return Err((
            "history",
            format!(
                "{} is more than ring_events ({}); the ring could not hold it",
                config.history, config.ring_events
            ),
        ));
    }
    Ok(())
}

fn is_domain_char(c: char) -> bool {
    c.is_alphanumeric() || c == '.' || c == '-' || c == '_'
}

/// Why a text cannot be a room node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadNode {
    /// Empty, or over 1023 bytes (RFC 7622 §3.3).
    Length(usize),
    /// A character nodeprep prohibits, that XML forbids, or one of `"&'/:<>@`.
    Char(char),
}

impl std::fmt::Display for BadNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadNode::Length(n) => write!(f, "must be 1 to 1023 bytes, not {n}"),
            BadNode::Char(c) => write!(
                f,
                "holds U+{:04X}: a room name may not contain spaces, control, formatting, \
                 private-use or non-characters, nor any of \" & ' / : < > @",
                *c as u32
            ),
        }
    }
}

/// A room node (the local part of the room JID) we are willing to put in a JID we send and in
/// the room table: 1 to 1023 bytes, every character an XML 1.0 `Char`, none that nodeprep
/// prohibits (RFC 3920 Appendix A.5: RFC 3454 tables C.1.1 to C.9, and `"&'/:<>@`). Config,
/// discovery and on-demand requests all go through here.
pub fn check_room_node(room: &str) -> Result<(), BadNode> {
    if room.is_empty() || room.len() > 1023 {
        return Err(BadNode::Length(room.len()));
    }
    match room.chars().find(|&c| !node_char(c)) {
        Some(c) => Err(BadNode::Char(c)),
        None => Ok(()),
    }
}

/// Whether `c` may be in a room node (see [`check_room_node`]).
fn node_char(c: char) -> bool {
    let prohibited = matches!(
        c,
        // Nodeprep's own (RFC 3920 A.5) and space (C.1.1).
        '"' | '&' | '\'' | '/' | ':' | '<' | '>' | '@' | ' '
        // C.1.2 non-ASCII space.
        | '\u{A0}' | '\u{1680}' | '\u{2000}'..='\u{200B}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
        // C.2.1 ASCII control, C.2.2 non-ASCII control.
        | '\u{0}'..='\u{1F}' | '\u{7F}' | '\u{80}'..='\u{9F}' | '\u{6DD}' | '\u{70F}' | '\u{180E}'
        | '\u{200C}' | '\u{200D}' | '\u{2028}' | '\u{2029}' | '\u{2060}'..='\u{2063}'
        | '\u{206A}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFC}' | '\u{1D173}'..='\u{1D17A}'
        // C.3 private use.
        | '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{FFFFD}' | '\u{100000}'..='\u{10FFFD}'
        // C.4 non-characters (the rest: `(c & 0xFFFE) == 0xFFFE` below).
        | '\u{FDD0}'..='\u{FDEF}'
        // C.6 inappropriate for plain text (U+FFFD as well: text that was not UTF-8).
        | '\u{FFF9}'..='\u{FFFD}'
        // C.7 inappropriate for canonical representation.
        | '\u{2FF0}'..='\u{2FFB}'
        // C.8 change display properties or are deprecated.
        | '\u{340}' | '\u{341}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}'
        // C.9 tagging characters.
        | '\u{E0001}' | '\u{E0020}'..='\u{E007F}'
        // Bidi controls added after Unicode 3.2 (unassigned there, so prohibited in a stored
        // string anyway): ARABIC LETTER MARK and the isolates.
        | '\u{61C}' | '\u{2066}'..='\u{2069}'
    ) || (c as u32 & 0xFFFE) == 0xFFFE;
    // C.5 (surrogates) cannot be a `char`; XML `Char` is checked as well, in case.
    !prohibited && !c.is_whitespace() && crate::xmpp::text::is_xml_char(c)
}

#[cfg(test)]
mod room_node_tests {
    use super::*;

    #[test]
    fn room_nodes_are_checked_like_jid_localparts() {
        for good in [
            "lobby",
            "café",
            "Straße",
            "會議室",
            "a-b_c.d",
            "🎉",
            &"a".repeat(1023),
        ] {
            assert_eq!(check_room_node(good), Ok(()), "{good:?}");
        }
        assert_eq!(check_room_node(""), Err(BadNode::Length(0)));
        assert_eq!(
            check_room_node(&"a".repeat(1024)),
            Err(BadNode::Length(1024))
        );
        assert_eq!(
            check_room_node(&"é".repeat(512)),
            Err(BadNode::Length(1024)),
            "bytes, not characters"
        );
        for bad in [
            '\u{FFFE}',
            '\u{FFFF}',
            '\u{1B}',
            '\u{200E}',
            '\u{E0001}',
            '\u{0}',
            '\u{1}',
            '\t',
            '\n',
            '\u{7F}',
            '\u{85}',
            '\u{A0}',
            '\u{200B}',
            '\u{200D}',
            '\u{2028}',
            '\u{202E}',
            '\u{2066}',
            '\u{FEFF}',
            '\u{FFFD}',
            '\u{FFFC}',
            '\u{FDD0}',
            '\u{1FFFE}',
            '\u{10FFFF}',
            '\u{E000}',
            '\u{F8FF}',
            '\u{F0000}',
            '\u{2FF0}',
            '\u{340}',
            '\u{E007F}',
            '\u{1D173}',
            '\u{3000}',
            '"',
            '&',
            '\'',
            '/',
            ':',
            '<',
            '>',
            '@',
            ' ',
        ] {
            let node = format!("ro{bad}om");
            assert_eq!(check_room_node(&node), Err(BadNode::Char(bad)), "{bad:?}");
            assert!(
                check_room_node(&node)
                    .unwrap_err()
                    .to_string()
                    .contains("U+"),
                "the message names the character"
            );
        }
    }
}

/// A `log_level` value (or the `--log-level` flag): error, warn, info, debug or trace.
pub fn parse_level(text: &str) -> Option<log::LevelFilter> {
    Some(match text {
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => return None,
    })
}

impl Config {
    /// The settings as `key = value` lines (secrets hidden), in the order of [`KEYS`], then
    /// the per-room keys; `memory::describe` adds the ceiling.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for key in KEYS {
            out.push_str(&format!("{} = {}\n", key.name, (key.show)(self)));
        }
        for (room, _) in &self.room_tokens {
            out.push_str(&format!("token.{room} = <set, hidden>\n"));
        }
        for (room, _) in &self.room_passwords {
            out.push_str(&format!("password.{room} = <set, hidden>\n"));
        }
        out
    }

    /// Every setting empty or zero: what [`KEYS`] fill in.
    fn blank() -> Config {
        Config {
            component: String::new(),
            secret: String::new(),
            upstream: String::new(),
            muc: String::new(),
            rooms: Vec::new(),
            all_rooms: false,
            on_demand: false,
            on_demand_grace: Duration::ZERO,
            discover_every: Duration::ZERO,
            nick: String::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_level: log::LevelFilter::Info,
            max_rooms: 0,
            max_subscribers: 0,
            max_pending_requests: 0,
            max_pending_per_ip: 0,
            max_multi_streams: 0,
            max_subscribers_per_room: 0,
            max_connections_per_ip: 0,
            ring_events: 0,
            ring_bytes: 0,
            max_stanza_bytes: 0,
            max_head_bytes: 0,
            send_buffer_bytes: 0,
            fanout_delay: Duration::ZERO,
            header_timeout: Duration::ZERO,
            keepalive: Duration::ZERO,
            ping_timeout: Duration::ZERO,
            self_ping: Duration::ZERO,
            reconnect_min: Duration::ZERO,
            reconnect_max: Duration::ZERO,
            auth_failure: AuthFailure::Exit,
            history: 0,
            retry_ms: 0,
            heartbeat: None,
            events: 0,
            token: None,
            room_tokens: Vec::new(),
            room_passwords: Vec::new(),
            private_rooms: false,
            cors_origins: None,
            status_token: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "component = sse.localhost\nsecret = s\nmuc = conference.localhost\nrooms = lobby, news\n";

    #[test]
    fn minimal_file_gets_defaults() {
        let c = parse("t.conf", MINIMAL).unwrap();
        assert_eq!(c.rooms, vec!["lobby", "news"]);
        assert_eq!(c.max_rooms, 2);
        assert_eq!(c.upstream, "127.0.0.1:5347");
        assert_eq!(c.auth_failure, AuthFailure::Exit);
        assert!(
            !c.describe().contains("= s\n"),
            "secret must not be printed"
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = parse("x.conf", &format!("{MINIMAL}\nring_events = lots\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (6, "ring_events"));
        assert!(
            e.to_string().starts_with("x.conf:6: key `ring_events`"),
            "{e}"
        );
        let e = parse("x.conf", "component = a\nsecret = b\nrooms = r\n").unwrap_err();
        assert_eq!(e.key, "muc");
        assert!(e.to_string().contains("missing"), "{e}");
        let e = parse("x.conf", &format!("{MINIMAL}colour = blue\n")).unwrap_err();
        assert!(e.to_string().contains("unknown key"), "{e}");
        let e = parse("x.conf", &format!("{MINIMAL}just words\n")).unwrap_err();
        assert!(e.to_string().contains("key = value"), "{e}");
        let e = parse("x.conf", &format!("{MINIMAL}max_rooms = 1\n")).unwrap_err();
        assert!(e.to_string().contains("raise max_rooms"), "{e}");
        let e = parse("x.conf", &format!("{MINIMAL}rooms = a b\n")).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
    }

    #[test]
    fn bad_room_names_are_rejected() {
        for bad in ["a b", "a@b", "a/b", "<x>", "a'b"] {
            let text = MINIMAL.replace("lobby, news", bad);
            assert!(parse("t", &text).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tokens_passwords_and_cors() {
        let text = format!(
            "{MINIMAL}token = global\ntoken.Lobby = t1\npassword.news = pw\ncors_origins = http://a, https://b/\n"
        );
        let c = parse("t", &text).unwrap();
        assert_eq!(c.token_for("lobby"), Some("t1"));
        assert_eq!(c.token_for("news"), Some("global"));
        assert_eq!(c.password_for("news"), Some("pw"));
        assert_eq!(
            c.cors_origins,
            Some(vec!["http://a".into(), "https://b".into()])
        );
        let d = c.describe();
        assert!(
            !d.contains("t1") && !d.contains("global") && !d.contains("= pw"),
            "{d}"
        );
        let e = parse("t", &format!("{MINIMAL}token.other = x\n")).unwrap_err();
        assert!(e.to_string().contains("not in `rooms`"), "{e}");
        let e = parse("t", &format!("{MINIMAL}colour.lobby = x\n")).unwrap_err();
        assert!(e.to_string().contains("per-room keys"), "{e}");
    }

    #[test]
    fn the_room_count_is_capped() {
        // Found by fuzzing: more rooms than max_rooms can hold slipped past the cap.
        let rooms: Vec<String> = (0..4097).map(|i| format!("r{i}")).collect();
        let text = MINIMAL.replace("lobby, news", &rooms.join(","));
        assert!(parse("t", &text).is_err());
    }

    #[test]
    fn quotes_around_values_are_removed_for_every_key() {
        // As copied from Prosody's Lua config.
        let text = "component = \"sse.localhost\"\nsecret = \"s3cret\"\nmuc = 'conference.localhost'\n\
                    rooms = \"lobby\", 'news'\nnick = \"watcher\"\nring_events = \"32\"\n\
                    token.lobby = \"t1\"\npassword.news = 'pw'\nevents = \"join\"\n\
                    cors_origins = \"https://a\", 'https://b'\n";
        let c = parse("t", text).unwrap();
        assert_eq!(c.component, "sse.localhost");
        assert_eq!(c.secret, "s3cret");
        assert_eq!(c.muc, "conference.localhost");
        assert_eq!(c.rooms, vec!["lobby", "news"]);
        assert_eq!(c.nick, "watcher");
        assert_eq!(c.ring_events, 32);
        assert_eq!(c.token_for("lobby"), Some("t1"));
        assert_eq!(c.password_for("news"), Some("pw"));
        assert_eq!(c.events, crate::rooms::ring::kind::JOIN);
        assert_eq!(
            c.cors_origins,
            Some(vec!["https://a".into(), "https://b".into()])
        );
        let quoted_list = MINIMAL.replace("lobby, news", "\"lobby, news\"");
        assert_eq!(
            parse("t", &quoted_list).unwrap().rooms,
            vec!["lobby", "news"]
        );
        // Quotes inside a value are part of it.
        let inner = MINIMAL.replace("secret = s", "secret = a\"b'c");
        assert_eq!(parse("t", &inner).unwrap().secret, "a\"b'c");
    }

    #[test]
    fn a_lone_quote_is_refused_with_a_hint() {
        for (from, to, key) in [
            ("secret = s", "secret = \"abc", "secret"),
            ("secret = s", "secret = abc'", "secret"),
            // ` #` inside quotes starts a comment, leaving `"a`.
            ("secret = s", "secret = \"a #b\"", "secret"),
            (
                "component = sse.localhost",
                "component = \"sse.localhost",
                "component",
            ),
            ("lobby, news", "\"lobby\", news\"", "rooms"),
            ("secret = s", "secret = s\ntoken.lobby = \"t", "token.lobby"),
        ] {
            let e = parse("t", &MINIMAL.replace(from, to)).unwrap_err();
            assert_eq!(e.key, key, "{to}: {e}");
            assert!(e.to_string().contains("remove them"), "{to}: {e}");
            if key != "rooms" {
                // A secret, token or password is never echoed.
                assert!(
                    !e.to_string().contains("abc") && !e.to_string().contains("\"t"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn unknown_keys_get_a_suggestion_and_the_full_list() {
        for (typed, meant) in [
            ("ring_event", "ring_events"),
            ("max-subscribers", "max_subscribers"),
            ("Secret", "secret"),
            ("lisen", "listen"),
            ("tokn.lobby", "token.lobby"),
            ("passwrd.news", "password.news"),
        ] {
            let e = parse("t", &format!("{MINIMAL}{typed} = 1\n")).unwrap_err();
            assert!(
                e.to_string().contains(&format!("did you mean `{meant}`?")),
                "{typed}: {e}"
            );
        }
        let e = parse("t", &format!("{MINIMAL}colour = blue\n")).unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("did you mean"), "{text}");
        assert!(
            text.contains("token.<room>") && text.contains("password.<room>"),
            "{text}"
        );
    }

    #[test]
    fn on_demand_alone_needs_no_rooms_line() {
        let base = "component = sse.localhost\nsecret = s\nmuc = conference.localhost\n";
        let c = parse("t", &format!("{base}on_demand = yes\n")).unwrap();
        assert!(c.on_demand && c.rooms.is_empty() && !c.all_rooms);
        assert_eq!(c.max_rooms, 64);
        let e = parse("t", base).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("rooms", 0));
        assert!(
            e.to_string().contains("missing") && e.to_string().contains("on_demand = yes"),
            "{e}"
        );
        let e = parse("t", &format!("{base}rooms =\n")).unwrap_err();
        assert!(e.to_string().contains("on_demand = yes"), "{e}");
    }

    #[test]
    fn describe_writes_every_key_once_and_reads_back_the_same() {
        let text = format!(
            "{MINIMAL}token = t\nstatus_token = st\nevents = leave\ncors_origins = https://a\nheartbeat_secs = 0\ntoken.news = n\n"
        );
        let c = parse("t", &text).unwrap();
        let described = c.describe();
        let names: Vec<&str> = described
            .lines()
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
            .collect();
        let expected: Vec<&str> = KEYS.iter().map(|k| k.name).chain(["token.news"]).collect();
        assert_eq!(names, expected);
        // Put the hidden values back, as an operator would.
        let file = described
            .replace("secret = <1 bytes, hidden>", "secret = s")
            .replace("status_token = <set, hidden>", "status_token = st")
            .replace("token = <set, hidden>", "token = t")
            .replace("token.news = <set, hidden>", "token.news = n");
        let again = parse("described", &file).unwrap_or_else(|e| panic!("{e}\n{file}"));
        assert_eq!(again.describe(), described);
        for key in KEYS {
            assert!(!(key.differs)(&c, &again), "{}", key.name);
        }
    }

    #[test]
    fn comments_and_blank_lines() {
        let text = format!("# top\n\n{MINIMAL}nick = watcher # trailing comment\n");
        assert_eq!(parse("t", &text).unwrap().nick, "watcher");
        let text = MINIMAL.replace("secret = s", "secret = a#b");
        assert_eq!(parse("t", &text).unwrap().secret, "a#b");
    }
}
