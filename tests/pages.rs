//! Integration tests, pages: What people and tools look at: the index, live view, /metrics and /healthz, a real browser, the nginx recipe, the README and its links. A new test about pages, the browser or docs goes here.
//!
//! One test binary per area (this file and its folder), so a contributor knows where a test goes
//! and the binaries stay few; the harness is the `testkit` crate.

#[path = "pages/browser.rs"]
mod browser;
#[path = "pages/docs.rs"]
mod docs;
#[path = "pages/pages.rs"]
mod pages;
#[path = "pages/proxy.rs"]
mod proxy;
