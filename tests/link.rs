//! Integration tests, link: The component link and continuity: upstream faults and recovery, outages (archive fill or gap), hostile values that must never reach the XMPP stream, the thread count. A new test about the link to the XMPP server, reconnects or what upstream receives goes here.
//!
//! One test binary per area (this file and its folder), so a contributor knows where a test goes
//! and the binaries stay few; the harness is the `testkit` crate.

#[path = "link/continuity.rs"]
mod continuity;
#[path = "link/hostile_ids.rs"]
mod hostile_ids;
#[path = "link/threads.rs"]
mod threads;
#[path = "link/upstream_faults.rs"]
mod upstream_faults;
#[path = "link/upstream_recovery.rs"]
mod upstream_recovery;
