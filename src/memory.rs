//! The memory ceiling: the most heap the fixed tables, buffers and the upstream link can reach,
//! and the kernel memory the stream sockets can pin, as `--check-config` and the start-up log
//! print them. Each part is computed next to what it sizes (`rooms::table::Sizes`,
//! `http::multi::BUFFER`); this file only adds them up.

use crate::config::Config;
use crate::rooms::table::Sizes;

/// The memory the tables may hold at most, by part, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    pub rings: usize,
    pub subscribers: usize,
    /// Buffers of streams that merge several rooms.
    pub multi_streams: usize,
    pub pending_requests: usize,
    pub upstream: usize,
    pub fixed: usize,
}

impl Ceiling {
    pub fn total(&self) -> usize {
        self.rings
            .saturating_add(self.subscribers)
            .saturating_add(self.multi_streams)
            .saturating_add(self.pending_requests)
            .saturating_add(self.upstream)
            .saturating_add(self.fixed)
    }
}

/// Kernel memory one stream socket's send queue can hold beyond its `SO_SNDBUF`: the kernel
/// doubles the size asked for (bookkeeping overhead), and the write that crosses the limit may
/// queue one more segment of up to 64 KiB.
pub const SEND_QUEUE_SLACK: usize = 64 * 1024;

/// Baseline of the process itself: code, libc, executor, reactor (measured idle RSS, rounded up).
pub const FIXED_BYTES: usize = 3 << 20;

/// Kernel memory the stream sockets' send queues can pin (all subscribers stalled), when
/// `send_buffer_bytes` bounds them; `None` when it is 0 (the kernel's autotuning, up to the
/// third field of `net.ipv4.tcp_wmem` per socket).
pub fn kernel_ceiling(max_subscribers: usize, send_buffer_bytes: usize) -> Option<usize> {
    (send_buffer_bytes > 0).then(|| {
        max_subscribers.saturating_mul(
            send_buffer_bytes
                .saturating_mul(2)
                .saturating_add(SEND_QUEUE_SLACK),
        )
    })
}

/// Largest SSE frame one stanza can produce. The stream parser admits only XML characters, so
/// JSON escaping at most doubles a stanza byte (`"` → `\"`, LF → `\n`; a `&#9;` of four bytes
/// becomes two).
pub fn max_frame_bytes(max_stanza_bytes: usize) -> usize {
    max_stanza_bytes.saturating_mul(2).saturating_add(256)
}

/// Upper bound of the heap the configured tables can reach.
pub fn ceiling(config: &Config) -> Ceiling {
    let frame = max_frame_bytes(config.max_stanza_bytes);
    let sizes: Sizes = config.sizes();
    Ceiling {
        rings: sizes.rings_ceiling(frame),
        subscribers: sizes.subscribers_ceiling(),
        multi_streams: config
            .max_multi_streams
            .saturating_mul(crate::http::multi::BUFFER.saturating_add(frame)),
        pending_requests: config
            .max_pending_requests
            .saturating_mul(config.max_head_bytes + 1024),
        // Receive buffer, one parsed stanza tree (at most ~4× its text), send buffer.
        upstream: config
            .max_stanza_bytes
            .saturating_mul(6)
            .saturating_add(64 * 1024),
        fixed: FIXED_BYTES,
    }
}

/// The `# …` comment lines `--check-config` prints after the settings: the memory ceiling by
/// part, and the kernel socket memory.
pub fn describe(config: &Config) -> String {
    let c = ceiling(config);
    let mut out = format!(
        "# memory ceiling: {} bytes ({:.1} MiB) = rings {} + subscribers {} + multi-room streams {} + pending requests {} + upstream {} + process {}\n",
        c.total(),
        c.total() as f64 / (1024.0 * 1024.0),
        c.rings,
        c.subscribers,
        c.multi_streams,
        c.pending_requests,
        c.upstream,
        c.fixed
    );
    match kernel_ceiling(config.max_subscribers, config.send_buffer_bytes) {
        Some(k) => out.push_str(&format!(
            "# kernel socket memory ceiling: {k} bytes ({:.1} MiB) = max_subscribers {} x (2 x send_buffer_bytes {} + {SEND_QUEUE_SLACK}); subscribers dropped for falling behind are reset, which frees theirs at once\n",
            k as f64 / (1024.0 * 1024.0),
            config.max_subscribers,
            config.send_buffer_bytes,
        )),
        None => out.push_str(&format!(
            "# kernel socket memory: not bounded by this daemon (send_buffer_bytes = 0): each of max_subscribers {} stream sockets may grow to the third field of net.ipv4.tcp_wmem (often 4 MiB)\n",
            config.max_subscribers
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const MINIMAL: &str =
        "component = sse.localhost\nsecret = s\nmuc = conference.localhost\nrooms = lobby, news\n";

    #[test]
    fn check_config_prints_the_kernel_part_of_the_ceiling() {
        let c = parse("t.conf", MINIMAL).unwrap();
        assert_eq!(c.send_buffer_bytes, 65536);
        assert!(describe(&c).contains(&format!(
            "# kernel socket memory ceiling: {} bytes",
            1024 * (2 * 65536 + SEND_QUEUE_SLACK)
        )));
        let text = format!("{MINIMAL}send_buffer_bytes = 0\n");
        let unbounded = describe(&parse("t.conf", &text).unwrap());
        assert!(
            unbounded.contains("# kernel socket memory: not bounded"),
            "{unbounded}"
        );
    }

    #[test]
    fn the_ceiling_adds_up_its_parts() {
        let c = parse("t.conf", MINIMAL).unwrap();
        let ceiling = ceiling(&c);
        assert!(ceiling.rings >= 2 * c.ring_bytes, "{ceiling:?}");
        assert!(ceiling.subscribers >= c.max_subscribers * 80, "{ceiling:?}");
        assert!(describe(&c).contains(&format!("# memory ceiling: {} bytes", ceiling.total())));
    }
}
