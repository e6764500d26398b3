//! Integration tests, servers: Beyond one Prosody: the core tests against Prosody and ejabberd, several instances behind nginx, clustered ejabberd. A new test that must hold on every XMPP server goes here.
//!
//! One test binary per area (this file and its folder), so `tests/common` is compiled a few
//! times, not once per file.

mod common;

#[path = "servers/scale_out.rs"]
mod scale_out;
#[path = "servers/servers.rs"]
mod servers;
