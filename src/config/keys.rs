//! The one definition of every configuration key: its name, default, bounds or syntax, help
//! text, how `--check-config` writes it back, and whether `SIGHUP` applies it or it needs a
//! restart. Parsing (`config::parse`), `Config::describe`, the reload diff
//! (`Settings::reload`) and the README's key table (`tests/pages/docs.rs`) all read this table.

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
    (
        name: $name:literal,
        default: $default:expr,
        reload: $reload:ident,
        fields: [$($field:ident),+],
        value: $value:expr,
        show: $show:expr,
        help: $help:literal $(,)?
    ) => {
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

/// `number!(min, max, setter)`: a [`Value::Number`].
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
        name: "component",
        default: None,
        reload: Restart,
        fields: [component],
        value: Value::Text(|c, v| domain(v).map(|v| c.component = v)),
        show: |c| c.component.clone(),
        help: "component JID, as in Prosody's `Component \"...\"`",
    ),
    key!(
        name: "secret",
        default: None,
        reload: Restart,
        fields: [secret],
        value: Value::Text(set_secret),
        show: |c| format!("<{} bytes, hidden>", c.secret.len()),
        help: "the component_secret of that component",
    ),
    key!(
        name: "upstream",
        default: Some("127.0.0.1:5347"),
        reload: Restart,
        fields: [upstream],
        value: Value::Text(set_upstream),
        show: |c| c.upstream.clone(),
        help: "Prosody component port, host:port",
    ),
    key!(
        name: "muc",
        default: None,
        reload: Restart,
        fields: [muc],
        value: Value::Text(|c, v| domain(v).map(|v| c.muc = v)),
        show: |c| c.muc.clone(),
        help: "MUC service, e.g. conference.example.org",
    ),
    key!(
        name: "rooms",
        default: Some(""),
        reload: Live,
        fields: [rooms],
        value: Value::List(set_rooms),
        show: show_rooms,
        help: "comma-separated room nodes, e.g. lobby, news; `*` = every public room (disco#items; adding or removing `*` takes a restart); required unless `on_demand = yes`",
    ),
    // Restart: the HTTP side admits on-demand rooms and the table was sized for them at start-up.
    key!(
        name: "on_demand",
        default: Some("no"),
        reload: Restart,
        fields: [on_demand],
        value: Value::Text(|c, v| yes_no(v).map(|b| c.on_demand = b)),
        show: |c| if c.on_demand { "yes" } else { "no" }.into(),
        help: "yes: any existing room is joined when first asked for",
    ),
    key!(
        name: "on_demand_grace_secs",
        default: Some("300"),
        reload: Live,
        fields: [on_demand_grace],
        value: number!(0, 86400, |c, n| c.on_demand_grace = secs(n)),
        show: |c| c.on_demand_grace.as_secs().to_string(),
        help: "an on-demand room is left this long after its last subscriber",
    ),
    key!(
        name: "discover_secs",
        default: Some("300"),
        reload: Live,
        fields: [discover_every],
        value: number!(10, 86400, |c, n| c.discover_every = secs(n)),
        show: |c| c.discover_every.as_secs().to_string(),
        help: "how often `rooms = *` fetches the room list",
    ),
    key!(
        name: "nick",
        default: Some("eventsource"),
        reload: Restart,
        fields: [nick],
        value: Value::Text(set_nick),
        show: |c| c.nick.clone(),
        help: "nickname used in every room",
    ),
    key!(
        name: "listen",
        default: Some("127.0.0.1:8080"),
        reload: Restart,
        fields: [listen],
        value: Value::Text(set_listen),
        show: |c| c.listen.to_string(),
        help: "HTTP listen address, ip:port",
    ),
    key!(
        name: "log_level",
        default: Some("info"),
        reload: Live,
        fields: [log_level],
        value: Value::Text(set_log_level),
        show: |c| c.log_level.to_string().to_lowercase(),
        help: "error, warn, info, debug or trace",
    ),
    key!(
        name: "max_rooms",
        default: Some("0"),
        reload: Restart,
        fields: [max_rooms],
        value: number!(0, 4096, |c, n| c.max_rooms = n),
        show: |c| c.max_rooms.to_string(),
        help: "room table capacity; 0 = number of rooms (64 with `*` or `on_demand`)",
    ),
    key!(
        name: "max_subscribers",
        default: Some("1024"),
        reload: Restart,
        fields: [max_subscribers],
        value: number!(1, 1_000_000, |c, n| c.max_subscribers = n),
        show: |c| c.max_subscribers.to_string(),
        help: "SSE subscribers, all rooms together",
    ),
    // Restart: the HTTP server reads its start-up settings for admission.
    key!(
        name: "max_pending_requests",
        default: Some("64"),
        reload: Restart,
        fields: [max_pending_requests],
        value: number!(1, 100_000, |c, n| c.max_pending_requests = n),
        show: |c| c.max_pending_requests.to_string(),
        help: "connections still sending their request (a complete request never counts; when full, the one that has sent the least for its age is closed)",
    ),
    // Restart: the HTTP server reads its start-up settings for admission.
    key!(
        name: "max_pending_per_ip",
        default: Some("8"),
        reload: Restart,
        fields: [max_pending_per_ip],
        value: number!(0, 100_000, |c, n| c.max_pending_per_ip = n),
        show: |c| c.max_pending_per_ip.to_string(),
        help: "of those, from one address (one /64 for IPv6); 0 = no limit beyond max_pending_requests",
    ),
    key!(
        name: "max_multi_streams",
        default: Some("8"),
        reload: Live,
        fields: [max_multi_streams],
        value: number!(0, 100_000, |c, n| c.max_multi_streams = n),
        show: |c| c.max_multi_streams.to_string(),
        help: "streams merging several rooms (/eventsource?room=a&room=b)",
    ),
    // Restart: set on the room table at start-up.
    key!(
        name: "max_subscribers_per_room",
        default: Some("0"),
        reload: Restart,
        fields: [max_subscribers_per_room],
        value: number!(0, 1_000_000, |c, n| c.max_subscribers_per_room = n),
        show: |c| c.max_subscribers_per_room.to_string(),
        help: "subscribers of one room, 0 = no limit beyond max_subscribers",
    ),
    // Restart: counted per address from the first connection on; a cap switched on mid-way would mis-count those already open.
    key!(
        name: "max_connections_per_ip",
        default: Some("0"),
        reload: Restart,
        fields: [max_connections_per_ip],
        value: number!(0, 1_000_000, |c, n| c.max_connections_per_ip = n),
        show: |c| c.max_connections_per_ip.to_string(),
        help: "connections from one address, 0 = no limit",
    ),
    key!(
        name: "ring_events",
        default: Some("64"),
        reload: Restart,
        fields: [ring_events],
        value: number!(1, 65_536, |c, n| c.ring_events = n),
        show: |c| c.ring_events.to_string(),
        help: "events kept per room for late readers",
    ),
    key!(
        name: "ring_bytes",
        default: Some("262144"),
        reload: Restart,
        fields: [ring_bytes],
        value: number!(1024, 1 << 30, |c, n| c.ring_bytes = n),
        show: |c| c.ring_bytes.to_string(),
        help: "bytes of events kept per room",
    ),
    key!(
        name: "max_stanza_bytes",
        default: Some("524288"),
        reload: Restart,
        fields: [max_stanza_bytes],
        value: number!(4096, 64 << 20, |c, n| c.max_stanza_bytes = n),
        show: |c| c.max_stanza_bytes.to_string(),
        help: "largest upstream stanza, bytes (Prosody's own c2s limit is 256 KiB)",
    ),
    key!(
        name: "max_head_bytes",
        default: Some("8192"),
        reload: Live,
        fields: [max_head_bytes],
        value: number!(512, 1 << 20, |c, n| c.max_head_bytes = n),
        show: |c| c.max_head_bytes.to_string(),
        help: "largest HTTP request head, bytes",
    ),
    key!(
        name: "send_buffer_bytes",
        default: Some("65536"),
        reload: Live,
        fields: [send_buffer_bytes],
        value: number!(0, 64 << 20, |c, n| c.send_buffer_bytes = n),
        show: |c| c.send_buffer_bytes.to_string(),
        help: "kernel send buffer per stream socket (bounds the kernel memory a stalled reader pins; --check-config prints the total), 0 = the kernel's autotuning (up to 4 MiB each)",
    ),
    // Restart: the delayed-flush task is started, or not, at start-up.
    key!(
        name: "fanout_delay_ms",
        default: Some("0"),
        reload: Restart,
        fields: [fanout_delay],
        value: number!(0, 1000, |c, n| c.fanout_delay =
            Duration::from_millis(n as u64)),
        show: |c| c.fanout_delay.as_millis().to_string(),
        help: "hold new events this long so that several share one write per subscriber: less CPU, that much more latency (see docs/BENCHMARKS.md)",
    ),
    key!(
        name: "header_timeout_secs",
        default: Some("10"),
        reload: Live,
        fields: [header_timeout],
        value: number!(1, 3600, |c, n| c.header_timeout = secs(n)),
        show: |c| c.header_timeout.as_secs().to_string(),
        help: "time a client has to send its request",
    ),
    key!(
        name: "keepalive_secs",
        default: Some("60"),
        reload: Live,
        fields: [keepalive],
        value: number!(1, 86400, |c, n| c.keepalive = secs(n)),
        show: |c| c.keepalive.as_secs().to_string(),
        help: "whitespace keepalive on the component link",
    ),
    key!(
        name: "ping_timeout_secs",
        default: Some("30"),
        reload: Live,
        fields: [ping_timeout],
        value: number!(1, 3600, |c, n| c.ping_timeout = secs(n)),
        show: |c| c.ping_timeout.as_secs().to_string(),
        help: "unanswered link ping or self-ping after which the link is dead",
    ),
    key!(
        name: "self_ping_secs",
        default: Some("600"),
        reload: Live,
        fields: [self_ping],
        value: number!(1, 86400, |c, n| c.self_ping = secs(n)),
        show: |c| c.self_ping.as_secs().to_string(),
        help: "silence from a room before checking we are still in it (XEP-0410)",
    ),
    key!(
        name: "reconnect_min_secs",
        default: Some("1"),
        reload: Live,
        fields: [reconnect_min],
        value: number!(1, 3600, |c, n| c.reconnect_min = secs(n)),
        show: |c| c.reconnect_min.as_secs().to_string(),
        help: "first reconnect delay",
    ),
    key!(
        name: "reconnect_max_secs",
        default: Some("60"),
        reload: Live,
        fields: [reconnect_max],
        value: number!(1, 86400, |c, n| c.reconnect_max = secs(n)),
        show: |c| c.reconnect_max.as_secs().to_string(),
        help: "largest reconnect delay",
    ),
    key!(
        name: "auth_failure",
        default: Some("exit"),
        reload: Live,
        fields: [auth_failure],
        value: Value::Text(set_auth_failure),
        show: |c| match c.auth_failure {
            AuthFailure::Exit => "exit".into(),
            AuthFailure::Retry => "retry".into(),
        },
        help: "on a rejected secret: exit (status 2) or retry",
    ),
    key!(
        name: "history",
        default: Some("20"),
        reload: Live,
        fields: [history],
        value: number!(0, 65_536, |c, n| c.history = n),
        show: |c| c.history.to_string(),
        help: "MUC history messages fetched on join (at most ring_events)",
    ),
    key!(
        name: "retry_ms",
        default: Some("3000"),
        reload: Live,
        fields: [retry_ms],
        value: number!(0, 3_600_000, |c, n| c.retry_ms = n),
        show: |c| c.retry_ms.to_string(),
        help: "reconnect delay told to browsers (retry:), 0 = none",
    ),
    key!(
        name: "events",
        default: Some(""),
        reload: Live,
        fields: [events],
        value: Value::List(set_events),
        show: show_events,
        help: "extra event kinds for every stream: join, leave",
    ),
    key!(
        name: "token",
        default: Some(""),
        reload: Live,
        fields: [token],
        value: Value::Text(|c, v| {
            c.token = Some(v.to_string()).filter(|t| !t.is_empty());
            Ok(())
        }),
        show: |c| hidden(&c.token),
        help: "read token every stream needs (token.<room> per room); it opens no private room",
    ),
    key!(
        name: "status_token",
        default: Some(""),
        reload: Live,
        fields: [status_token],
        value: Value::Text(|c, v| {
            c.status_token = Some(v.to_string()).filter(|t| !t.is_empty());
            Ok(())
        }),
        show: |c| hidden(&c.status_token),
        help: "operator token: `/`, `/metrics` and `/healthz` then name every room",
    ),
    key!(
        name: "private_rooms",
        default: Some("deny"),
        reload: Live,
        fields: [private_rooms],
        value: Value::Text(set_private_rooms),
        show: |c| if c.private_rooms { "allow" } else { "deny" }.into(),
        help: "hidden/members-only/password rooms: deny (403 without their token.<room>) or allow",
    ),
    key!(
        name: "cors_origins",
        default: Some("*"),
        reload: Live,
        fields: [cors_origins],
        value: Value::List(set_cors_origins),
        show: |c| c.cors_origins.as_ref().map_or("*".into(), |o| o.join(", ")),
        help: "origins allowed to read streams: * or a comma-separated list",
    ),
    key!(
        name: "heartbeat_secs",
        default: Some("20"),
        reload: Live,
        fields: [heartbeat],
        value: number!(0, 3600, |c, n| c.heartbeat = (n > 0).then(|| secs(n))),
        show: |c| c.heartbeat.map_or(0, |d| d.as_secs()).to_string(),
        help: "keep-alive comment on idle streams, 0 = none",
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
