//! Fan-out benchmark with a real Prosody: `cargo bench --bench fanout` (see docs/BENCHMARKS.md).
//!
//! Starts a private Prosody (the integration-test harness), the release `muc-eventsource`
//! (the binary Cargo builds for this bench, or `MUC_EVENTSOURCE_BIN`), opens N SSE subscribers
//! on one event-driven receiver thread, has a real XMPP user post messages at a fixed rate over
//! c2s, and prints per configuration: offered / sent / delivered rates, loss, latency quantiles,
//! the daemon's CPU per delivered event against a same-run baseline write loop, and RSS.
//!
//! Options: environment variables or `--key=value` arguments after `--`
//! (`cargo bench --bench fanout -- --n=100,1000 --secs=5`):
//!
//! | variable | argument | default | meaning |
//! |---|---|---|---|
//! | `FANOUT_QUICK=1` | `--quick` | off | CI mode: N = 100 at 100 msg/s, 5 s daemon + 5 s baseline |
//! | `FANOUT_SECS` | `--secs` | 10 (quick: 5) | seconds of sending per measured point |
//! | `FANOUT_N` | `--n` | 10,100,1000,5000 | subscriber counts of the grid |
//! | `FANOUT_RATES` | `--rates` | 10,100 | message rates (msg/s) of the grid |
//! | `FANOUT_ROOMS` | `--rooms` | 10 | multi-room variant: R rooms × N/R subscribers |
//! | `FANOUT_ROOMS_N` | `--rooms-n` | 1000 | N of the multi-room variant (at 100 msg/s) |
//! | `FANOUT_SEARCH_N` | `--search-n` | 1000 | N of the highest-rate search |
//! | `FANOUT_SEARCH_MAX` | `--search-max` | 6400 | highest rate the search tries |
//! | `FANOUT_ONLY` | `--only` | all | comma list of: ceiling, idle, grid, rooms, stalled, search |
//! | `FANOUT_NO_BASELINE=1` | `--no-baseline` | off | skip the baseline runs |
//! | `FANOUT_STALLED_SECS` | `--stalled-secs` | = secs | seconds of sending of the stalled case |
//! | `FANOUT_NICE` | `--nice` | unchanged | nice value for the bench, Prosody and the daemon (e.g. -10 on a shared machine) |
//! | `FANOUT_PERF=<dir>` | – | off | `perf record` the daemon in each measured window |

mod base;
mod poster;
mod recv;
mod stats;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use poster::Poster;
use recv::{Ctl, Group, RecvResult};
use stats::{CpuSnap, Hist, now_us, rss_kib};
use testkit::{Daemon, Prosody};

const USER: &str = "fanout";
const PASS: &str = "fanout-pw";
/// Latency bound of the rate search, and of "sustained".
const P99_BOUND_US: u64 = 100_000;
/// A point whose deliveries make no progress for this long is over (what is missing is lost).
const STALL: Duration = Duration::from_secs(3);

struct Opts {
    quick: bool,
    secs: f64,
    ns: Vec<usize>,
    rates: Vec<f64>,
    rooms: Vec<usize>,
    rooms_n: usize,
    search_n: usize,
    search_max: f64,
    only: Vec<String>,
    baseline: bool,
    stalled_secs: f64,
    nice: Option<i32>,
}

impl Opts {
    fn parse() -> Opts {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let get = |name: &str| -> Option<String> {
            let flag = format!("--{name}");
            let mut it = args.iter();
            while let Some(a) = it.next() {
                if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
                    return Some(v.to_string());
                }
                if *a == flag {
                    return Some(it.next().cloned().unwrap_or_else(|| "1".into()));
                }
            }
            let var = format!("FANOUT_{}", name.to_uppercase().replace('-', "_"));
            std::env::var(var).ok()
        };
        let flag = |name: &str| {
            args.iter().any(|a| *a == format!("--{name}"))
                || get(name).is_some_and(|v| !v.is_empty() && v != "0")
        };
        let list = |name: &str, default: &str| -> Vec<String> {
            get(name)
                .unwrap_or_else(|| default.into())
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let nums = |name: &str, default: &str| -> Vec<usize> {
            list(name, default)
                .iter()
                .map(|s| {
                    s.parse()
                        .unwrap_or_else(|_| panic!("--{name}: bad number {s}"))
                })
                .collect()
        };
        let quick = flag("quick");
        let secs = get("secs")
            .map(|s| s.parse().expect("--secs: a number of seconds"))
            .unwrap_or(if quick { 5.0 } else { 10.0 });
        let mut o = Opts {
            quick,
            secs,
            ns: nums("n", "10,100,1000,5000"),
            rates: list("rates", "10,100")
                .iter()
                .map(|s| s.parse().expect("--rates: numbers"))
                .collect(),
            rooms: nums("rooms", "10"),
            rooms_n: nums("rooms-n", "1000")[0],
            search_n: nums("search-n", "1000")[0],
            search_max: get("search-max")
                .map(|s| s.parse().expect("--search-max: a rate"))
                .unwrap_or(6400.0),
            only: list("only", "ceiling,idle,grid,rooms,stalled,search"),
            baseline: !flag("no-baseline"),
            stalled_secs: get("stalled-secs")
                .map(|s| s.parse().expect("--stalled-secs: seconds"))
                .unwrap_or(secs),
            nice: get("nice").map(|s| s.parse().expect("--nice: a nice value, e.g. -10")),
        };
        if quick {
            o.ns = vec![100];
            o.rates = vec![100.0];
            o.only = vec!["idle".into(), "grid".into()];
        }
        o
    }

    fn wants(&self, section: &str) -> bool {
        self.only.iter().any(|s| s == section || s == "all")
    }
}

/// One measured configuration.
#[derive(Clone)]
struct Cfg {
    label: String,
    n: usize,
    rooms: usize,
    rate: f64,
    secs: f64,
    stalled: usize,
    baseline: bool,
}

impl Cfg {
    fn new(n: usize, rooms: usize, rate: f64, secs: f64) -> Cfg {
        let label = if rooms == 1 {
            format!("N={n} @ {rate} msg/s")
        } else {
            format!("{rooms} rooms × {} @ {rate} msg/s", n / rooms)
        };
        Cfg {
            label,
            n,
            rooms,
            rate,
            secs,
            stalled: 0,
            baseline: false,
        }
    }

    fn room_names(&self) -> Vec<String> {
        (0..self.rooms).map(|i| format!("fan{i}")).collect()
    }

    fn groups(&self, with_stalled: bool) -> Vec<Group> {
        (0..self.rooms)
            .map(|g| Group {
                path: format!("/eventsource/fan{g}"),
                live: self.n / self.rooms + usize::from(g < self.n % self.rooms),
                stalled: if with_stalled {
                    self.stalled / self.rooms + usize::from(g < self.stalled % self.rooms)
                } else {
                    0
                },
            })
            .collect()
    }
}

/// Latency and delivery figures shared by daemon and baseline rows.
struct Delivery {
    expected: u64,
    delivered: u64,
    live_closed: usize,
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    events_per_s: f64,
    recv_cpu_pct: f64,
    recv_wait_pct: f64,
    reads: u64,
    gaps: u64,
}

impl Delivery {
    fn from(r: &RecvResult, expected: u64, first_send_us: u64) -> Delivery {
        let span = r.last_recv_us.saturating_sub(first_send_us).max(1) as f64 / 1e6;
        Delivery {
            expected,
            delivered: r.delivered,
            live_closed: r.live_closed,
            p50: r.hist.quantile(0.50),
            p90: r.hist.quantile(0.90),
            p99: r.hist.quantile(0.99),
            max: r.hist.max(),
            events_per_s: r.delivered as f64 / span,
            recv_cpu_pct: 100.0 * r.cpu_ns as f64 / r.wall_ns.max(1) as f64,
            recv_wait_pct: 100.0 * r.wait_ns as f64 / r.wall_ns.max(1) as f64,
            reads: r.reads,
            gaps: r.gaps,
        }
    }

    fn loss(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }
}

struct BaseRow {
    d: Delivery,
    cpu_us_per_event: f64,
    short: u64,
    unsent: u64,
    sent_rate: f64,
}

struct Row {
    cfg: Cfg,
    sent_rate: f64,
    d: Delivery,
    daemon_cpu_s: f64,
    daemon_ticks_s: f64,
    /// Share of the measured window the daemon was on a CPU / runnable but waiting for one.
    daemon_cpu_pct: f64,
    daemon_wait_pct: f64,
    rss_idle: u64,
    rss_subs: u64,
    rss_after: u64,
    /// Daemon CPU per subscriber connect (accept, request, route, opening), µs, and connects/s.
    connect_us: f64,
    connect_rate: f64,
    prosody_cpu_pct: f64,
    host_busy_pct: f64,
    echo_p50: u64,
    echo_p99: u64,
    frame_len: usize,
    stalled_closed: usize,
    /// Host TCP memory (KiB) before the subscribers connected and at the end of the window.
    tcp_mem: (u64, u64),
    head_failures: usize,
    base: Option<BaseRow>,
}

impl Row {
    fn us_per_event(&self) -> f64 {
        self.daemon_cpu_s * 1e6 / self.d.delivered.max(1) as f64
    }

    fn bytes_per_sub(&self) -> f64 {
        (self.rss_subs as f64 - self.rss_idle as f64) * 1024.0
            / (self.cfg.n + self.cfg.stalled) as f64
    }

    fn passes(&self) -> bool {
        self.d.loss() == 0
            && self.d.live_closed == 0
            && self.d.p99 < P99_BOUND_US
            && self.sent_rate >= 0.95 * self.cfg.rate
    }
}

struct Bench {
    prosody: Prosody,
    opts: Opts,
}

fn ms(us: u64) -> String {
    let v = us as f64 / 1000.0;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn progress(text: &str) {
    eprintln!("[fanout {:7.1}s] {text}", now_us() as f64 / 1e6);
}

/// Waits until `delivered()` reaches `expected`, or makes no progress for [`STALL`].
fn wait_delivered(expected: u64, delivered: impl Fn() -> u64) {
    let mut last = delivered();
    let mut since = Instant::now();
    loop {
        let d = delivered();
        if d >= expected {
            return;
        }
        if d != last {
            last = d;
            since = Instant::now();
        } else if since.elapsed() >= STALL {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_ready(ctl: &Ctl, handle: &std::thread::JoinHandle<RecvResult>) {
    while !ctl.ready.load(Ordering::SeqCst) {
        assert!(
            !handle.is_finished(),
            "the receiver thread ended before it was ready"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Bench {
    fn daemon(&self, rooms: &[String], subscribers: usize) -> Daemon {
        let extra = if subscribers == 0 {
            String::new()
        } else {
            format!(
                "max_subscribers = {}\nmax_pending_requests = {}",
                subscribers + 64,
                (subscribers + 64).min(100_000)
            )
        };
        // Extra daemon settings to measure (`FANOUT_DAEMON_CONF="fanout_delay_ms = 50"`; `;`
        // separates several).
        let extra = match std::env::var("FANOUT_DAEMON_CONF") {
            Ok(more) => format!("{extra}\n{}", more.replace(';', "\n")),
            Err(_) => extra,
        };
        let refs: Vec<&str> = rooms.iter().map(String::as_str).collect();
        let config = Daemon::config_text(&self.prosody, &refs, &extra)
            .lines()
            .map(|l| {
                if l.starts_with("log_level =") {
                    "log_level = info"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut d = Daemon::spawn_raw(&config);
        d.wait_ready(&refs, Duration::from_secs(60));
        d
    }

    fn prosody_pid(&self) -> u32 {
        self.prosody.pid().expect("Prosody running")
    }

    /// One configuration against the daemon, then (if asked) the same against the baseline.
    fn run(&self, cfg: &Cfg) -> Row {
        progress(&format!("{}: starting", cfg.label));
        let rooms = cfg.room_names();
        let mut daemon = self.daemon(&rooms, cfg.n + cfg.stalled);
        let pid = daemon.pid();
        std::thread::sleep(Duration::from_millis(300));
        let rss_idle = rss_kib(pid).unwrap_or(0);
        let mut poster = Poster::connect(&self.prosody, USER, PASS, &rooms);
        let tcp_mem0 = stats::tcp_mem_kib();
        let ctl = Arc::new(Ctl::default());
        let warm = rooms.len() as u64;
        let k0 = CpuSnap::take(pid, self.prosody_pid());
        let receiver = recv::spawn(daemon.http, cfg.groups(true), warm, ctl.clone());
        wait_ready(&ctl, &receiver);
        let k1 = CpuSnap::take(pid, self.prosody_pid());
        let connects = (cfg.n + cfg.stalled).max(1) as f64;
        let connect_us = (k1.daemon_ns - k0.daemon_ns) as f64 / 1e3 / connects;
        let connect_rate = connects / (k1.at - k0.at).as_secs_f64().max(1e-9);
        std::thread::sleep(Duration::from_millis(500));
        let rss_subs = rss_kib(pid).unwrap_or(0);
        // Warm-up: one message per room (not counted), then the measured window.
        poster.send(&rooms, 0, warm, 50.0);
        std::thread::sleep(Duration::from_millis(300));
        let count = (cfg.rate * cfg.secs).round().max(1.0) as u64;
        ctl.measure.store(true, Ordering::SeqCst);
        let perf = perf_start(pid, &cfg.label);
        let c0 = CpuSnap::take(pid, self.prosody_pid());
        let sent = poster.send(&rooms, warm, count, cfg.rate);
        let expected: u64 = cfg
            .groups(false)
            .iter()
            .enumerate()
            .map(|(g, grp)| sent.per_room[g] * grp.live as u64)
            .sum();
        wait_delivered(expected, || ctl.delivered.load(Ordering::Relaxed));
        let c1 = CpuSnap::take(pid, self.prosody_pid());
        let tcp_mem1 = stats::tcp_mem_kib();
        perf_stop(perf);
        ctl.stop.store(true, Ordering::SeqCst);
        let r = receiver.join().expect("receiver thread");
        poster.wait_echoes(warm + count, Duration::from_secs(5));
        let echo = poster.finish();
        let rss_after = rss_kib(pid).unwrap_or(0);
        daemon.stop();
        let wall = (c1.at - c0.at).as_secs_f64();
        let host_busy = (c1.host.0 - c0.host.0) as f64;
        let host_total = (c1.host.1 - c0.host.1).max(1) as f64;
        let frame_len = (r.data_bytes / r.all_events.max(1)) as usize;
        let mut row = Row {
            cfg: cfg.clone(),
            sent_rate: sent.rate(),
            d: Delivery::from(&r, expected, sent.first_us),
            daemon_cpu_s: (c1.daemon_ns - c0.daemon_ns) as f64 / 1e9,
            daemon_ticks_s: (c1.daemon_ticks - c0.daemon_ticks) as f64 / stats::clk_tck() as f64,
            daemon_cpu_pct: 100.0 * (c1.daemon_ns - c0.daemon_ns) as f64 / 1e9 / wall,
            daemon_wait_pct: 100.0 * (c1.daemon_wait_ns - c0.daemon_wait_ns) as f64 / 1e9 / wall,
            rss_idle,
            rss_subs,
            rss_after,
            connect_us,
            connect_rate,
            prosody_cpu_pct: 100.0 * (c1.prosody_ns - c0.prosody_ns) as f64 / 1e9 / wall,
            host_busy_pct: 100.0 * host_busy / host_total,
            echo_p50: echo.quantile(0.5),
            echo_p99: echo.quantile(0.99),
            frame_len,
            stalled_closed: r.stalled_closed,
            tcp_mem: (tcp_mem0, tcp_mem1),
            head_failures: r.head_failures.len(),
            base: None,
        };
        if !r.head_failures.is_empty() {
            progress(&format!(
                "{} subscribers refused, first: {}",
                r.head_failures.len(),
                r.head_failures[0]
            ));
        }
        progress(&format!(
            "{}: sent {:.1}/s, {:.0} events/s, loss {}, p50 {} p99 {} max {} ms, daemon {:.3} µs/event ({:.3} s CPU; utime+stime {:.2} s; on CPU {:.0}%, waiting for a CPU {:.0}%), rx CPU {:.0}% (waiting {:.0}%), Prosody {:.0}%, host {:.0}%, echo p99 {} ms, {} B/frame, {:.1} events/read",
            cfg.label,
            row.sent_rate,
            row.d.events_per_s,
            row.d.loss(),
            ms(row.d.p50),
            ms(row.d.p99),
            ms(row.d.max),
            row.us_per_event(),
            row.daemon_cpu_s,
            row.daemon_ticks_s,
            row.daemon_cpu_pct,
            row.daemon_wait_pct,
            row.d.recv_cpu_pct,
            row.d.recv_wait_pct,
            row.prosody_cpu_pct,
            row.host_busy_pct,
            ms(row.echo_p99),
            row.frame_len,
            r.delivered as f64 / r.reads.max(1) as f64,
        ));
        if cfg.baseline && self.opts.baseline {
            row.base = Some(self.baseline(cfg, frame_len));
        }
        row
    }

    /// The same subscribers, rate and frame size against the minimal write loop.
    fn baseline(&self, cfg: &Cfg, frame_len: usize) -> BaseRow {
        let b = base::spawn(cfg.n, cfg.rooms);
        let ctl = Arc::new(Ctl::default());
        let receiver = recv::spawn(b.addr, cfg.groups(false), 0, ctl.clone());
        wait_ready(&ctl, &receiver);
        std::thread::sleep(Duration::from_millis(300));
        let count = (cfg.rate * cfg.secs).round().max(1.0) as u64;
        ctl.measure.store(true, Ordering::SeqCst);
        b.plan
            .send(base::Plan {
                first_seq: 0,
                count,
                rate: cfg.rate,
                frame_len,
                max_lag: Duration::from_secs_f64(cfg.secs * 0.5 + 2.0),
            })
            .expect("baseline plan");
        let res = b.result.recv().expect("baseline result");
        wait_delivered(res.written, || ctl.delivered.load(Ordering::Relaxed));
        ctl.stop.store(true, Ordering::SeqCst);
        let r = receiver.join().expect("receiver thread");
        drop(b.plan);
        b.thread.join().ok();
        let events = res.per_group.iter().sum::<u64>();
        let sent_msgs = count - res.unsent;
        let sent_rate = if sent_msgs > 1 {
            (sent_msgs - 1) as f64 / ((res.last_us - res.first_us).max(1) as f64 / 1e6)
        } else {
            0.0
        };
        let row = BaseRow {
            d: Delivery::from(&r, events, res.first_us),
            cpu_us_per_event: res.cpu_ns as f64 / 1e3 / res.written.max(1) as f64,
            short: res.short,
            unsent: res.unsent,
            sent_rate,
        };
        progress(&format!(
            "{} baseline: {:.0} events/s, loss {}, short writes {}, unsent {}, p50 {} p99 {} ms, {:.3} µs/event, rx CPU {:.0}%",
            cfg.label,
            row.d.events_per_s,
            row.d.loss(),
            row.short,
            row.unsent,
            ms(row.d.p50),
            ms(row.d.p99),
            row.cpu_us_per_event,
            row.d.recv_cpu_pct
        ));
        row
    }

    /// How fast Prosody alone delivers groupchat messages to one c2s occupant: the poster
    /// blasts `count` messages unpaced and times their reflections (its own echo).
    fn ceiling(&self, count: u64, with_daemon: bool) -> String {
        let rooms = vec!["fan0".to_string()];
        let daemon = with_daemon.then(|| self.daemon(&rooms, 0));
        let mut poster = Poster::connect(&self.prosody, USER, PASS, &rooms);
        let p0 = stats::proc_cpu_ns(self.prosody_pid()).unwrap_or(0);
        let start = now_us();
        let sent = poster.send(&rooms, 0, count, 0.0);
        let all = poster.wait_echoes(count, Duration::from_secs(60));
        let end = now_us();
        let p1 = stats::proc_cpu_ns(self.prosody_pid()).unwrap_or(0);
        let got = poster.echoes();
        let hist: Hist = poster.finish();
        drop(daemon);
        let secs = (end - start) as f64 / 1e6;
        let line = format!(
            "{count} messages blasted by one c2s user{}: {} reflected back in {secs:.2} s = {:.0} msg/s (sender wrote them at {:.0} msg/s; Prosody CPU {:.0} % of one core; echo latency p50 {} ms, p99 {} ms){}",
            if with_daemon {
                ", daemon joined (Prosody delivers each to the sender and the component)"
            } else {
                " (only occupant)"
            },
            got,
            got as f64 / secs,
            sent.rate(),
            100.0 * (p1 - p0) as f64 / 1e9 / secs,
            ms(hist.quantile(0.5)),
            ms(hist.quantile(0.99)),
            if all { "" } else { " — NOT ALL CAME BACK" }
        );
        progress(&line);
        line
    }

    /// RSS of the daemon with its default configuration and one joined room, no subscribers.
    fn idle_rss(&self) -> (u64, String) {
        let rooms = vec!["fan0".to_string()];
        let mut d = self.daemon(&rooms, 0);
        std::thread::sleep(Duration::from_secs(1));
        let rss = rss_kib(d.pid()).unwrap_or(0);
        let (anon, file, shmem) = stats::rss_parts(d.pid());
        let pss = stats::pss_kib(d.pid());
        let parts: Vec<String> = stats::rss_by_mapping(d.pid())
            .iter()
            .take(6)
            .map(|(name, kib)| format!("{name} {kib}"))
            .collect();
        let limit = stats::nofile_limit(d.pid()).unwrap_or(0);
        d.stop();
        let bin = testkit::daemon::bin();
        let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
        (
            rss,
            format!(
                "of which anonymous {anon} KiB, file-backed {file} KiB, shared {shmem} KiB; PSS {pss} KiB; largest mappings (KiB): {}; daemon binary {} ({} KiB); its open-file limit {limit}",
                parts.join(", "),
                bin.display(),
                size / 1024
            ),
        )
    }
}

/// `FANOUT_PERF=<dir>`: records the daemon with `perf record` during each measured window,
/// into `<dir>/<configuration>.perf.data` (for profiling; build the daemon with symbols and
/// point `MUC_EVENTSOURCE_BIN` at it, see docs/BENCHMARKS.md).
fn perf_start(pid: u32, label: &str) -> Option<std::process::Child> {
    let dir = std::env::var_os("FANOUT_PERF")?;
    let name: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let out = std::path::Path::new(&dir).join(format!("{name}.perf.data"));
    let child = std::process::Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "2999", "-g", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| progress(&format!("FANOUT_PERF: cannot run perf: {e}")))
        .ok()?;
    std::thread::sleep(Duration::from_millis(300));
    progress(&format!("perf recording pid {pid} into {}", out.display()));
    Some(child)
}

fn perf_stop(perf: Option<std::process::Child>) {
    if let Some(mut child) = perf {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let prosody = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "prosody"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    format!(
        "{cpus} CPUs ({model}), {:.1} GiB RAM, Linux {kernel}, Prosody {prosody}",
        mem as f64 / 1048576.0
    )
}

fn print_rows(rows: &[Row]) {
    println!(
        "| configuration | offered msg/s | sent msg/s | delivered msg/s | events/s | loss | p50 ms | p90 ms | p99 ms | max ms | daemon CPU s / 1000 ev | daemon µs/ev | baseline µs/ev | ratio | RSS idle → with subs KiB | B/sub | daemon CPU % / runq wait % | rx CPU % / runq wait % | Prosody CPU % | host busy % |"
    );
    println!(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let per_room = (r.cfg.n / r.cfg.rooms).max(1) as f64;
        let (base, ratio) = match &r.base {
            Some(b) => (
                format!("{:.2}", b.cpu_us_per_event),
                format!("{:.2}", r.us_per_event() / b.cpu_us_per_event.max(1e-9)),
            ),
            None => ("–".into(), "–".into()),
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.0} | {} | {} | {} | {} | {} | {:.5} | {:.2} | {base} | {ratio} | {} → {} | {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} | {:.0} |",
            r.cfg.label,
            r.cfg.rate,
            r.sent_rate,
            r.d.events_per_s / per_room,
            r.d.events_per_s,
            r.d.loss(),
            ms(r.d.p50),
            ms(r.d.p90),
            ms(r.d.p99),
            ms(r.d.max),
            r.daemon_cpu_s / (r.d.delivered.max(1) as f64 / 1000.0),
            r.us_per_event(),
            r.rss_idle,
            r.rss_subs,
            r.bytes_per_sub(),
            r.daemon_cpu_pct,
            r.daemon_wait_pct,
            r.d.recv_cpu_pct,
            r.d.recv_wait_pct,
            r.prosody_cpu_pct,
            r.host_busy_pct,
        );
    }
}

fn print_details(rows: &[Row]) {
    println!(
        "| configuration | delivered / expected | subs dropped | gaps | events per read | frame B | daemon CPU s (schedstat / utime+stime) | RSS after KiB | host TCP mem MiB before → end | Prosody echo p50 / p99 ms | daemon CPU µs per connect | connects/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} / {} | {} | {} | {:.2} | {} | {:.3} / {:.2} | {} | {:.1} → {:.1} | {} / {} | {:.1} | {:.0} |",
            r.cfg.label,
            r.d.delivered,
            r.d.expected,
            r.d.live_closed,
            r.d.gaps,
            r.d.delivered as f64 / r.d.reads.max(1) as f64,
            r.frame_len,
            r.daemon_cpu_s,
            r.daemon_ticks_s,
            r.rss_after,
            r.tcp_mem.0 as f64 / 1024.0,
            r.tcp_mem.1 as f64 / 1024.0,
            ms(r.echo_p50),
            ms(r.echo_p99),
            r.connect_us,
            r.connect_rate,
        );
    }
}

fn print_baselines(rows: &[Row]) {
    println!(
        "| configuration | baseline sent msg/s | events/s | loss | unsent (loop behind) | p50 ms | p99 ms | write-loop µs/ev | rx CPU % |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        if let Some(b) = &r.base {
            println!(
                "| {} | {:.1} | {:.0} | {} | {} | {} | {} | {:.2} | {:.0} |",
                r.cfg.label,
                b.sent_rate,
                b.d.events_per_s,
                b.d.loss() + b.short,
                b.unsent,
                ms(b.d.p50),
                ms(b.d.p99),
                b.cpu_us_per_event,
                b.d.recv_cpu_pct
            );
        }
    }
}

fn main() {
    let started = Instant::now();
    now_us();
    let opts = Opts::parse();
    let niced = opts.nice.map(|n| (n, stats::set_nice(n)));
    // Prosody logs every stanza at `debug` (the harness default), which would make Prosody,
    // not the daemon, the subject of the benchmark.
    if std::env::var_os("PROSODY_LOG_LEVEL").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("PROSODY_LOG_LEVEL", "warn") };
    }
    let biggest = opts
        .ns
        .iter()
        .copied()
        .chain([opts.search_n, opts.rooms_n, 150])
        .max()
        .unwrap_or(100);
    let nofile = stats::raise_nofile((2 * biggest + 1000) as u64);
    println!("# muc-eventsource fan-out benchmark");
    println!();
    println!("machine: {}", machine());
    if let Ok(more) = std::env::var("FANOUT_DAEMON_CONF") {
        println!("daemon settings added (FANOUT_DAEMON_CONF): {more}");
    }
    println!(
        "mode: {}; {} s of sending per point; open-file limit {nofile} (inherited by Prosody and the daemon)",
        if opts.quick { "quick" } else { "full" },
        opts.secs
    );
    if let Some((n, ok)) = niced {
        println!(
            "nice {n} for the bench, Prosody and the daemon: {}",
            if ok { "set" } else { "NOT ALLOWED" }
        );
    }
    if (nofile as usize) < 2 * biggest + 200 {
        println!(
            "WARNING: the open-file limit is too low for N = {biggest} (need ~{})",
            2 * biggest + 200
        );
    }
    let prosody = Prosody::start();
    let max_rooms = opts.rooms.iter().copied().max().unwrap_or(1).max(1);
    let names: Vec<String> = (0..max_rooms).map(|i| format!("fan{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    prosody.create_rooms(&refs);
    prosody.register(USER, PASS);
    let bench = Bench { prosody, opts };
    let o = &bench.opts;

    let mut ceiling = Vec::new();
    if o.wants("ceiling") {
        ceiling.push(bench.ceiling(if o.quick { 2000 } else { 10_000 }, false));
        ceiling.push(bench.ceiling(if o.quick { 2000 } else { 10_000 }, true));
    }
    let mut idle = None;
    if o.wants("idle") {
        idle = Some(bench.idle_rss());
    }
    let mut rows = Vec::new();
    if o.wants("grid") {
        for &n in &o.ns {
            for &rate in &o.rates {
                let mut cfg = Cfg::new(n, 1, rate, o.secs);
                cfg.baseline = true;
                rows.push(bench.run(&cfg));
            }
        }
    }
    if o.wants("rooms") {
        for &r in &o.rooms {
            let mut cfg = Cfg::new(o.rooms_n, r, 100.0, o.secs);
            cfg.baseline = true;
            rows.push(bench.run(&cfg));
        }
    }
    let mut stalled = Vec::new();
    if o.wants("stalled") {
        let control = Cfg::new(100, 1, 500.0, o.stalled_secs);
        stalled.push(bench.run(&control));
        let mut cfg = Cfg::new(100, 1, 500.0, o.stalled_secs);
        cfg.stalled = 50;
        cfg.label = "N=100 live + 50 stalled @ 500 msg/s".into();
        stalled.push(bench.run(&cfg));
    }
    let mut search = Vec::new();
    let mut best: Option<f64> = None;
    if o.wants("search") {
        let n = o.search_n;
        let point = |rate: f64| bench.run(&Cfg::new(n, 1, rate, o.secs));
        let mut lo: Option<f64> = None;
        let mut hi: Option<f64> = None;
        let mut rate = 100.0;
        // Doubling from 100 msg/s until a failure (halving instead while 100 fails), then
        // bisection between the last pass and the first failure.
        while rate <= o.search_max && rate >= 10.0 {
            let row = point(rate);
            let pass = row.passes();
            search.push(row);
            if pass {
                lo = Some(rate);
                if hi.is_some() {
                    break;
                }
                rate *= 2.0;
            } else {
                hi = Some(rate);
                if lo.is_some() {
                    break;
                }
                rate /= 2.0;
            }
        }
        if let (Some(l), Some(h)) = (lo, hi) {
            let (mut l, mut h) = (l, h);
            for _ in 0..3 {
                let mid = ((l + h) / 2.0 / 10.0).round() * 10.0;
                if mid <= l || mid >= h {
                    break;
                }
                let row = point(mid);
                if row.passes() {
                    l = mid;
                } else {
                    h = mid;
                }
                search.push(row);
            }
            lo = Some(l);
        }
        best = lo;
    }

    println!();
    if !ceiling.is_empty() {
        println!("## Prosody's own ceiling (no subscribers)");
        println!();
        for l in &ceiling {
            println!("- {l}");
        }
        println!();
    }
    if let Some((rss, what)) = &idle {
        println!("## Idle");
        println!();
        println!(
            "- daemon RSS, default configuration, one joined room, no subscribers: {rss} KiB ({:.2} MiB); {what}",
            *rss as f64 / 1024.0
        );
        println!();
    }
    if !rows.is_empty() {
        println!(
            "## Fan-out (one room unless stated; multi-room: the rate is split round-robin over the rooms)"
        );
        println!();
        print_rows(&rows);
        println!();
        print_details(&rows);
        println!();
        if rows.iter().any(|r| r.base.is_some()) {
            println!(
                "## Baseline: one write(2) per event per socket, same receiver, same rate, same frame size"
            );
            println!();
            print_baselines(&rows);
            println!();
        }
    }
    if !stalled.is_empty() {
        println!("## Stalled subscribers (never read after the head)");
        println!();
        print_rows(&stalled);
        println!();
        print_details(&stalled);
        println!();
        for r in &stalled {
            if r.cfg.stalled > 0 {
                println!(
                    "- {}: {} of {} stalled subscribers had been disconnected by the daemon by the end; live loss {}, live p99 {} ms; host TCP memory {:.1} → {:.1} MiB",
                    r.cfg.label,
                    r.stalled_closed,
                    r.cfg.stalled,
                    r.d.loss(),
                    ms(r.d.p99),
                    r.tcp_mem.0 as f64 / 1024.0,
                    r.tcp_mem.1 as f64 / 1024.0,
                );
            }
        }
        println!();
    }
    if !search.is_empty() {
        println!(
            "## Highest rate at N = {} with zero loss and p99 < {} ms",
            o.search_n,
            P99_BOUND_US / 1000
        );
        println!();
        print_rows(&search);
        println!();
        print_details(&search);
        println!();
        println!(
            "- pass = no loss, no subscriber dropped, p99 < 100 ms, sent ≥ 95 % of offered. Highest passing rate: {}",
            best.map_or("none".into(), |b| format!("{b} msg/s"))
        );
        for r in &search {
            println!(
                "  - {} msg/s: {}",
                r.cfg.rate,
                if r.passes() { "pass" } else { "fail" }
            );
        }
        println!();
    }
    let refused: usize = rows
        .iter()
        .chain(&stalled)
        .chain(&search)
        .map(|r| r.head_failures)
        .sum();
    if refused > 0 {
        println!("WARNING: {refused} subscriber connections were refused (see stderr)");
    }
    println!("total bench time: {:.0} s", started.elapsed().as_secs_f64());
    // The fan-out must not lose events for subscribers that read (the search's overloaded
    // points are allowed to: they are how the search finds its limit).
    let lossy: Vec<String> = rows
        .iter()
        .chain(&stalled)
        .filter(|r| r.d.loss() > 0 || r.d.live_closed > 0)
        .map(|r| {
            format!(
                "{} (lost {}, live subscribers dropped {})",
                r.cfg.label,
                r.d.loss(),
                r.d.live_closed
            )
        })
        .collect();
    if !lossy.is_empty() {
        println!(
            "FAILED: events lost by reading subscribers in {}",
            lossy.join("; ")
        );
        std::process::exit(1);
    }
}
