//! No process outlives a test binary: the guard that checks it, and a graceful stop for
//! servers that fork workers (nginx).
//!
//! [`arm`] (called by [`crate::TempDir::new`], which every harness resource that starts a
//! process creates first) makes the test process a child subreaper, so a grandchild whose
//! parent died (an nginx worker after its master was killed, a daemonized helper) becomes our
//! child instead of init's and stays visible; and registers an `atexit` check that runs when
//! the test binary exits: every child still alive after a grace period is listed on stderr,
//! killed, and the binary exits with status 101, so `cargo test` fails and the next run starts
//! clean. [`assert_no_children`] is the same check for one test to call itself.

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::Once;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long children get to exit on their own at the end (Chromium's crash handler leaves
/// shortly after the browser); `PROCS_EXIT_GRACE_MS` overrides it.
pub const EXIT_GRACE: Duration = Duration::from_secs(10);

static ARM: Once = Once::new();

/// Arms the end-of-binary check (once per process; later calls do nothing).
pub fn arm() {
    ARM.call_once(|| {
        // SAFETY: plain prctl/atexit calls with valid arguments; the handler is a plain
        // `extern "C" fn` that never unwinds.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            libc::atexit(check_at_exit);
        }
    });
}

/// A child of this process: pid, state letter from `/proc/<pid>/stat` (`Z` = zombie) and
/// its command line.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub state: char,
    pub cmdline: String,
}

/// The direct children of this process, from `/proc` (zombies included).
pub fn children() -> Vec<Proc> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(me) {
            out.push(Proc {
                pid,
                state,
                cmdline: cmdline(&entry.path()),
            });
        }
    }
    out
}

fn cmdline(proc_dir: &Path) -> String {
    std::fs::read(proc_dir.join("cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split('\0')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Waits up to `grace` for every child to exit, reaping zombies (a child a test dropped
/// without waiting, or an orphan handed to us as subreaper); returns the ones still alive.
/// Only for the end of a test binary (or a test that runs alone): it reaps any child.
pub fn leftover_children(grace: Duration) -> Vec<Proc> {
    let deadline = Instant::now() + grace;
    loop {
        let mut alive = Vec::new();
        for p in children() {
            if p.state == 'Z' {
                // SAFETY: waitpid on a specific pid, non-blocking.
                unsafe {
                    libc::waitpid(p.pid, std::ptr::null_mut(), libc::WNOHANG);
                }
            } else {
                alive.push(p);
            }
        }
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        sleep(Duration::from_millis(50));
    }
}

/// Panics, listing them, if children of this process are still alive after `grace`.
pub fn assert_no_children(grace: Duration) {
    let alive = leftover_children(grace);
    assert!(
        alive.is_empty(),
        "processes left behind by the test: {}",
        describe(&alive)
    );
}

fn describe(procs: &[Proc]) -> String {
    procs
        .iter()
        .map(|p| format!("[{} {}] {}", p.pid, p.state, p.cmdline))
        .collect::<Vec<_>>()
        .join("; ")
}

extern "C" fn check_at_exit() {
    // Never unwind out of an `extern "C"` function.
    let leftovers = std::panic::catch_unwind(|| {
        let grace = std::env::var("PROCS_EXIT_GRACE_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(EXIT_GRACE, Duration::from_millis);
        let alive = leftover_children(grace);
        for p in &alive {
            // SAFETY: signalling a pid that is our own child.
            unsafe {
                libc::kill(p.pid, libc::SIGKILL);
            }
        }
        let _ = leftover_children(Duration::from_secs(2));
        alive
    })
    .unwrap_or_default();
    if !leftovers.is_empty() {
        eprintln!(
            "\nerror: the test binary left {} process(es) running (now killed): {}\n\
             Stop every process a test starts, and wait for it (see testkit/src/procs.rs).",
            leftovers.len(),
            describe(&leftovers)
        );
        // SAFETY: ends the process at once with a failure status (exit() is already running).
        unsafe { libc::_exit(101) };
    }
}

/// Stops a server that forks workers (nginx) and waits for all of them: `graceful` (nginx:
/// `QUIT`) and up to 5 s, then `TERM` and up to 5 s, then `KILL` to its whole process group
/// (start it with `process_group(0)`). Returns the master's exit status; panics if a process
/// of its group is still alive at the end.
pub fn stop_process_group(child: &mut Child, graceful: i32) -> Option<ExitStatus> {
    let pid = child.id() as i32;
    let mut status = None;
    for (signal, wait) in [
        (graceful, Duration::from_secs(5)),
        (libc::SIGTERM, Duration::from_secs(5)),
        (libc::SIGKILL, Duration::from_secs(5)),
    ] {
        if status.is_none() {
            // SAFETY: signalling our own child's process group (pgid = its pid).
            unsafe { libc::kill(-pid, signal) };
            let deadline = Instant::now() + wait;
            while status.is_none() && Instant::now() < deadline {
                status = child.try_wait().ok().flatten();
                sleep(Duration::from_millis(20));
            }
        }
    }
    // The master reaps its workers before it exits; make sure none outlived it.
    let deadline = Instant::now() + Duration::from_secs(5);
    // SAFETY: signal 0 only checks whether the group still has members.
    while unsafe { libc::kill(-pid, 0) } == 0 {
        if Instant::now() >= deadline {
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            panic!("process group {pid} still has members 5 s after its leader exited");
        }
        // Workers handed to us (subreaper) after the master died are zombies of its group.
        // SAFETY: non-blocking wait for any child in that process group only.
        while unsafe { libc::waitpid(-pid, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        sleep(Duration::from_millis(20));
    }
    status
}

static TIE_TO_PARENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, [`tie_to_parent`] puts each Prosody and daemon the harness starts in its own
/// process group (a terminal's Ctrl-C reaches only us, and we stop them in order) and has the
/// kernel send it `SIGTERM` when we die (`PR_SET_PDEATHSIG`), even by `SIGKILL`. For the
/// demo, which spawns from its main thread only: the kernel ties the signal to the spawning
/// thread, so tests (which spawn from short-lived test threads) leave this off.
pub fn tie_children_to_this_process() {
    TIE_TO_PARENT.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Applies [`tie_children_to_this_process`] to `command` when it is on; otherwise nothing.
pub fn tie_to_parent(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    if !TIE_TO_PARENT.load(std::sync::atomic::Ordering::Relaxed) {
        return command;
    }
    let parent = std::process::id() as libc::pid_t;
    command.process_group(0);
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, getppid).
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
            // The parent may have died before the prctl: then nobody would signal us.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        })
    }
}
