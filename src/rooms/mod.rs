//! The middle of the data flow: rooms, their rings of formatted event frames, and the subscriber
//! table. The XMPP side writes here; the HTTP side reads from here.

pub mod archive;
pub mod fanout;
pub mod feed;
pub mod flusher;
pub mod frame;
pub mod resume;
pub mod ring;
pub mod stats;
pub mod table;
