//! The downstream side: a small, strict HTTP/1.1 GET server and the SSE writer that streams a
//! room's frames to each subscriber.

pub mod access;
pub mod health;
pub mod metrics;
pub mod multi;
pub mod pages;
pub mod reply;
pub mod request;
pub mod routes;
pub mod server;
pub mod sse;
pub mod start;
