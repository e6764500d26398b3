//! Integration tests, servers: Beyond one Prosody: the core tests against Prosody and ejabberd, several instances behind nginx, clustered ejabberd. A new test that must hold on every XMPP server goes here.
//!
//! One test binary per area (this file and its folder), so a contributor knows where a test goes
//! and the binaries stay few; the harness is the `testkit` crate.

#[path = "servers/scale_out.rs"]
mod scale_out;
#[path = "servers/servers.rs"]
mod servers;
