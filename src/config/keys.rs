//! The one definition of every configuration key: its name, default, bounds or syntax, help
//! text, how `--check-config` writes it back, and whether `SIGHUP` applies it or it needs a
//! restart. Parsing (`config::parse`), `Config::describe`, the reload diff
//! (`Settings::reload`) and the README's key table (`tests/docs.rs`) all read this table.

use std::net::SocketAddr;
use std::time::Duration;

use super::{AuthFailure, Config, check_room_node, is_domain_char, parse_level, unquote_item};
use crate::rooms::ring::kind;

/// When a changed value takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// `SIGHUP` applies it: the running code reads the settings in force each time it needs
    /// the value (new connections, the next tick, the next heartbeat).
    Live,
    /// Read once at start-up (it sizes a table, binds a socket or names us to the server); a
    /// reload that changes it logs that it needs a restart and keeps the running value.
    Restart,
}

/// How a key's text becomes settings.
#[derive(Clone, Copy)]
pub enum Value {
    /// A whole number from `min` to `max`.
    Number {
        min: usize,
        max: usize,
        set: fn(&mut Config, usize),
    },
    /// One value; the setter's error says what is expected.
    Text(fn(&mut Config, &str) -> Result<(), String>),
    /// A comma-separated list, each item may be quoted.
    List(fn(&mut Config, &str) -> Result<(), String>),
}

/// One configuration key.
pub struct Key {
    pub name: &'static str,
    /// `None`: the file must give it.
    pub default: Option<&'static str>,
    /// One line for the README and error messages.
    pub help: &'static str,
    pub value: Value,
    pub reload: Reload,
    /// The value as `describe()` writes it, secrets hidden; it parses back to the same settings.
    pub show: fn(&Config) -> String,
    /// Whether two settings differ in this key.
    pub differs: fn(&Config, &Config) -> bool,
    /// Copies this key's settings from the second argument into the first (a live reload).
    pub copy: fn(&mut Config, &Config),
}

impl Key {
    /// Reads `text` into `config`; the error says what was expected (file, line and key are
    /// added by the caller).
    pub fn read(&self, config: &mut Config, text: &str) -> Result<(), String> {
        match self.value {
            Value::Number { min, max, set } => match text.parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => {
                    set(config, n);
                    Ok(())
                }
                _ => Err(format!(
                    "expected a whole number from {min} to {max}, found `{text}`"
                )),
            },
            Value::Text(set) | Value::List(set) => set(config, text),
        }
    }

    /// The accepted values, for the README: `1..=3600`, or `text`/`list`.
    pub fn bounds(&self) -> String {
        match self.value {
            Value::Number { min, max, .. } => format!("{min}..={max}"),
            Value::Text(_) => "text".into(),
            Value::List(_) => "list".into(),
        }
    }
}

/// A key definition; `[fields]` are the `Config` fields the key sets, which the reload compares
/// and, for a live key, copies.
macro_rules! key {
    ($name:literal, $default:expr, $reload:ident, [$($field:ident),+], $value:expr, $show:expr, $help:literal $(,)?) => {
        Key {
            name: $name,
            default: $default,
            help: $help,
            value: $value,
            reload: Reload::$reload,
            show: $show,
            differs: |a, b| false $(|| a.$field != b.$field)+,
            copy: |to, from| {
                $(to.$field = Clone::clone(&from.$field);)+
            },
        }
    };
}

/// A `Value::Number` key.
macro_rules! number {
    ($min:expr, $max:expr, $set:expr) => {
        Value::Number {
            min: $min,
            max: $max,
            set: $set,
        }
    };
}

fn secs(n: usize) -> Duration {
    Duration::from_secs(n as u64)
}

/// `<set, hidden>` for a secret that is set, else empty.
fn hidden(value: &Option<String>) -> String {
    value
        .as_ref()
        .map_or(String::new(), |_| "<set, hidden>".into())
}

/// Every key the file may hold (besides `token.<room>` and `password.<room>`), in the order
/// `describe()` writes them.
pub const KEYS: &[Key] = &[
    key!(
        "component",
        None,
        Restart,
        [component],
        Value::Text(|c, v| domain(v).map(|v| c.component = v)),
        |c| c.component.clone(),
        "component JID, as in Prosody's `Component \"...\"`"
    ),
    key!(
        "secret",
        None,
        Restart,
        [secret],
        Value::Text(set_secret),
        |c| format!("<{} bytes, hidden>", c.secret.len()),
        "the component_secret of that component"
    ),
    key!(
        "upstream",
        Some("127.0.0.1:5347"),
        Restart,
        [upstream],
        Value::Text(set_upstream),
        |c| c.upstream.clone(),
        "Prosody component port, host:port"
    ),
    key!(
        "muc",
        None,
        Restart,
        [muc],
        Value::Text(|c, v| domain(v).map(|v| c.muc = v)),
        |c| c.muc.clone(),
        "MUC service, e.g. conference.example.org"
    ),
    key!(
        "rooms",
        Some(""),
        Live,
        [rooms],
        Value::List(set_rooms),
        show_rooms,
        "comma-separated room nodes, e.g. lobby, news; `*` = every public room (disco#items; adding or removing `*` takes a restart); required unless `on_demand = yes`"
    ),
    key!(
        "on_demand",
        Some("no"),
        Restart,
        [on_demand],
        Value::Text(|c, v| yes_no(v).map(|b| c.on_demand = b)),
        |c| if c.on_demand { "yes" } else { "no" }.into(),
        "yes: any existing room is joined when first asked for"
    ),
    key!(
        "on_demand_grace_secs",
        Some("300"),
        Live,
        [on_demand_grace],
        number!(0, 86400, |c, n| c.on_demand_grace = secs(n)),
        |c| c.on_demand_grace.as_secs().to_string(),
        "an on-demand room is left this long after its last subscriber"
    ),
    key!(
        "discover_secs",
        Some("300"),
        Live,
        [discover_every],
        number!(10, 86400, |c, n| c.discover_every = secs(n)),
        |c| c.discover_every.as_secs().to_string(),
        "how often `rooms = *` fetches the room list"
    ),
    key!(
        "nick",
        Some("eventsource"),
        Restart,
        [nick],
        Value::Text(set_nick),
        |c| c.nick.clone(),
        "nickname used in every room"
    ),
    key!(
        "listen",
        Some("127.0.0.1:8080"),
        Restart,
        [listen],
        Value::Text(set_listen),
        |c| c.listen.to_string(),
        "HTTP listen address, ip:port"
    ),
    key!(
        "log_level",
        Some("info"),
        Live,
        [log_level],
        Value::Text(set_log_level),
        |c| c.log_level.to_string().to_lowercase(),
        "error, warn, info, debug or trace"
    ),
    key!(
        "max_rooms",
        Some("0"),
        Restart,
        [max_rooms],
        number!(0, 4096, |c, n| c.max_rooms = n),
        |c| c.max_rooms.to_string(),
        "room table capacity; 0 = number of rooms (64 with `*` or `on_demand`)"
    ),
    key!(
        "max_subscribers",
        Some("1024"),
        Restart,
        [max_subscribers],
        number!(1, 1_000_000, |c, n| c.max_subscribers = n),
        |c| c.max_subscribers.to_string(),
        "SSE subscribers, all rooms together"
    ),
    key!(
        "max_pending_requests",
        Some("64"),
        Restart,
        [max_pending_requests],
        number!(1, 100_000, |c, n| c.max_pending_requests = n),
        |c| c.max_pending_requests.to_string(),
        "connections still sending their request (a complete request never counts; when full, the one that has sent the least for its age is closed)"
    ),
    key!(
        "max_pending_per_ip",
        Some("8"),
        Restart,
        [max_pending_per_ip],
        number!(0, 100_000, |c, n| c.max_pending_per_ip = n),
        |c| c.max_pending_per_ip.to_string(),
        "of those, from one address (one /64 for IPv6); 0 = no limit beyond max_pending_requests"
    ),
    key!(
        "max_multi_streams",
        Some("8"),
        Live,
        [max_multi_streams],
        number!(0, 100_000, |c, n| c.max_multi_streams = n),
        |c| c.max_multi_streams.to_string(),
        "streams merging several rooms (/eventsource?room=a&room=b)"
    ),
    key!(
        "max_subscribers_per_room",
        Some("0"),
        Restart,
        [max_subscribers_per_room],
        number!(0, 1_000_000, |c, n| c.max_subscribers_per_room = n),
        |c| c.max_subscribers_per_room.to_string(),
        "subscribers of one room, 0 = no limit beyond max_subscribers"
    ),
    key!(
        "max_connections_per_ip",
        Some("0"),
        Restart,
        [max_connections_per_ip],
        number!(0, 1_000_000, |c, n| c.max_connections_per_ip = n),
        |c| c.max_connections_per_ip.to_string(),
        "connections from one address, 0 = no limit"
    ),
    key!(
        "ring_events",
        Some("64"),
        Restart,
        [ring_events],
        number!(1, 65_536, |c, n| c.ring_events = n),
        |c| c.ring_events.to_string(),
        "events kept per room for late readers"
    ),
    key!(
        "ring_bytes",
        Some("262144"),
        Restart,
        [ring_bytes],
        number!(1024, 1 << 30, |c, n| c.ring_bytes = n),
        |c| c.ring_bytes.to_string(),
        "bytes of events kept per room"
    ),
    key!(
        "max_stanza_bytes",
        Some("524288"),
        Restart,
        [max_stanza_bytes],
        number!(4096, 64 << 20, |c, n| c.max_stanza_bytes = n),
        |c| c.max_stanza_bytes.to_string(),
        "largest upstream stanza, bytes (Prosody's own c2s limit is 256 KiB)"
    ),
    key!(
        "max_head_bytes",
        Some("8192"),
        Live,
        [max_head_bytes],
        number!(512, 1 << 20, |c, n| c.max_head_bytes = n),
        |c| c.max_head_bytes.to_string(),
        "largest HTTP request head, bytes"
    ),
    key!(
        "send_buffer_bytes",
        Some("65536"),
        Live,
        [send_buffer_bytes],
        number!(0, 64 << 20, |c, n| c.send_buffer_bytes = n),
        |c| c.send_buffer_bytes.to_string(),
        "kernel send buffer per stream socket (bounds the kernel memory a stalled reader pins; --check-config prints the total), 0 = the kernel's autotuning (up to 4 MiB each)"
    ),
    key!(
        "fanout_delay_ms",
        Some("0"),
        Restart,
        [fanout_delay],
        number!(0, 1000, |c, n| c.fanout_delay =
            Duration::from_millis(n as u64)),
        |c| c.fanout_delay.as_millis().to_string(),
        "hold new events this long so that several share one write per subscriber: less CPU, that much more latency (see docs/BENCHMARKS.md)"
    ),
    key!(
        "header_timeout_secs",
        Some("10"),
        Live,
        [header_timeout],
        number!(1, 3600, |c, n| c.header_timeout = secs(n)),
        |c| c.header_timeout.as_secs().to_string(),
        "time a client has to send its request"
    ),
    key!(
        "keepalive_secs",
        Some("60"),
        Live,
        [keepalive],
        number!(1, 86400, |c, n| c.keepalive = secs(n)),
        |c| c.keepalive.as_secs().to_string(),
        "whitespace keepalive on the component link"
    ),
    key!(
        "ping_timeout_secs",
        Some("30"),
        Live,
        [ping_timeout],
        number!(1, 3600, |c, n| c.ping_timeout = secs(n)),
        |c| c.ping_timeout.as_secs().to_string(),
        "unanswered link ping or self-ping after which the link is dead"
    ),
    key!(
        "self_ping_secs",
        Some("600"),
        Live,
        [self_ping],
        number!(1, 86400, |c, n| c.self_ping = secs(n)),
        |c| c.self_ping.as_secs().to_string(),
        "silence from a room before checking we are still in it (XEP-0410)"
    ),
    key!(
        "reconnect_min_secs",
        Some("1"),
        Live,
        [reconnect_min],
        number!(1, 3600, |c, n| c.reconnect_min = secs(n)),
        |c| c.reconnect_min.as_secs().to_string(),
        "first reconnect delay"
    ),
    key!(
        "reconnect_max_secs",
        Some("60"),
        Live,
        [reconnect_max],
        number!(1, 86400, |c, n| c.reconnect_max = secs(n)),
        |c| c.reconnect_max.as_secs().to_string(),
        "largest reconnect delay"
    ),
    key!(
        "auth_failure",
        Some("exit"),
        Live,
        [auth_failure],
        Value::Text(set_auth_failure),
        |c| match c.auth_failure {
            AuthFailure::Exit => "exit".into(),
            AuthFailure::Retry => "retry".into(),
        },
        "on a rejected secret: exit (status 2) or retry"
    ),
    key!(
        "history",
        Some("20"),
        Live,
        [history],
        number!(0, 65_536, |c, n| c.history = n),
        |c| c.history.to_string(),
        "MUC history messages fetched on join (at most ring_events)"
    ),
    key!(
        "retry_ms",
        Some("3000"),
        Live,
        [retry_ms],
        number!(0, 3_600_000, |c, n| c.retry_ms = n),
        |c| c.retry_ms.to_string(),
        "reconnect delay told to browsers (retry:), 0 = none"
    ),
    key!(
        "events",
        Some(""),
        Live,
        [events],
        Value::List(set_events),
        show_events,
        "extra event kinds for every stream: join, leave"
    ),
    key!(
        "token",
        Some(""),
        Live,
        [token],
        Value::Text(|c, v| {
            c.token = Some(v.to_string()).filter(|t| !t.is_empty());
            Ok(())
        }),
        |c| hidden(&c.token),
        "read token every stream needs (token.<room> per room); it opens no private room"
    ),
    key!(
        "status_token",
        Some(""),
        Live,
        [status_token],
        Value::Text(|c, v| {
            c.status_token = Some(v.to_string()).filter(|t| !t.is_empty());
            Ok(())
        }),
        |c| hidden(&c.status_token),
        "operator token: `/`, `/metrics` and `/healthz` then name every room"
    ),
    key!(
        "private_rooms",
        Some("deny"),
        Live,
        [private_rooms],
        Value::Text(set_private_rooms),
        |c| if c.private_rooms { "allow" } else { "deny" }.into(),
        "hidden/members-only/password rooms: deny (403 without their token.<room>) or allow"
    ),
    key!(
        "cors_origins",
        Some("*"),
        Live,
        [cors_origins],
        Value::List(set_cors_origins),
        |c| c.cors_origins.as_ref().map_or("*".into(), |o| o.join(", ")),
        "origins allowed to read streams: * or a comma-separated list"
    ),
    key!(
        "heartbeat_secs",
        Some("20"),
        Live,
        [heartbeat],
        number!(0, 3600, |c, n| c.heartbeat = (n > 0).then(|| secs(n))),
        |c| c.heartbeat.map_or(0, |d| d.as_secs()).to_string(),
        "keep-alive comment on idle streams, 0 = none"
    ),
];

/// The key named `name`.
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

fn domain(v: &str) -> Result<String, String> {
    if v.is_empty() || !v.chars().all(is_domain_char) {
        return Err(format!(
            "expected a domain name like sse.example.org, found `{v}`"
        ));
    }
    Ok(v.to_string())
}

fn set_secret(c: &mut Config, v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("empty; copy the component_secret from Prosody's config".into());
    }
    c.secret = v.to_string();
    Ok(())
}

fn set_upstream(c: &mut Config, v: &str) -> Result<(), String> {
    if v.rsplit_once(':')
        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(format!(
            "expected host:port such as 127.0.0.1:5347, found `{v}`"
        ));
    }
    c.upstream = v.to_string();
    Ok(())
}

fn yes_no(v: &str) -> Result<bool, String> {
    match v {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        other => Err(format!("expected yes or no, found `{other}`")),
    }
}

/// Room nodes, lower-cased and without repeats; `*` sets `all_rooms`. Whether the list may be
/// empty depends on `on_demand`: see `config::check`.
fn set_rooms(c: &mut Config, text: &str) -> Result<(), String> {
    c.rooms.clear();
    c.all_rooms = false;
    for room in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let room = unquote_item(room)?;
        if room == "*" {
            c.all_rooms = true;
            continue;
        }
        if let Err(why) = check_room_node(room) {
            return Err(format!("room `{room}`: {why}"));
        }
        if room.starts_with('#') {
            // `rooms = a,#b` lists `#b`, but `rooms = a, #b` (as `describe()` writes it) ends
            // in a comment.
            return Err(format!(
                "room `{room}`: cannot start with `#` (after a space it starts a comment)"
            ));
        }
        let room = room.to_lowercase();
        if !c.rooms.contains(&room) {
            c.rooms.push(room);
        }
    }
    if c.rooms.len() > 4096 {
        // max_rooms = 0 means "the number of rooms": without this, 0 would lift the 4096 cap.
        return Err(format!("{} rooms are listed; at most 4096", c.rooms.len()));
    }
    Ok(())
}

fn show_rooms(c: &Config) -> String {
    let mut rooms = c.rooms.clone();
    if c.all_rooms {
        rooms.push("*".into());
    }
    rooms.join(", ")
}

fn set_nick(c: &mut Config, v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > 64 || v.chars().any(|c| c.is_control() || c == '/') {
        return Err("expected 1 to 64 characters, no `/` and no control characters".into());
    }
    c.nick = v.to_string();
    Ok(())
}

fn set_listen(c: &mut Config, v: &str) -> Result<(), String> {
    c.listen = v
        .parse::<SocketAddr>()
        .map_err(|_| format!("expected ip:port such as 0.0.0.0:8080 or [::]:8080, found `{v}`"))?;
    Ok(())
}

fn set_log_level(c: &mut Config, v: &str) -> Result<(), String> {
    c.log_level = parse_level(v)
        .ok_or_else(|| format!("expected error, warn, info, debug or trace, found `{v}`"))?;
    Ok(())
}

fn set_auth_failure(c: &mut Config, v: &str) -> Result<(), String> {
    c.auth_failure = match v {
        "exit" => AuthFailure::Exit,
        "retry" => AuthFailure::Retry,
        _ => return Err(format!("expected exit or retry, found `{v}`")),
    };
    Ok(())
}

fn set_events(c: &mut Config, text: &str) -> Result<(), String> {
    c.events = 0;
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let name = unquote_item(name)?;
        c.events |= kind::from_name(name).ok_or_else(|| {
            format!(
                "unknown event kind `{name}`; expected join, leave (message, subject, status, correction, retraction are always sent)"
            )
        })?;
    }
    Ok(())
}

fn show_events(c: &Config) -> String {
    [("join", kind::JOIN), ("leave", kind::LEAVE)]
        .iter()
        .filter(|(_, bit)| c.events & bit != 0)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn set_private_rooms(c: &mut Config, v: &str) -> Result<(), String> {
    c.private_rooms = match v {
        "deny" => false,
        "allow" => true,
        _ => return Err(format!("expected deny or allow, found `{v}`")),
    };
    Ok(())
}

fn set_cors_origins(c: &mut Config, list: &str) -> Result<(), String> {
    if list == "*" || list.is_empty() {
        c.cors_origins = None;
        return Ok(());
    }
    let mut origins: Vec<String> = Vec::new();
    for origin in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        origins.push(unquote_item(origin)?.trim_end_matches('/').to_string());
    }
    // An empty list (`cors_origins = ,`) would allow no origin but be described as
    // `cors_origins = ` (any origin); `#x` would be described as `…, #x`, a comment.
    let origin = |o: &String| {
        (o.starts_with("http://") || o.starts_with("https://")) && !o.contains(char::is_whitespace)
    };
    if origins.is_empty() || !origins.iter().all(origin) {
        return Err(format!(
            "expected * or origins like https://example.org, comma-separated, found `{list}`"
        ));
    }
    c.cors_origins = Some(origins);
    Ok(())
}
