//! The Raft transport between managers: tonic over TCP, optionally inside rustls.
//!
//! `tls` is the seam (dialers, TLS settings, accepted-connection info), `client` is openraft's
//! outgoing side, `server` the incoming one. The daemon may serve `RaftService` on its own
//! listener next to its other services, or let `RaftNode::start` serve it.

pub(crate) mod client;
pub mod server;
pub mod tls;
