//! `GET /metrics`: the room table's counters in the Prometheus text exposition format 0.0.4
//! (`# HELP` / `# TYPE` lines, one sample per line, label values escaped). Per-room series only
//! for the rooms the request may see by name; the others are folded into two totals.

use std::fmt::Write as _;

use super::reply::Reply;
use crate::rooms::stats::Stats;
use crate::rooms::table::{JoinState, Room, RoomTable};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric name starts with this.
pub const PREFIX: &str = "muc_eventsource_";

/// `listed`: the rooms this request may see by name (see `pages::listed`); the others are
/// counted together in `private_rooms` and `private_subscribers`.
pub fn reply(table: &RoomTable, listed: &dyn Fn(&Room) -> bool) -> Reply {
    Reply::with_type(200, CONTENT_TYPE, render(table, listed).into_bytes())
        .header("Cache-Control", "no-store")
}

/// A metric with one unlabelled sample, read from the table: name (after [`PREFIX`]), help
/// text, type, and how to read it.
struct Single {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    read: fn(&RoomTable) -> u64,
}

/// The link and the room counts, first in the text.
const LINK_AND_ROOMS: [Single; 4] = [
    Single {
        name: "upstream_up",
        help: "1 when the XEP-0114 component link to the XMPP server is up.",
        kind: "gauge",
        read: |t| u64::from(t.stats().upstream_up.get()),
    },
    Single {
        name: "upstream_reconnects_total",
        help: "Component link sessions started after the first.",
        kind: "counter",
        read: |t| t.stats().reconnects.get(),
    },
    Single {
        name: "rooms",
        help: "Rooms configured.",
        kind: "gauge",
        read: |t| t.active().count() as u64,
    },
    Single {
        name: "rooms_joined",
        help: "Rooms currently joined.",
        kind: "gauge",
        read: |t| {
            t.active()
                .filter(|(_, r)| r.state() == JoinState::Joined)
                .count() as u64
        },
    },
];

/// The traffic counters, after the per-room series.
const TRAFFIC: [Single; 5] = [
    Single {
        name: "events_in_total",
        help: "Events published into the rooms' rings.",
        kind: "counter",
        read: |t| t.stats().events_in.get(),
    },
    Single {
        name: "events_out_total",
        help: "Events written completely to subscribers (one per event per subscriber).",
        kind: "counter",
        read: |t| t.stats().events_out.get(),
    },
    Single {
        name: "written_bytes_total",
        help: "Bytes written to subscribers (events, heartbeats, stream openings).",
        kind: "counter",
        read: |t| t.stats().bytes_out.get(),
    },
    Single {
        name: "streams_opened_total",
        help: "Event streams accepted.",
        kind: "counter",
        read: |t| t.stats().streams_opened.get(),
    },
    Single {
        name: "subscribers_dropped_slow_total",
        help: "Subscribers disconnected for falling behind their room's ring.",
        kind: "counter",
        read: |t| t.stats().dropped_slow.get(),
    },
];

/// The exposition text.
pub fn render(table: &RoomTable, listed: &dyn Fn(&Room) -> bool) -> String {
    let mut out = Exposition(String::with_capacity(2048));
    out.singles(table, &LINK_AND_ROOMS);
    per_room(&mut out, table, listed);
    unlisted(&mut out, table, listed);
    out.singles(table, &TRAFFIC);
    rejected(&mut out, table.stats());
    out.0
}

/// `room_joined` and `subscribers`, one sample per room this request may see by name.
fn per_room(out: &mut Exposition, table: &RoomTable, listed: &dyn Fn(&Room) -> bool) {
    out.family(
        "room_joined",
        "1 when the room is joined, per room.",
        "gauge",
    );
    for (_, room) in table.active().filter(|(_, r)| listed(r)) {
        let joined = u64::from(room.state() == JoinState::Joined);
        out.sample("room_joined", &[("room", &room.node())], joined);
    }
    out.family(
        "subscribers",
        "Event-stream subscribers connected, per room.",
        "gauge",
    );
    for (_, room) in table.active().filter(|(_, r)| listed(r)) {
        out.sample(
            "subscribers",
            &[("room", &room.node())],
            room.subscribers() as u64,
        );
    }
}

/// The rooms this request may not see by name, counted together.
fn unlisted(out: &mut Exposition, table: &RoomTable, listed: &dyn Fn(&Room) -> bool) {
    let unlisted = || table.active().filter(|(_, r)| !listed(r));
    out.single(
        "private_rooms",
        "Rooms not named here: this request may not read them (status_token shows them).",
        "gauge",
        unlisted().count() as u64,
    );
    out.single(
        "private_subscribers",
        "Event-stream subscribers of the rooms not named here, together.",
        "gauge",
        unlisted().map(|(_, r)| r.subscribers() as u64).sum(),
    );
}

/// `rejected_total`, one sample per reason.
fn rejected(out: &mut Exposition, s: &Stats) {
    out.family(
        "rejected_total",
        "Connections or requests refused, by reason.",
        "counter",
    );
    for (reason, counter) in [
        ("subscribers_full", &s.rejected_full),
        ("bad_request", &s.rejected_bad_request),
        ("timeout", &s.rejected_timeout),
        ("pending_full", &s.rejected_pending),
        ("per_ip", &s.rejected_per_ip),
        ("forbidden", &s.rejected_forbidden),
    ] {
        out.sample("rejected_total", &[("reason", reason)], counter.get());
    }
}

struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(
            self.0,
            "# HELP {PREFIX}{name} {}\n# TYPE {PREFIX}{name} {kind}",
            escape_help(help)
        );
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.0.push_str(PREFIX);
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{label}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn single(&mut self, name: &str, help: &str, kind: &str, value: u64) {
        self.family(name, help, kind);
        self.sample(name, &[], value);
    }

    fn singles(&mut self, table: &RoomTable, metrics: &[Single]) {
        for m in metrics {
            self.single(m.name, m.help, m.kind, (m.read)(table));
        }
    }
}

/// A label value: `\` → `\\`, `"` → `\"`, line feed → `\n`.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out
}

/// HELP text: `\` → `\\`, line feed → `\n`.
pub fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_label("café"), "café");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }

    #[test]
    fn renders_every_counter_with_help_and_type() {
        let t = RoomTable::for_tests(2, &["lobby", "we\\ird\"room"]);
        let s = t.stats();
        s.upstream_up.set(true);
        s.reconnects.add(2);
        s.events_in.add(7);
        s.events_out.add(21);
        s.bytes_out.add(4096);
        s.dropped_slow.add(1);
        s.rejected_full.add(3);
        s.rejected_timeout.add(4);
        t.set_state(0, JoinState::Joined);
        let _sub = t.subscribe(0).unwrap();
        let text = render(&t, &|_| true);
        for line in [
            "# HELP muc_eventsource_upstream_up 1 when the XEP-0114 component link to the XMPP server is up.",
            "# TYPE muc_eventsource_upstream_up gauge",
            "muc_eventsource_upstream_up 1",
            "# TYPE muc_eventsource_upstream_reconnects_total counter",
            "muc_eventsource_upstream_reconnects_total 2",
            "muc_eventsource_rooms 2",
            "muc_eventsource_rooms_joined 1",
            "muc_eventsource_room_joined{room=\"lobby\"} 1",
            "muc_eventsource_room_joined{room=\"we\\\\ird\\\"room\"} 0",
            "# TYPE muc_eventsource_subscribers gauge",
            "muc_eventsource_subscribers{room=\"lobby\"} 1",
            "muc_eventsource_subscribers{room=\"we\\\\ird\\\"room\"} 0",
            "muc_eventsource_events_in_total 7",
            "muc_eventsource_events_out_total 21",
            "muc_eventsource_written_bytes_total 4096",
            "muc_eventsource_subscribers_dropped_slow_total 1",
            "# TYPE muc_eventsource_rejected_total counter",
            "muc_eventsource_rejected_total{reason=\"subscribers_full\"} 3",
            "muc_eventsource_rejected_total{reason=\"timeout\"} 4",
            "muc_eventsource_rejected_total{reason=\"forbidden\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every family is announced once, before its samples; every line ends with LF.
        let mut announced = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(!announced.contains(&name.to_string()), "{name} twice");
                announced.push(name.to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(announced.last().map(String::as_str), Some(name), "{line}");
            }
        }
        assert!(text.ends_with('\n'));
        assert_eq!(
            reply(&t, &|_| true).content_type,
            "text/plain; version=0.0.4; charset=utf-8"
        );
    }
}
