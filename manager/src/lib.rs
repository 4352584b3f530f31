//! shoal-manager: the cluster's brain, run on manager nodes.
//!
//! Control API, certificate authority, orchestrator (replicated and global services, restarts,
//! rolling updates), allocator, scheduler and dispatcher (worker sessions). It keeps its state in
//! shoal-raft's Store and talks to workers only through shoal-proto over gRPC: it must never
//! depend on shoal-worker or shoal-overlay.

#![forbid(unsafe_code)]

pub mod ca;
pub mod scheduler;
