//! Cluster addresses as users write them, Swarm-style: `IP`, `IP:PORT`, `IFACE` or
//! `IFACE:PORT`, with 2377 as the default port. An interface name stands for its first IPv4
//! address, so `--advertise-addr eth0` works as it does with `docker swarm init`.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Result, anyhow, bail};

/// Swarm's cluster management port.
pub const DEFAULT_CLUSTER_PORT: u16 = 2377;

/// Turns a user's address into a socket address; `flag` names the flag in errors.
pub fn resolve(input: &str, flag: &str) -> Result<SocketAddr> {
    resolve_with(input, flag, interface_ipv4)
}

fn resolve_with(
    input: &str,
    flag: &str,
    lookup: impl Fn(&str) -> Option<IpAddr>,
) -> Result<SocketAddr> {
    let input = input.trim();
    if input.is_empty() {
        bail!("{flag} is empty; give an IP address, IP:PORT or an interface name");
    }
    if let Ok(sa) = input.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = input.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_CLUSTER_PORT));
    }
    // `[v6]` without a port, or `host:port` where host is an interface name.
    if let Some(v6) = input.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        if let Ok(ip) = v6.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, DEFAULT_CLUSTER_PORT));
        }
    }
    let (host, port) = match input.rsplit_once(':') {
        Some((h, p)) => {
            let port = p
                .parse::<u16>()
                .map_err(|_| anyhow!("{flag} {input:?}: {p:?} is not a port number (1-65535)"))?;
            (h, port)
        }
        None => (input, DEFAULT_CLUSTER_PORT),
    };
    let ip = lookup(host).ok_or_else(|| {
        anyhow!(
            "{flag} {input:?}: {host:?} is neither an IP address nor a network interface with \
             an IPv4 address on this machine (see `ip -brief addr`)"
        )
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// The first IPv4 address of a network interface.
fn interface_ipv4(name: &str) -> Option<IpAddr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        if ifa.interface_name != name {
            return None;
        }
        let v4 = ifa.address?.as_sockaddr_in()?.ip();
        Some(IpAddr::V4(v4))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(name: &str) -> Option<IpAddr> {
        (name == "eth0").then(|| "192.0.2.7".parse().unwrap())
    }

    #[test]
    fn accepts_swarm_address_forms() {
        let r = |s| {
            resolve_with(s, "--advertise-addr", fake)
                .unwrap()
                .to_string()
        };
        assert_eq!(r("10.0.0.1"), "10.0.0.1:2377");
        assert_eq!(r("10.0.0.1:4000"), "10.0.0.1:4000");
        assert_eq!(r("eth0"), "192.0.2.7:2377");
        assert_eq!(r("eth0:4000"), "192.0.2.7:4000");
        assert_eq!(r("[::1]"), "[::1]:2377");
        assert_eq!(r("[::1]:9"), "[::1]:9");
    }

    #[test]
    fn errors_name_the_flag_and_the_fix() {
        let e = |s| {
            resolve_with(s, "--listen-addr", fake)
                .unwrap_err()
                .to_string()
        };
        assert!(e("wlan9").contains("--listen-addr \"wlan9\""));
        assert!(e("wlan9").contains("ip -brief addr"));
        assert!(e("10.0.0.1:99999").contains("not a port number"));
        assert!(e("").contains("is empty"));
    }

    #[test]
    fn loopback_interface_resolves_on_a_real_host() {
        assert_eq!(
            resolve("lo", "--listen-addr").unwrap().to_string(),
            "127.0.0.1:2377"
        );
    }
}
