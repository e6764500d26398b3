//! The `log` backend: one line per record on stderr.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry the `<N>` priority prefix journald reads and
//! no timestamp (the journal adds one); elsewhere they start with the UTC time of day.
//!
//! Whatever a client controls (a path, a resume id, a room name from a request, an origin) goes
//! into a line only through [`Shown`], which escapes what could forge a line or drive a terminal
//! and cuts long values short.

use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger {
    journal: bool,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = record.level();
        let line = if self.journal {
            let prio = match level {
                Level::Error => 3,
                Level::Warn => 4,
                Level::Info => 6,
                Level::Debug | Level::Trace => 7,
            };
            format!(
                "<{prio}>{}: {}\n",
                level.as_str().to_lowercase(),
                record.args()
            )
        } else {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let day = now.as_secs() % 86_400;
            format!(
                "{:02}:{:02}:{:02}.{:03} {:5} {}\n",
                day / 3600,
                day / 60 % 60,
                day % 60,
                now.subsec_millis(),
                level,
                record.args()
            )
        };
        // One write per line so lines from a crash are not interleaved; errors are ignored
        // (there is nowhere else to report them).
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger once, at start-up.
pub fn init(level: LevelFilter) {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let logger: &'static Logger = Box::leak(Box::new(Logger { journal }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// A client-supplied value as it may appear in a log line (or a plain-text reply): control
/// characters (CR, LF, ESC…), invisible formatting and bidi controls, non-characters and
/// private-use characters are written as `\u{..}`, a backslash as `\\`, and a value longer than
/// [`Shown::MAX`] characters is cut, with a marker saying how long it was.
pub struct Shown<'a>(pub &'a str);

impl Shown<'_> {
    /// Characters shown at most.
    pub const MAX: usize = 120;
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, c) in self.0.chars().enumerate() {
            if n == Shown::MAX {
                return write!(f, "…({} bytes)", self.0.len());
            }
            match c {
                '\\' => f.write_str("\\\\")?,
                c if as_is(c) => write!(f, "{c}")?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
        }
        Ok(())
    }
}

/// Whether `c` is shown as itself: printable, and not one that changes how the text around
/// it reads (bidi controls, zero-width characters, line separators).
fn as_is(c: char) -> bool {
    let hidden = matches!(
        c,
        '\u{AD}'
            | '\u{34F}'
            | '\u{61C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFC}'
            | '\u{FDD0}'..='\u{FDEF}'
            | '\u{E000}'..='\u{F8FF}'
            | '\u{E0000}'..='\u{E0FFF}'
            | '\u{F0000}'..
    ) || (c as u32 & 0xFFFE) == 0xFFFE;
    !hidden && !c.is_control() && (c == ' ' || !c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_values_cannot_forge_lines_or_drive_terminals() {
        let show = |s: &str| Shown(s).to_string();
        assert_eq!(
            show("lobby café 🎉 /eventsource/a%20b"),
            "lobby café 🎉 /eventsource/a%20b"
        );
        assert_eq!(
            show("x\n19:00:00.000 ERROR forged\u{1b}[2J"),
            "x\\u{a}19:00:00.000 ERROR forged\\u{1b}[2J"
        );
        assert_eq!(
            show("a\rb\u{0}\u{7f}\u{85}"),
            "a\\u{d}b\\u{0}\\u{7f}\\u{85}"
        );
        assert_eq!(
            show("\u{202e}\u{200e}\u{2028}\u{feff}\u{fffe}\u{ffff}\u{e0001}\u{e000}\u{3000}"),
            "\\u{202e}\\u{200e}\\u{2028}\\u{feff}\\u{fffe}\\u{ffff}\\u{e0001}\\u{e000}\\u{3000}"
        );
        assert_eq!(show("\\u{1b}"), "\\\\u{1b}", "an escape cannot be faked");
        let long = "é".repeat(8000);
        let shown = show(&long);
        assert!(shown.starts_with(&"é".repeat(Shown::MAX)));
        assert!(shown.ends_with("…(16000 bytes)"), "{shown}");
        assert_eq!(
            shown.chars().count(),
            Shown::MAX + "…(16000 bytes)".chars().count()
        );
        assert_eq!(show(&"a".repeat(Shown::MAX)), "a".repeat(Shown::MAX));
    }
}
