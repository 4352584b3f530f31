//! The real [`NetHost`]: rtnetlink for links, addresses and routes, bind-mounted namespace
//! files, /proc/sys for forwarding, nft for NAT. Tested for real, as root, by the integration
//! tests (tests/integration/network.rs), each daemon inside its own network namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};
use tracing::{info, warn};

use crate::error::{NetworkError, Result, errno, io_err, nl_err};
use crate::host::{NetHost, Wiring};
use crate::subnet::Subnet;
use crate::{firewall, netns};

/// Name of the task's end of the veth pair, inside its namespace.
pub const TASK_IFNAME: &str = "eth0";

const ENODEV: i32 = nix::libc::ENODEV;
const EEXIST: i32 = nix::libc::EEXIST;

/// The host as the daemon's own network namespace sees it.
pub struct Kernel {
    nl: Handle,
}

impl Kernel {
    /// Opens a netlink socket in the caller's network namespace (the daemon's, i.e. the host's).
    pub fn new() -> Result<Kernel> {
        Ok(Kernel {
            nl: netns::netlink_here()?,
        })
    }
}

/// A link by name; None when there is none.
async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(l) => Ok(l),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl_err(format!("look up interface {name}"))(e)),
    }
}

/// IPv4 addresses (with prefix) of a link.
async fn ipv4_addresses(h: &Handle, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("list interface addresses"))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.family == AddressFamily::Inet && m.header.index == index)
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                _ => None,
            })
        })
        .collect())
}

/// IPv4 routes of the main table.
async fn main_routes(h: &Handle) -> Result<Vec<RouteMessage>> {
    let all: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("list routes"))?;
    Ok(all
        .into_iter()
        .filter(|r| {
            r.header.address_family == AddressFamily::Inet
                && table_of(r) == u32::from(RouteHeader::RT_TABLE_MAIN)
        })
        .collect())
}

fn table_of(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn destination(r: &RouteMessage) -> Option<Ipv4Addr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

fn oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

fn gateway(r: &RouteMessage) -> Option<Ipv4Addr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

fn controller(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

/// Refuses a subnet that overlaps a route the host already has (other than our bridge's):
/// tasks would shadow, or be shadowed by, a real network.
async fn check_routes(h: &Handle, subnet: Subnet, ours: Option<u32>) -> Result<()> {
    for r in main_routes(h).await? {
        let len = r.header.destination_prefix_length;
        let Some(dst) = destination(&r) else { continue };
        if len == 0 || (ours.is_some() && oif(&r) == ours) || !subnet.overlaps(dst, len) {
            continue;
        }
        let via = match oif(&r) {
            Some(i) => link_name(h, i).await.unwrap_or_else(|| format!("#{i}")),
            None => "?".into(),
        };
        return Err(NetworkError::Conflict(format!(
            "the bridge subnet {subnet} overlaps the host's route to {dst}/{len} (dev {via}); \
             choose a free range with `shoal daemon --bridge-subnet`, e.g. 172.30.0.0/16"
        )));
    }
    Ok(())
}

async fn link_name(h: &Handle, index: u32) -> Option<String> {
    let mut links = h.link().get().match_index(index).execute();
    let l = links.try_next().await.ok()??;
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// A fixed, locally administered MAC for the bridge. Without one, a bridge takes the lowest
/// MAC among its ports, which changes as tasks come and go and leaves stale ARP entries in
/// every other task.
fn bridge_mac(bridge: &str, subnet: Subnet) -> Vec<u8> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bridge.bytes().chain(subnet.to_string().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    // 0x02: locally administered, unicast.
    vec![0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// Turns on IPv4 forwarding in this namespace (the host's, for a daemon run normally).
async fn enable_forwarding() -> Result<()> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    let now = tokio::fs::read_to_string(path).await.unwrap_or_default();
    if now.trim() == "1" {
        return Ok(());
    }
    tokio::fs::write(path, b"1")
        .await
        .map_err(io_err("enable IPv4 forwarding in", path))?;
    info!("enabled IPv4 forwarding (net.ipv4.ip_forward=1) for bridged containers");
    Ok(())
}

/// Treats "already exists" as success: a re-run after a partial attach.
fn tolerate_exists(
    r: std::result::Result<(), rtnetlink::Error>,
) -> std::result::Result<(), rtnetlink::Error> {
    match r {
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        other => other,
    }
}

impl NetHost for Kernel {
    async fn setup_bridge(&self, bridge: &str, subnet: Subnet) -> Result<()> {
        let h = &self.nl;
        let gw = subnet.gateway();
        let index = match link_by_name(h, bridge).await? {
            Some(l) => l.header.index,
            None => {
                check_routes(h, subnet, None).await?;
                let msg = LinkBridge::new(bridge)
                    .address(bridge_mac(bridge, subnet))
                    .build();
                tolerate_exists(h.link().add(msg).execute().await)
                    .map_err(nl_err(format!("create bridge {bridge}")))?;
                info!(bridge, %subnet, "created bridge");
                link_by_name(h, bridge)
                    .await?
                    .ok_or_else(|| NetworkError::Conflict(format!("bridge {bridge} vanished")))?
                    .header
                    .index
            }
        };
        let addrs = ipv4_addresses(h, index).await?;
        if !addrs.contains(&(gw, subnet.prefix())) {
            if let Some((ip, len)) = addrs.first() {
                return Err(NetworkError::Conflict(format!(
                    "interface {bridge} already has address {ip}/{len}, not {gw}/{} as the \
                     bridge subnet {subnet} needs; give the daemon --bridge-subnet matching it, \
                     or delete the interface (`ip link del {bridge}`) if nothing uses it",
                    subnet.prefix()
                )));
            }
            check_routes(h, subnet, Some(index)).await?;
            tolerate_exists(
                h.address()
                    .add(index, IpAddr::V4(gw), subnet.prefix())
                    .execute()
                    .await,
            )
            .map_err(nl_err(format!("give {bridge} address {gw}")))?;
        }
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl_err(format!("bring {bridge} up")))?;
        enable_forwarding().await?;
        let report = firewall::install(bridge, subnet).await?;
        for chain in &report.opened {
            info!(bridge, chain = %chain, "accepted bridge traffic in a forward chain that drops by default");
        }
        for chain in &report.blocked {
            warn!(
                bridge,
                chain = %chain,
                "a forward chain drops by default and could not be opened for the bridge: \
                 bridged containers cannot reach other networks until it accepts \
                 iifname {bridge} and oifname {bridge} ct state established,related"
            );
        }
        Ok(())
    }

    async fn ensure_netns(&self, path: &Path) -> Result<bool> {
        netns::ensure(path).await
    }

    async fn remove_netns(&self, path: &Path) -> Result<()> {
        netns::remove(path).await
    }

    async fn is_wired(&self, w: &Wiring<'_>) -> Result<bool> {
        let h = &self.nl;
        let Some(bridge) = link_by_name(h, w.bridge).await? else {
            return Ok(false);
        };
        let Some(veth) = link_by_name(h, w.veth).await? else {
            return Ok(false);
        };
        if controller(&veth) != Some(bridge.header.index)
            || !veth.header.flags.contains(LinkFlags::Up)
        {
            return Ok(false);
        }
        if !netns::is_netns(w.netns) {
            return Ok(false);
        }
        let inner = netns::netlink_in(w.netns).await?;
        let Some(eth0) = link_by_name(&inner, TASK_IFNAME).await? else {
            return Ok(false);
        };
        if !eth0.header.flags.contains(LinkFlags::Up)
            || !ipv4_addresses(&inner, eth0.header.index)
                .await?
                .contains(&(w.address, w.prefix))
        {
            return Ok(false);
        }
        let routes = main_routes(&inner).await?;
        Ok(routes
            .iter()
            .any(|r| r.header.destination_prefix_length == 0 && gateway(r) == Some(w.gateway)))
    }

    async fn wire(&self, w: &Wiring<'_>) -> Result<()> {
        let h = &self.nl;
        let bridge = link_by_name(h, w.bridge).await?.ok_or_else(|| {
            NetworkError::Conflict(format!(
                "bridge {} is gone (deleted by hand?); restart the daemon to recreate it",
                w.bridge
            ))
        })?;
        let ns =
            std::fs::File::open(w.netns).map_err(io_err("open the network namespace", w.netns))?;
        // One request makes both ends: the host end on the bridge and up, the peer born inside
        // the task's namespace as eth0 (no temporary name, no move).
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(TASK_IFNAME)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(w.veth)
            .controller(bridge.header.index)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        h.link()
            .add(msg)
            .execute()
            .await
            .map_err(nl_err(format!("create veth pair {}", w.veth)))?;
        drop(ns);

        let inner = netns::netlink_in(w.netns).await?;
        let ns_shown = w.netns.display();
        for name in ["lo", TASK_IFNAME] {
            let link = link_by_name(&inner, name).await?.ok_or_else(|| {
                NetworkError::Conflict(format!("{name} is missing in namespace {ns_shown}"))
            })?;
            if name == TASK_IFNAME {
                tolerate_exists(
                    inner
                        .address()
                        .add(link.header.index, IpAddr::V4(w.address), w.prefix)
                        .execute()
                        .await,
                )
                .map_err(nl_err(format!(
                    "give {name} address {} in {ns_shown}",
                    w.address
                )))?;
            }
            inner
                .link()
                .set(LinkUnspec::new_with_index(link.header.index).up().build())
                .execute()
                .await
                .map_err(nl_err(format!("bring {name} up in {ns_shown}")))?;
        }
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(w.gateway)
            .build();
        tolerate_exists(inner.route().add(route).execute().await).map_err(nl_err(format!(
            "add the default route via {} in {ns_shown}",
            w.gateway
        )))?;
        Ok(())
    }

    async fn unwire(&self, veth: &str) -> Result<()> {
        let h = &self.nl;
        let Some(link) = link_by_name(h, veth).await? else {
            return Ok(());
        };
        match h.link().del(link.header.index).execute().await {
            Err(e) if errno(&e) == Some(ENODEV) => Ok(()),
            r => r.map_err(nl_err(format!("delete veth {veth}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_mac_is_stable_local_and_unicast() {
        let s: Subnet = "172.29.0.0/16".parse().unwrap();
        let mac = bridge_mac("shoal0", s);
        assert_eq!(mac.len(), 6);
        assert_eq!(mac[0], 0x02);
        assert_eq!(mac, bridge_mac("shoal0", s));
        assert_ne!(mac, bridge_mac("shoal1", s));
    }
}
