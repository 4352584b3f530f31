//! shoal-overlay: node-local networking for containers.
//!
//! Today: the node-local bridge with outbound NAT that tasks get until overlay networks exist,
//! like Docker's default bridge. Each task has a network namespace of its own (a named,
//! bind-mounted nsfs file), joined to the `shoal0` bridge by a veth pair, with an address from
//! the node's IPAM and a default route through the bridge, whose traffic to other networks is
//! masqueraded by nftables. Later: VXLAN overlays, peer FDB/ARP entries, nftables virtual-IP
//! load balancing, embedded DNS and the ingress routing mesh.
//!
//! ```text
//!   task netns                  node (daemon's netns)
//!  ┌────────────┐   veth     ┌──────────────────────────────┐
//!  │ eth0 .0.2 ═╪════════════╪═ shv<hash> ─┐                │
//!  └────────────┘            │      shoal0 172.29.0.1/16 ───┼─ masquerade ─> eth0 ─> world
//!  ┌────────────┐            │             │                │
//!  │ eth0 .0.3 ═╪════════════╪═ shv<hash> ─┘                │
//!  └────────────┘            └──────────────────────────────┘
//! ```
//!
//! The worker's executor and the daemon program against [`TaskNetworks`]; the kernel sits
//! behind a small internal trait so the logic is unit-tested with a fake, and the real thing is
//! tested as root in the integration tests. It depends only on shoal-proto among Shoal's
//! crates; it must not depend on the worker or the manager.

#![forbid(unsafe_code)]

mod bridge;
mod error;
pub mod firewall;
mod host;
mod ipam;
mod kernel;
mod lazy;
mod names;
mod netns;
pub mod resolv;
mod subnet;

use std::future::Future;
use std::path::PathBuf;

pub use bridge::{BridgeConfig, BridgeNetworks, DEFAULT_BRIDGE, DEFAULT_NETNS_DIR, DEFAULT_SUBNET};
pub use error::NetworkError;
pub use kernel::TASK_IFNAME;
pub use lazy::LazyBridgeNetworks;
pub use names::{host_veth, validate_key};
pub use subnet::Subnet;

/// Where a task's network lives: what the engine needs to put a container in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The namespace file to join (the engine's `ContainerConfig::network_namespace`).
    pub netns_path: PathBuf,
    /// The task's address in CIDR form, e.g. `172.29.0.2/16`.
    pub address: String,
    /// The bridge's address, the task's default gateway, e.g. `172.29.0.1`.
    pub gateway: String,
}

/// Networks for tasks on this node. Keys are task IDs (or, for `shoal container run`, a
/// container key); both methods are idempotent, so a restarted worker simply calls `attach`
/// again for every task it re-adopts and `detach` for every task it removes.
pub trait TaskNetworks: Send + Sync + 'static {
    /// Creates (or, after a restart, finds) the task's network namespace, connected to the
    /// node-local bridge with outbound NAT; idempotent.
    fn attach(
        &self,
        task_id: &str,
    ) -> impl Future<Output = Result<Attachment, NetworkError>> + Send;
    /// Removes the task's namespace and frees its address; idempotent.
    fn detach(&self, task_id: &str) -> impl Future<Output = Result<(), NetworkError>> + Send;
}
