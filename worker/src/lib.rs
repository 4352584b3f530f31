//! shoal-worker: what runs tasks on a node.
//!
//! The agent (a session to a manager), the executor (task -> container lifecycle) and the local
//! engine (images, root filesystems, the OCI runtime, logs, health checks). It meets managers only
//! through shoal-proto over gRPC: it must never depend on shoal-manager or shoal-raft.

#![deny(unsafe_code)]

pub mod agent;
pub mod engine;
pub mod executor;
pub mod host;
pub mod logpublisher;
