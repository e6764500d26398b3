//! The upstream side: the XML stream from Prosody, the XEP-0114 component link, and the MUC
//! observer logic that turns room stanzas into room events.

pub mod answers;
pub mod archive;
pub mod component;
pub mod iq;
pub mod link;
pub mod muc;
pub mod observer;
pub mod session;
pub mod stream;
pub mod text;
