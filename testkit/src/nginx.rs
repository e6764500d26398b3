//! nginx (Debian's package) as a reverse proxy in front of the daemon: started in its own
//! process group from a config the test writes, stopped gracefully (`QUIT`) with its worker
//! waited for, so no nginx process outlives the test.

use crate::TempDir;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// How long nginx may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Nginx(Option<Child>);

impl Nginx {
    /// Writes `conf_text` to `<dir>/nginx.conf`, starts nginx with `dir` as its prefix and waits
    /// until it listens on 127.0.0.1:`port`.
    pub fn start(dir: &TempDir, conf_text: &str, port: u16) -> Nginx {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx not found: install Debian's nginx (apt-get install -y nginx)");
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, conf_text)
            .unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
        let nginx = Nginx(Some(
            Command::new(bin)
                .args([
                    "-p",
                    &dir.path().display().to_string(),
                    "-c",
                    &conf.display().to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start nginx"),
        ));
        crate::wait_for_listener(
            SocketAddr::from(([127, 0, 0, 1], port)),
            START_TIMEOUT,
            &format!("nginx (files in {})", dir.path().display()),
        );
        nginx
    }

    /// `QUIT` (nginx's graceful shutdown), waiting for the master and its worker to exit.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.0.take()?;
        crate::procs::stop_process_group(&mut child, libc::SIGQUIT)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
