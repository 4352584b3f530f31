//! Choosing the address other nodes use to reach this one, as `docker swarm init` does: the
//! one given, else the listen address when it is specific, else the IPv4 address of the
//! interface the default route leaves by.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Result, bail};

/// `advertise` as given by the user (already resolved), or one derived from `listen`.
pub fn choose(advertise: Option<SocketAddr>, listen: SocketAddr) -> Result<SocketAddr> {
    if let Some(a) = advertise {
        if a.ip().is_unspecified() {
            bail!(
                "--advertise-addr {a} is not an address other nodes can reach; give this node's \
                 own IP address or interface"
            );
        }
        return Ok(a);
    }
    if !listen.ip().is_unspecified() {
        return Ok(listen);
    }
    match default_route_ipv4() {
        Some(ip) => Ok(SocketAddr::new(ip, listen.port())),
        None => bail!(
            "could not choose an address to advertise: there is no default route; use \
             --advertise-addr with this node's IP address or interface name"
        ),
    }
}

/// The IPv4 address of the default route's interface, from /proc/net/route.
fn default_route_ipv4() -> Option<IpAddr> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let iface = default_route_interface(&routes)?;
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        (ifa.interface_name == iface)
            .then(|| ifa.address?.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())))
            .flatten()
    })
}

/// The interface of the first route whose destination and mask are 0.0.0.0/0.
fn default_route_interface(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_default_route_interface() {
        let table = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                     eth1\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
                     eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\n";
        assert_eq!(default_route_interface(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\n"), None);
    }

    #[test]
    fn given_and_specific_listen_addresses_win() {
        let listen: SocketAddr = "10.0.0.5:2377".parse().unwrap();
        assert_eq!(choose(None, listen).unwrap(), listen);
        let adv: SocketAddr = "192.0.2.1:2377".parse().unwrap();
        assert_eq!(choose(Some(adv), listen).unwrap(), adv);
        let any: SocketAddr = "0.0.0.0:2377".parse().unwrap();
        assert!(choose(Some(any), listen).is_err());
    }
}
