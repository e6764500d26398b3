//! The `log` backend: one line per record on stderr.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry the `<N>` priority prefix journald reads and
//! no timestamp (the journal adds one); elsewhere they start with the UTC time of day.

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
