//! Measurement helpers: a latency histogram, the bench's own clock, and readings from `/proc`
//! (CPU time per process and per thread, RSS, whole-host busy time).

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the bench started: the clock every send and receive timestamp uses
/// (sender, receiver and baseline run in this one process, so one monotonic clock serves all).
pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Log-linear histogram of microsecond values: exact below 2048 µs, then 1024 sub-buckets per
/// power of two (≤ 0.1 % error), up to 2^40 µs.
#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    n: u64,
    max: u64,
}

const LINEAR: u64 = 2048;
const SUB_BITS: u32 = 10;
const TOP_EXP: u64 = 40;

impl Hist {
    pub fn new() -> Hist {
        let len = LINEAR as usize + ((TOP_EXP - 11 + 1) << SUB_BITS) as usize;
        Hist {
            counts: vec![0; len],
            n: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        let v = v.min((1 << TOP_EXP) - 1);
        if v < LINEAR {
            return v as usize;
        }
        let e = 63 - u64::from(v.leading_zeros());
        let m = (v >> (e - u64::from(SUB_BITS))) & ((1 << SUB_BITS) - 1);
        (LINEAR + ((e - 11) << SUB_BITS) + m) as usize
    }

    fn lower(index: usize) -> u64 {
        let i = index as u64;
        if i < LINEAR {
            return i;
        }
        let k = i - LINEAR;
        let e = (k >> SUB_BITS) + 11;
        let m = k & ((1 << SUB_BITS) - 1);
        ((1 << SUB_BITS) + m) << (e - u64::from(SUB_BITS))
    }

    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.n += 1;
        self.max = self.max.max(v);
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value below which a fraction `q` of the samples lie (0 when empty).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let target = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::lower(i).min(self.max);
            }
        }
        self.max
    }
}

/// `sysconf(_SC_CLK_TCK)`: the unit of `utime`/`stime` in `/proc/<pid>/stat`.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// `utime + stime` of a whole process (all threads), in clock ticks.
pub fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`, which may itself contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// On-CPU time of a whole process in nanoseconds: the sum of `sum_exec_runtime` (first field
/// of `/proc/<pid>/task/<tid>/schedstat`) over its threads. Same quantity as utime+stime, with
/// nanosecond instead of 10 ms resolution.
pub fn proc_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(path) {
            total += s.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

/// Nanoseconds a whole process's threads spent runnable but waiting for a CPU (second field
/// of `schedstat`): how much the host's other load delayed it.
pub fn proc_wait_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(path) {
            total += s.split_whitespace().nth(1)?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

/// On-CPU nanoseconds of the calling thread.
pub fn thread_cpu_ns() -> u64 {
    thread_sched().0
}

/// (on-CPU, waiting-for-a-CPU) nanoseconds of the calling thread.
pub fn thread_sched() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = s.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
    (f.next().unwrap_or(0), f.next().unwrap_or(0))
}

/// `VmRSS` of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `RssAnon`, `RssFile` and `RssShmem` of a process in KiB (what the resident set is made of).
pub fn rss_parts(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (get("RssAnon:"), get("RssFile:"), get("RssShmem:"))
}

/// Resident KiB per mapped file (and `[heap]`, `[stack]`, `anon`), largest first, from
/// `/proc/<pid>/smaps`.
pub fn rss_by_mapping(pid: u32) -> Vec<(String, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut sums: Vec<(String, u64)> = Vec::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            current = line
                .split_whitespace()
                .nth(5)
                .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
                .unwrap_or_else(|| "anon".into());
        } else if let Some(kib) = line.strip_prefix("Rss:") {
            let kib: u64 = kib
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            match sums.iter_mut().find(|(n, _)| *n == current) {
                Some((_, k)) => *k += kib,
                None => sums.push((current.clone(), kib)),
            }
        }
    }
    sums.sort_by_key(|e| std::cmp::Reverse(e.1));
    sums
}

/// Proportional set size in KiB (shared pages divided among the processes mapping them).
pub fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Soft `Max open files` of a process, from `/proc/<pid>/limits`.
pub fn nofile_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Whole-host CPU jiffies: (busy, total) from the first line of `/proc/stat`.
pub fn host_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// A CPU reading of the processes under test, taken at the edges of a measured window.
#[derive(Clone, Copy)]
pub struct CpuSnap {
    pub at: Instant,
    pub daemon_ns: u64,
    pub daemon_wait_ns: u64,
    pub daemon_ticks: u64,
    pub prosody_ns: u64,
    pub host: (u64, u64),
}

impl CpuSnap {
    pub fn take(daemon: u32, prosody: u32) -> CpuSnap {
        CpuSnap {
            at: Instant::now(),
            daemon_ns: proc_cpu_ns(daemon).unwrap_or(0),
            daemon_wait_ns: proc_wait_ns(daemon).unwrap_or(0),
            daemon_ticks: proc_ticks(daemon).unwrap_or(0),
            prosody_ns: proc_cpu_ns(prosody).unwrap_or(0),
            host: host_jiffies(),
        }
    }
}

/// Raises the soft (and, as root, the hard) `RLIMIT_NOFILE` of this process to at least
/// `want`; children (Prosody, the daemon) inherit it. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        let mut new = lim;
        if new.rlim_max < want {
            new.rlim_max = want;
        }
        new.rlim_cur = new.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &new) != 0 {
            // Not allowed to raise the hard limit: take what the hard limit allows.
            new = lim;
            new.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &new);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Kernel memory held by all TCP sockets of the host, in KiB (`mem` pages of the `TCP:` line
/// of `/proc/net/sockstat`): where stalled subscribers' unread events pile up.
pub fn tcp_mem_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let pages = text
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let at = f.iter().position(|x| *x == "mem")?;
            f.get(at + 1)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page / 1024
}

/// Sets the nice value of this thread, which every thread and process it starts afterwards
/// inherits. Returns false if that was not allowed.
pub fn set_nice(nice: i32) -> bool {
    // SAFETY: plain syscall; PRIO_PROCESS with id 0 is the calling thread on Linux.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) == 0 }
}
