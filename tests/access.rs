//! Integration tests, access: Who may read what: tokens, the private-room policy, access re-checked on open streams, SIGHUP reloads, on-demand and `rooms = *`. A new test about access or configuration changes goes here.
//!
//! One test binary per area (this file and its folder), so a contributor knows where a test goes
//! and the binaries stay few; the harness is the `testkit` crate.

#[path = "access/access.rs"]
mod access;
#[path = "access/modes.rs"]
mod modes;
#[path = "access/privacy.rs"]
mod privacy;
#[path = "access/reload.rs"]
mod reload;
