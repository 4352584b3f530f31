//! shoal-manager: the cluster's brain, run on manager nodes.
//!
//! Control API, certificate authority, orchestrator (replicated and global services, restarts,
//! rolling updates), allocator, scheduler and dispatcher (worker sessions). It keeps its state in
//! shoal-raft's Store and talks to workers only through shoal-proto over gRPC: it must never
//! depend on shoal-worker or shoal-overlay.
//!
//! `Manager` wires one manager: the services on its cluster port and the controllers that run
//! while it leads (`leader`). Each controller is its own module.

#![forbid(unsafe_code)]

pub mod allocator;
pub mod ca;
pub mod caserver;
pub mod clock;
pub mod cluster_spec;
pub mod controlapi;
pub mod dispatcher;
pub mod health;
pub mod leader;
pub mod logbroker;
pub mod manager;
pub mod membership;
pub mod orchestrator;
pub mod roles;
pub mod scheduler;
pub mod scheduling;

pub use manager::Manager;
