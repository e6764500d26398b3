//! The whole product on one machine, throwaway: starts a private Prosody on loopback (random
//! ports, temp dir), creates a room `lobby`, starts the release `muc-eventsource` against it,
//! prints every URL to open (room index, live view, stream, metrics) and posts a message to
//! the room every two seconds until it is stopped.
//!
//!     cargo build --release && cargo run --release --example demo [-- --public]
//!
//! Owns the demo's lifetime: it picks a free HTTP port, and on Ctrl-C, `SIGTERM`, `SIGHUP` or
//! the death of its parent it stops the daemon and Prosody and removes every file it made
//! (all under one temp dir). Its children run in their own process groups and get `SIGTERM`
//! from the kernel should the demo itself be killed. Needs Debian's `prosody` (installed with
//! apt-get when missing and running as root). `--help` lists the options.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use testkit::daemon::Daemon;
use testkit::prosody::Prosody;
use testkit::xmpp::XmppClient;
use testkit::{TempDir, procs};

const HELP: &str = "\
demo: a throwaway Prosody, a room `lobby`, muc-eventsource streaming it, a message every 2 s.

usage: cargo run --release --example demo [-- OPTIONS]

options:
  --public          listen on all interfaces (0.0.0.0), so a phone or a wall display on the
                    LAN can open the pages; the URLs printed use this machine's LAN address
  --listen ADDR     HTTP address: IP:PORT, IP (free port from 8080 up) or PORT (127.0.0.1)
  -h, --help        this text

environment:
  DEMO_LISTEN=ADDR  same as --listen, e.g. DEMO_LISTEN=0.0.0.0:8080 (the flags win)

Default: 127.0.0.1, port 8080 or the next free one up to 8099. Ctrl-C, SIGTERM or SIGHUP (or
the end of the parent process) stops Prosody and the daemon and removes the demo's files.
";

/// Where the demo's files live: `<tmp>/muc-eventsource-demo-<pid>-<random>`.
const DIR_PREFIX: &str = "muc-eventsource-demo";
/// Default port, and the last one tried when it is taken.
const PORTS: std::ops::RangeInclusive<u16> = 8080..=8099;

/// The signal that asked us to stop (0 = none yet).
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    STOP.store(signal, Ordering::SeqCst);
}

/// What the user asked for: an exact address, or an interface with a port to pick.
enum Listen {
    Exact(SocketAddr),
    Pick(IpAddr),
}

fn main() {
    let listen = match parse_args() {
        Ok(listen) => listen,
        Err(why) => fail(&why),
    };
    catch_stop_signals();
    let listen = match bind_check(listen) {
        Ok(addr) => addr,
        Err(why) => fail(&why),
    };
    ensure_prosody();
    remove_stale_dirs();
    // Every file below (Prosody's data and logs, the daemon's config and log) goes into this
    // one directory: the harness makes its temp dirs under TMPDIR.
    let top = TempDir::new(DIR_PREFIX);
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("TMPDIR", top.path()) };
    procs::tie_children_to_this_process();
    let top_path = top.path().to_path_buf();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // The release profile aborts on panic: no destructor runs, so clean up here.
        default_hook(info);
        stop_children();
        let _ = std::fs::remove_dir_all(&top_path);
    }));

    let status = run(listen, &top);
    drop(top);
    std::process::exit(status);
}

/// Runs the demo until a stop signal or a dead daemon; returns the exit status. Prosody and
/// the daemon are stopped (and their dirs removed) when this returns.
fn run(listen: SocketAddr, top: &TempDir) -> i32 {
    let prosody = Prosody::start();
    prosody.create_rooms(&["lobby"]);
    prosody.register("demo", "demo-pass");
    let config = Daemon::config_text(&prosody, &["lobby"], "")
        .lines()
        .map(|l| {
            if l.starts_with("listen =") {
                format!("listen = {listen}")
            } else if l.starts_with("log_level =") {
                "log_level = info".into()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut daemon = Daemon::spawn_raw(&config);
    daemon.wait_ready(&["lobby"], Duration::from_secs(15));
    let mut poster = XmppClient::connect(&prosody, "demo", "demo-pass");
    poster.join("lobby", "demo");
    print_urls(listen, &prosody, &daemon, top);

    let mut next_post = Instant::now() + Duration::from_secs(2);
    let mut n = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let signal = STOP.load(Ordering::SeqCst);
        if signal != 0 {
            println!("demo: signal {signal}: stopping the daemon and Prosody…");
            break;
        }
        if daemon.try_wait().is_some() {
            eprintln!("demo: the daemon stopped:\n{}", daemon.log_tail_block());
            return 1;
        }
        if Instant::now() >= next_post {
            n += 1;
            poster.send_groupchat("lobby", &format!("demo message {n} 🎉"));
            next_post += Duration::from_secs(2);
        }
    }
    let status = daemon.stop();
    drop(poster);
    drop(prosody);
    println!(
        "demo: stopped (daemon {status}); removed {}",
        top.path().display()
    );
    0
}

fn print_urls(listen: SocketAddr, prosody: &Prosody, daemon: &Daemon, top: &TempDir) {
    let public = listen.ip().is_unspecified();
    let host = if public {
        match lan_address() {
            Some(ip) => SocketAddr::new(ip, listen.port()).to_string(),
            None => format!("<this-machine's-address>:{}", listen.port()),
        }
    } else {
        listen.to_string()
    };
    println!();
    println!(
        "muc-eventsource is streaming the room lobby@{} (a message every 2 s). Open:",
        prosody.muc
    );
    println!();
    println!("  room index    http://{host}/");
    println!("  live view     http://{host}/view/lobby");
    println!("  wall display  http://{host}/view/lobby?kiosk=1");
    println!("  stream        http://{host}/eventsource/lobby");
    println!("  metrics       http://{host}/metrics");
    println!("  health        http://{host}/healthz");
    println!();
    if public {
        println!(
            "Listening on all interfaces ({listen}); on this machine also http://127.0.0.1:{}/",
            listen.port()
        );
    } else {
        println!(
            "Listening on {listen} only; for phones and displays on the LAN: --public \
             (or DEMO_LISTEN=0.0.0.0:{})",
            listen.port()
        );
    }
    println!("Try: curl -N http://{listen}/eventsource/lobby");
    println!(
        "Prosody c2s (user demo, password demo-pass) on 127.0.0.1:{}; daemon log {}",
        prosody.c2s_port,
        daemon.dir().join("daemon.log").display()
    );
    println!(
        "Demo files in {} (removed on exit). Ctrl-C, SIGTERM or SIGHUP stops everything.",
        top.path().display()
    );
    println!();
}

/// This machine's address on its default route, for URLs another device can open. A
/// connected UDP socket only picks the source address: connect() sends nothing.
fn lan_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?; // TEST-NET-1, never reached
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn parse_args() -> Result<Listen, String> {
    let mut listen = std::env::var("DEMO_LISTEN")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| parse_listen(&v).map_err(|e| format!("DEMO_LISTEN: {e}")))
        .transpose()?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--public" => listen = Some(Listen::Pick(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
            "--listen" => {
                let value = args
                    .next()
                    .ok_or("--listen needs an address, e.g. 0.0.0.0:8080")?;
                listen = Some(parse_listen(&value).map_err(|e| format!("--listen: {e}"))?);
            }
            other => return Err(format!("unknown option `{other}`; see --help")),
        }
    }
    Ok(listen.unwrap_or(Listen::Pick(IpAddr::V4(Ipv4Addr::LOCALHOST))))
}

fn parse_listen(text: &str) -> Result<Listen, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Listen::Exact(addr));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Listen::Pick(ip));
    }
    if let Ok(port) = text.parse::<u16>() {
        return Ok(Listen::Exact(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
        )));
    }
    Err(format!(
        "expected IP:PORT, IP or PORT (e.g. 0.0.0.0:8080), found `{text}`"
    ))
}

/// The address to listen on, checked by binding it (and letting it go) before anything
/// starts: a taken default port moves on to the next one, a taken chosen one is an error that
/// says how to choose another.
fn bind_check(listen: Listen) -> Result<SocketAddr, String> {
    match listen {
        Listen::Exact(addr) => TcpListener::bind(addr).map(|_| addr).map_err(|e| {
            format!(
                "cannot listen on {addr}: {e} (another program has that port: `ss -ltnp \
                 'sport = :{port}'` shows which); choose another with --listen {ip}:PORT or \
                 DEMO_LISTEN={ip}:PORT",
                port = addr.port(),
                ip = addr.ip()
            )
        }),
        Listen::Pick(ip) => {
            for port in PORTS {
                let addr = SocketAddr::new(ip, port);
                if TcpListener::bind(addr).is_ok() {
                    if port != *PORTS.start() {
                        println!(
                            "demo: port {} is taken on {ip}; using {port} (choose one with \
                             --listen {ip}:PORT or DEMO_LISTEN={ip}:PORT)",
                            PORTS.start()
                        );
                    }
                    return Ok(addr);
                }
            }
            Err(format!(
                "ports {}-{} are all taken on {ip}; choose one with --listen {ip}:PORT or \
                 DEMO_LISTEN={ip}:PORT",
                PORTS.start(),
                PORTS.end()
            ))
        }
    }
}

/// Ctrl-C, SIGTERM and SIGHUP set [`STOP`]; the death of our parent sends us SIGTERM.
fn catch_stop_signals() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(signal, handler as libc::sighandler_t);
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
    }
}

/// SIGTERM to every child still running, and a short wait for them (the panic path).
fn stop_children() {
    for child in procs::children() {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.pid, libc::SIGTERM) };
    }
    let _ = procs::leftover_children(Duration::from_secs(5));
}

/// Removes the dirs of earlier demos that were killed outright (SIGKILL leaves no chance to
/// clean up): `muc-eventsource-demo-<pid>-…` whose pid no longer runs.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            println!(
                "demo: removed {} (left by a killed demo)",
                entry.path().display()
            );
        }
    }
}

/// Installs Debian's prosody when it is missing and we are root; otherwise says how.
fn ensure_prosody() {
    if Command::new("prosody").arg("--help").output().is_ok() {
        return;
    }
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        fail("Prosody is not installed: run `sudo apt-get install -y prosody` first");
    }
    eprintln!("demo: installing Debian's prosody (apt-get install -y prosody)…");
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "prosody"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        fail("apt-get install prosody failed");
    }
    // The package enables and starts a system-wide Prosody; the demo runs its own.
    let stopped = Command::new("systemctl")
        .args(["disable", "--now", "prosody"])
        .status()
        .is_ok_and(|s| s.success());
    eprintln!(
        "demo: note: Debian's prosody package starts a system-wide Prosody (ports 5222, 5269); {}",
        if stopped {
            "stopped and disabled it (`systemctl enable --now prosody` brings it back)"
        } else {
            "stop it with `systemctl disable --now prosody` if you do not want it"
        }
    );
}

fn fail(why: &str) -> ! {
    eprintln!("demo: {why}");
    std::process::exit(2);
}
