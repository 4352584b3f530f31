//! shoal-raft: the managers' replicated Store.
//!
//! openraft with a sled-backed log and state machine, and a tonic transport between managers.
//! It exposes the Store: typed tables of the proto model with transactions and watch streams,
//! which the manager's controllers read and write. It depends only on shoal-proto among Shoal's
//! crates, and must not depend on the manager, the worker or the overlay.

#![forbid(unsafe_code)]
