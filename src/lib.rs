//! muc-eventsource: Prosody MUC rooms as HTML5 Server-Sent Events streams.
//!
//! Data flows one way: [`xmpp`] (the component link to Prosody and the MUC observer) publishes
//! room events into [`rooms`] (fixed room table, rings of shared SSE frames), from which [`http`]
//! (a small GET-only server and the SSE writer) streams them to subscribers. [`config`] sizes
//! every table and [`memory`] adds up what they may hold; `main.rs` only wires these together on one single-threaded executor.

#![forbid(unsafe_code)]

pub mod config;
pub mod http;
pub mod logger;
pub mod memory;
pub mod notify;
pub mod rooms;
pub mod settings;
pub mod shutdown;
pub mod xmpp;
