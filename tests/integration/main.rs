//! Integration tests of the `shoal` binary: real daemons, each in its own network namespace with
//! its own address, driven through the real CLI. They need root (namespaces, mounts, cgroups) and
//! fail loudly without it; CI runs them as root. One test crate with modules keeps link time down.

mod cluster;
mod engine;
mod executor;
mod foundation;
mod harness;
mod images;
mod network;
mod orchestration;
mod service_api;
mod services;
