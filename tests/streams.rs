//! Integration tests, streams: Serving streams: events, ids and resume, the SSE wire format, HTTP parsing and limits, admission under storms, slow subscribers, memory. A new test about what a subscriber receives or how requests are admitted goes here.
//!
//! One test binary per area (this file and its folder), so a contributor knows where a test goes
//! and the binaries stay few; the harness is the `testkit` crate.

#[path = "streams/admission.rs"]
mod admission;
#[path = "streams/caps.rs"]
mod caps;
#[path = "streams/e2e.rs"]
mod e2e;
#[path = "streams/json_escape.rs"]
mod json_escape;
#[path = "streams/limits.rs"]
mod limits;
#[path = "streams/memory_ceiling.rs"]
mod memory_ceiling;
#[path = "streams/slow_subscribers.rs"]
mod slow_subscribers;
#[path = "streams/sse_parser.rs"]
mod sse_parser;
#[path = "streams/streams.rs"]
mod streams;
