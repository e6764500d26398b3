//! One face for the XMPP servers the tests run against ([`Prosody`] and [`Ejabberd`]): what the
//! daemon's config and the test client need (addresses, component secret, MUC service) and the
//! actions tests take on the server (register users, create rooms, restart, stop).
//!
//! [`Kind::start`] starts either with MUC archives on (so room messages carry stanza-ids on
//! both); tests written once against `&dyn Server` run on both (see `tests/servers/servers.rs`).

use crate::ejabberd::Ejabberd;
use crate::prosody::Prosody;
use std::net::SocketAddr;

/// An XMPP server with c2s, a MUC service and the daemon's component, bound to 127.0.0.1.
pub trait Server {
    /// `prosody` or `ejabberd` (for messages).
    fn name(&self) -> &'static str;
    /// The c2s virtual host: `localhost`.
    fn domain(&self) -> &str;
    /// The MUC service: `conference.localhost`.
    fn muc(&self) -> &str;
    /// The external (XEP-0114) component the daemon logs in as: `sse.localhost`.
    fn component(&self) -> &str;
    /// The component's shared secret.
    fn secret(&self) -> &str;
    /// Where clients log in (plaintext c2s, SASL PLAIN).
    fn c2s_addr(&self) -> SocketAddr;
    /// Where the daemon connects as a component.
    fn component_addr(&self) -> SocketAddr;
    /// Registers `user@localhost` with `pass`; an existing account is fine.
    fn register(&self, user: &str, pass: &str);
    /// Creates persistent public rooms, owned by [`crate::prosody::ROOM_OWNER`] (join as it to
    /// configure them). muc-eventsource never creates rooms: call this before the daemon.
    fn create_rooms(&self, rooms: &[&str]);
    /// Stops the server and starts it again on the same ports and data.
    fn restart(&mut self);
    /// Stops the server (idempotent).
    fn stop(&mut self);
    /// The server's own log so far.
    fn log(&self) -> String;

    /// `node@conference.localhost`.
    fn room_jid(&self, node: &str) -> String {
        format!("{node}@{}", self.muc())
    }
}

/// Which server to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Prosody,
    Ejabberd,
}

impl Kind {
    /// Starts the server with room archives (Prosody: `mod_muc_mam`; ejabberd: `mod_mam` and
    /// `mam: true` in the default room options), so message ids are the rooms' stanza-ids.
    pub fn start(self) -> Box<dyn Server> {
        match self {
            Kind::Prosody => Box::new(Prosody::start_with("", "modules_enabled = { \"muc_mam\" }")),
            Kind::Ejabberd => Box::new(Ejabberd::start()),
        }
    }
}

impl Server for Prosody {
    fn name(&self) -> &'static str {
        "prosody"
    }
    fn domain(&self) -> &str {
        &self.domain
    }
    fn muc(&self) -> &str {
        &self.muc
    }
    fn component(&self) -> &str {
        &self.component
    }
    fn secret(&self) -> &str {
        &self.secret
    }
    fn c2s_addr(&self) -> SocketAddr {
        Prosody::c2s_addr(self)
    }
    fn component_addr(&self) -> SocketAddr {
        Prosody::component_addr(self)
    }
    fn register(&self, user: &str, pass: &str) {
        Prosody::register(self, user, pass)
    }
    fn create_rooms(&self, rooms: &[&str]) {
        Prosody::create_rooms(self, rooms)
    }
    fn restart(&mut self) {
        Prosody::restart(self)
    }
    fn stop(&mut self) {
        Prosody::stop(self);
    }
    fn log(&self) -> String {
        Prosody::log(self)
    }
}
