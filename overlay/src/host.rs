//! The kernel seam: every change the bridge makes to the host goes through [`NetHost`], so the
//! attach/detach logic (addresses, idempotence, roll-back, restart) is unit-tested against a
//! fake, and only [`crate::kernel::Kernel`] talks to netlink, mounts and nftables.

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::error::Result;
use crate::subnet::Subnet;

/// How one task's namespace is wired to the bridge.
#[derive(Debug, Clone, Copy)]
pub struct Wiring<'a> {
    pub netns: &'a Path,
    /// Host end of the veth pair (the other end is `eth0` in the namespace).
    pub veth: &'a str,
    pub bridge: &'a str,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// What the bridge needs from the host.
pub trait NetHost: Send + Sync + 'static {
    /// The bridge exists, is up and holds the subnet's gateway address; IPv4 forwarding is on;
    /// NAT and forwarding rules are in place. Idempotent; refuses a bridge configured for
    /// another subnet and a subnet that overlaps the host's routes.
    fn setup_bridge(&self, bridge: &str, subnet: Subnet)
    -> impl Future<Output = Result<()>> + Send;

    /// A named network namespace is mounted at `path`; returns true if it was just made.
    fn ensure_netns(&self, path: &Path) -> impl Future<Output = Result<bool>> + Send;

    /// The namespace file is unmounted and gone (missing is fine).
    fn remove_netns(&self, path: &Path) -> impl Future<Output = Result<()>> + Send;

    /// Whether the namespace is already wired as asked (veth on the bridge, eth0 up with the
    /// address, default route via the gateway).
    fn is_wired(&self, wiring: &Wiring<'_>) -> impl Future<Output = Result<bool>> + Send;

    /// Makes the veth pair and configures the namespace side. Expects no veth of that name.
    fn wire(&self, wiring: &Wiring<'_>) -> impl Future<Output = Result<()>> + Send;

    /// Deletes the veth pair (both ends go with either); missing is fine.
    fn unwire(&self, veth: &str) -> impl Future<Output = Result<()>> + Send;
}
