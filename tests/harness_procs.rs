//! The harness's process guard (`testkit/src/procs.rs`) does what the other tests rely on: a
//! test binary that leaves a child running fails at exit (and the child is killed), an orphaned
//! grandchild is adopted and seen, and a server's whole process group is stopped and waited for.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{TempDir, procs};

/// Run only by [`a_binary_that_leaves_a_child_fails_at_exit_and_the_child_is_killed`], in a
/// copy of this binary: leaves `sleep` running and ends.
#[test]
#[ignore = "run by another test, in its own process"]
fn leaks_a_child() {
    if std::env::var_os("HARNESS_PROCS_LEAK").is_none() {
        return;
    }
    let _dir = TempDir::new("muc-es-procs-leak"); // arms the guard, as every harness resource
    let child = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    println!("LEAKED {}", child.id());
    // The leak is the point: never waited for.
    std::mem::forget(child);
}

#[test]
fn a_binary_that_leaves_a_child_fails_at_exit_and_the_child_is_killed() {
    let out = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--ignored", "--exact", "leaks_a_child", "--nocapture"])
        .env("HARNESS_PROCS_LEAK", "1")
        .env("PROCS_EXIT_GRACE_MS", "500")
        .stdin(Stdio::null())
        .output()
        .expect("run this binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("left 1 process(es) running") && stderr.contains("sleep 60"),
        "{stderr}"
    );
    let pid: i32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LEAKED "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no LEAKED line: {stdout}"));
    // The guard killed it and its parent (the copy) is gone: nothing of it may run.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.starts_with("sleep"))
    {
        assert!(Instant::now() < deadline, "sleep {pid} still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_orphaned_grandchild_is_adopted_and_a_process_group_is_stopped_whole() {
    procs::arm();
    // sh starts a background sleep (its child, our grandchild) and waits.
    let mut shell = Command::new("sh")
        .args(["-c", "sleep 60 & echo $!; wait"])
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn sh");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(shell.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("read the grandchild's pid");
    let grandchild: i32 = line.trim().parse().expect("a pid");
    assert!(
        !procs::children().iter().any(|p| p.pid == grandchild),
        "sleep is sh's child while sh runs"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(shell.id() as i32, libc::SIGKILL) };
    let _ = shell.wait();
    // The orphan is ours now (subreaper), not init's: visible to the guard.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !procs::children().iter().any(|p| p.pid == grandchild) {
        assert!(Instant::now() < deadline, "the orphan was not adopted");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A group whose leader waits for its member: both stopped, both gone.
    let mut server = Command::new("sh")
        .args([
            "-c",
            "trap 'kill $pid; wait; exit 0' QUIT; sleep 60 & pid=$!; wait",
        ])
        .process_group(0)
        .spawn()
        .expect("spawn sh");
    std::thread::sleep(Duration::from_millis(200));
    let group = server.id() as i32;
    let status = procs::stop_process_group(&mut server, libc::SIGQUIT);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    // SAFETY: signal 0 only asks whether the group has members.
    assert_ne!(unsafe { libc::kill(-group, 0) }, 0, "the group has members");

    // Clean up the adopted orphan (it is in the first shell's group).
    // SAFETY: signalling our own (adopted) child, then reaping it.
    unsafe {
        libc::kill(grandchild, libc::SIGKILL);
        libc::waitpid(grandchild, std::ptr::null_mut(), 0);
    }
}
