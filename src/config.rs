//! The configuration file: its format, its defaults and its validation.
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

/// Every key the file may hold, with its default (`None` = required) and a one-line help.
pub const KEYS: &[(&str, Option<&str>, &str)] = &[
    (
        "component",
        None,
        "component JID, as in Prosody's `Component \"...\"`",
    ),
    ("secret", None, "the component_secret of that component"),
    (
        "upstream",
        Some("127.0.0.1:5347"),
        "Prosody component port, host:port",
    ),
    ("muc", None, "MUC service, e.g. conference.example.org"),
    (
        "rooms",
        None,
        "comma-separated room nodes, e.g. lobby, news",
    ),
    ("nick", Some("eventsource"), "nickname used in every room"),
    (
        "listen",
        Some("127.0.0.1:8080"),
        "HTTP listen address, ip:port",
    ),
    (
        "log_level",
        Some("info"),
        "error, warn, info, debug or trace",
    ),
    (
        "max_rooms",
        Some("0"),
        "room table capacity; 0 = number of rooms",
    ),
    (
        "max_subscribers",
        Some("1024"),
        "SSE subscribers, all rooms together",
    ),
    (
        "max_pending_requests",
        Some("64"),
        "connections still sending their request",
    ),
    (
        "max_pending_per_ip",
        Some("8"),
        "of those, from one address (one /64 for IPv6); 0 = no limit beyond max_pending_requests",
    ),
    (
        "ring_events",
        Some("64"),
        "events kept per room for late readers",
    ),
    (
        "ring_bytes",
        Some("262144"),
        "bytes of events kept per room",
    ),
    (
        "max_stanza_bytes",
        Some("524288"),
        "largest upstream stanza, bytes (Prosody's own c2s limit is 256 KiB)",
    ),
    (
        "max_head_bytes",
        Some("8192"),
        "largest HTTP request head, bytes",
    ),
    (
        "header_timeout_secs",
        Some("10"),
        "time a client has to send its request",
    ),
    (
        "keepalive_secs",
        Some("60"),
        "whitespace keepalive on the component link",
    ),
    ("reconnect_min_secs", Some("1"), "first reconnect delay"),
    ("reconnect_max_secs", Some("60"), "largest reconnect delay"),
    (
        "auth_failure",
        Some("exit"),
        "on a rejected secret: exit (status 2) or retry",
    ),
    (
        "history",
        Some("20"),
        "MUC history messages fetched on join (at most ring_events)",
    ),
    (
        "retry_ms",
        Some("3000"),
        "reconnect delay told to browsers (retry:), 0 = none",
    ),
    (
        "heartbeat_secs",
        Some("20"),
        "keep-alive comment on idle streams, 0 = none",
    ),
    (
        "events",
        Some(""),
        "extra event kinds for every stream: join, leave",
    ),
    (
        "token",
        Some(""),
        "read token every stream needs (token.<room> per room)",
    ),
    (
        "private_rooms",
        Some("deny"),
        "hidden/members-only/password rooms: deny (403 without token) or allow",
    ),
    (
        "cors_origins",
        Some("*"),
        "origins allowed to read streams: * or a comma-separated list",
    ),
    (
        "status_token",
        Some(""),
        "operator token: /, /metrics and /healthz then show every room",
    ),
    (
        "ping_timeout_secs",
        Some("30"),
        "unanswered link ping or self-ping after which the link is dead",
    ),
    (
        "self_ping_secs",
        Some("600"),
        "silence from a room before checking we are still in it (XEP-0410)",
    ),
    (
        "max_subscribers_per_room",
        Some("0"),
        "subscribers of one room, 0 = no limit beyond max_subscribers",
    ),
    (
        "max_connections_per_ip",
        Some("0"),
        "connections from one address, 0 = no limit",
    ),
    (
        "max_multi_streams",
        Some("8"),
        "streams merging several rooms (/eventsource?room=a&room=b)",
    ),
    (
        "on_demand",
        Some("no"),
        "yes: any existing room is joined when first asked for",
    ),
    (
        "on_demand_grace_secs",
        Some("300"),
        "an on-demand room is left this long after its last subscriber",
    ),
    (
        "discover_secs",
        Some("300"),
        "how often `rooms = *` fetches the room list",
    ),
    (
        "send_buffer_bytes",
        Some("65536"),
        "kernel send buffer per stream socket (bounds the kernel memory a stalled reader pins; --check-config prints the total), 0 = the kernel's autotuning (up to 4 MiB each)",
    ),
    (
        "fanout_delay_ms",
        Some("0"),
        "hold new events this long so that several share one write per subscriber: less CPU, that much more latency",
    ),
];

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
        let list = matches!(key, "rooms" | "events" | "cors_origins");
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
            let prefix = match prefix {
                "token" => "token",
                "password" => "password",
                _ => {
                    return Err(err(
                        key,
                        format!(
                            "unknown key{}; per-room keys are token.<room> and password.<room>",
                            did_you_mean(key)
                        ),
                    ));
                }
            };
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
        let Some(&(known, _, _)) = KEYS.iter().find(|(k, _, _)| *k == key) else {
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
    Ok(config)
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
        .map(|(k, _, _)| *k)
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
        .map(|(k, _, _)| *k)
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

fn build(file: &str, values: &[(&'static str, String, usize)]) -> Result<Config, ConfigError> {
    let get = |key: &'static str| -> Result<(String, usize), ConfigError> {
        if let Some((_, v, line)) = values.iter().find(|(k, _, _)| *k == key) {
            return Ok((v.clone(), *line));
        }
        let (_, default, help) = KEYS
            .iter()
            .find(|(k, _, _)| *k == key)
            .expect("every key read is listed in KEYS");
        match default {
            Some(d) => Ok((d.to_string(), 0)),
            None => Err(ConfigError {
                file: file.to_string(),
                line: 0,
                key: key.to_string(),
                message: format!("missing; add `{key} = ...` ({help})"),
            }),
        }
    };
    let fail = |key: &str, line: usize, message: String| ConfigError {
        file: file.to_string(),
        line,
        key: key.to_string(),
        message,
    };
    let number = |key: &'static str, min: usize, max: usize| -> Result<usize, ConfigError> {
        let (v, line) = get(key)?;
        match v.parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(fail(
                key,
                line,
                format!("expected a whole number from {min} to {max}, found `{v}`"),
            )),
        }
    };
    let jid_part = |key: &'static str| -> Result<String, ConfigError> {
        let (v, line) = get(key)?;
        if v.is_empty() || !v.chars().all(is_domain_char) {
            return Err(fail(
                key,
                line,
                format!("expected a domain name like sse.example.org, found `{v}`"),
            ));
        }
        Ok(v)
    };

    let component = jid_part("component")?;
    let muc = jid_part("muc")?;
    let (secret, secret_line) = get("secret")?;
    if secret.is_empty() {
        return Err(fail(
            "secret",
            secret_line,
            "empty; copy the component_secret from Prosody's config".into(),
        ));
    }
    let (upstream, upstream_line) = get("upstream")?;
    if upstream
        .rsplit_once(':')
        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(fail(
            "upstream",
            upstream_line,
            format!("expected host:port such as 127.0.0.1:5347, found `{upstream}`"),
        ));
    }
    let (on_demand_text, on_demand_line) = get("on_demand")?;
    let on_demand = match on_demand_text.as_str() {
        "yes" | "true" => true,
        "no" | "false" => false,
        other => {
            return Err(fail(
                "on_demand",
                on_demand_line,
                format!("expected yes or no, found `{other}`"),
            ));
        }
    };
    // `rooms` may be left out when `on_demand = yes` names the rooms at run time.
    let (rooms_text, rooms_line) = match values.iter().find(|(k, _, _)| *k == "rooms") {
        Some((_, v, line)) => (v.clone(), *line),
        None => (String::new(), 0),
    };
    let mut rooms: Vec<String> = Vec::new();
    let mut all_rooms = false;
    for room in rooms_text
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        let room = unquote_item(room).map_err(|why| fail("rooms", rooms_line, why))?;
        if room == "*" {
            all_rooms = true;
            continue;
        }
        if let Err(why) = check_room_node(room) {
            return Err(fail("rooms", rooms_line, format!("room `{room}`: {why}")));
        }
        if room.starts_with('#') {
            // `rooms = a,#b` lists `#b`, but `rooms = a, #b` (as `describe()` writes it) ends
            // in a comment.
            return Err(fail(
                "rooms",
                rooms_line,
                format!("room `{room}`: cannot start with `#` (after a space it starts a comment)"),
            ));
        }
        let room = room.to_lowercase();
        if !rooms.contains(&room) {
            rooms.push(room);
        }
    }
    if rooms.len() > 4096 {
        // max_rooms = 0 means "the number of rooms": without this, 0 would lift the 4096 cap.
        return Err(fail(
            "rooms",
            rooms_line,
            format!("{} rooms are listed; at most 4096", rooms.len()),
        ));
    }
    if rooms.is_empty() && !all_rooms && !on_demand {
        let what = if rooms_line == 0 {
            "missing; add"
        } else {
            "expected"
        };
        return Err(fail(
            "rooms",
            rooms_line,
            format!(
                "{what} room nodes (`rooms = lobby, news`), `*` for every public room, or `on_demand = yes`"
            ),
        ));
    }
    let (nick, nick_line) = get("nick")?;
    if nick.is_empty() || nick.len() > 64 || nick.chars().any(|c| c.is_control() || c == '/') {
        return Err(fail(
            "nick",
            nick_line,
            "expected 1 to 64 characters, no `/` and no control characters".into(),
        ));
    }
    let (listen_text, listen_line) = get("listen")?;
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        fail(
            "listen",
            listen_line,
            format!("expected ip:port such as 0.0.0.0:8080 or [::]:8080, found `{listen_text}`"),
        )
    })?;
    let (level_text, level_line) = get("log_level")?;
    let log_level = parse_level(&level_text).ok_or_else(|| {
        fail(
            "log_level",
            level_line,
            format!("expected error, warn, info, debug or trace, found `{level_text}`"),
        )
    })?;
    let max_rooms_given = number("max_rooms", 0, 4096)?;
    let max_rooms = if max_rooms_given == 0 && (all_rooms || on_demand) {
        rooms.len().max(64)
    } else if max_rooms_given == 0 {
        rooms.len()
    } else {
        max_rooms_given
    };
    if rooms.len() > max_rooms {
        let line = values
            .iter()
            .find(|(k, _, _)| *k == "max_rooms")
            .map_or(0, |v| v.2);
        return Err(fail(
            "max_rooms",
            line,
            format!(
                "{} rooms are listed but the table holds {max_rooms}; raise max_rooms",
                rooms.len()
            ),
        ));
    }
    let (auth_text, auth_line) = get("auth_failure")?;
    let auth_failure = match auth_text.as_str() {
        "exit" => AuthFailure::Exit,
        "retry" => AuthFailure::Retry,
        _ => {
            return Err(fail(
                "auth_failure",
                auth_line,
                format!("expected exit or retry, found `{auth_text}`"),
            ));
        }
    };
    let reconnect_min = secs(number("reconnect_min_secs", 1, 3600)?);
    let reconnect_max = secs(number("reconnect_max_secs", 1, 86400)?);
    if reconnect_max < reconnect_min {
        return Err(fail(
            "reconnect_max_secs",
            0,
            "must not be smaller than reconnect_min_secs".into(),
        ));
    }
    let ring_events = number("ring_events", 1, 65_536)?;
    let history_given = values.iter().any(|(k, _, _)| *k == "history");
    let history = number("history", 0, 65_536)?;
    // The default history shrinks to a small ring; an explicit one must fit.
    let history = if history_given {
        history
    } else {
        history.min(ring_events)
    };
    if history > ring_events {
        let line = values
            .iter()
            .find(|(k, _, _)| *k == "history")
            .map_or(0, |v| v.2);
        return Err(fail(
            "history",
            line,
            format!(
                "{history} is more than ring_events ({ring_events}); the ring could not hold it"
            ),
        ));
    }
    let heartbeat = number("heartbeat_secs", 0, 3600)?;
    let (events_text, events_line) = get("events")?;
    let mut events = 0u8;
    for name in events_text
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let name = unquote_item(name).map_err(|why| fail("events", events_line, why))?;
        events |= crate::rooms::ring::kind::from_name(name).ok_or_else(|| {
            fail(
                "events",
                events_line,
                format!("unknown event kind `{name}`; expected join, leave (message, subject, status, correction, retraction are always sent)"),
            )
        })?;
    }
    Ok(Config {
        component,
        secret,
        upstream,
        muc,
        rooms,
        all_rooms,
        on_demand,
        on_demand_grace: secs(number("on_demand_grace_secs", 0, 86400)?),
        discover_every: secs(number("discover_secs", 10, 86400)?),
        nick,
        listen,
        log_level,
        max_rooms,
        max_subscribers: number("max_subscribers", 1, 1_000_000)?,
        max_pending_requests: number("max_pending_requests", 1, 100_000)?,
        max_pending_per_ip: number("max_pending_per_ip", 0, 100_000)?,
        max_subscribers_per_room: number("max_subscribers_per_room", 0, 1_000_000)?,
        max_multi_streams: number("max_multi_streams", 0, 100_000)?,
        max_connections_per_ip: number("max_connections_per_ip", 0, 1_000_000)?,
        ring_events,
        ring_bytes: number("ring_bytes", 1024, 1 << 30)?,
        max_stanza_bytes: number("max_stanza_bytes", 4096, 64 << 20)?,
        max_head_bytes: number("max_head_bytes", 512, 1 << 20)?,
        send_buffer_bytes: number("send_buffer_bytes", 0, 64 << 20)?,
        fanout_delay: Duration::from_millis(number("fanout_delay_ms", 0, 1000)? as u64),
        header_timeout: secs(number("header_timeout_secs", 1, 3600)?),
        keepalive: secs(number("keepalive_secs", 1, 86400)?),
        ping_timeout: secs(number("ping_timeout_secs", 1, 3600)?),
        self_ping: secs(number("self_ping_secs", 1, 86400)?),
        reconnect_min,
        reconnect_max,
        auth_failure,
        history,
        retry_ms: number("retry_ms", 0, 3_600_000)?,
        heartbeat: (heartbeat > 0).then(|| secs(heartbeat)),
        events,
        token: Some(get("token")?.0).filter(|t| !t.is_empty()),
        status_token: Some(get("status_token")?.0).filter(|t| !t.is_empty()),
        room_tokens: Vec::new(),
        room_passwords: Vec::new(),
        private_rooms: match get("private_rooms")? {
            (v, _) if v == "deny" => false,
            (v, _) if v == "allow" => true,
            (v, line) => {
                return Err(fail(
                    "private_rooms",
                    line,
                    format!("expected deny or allow, found `{v}`"),
                ));
            }
        },
        cors_origins: match get("cors_origins")? {
            (list, _) if list == "*" || list.is_empty() => None,
            (list, line) => {
                let mut origins: Vec<String> = Vec::new();
                for origin in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                    let origin =
                        unquote_item(origin).map_err(|why| fail("cors_origins", line, why))?;
                    origins.push(origin.trim_end_matches('/').to_string());
                }
                // An empty list (`cors_origins = ,`) would allow no origin but be described as
                // `cors_origins = ` (any origin); `#x` would be described as `…, #x`, a comment.
                let origin = |o: &String| {
                    (o.starts_with("http://") || o.starts_with("https://"))
                        && !o.contains(char::is_whitespace)
                };
                if origins.is_empty() || !origins.iter().all(origin) {
                    return Err(fail(
                        "cors_origins",
                        line,
                        format!(
                            "expected * or origins like https://example.org, comma-separated, found `{list}`"
                        ),
                    ));
                }
                Some(origins)
            }
        },
    })
}

fn secs(n: usize) -> Duration {
    Duration::from_secs(n as u64)
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
    /// The settings as `key = value` lines (secrets hidden); `memory::describe` adds the ceiling.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k} = {v}\n"));
        line("component", self.component.clone());
        line("secret", format!("<{} bytes, hidden>", self.secret.len()));
        line("upstream", self.upstream.clone());
        line("muc", self.muc.clone());
        let mut rooms = self.rooms.clone();
        if self.all_rooms {
            rooms.push("*".into());
        }
        line("rooms", rooms.join(", "));
        line(
            "on_demand",
            if self.on_demand { "yes" } else { "no" }.into(),
        );
        line(
            "on_demand_grace_secs",
            self.on_demand_grace.as_secs().to_string(),
        );
        line("discover_secs", self.discover_every.as_secs().to_string());
        line("nick", self.nick.clone());
        line("listen", self.listen.to_string());
        line("log_level", self.log_level.to_string().to_lowercase());
        line("max_rooms", self.max_rooms.to_string());
        line("max_subscribers", self.max_subscribers.to_string());
        line(
            "max_pending_requests",
            self.max_pending_requests.to_string(),
        );
        line("max_pending_per_ip", self.max_pending_per_ip.to_string());
        line("max_multi_streams", self.max_multi_streams.to_string());
        line(
            "max_subscribers_per_room",
            self.max_subscribers_per_room.to_string(),
        );
        line(
            "max_connections_per_ip",
            self.max_connections_per_ip.to_string(),
        );
        line("ring_events", self.ring_events.to_string());
        line("ring_bytes", self.ring_bytes.to_string());
        line("max_stanza_bytes", self.max_stanza_bytes.to_string());
        line("max_head_bytes", self.max_head_bytes.to_string());
        line("send_buffer_bytes", self.send_buffer_bytes.to_string());
        line("fanout_delay_ms", self.fanout_delay.as_millis().to_string());
        line(
            "header_timeout_secs",
            self.header_timeout.as_secs().to_string(),
        );
        line("keepalive_secs", self.keepalive.as_secs().to_string());
        line("ping_timeout_secs", self.ping_timeout.as_secs().to_string());
        line("self_ping_secs", self.self_ping.as_secs().to_string());
        line(
            "reconnect_min_secs",
            self.reconnect_min.as_secs().to_string(),
        );
        line(
            "reconnect_max_secs",
            self.reconnect_max.as_secs().to_string(),
        );
        line(
            "auth_failure",
            match self.auth_failure {
                AuthFailure::Exit => "exit".into(),
                AuthFailure::Retry => "retry".into(),
            },
        );
        line("history", self.history.to_string());
        line("retry_ms", self.retry_ms.to_string());
        let extra: Vec<&str> = [
            ("join", crate::rooms::ring::kind::JOIN),
            ("leave", crate::rooms::ring::kind::LEAVE),
        ]
        .iter()
        .filter(|(_, bit)| self.events & bit != 0)
        .map(|(name, _)| *name)
        .collect();
        line("events", extra.join(", "));
        line(
            "token",
            if self.token.is_some() {
                "<set, hidden>".into()
            } else {
                String::new()
            },
        );
        line(
            "status_token",
            if self.status_token.is_some() {
                "<set, hidden>".into()
            } else {
                String::new()
            },
        );
        for (room, _) in &self.room_tokens {
            line(&format!("token.{room}"), "<set, hidden>".into());
        }
        for (room, _) in &self.room_passwords {
            line(&format!("password.{room}"), "<set, hidden>".into());
        }
        line(
            "private_rooms",
            if self.private_rooms { "allow" } else { "deny" }.into(),
        );
        line(
            "cors_origins",
            self.cors_origins
                .as_ref()
                .map_or("*".into(), |o| o.join(", ")),
        );
        line(
            "heartbeat_secs",
            self.heartbeat.map_or(0, |d| d.as_secs()).to_string(),
        );
        out
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
    fn comments_and_blank_lines() {
        let text = format!("# top\n\n{MINIMAL}nick = watcher # trailing comment\n");
        assert_eq!(parse("t", &text).unwrap().nick, "watcher");
        let text = MINIMAL.replace("secret = s", "secret = a#b");
        assert_eq!(parse("t", &text).unwrap().secret, "a#b");
    }
}
