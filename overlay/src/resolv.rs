//! /etc/resolv.conf for containers behind the bridge.
//!
//! A container in its own network namespace cannot reach the host's loopback, so nameservers
//! such as systemd-resolved's 127.0.0.53 or a local dnsmasq at 127.0.0.1 are dead ends there.
//! Docker's answer, followed here: start from the host's file (from systemd-resolved's list of
//! real upstreams when the host's only points at the stub), drop loopback nameservers and IPv6
//! ones (bridged tasks have no IPv6 route), and fall back to public resolvers when none is left.
//! `search` and `options` lines are kept.

use std::net::IpAddr;

/// Used when the host has no nameserver a container can reach (Docker's defaults).
pub const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// The host's resolver configuration.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// systemd-resolved's list of the real upstream servers (the host's file names only its stub).
pub const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";

/// The resolv.conf a bridged container should get on this host. Blocking (reads two small
/// files); call it from a blocking context.
pub fn container_resolv_conf() -> String {
    let host = std::fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default();
    let upstream = std::fs::read_to_string(RESOLVED_UPSTREAM).ok();
    for_container(&pick_host_file(&host, upstream.as_deref()))
}

/// [`container_resolv_conf`] as the engine's `ContainerSpec::dns_config`, which the engine
/// writes to the container's /etc/resolv.conf: set it on bridged containers and tasks whose
/// spec has none. Blocking, like [`container_resolv_conf`].
pub fn container_dns_config() -> shoal_proto::DnsConfig {
    dns_config_of(&container_resolv_conf())
}

/// Nameservers, search domains and options of a resolv.conf (`domain` counts as a search
/// domain when there is no `search` line, as the resolver reads it).
pub fn dns_config_of(conf: &str) -> shoal_proto::DnsConfig {
    let mut out = shoal_proto::DnsConfig::default();
    let mut domain = Vec::new();
    for line in conf.lines() {
        let mut words = line.split_whitespace();
        let (Some(key), rest) = (words.next(), words) else {
            continue;
        };
        match key {
            "nameserver" => out.nameservers.extend(rest.take(1).map(str::to_string)),
            // The last search line wins, as in the resolver.
            "search" => out.search = rest.map(str::to_string).collect(),
            "domain" => domain = rest.take(1).map(str::to_string).collect(),
            "options" => out.options.extend(rest.map(str::to_string)),
            _ => {}
        }
    }
    if out.search.is_empty() {
        out.search = domain;
    }
    out
}

/// The host's file, or systemd-resolved's upstream list when the host's names only the stub
/// resolver (127.0.0.53), as Docker does.
pub fn pick_host_file(host: &str, resolved_upstream: Option<&str>) -> String {
    let servers: Vec<IpAddr> = nameservers(host).collect();
    let only_stub = !servers.is_empty()
        && servers
            .iter()
            .all(|ip| *ip == IpAddr::from([127, 0, 0, 53]));
    match resolved_upstream {
        Some(up) if only_stub => up.to_string(),
        _ => host.to_string(),
    }
}

/// Rewrites a resolv.conf for a container in a bridged network namespace.
pub fn for_container(host: &str) -> String {
    let mut out = String::new();
    let mut kept = 0;
    for line in host.lines() {
        if let Some(ip) = nameserver(line) {
            if !reachable_from_bridge(ip) {
                continue;
            }
            kept += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if kept == 0 {
        for ns in FALLBACK_NAMESERVERS {
            out.push_str(&format!("nameserver {ns}\n"));
        }
    }
    out
}

/// Nameservers a container behind the NAT can use: IPv4, not loopback.
fn reachable_from_bridge(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
        IpAddr::V6(_) => false,
    }
}

/// The address of a `nameserver` line (an IPv6 zone such as `%eth0` is ignored).
fn nameserver(line: &str) -> Option<IpAddr> {
    let mut words = line.split_whitespace();
    if words.next()? != "nameserver" {
        return None;
    }
    let addr = words.next()?;
    addr.split('%').next()?.parse().ok()
}

fn nameservers(conf: &str) -> impl Iterator<Item = IpAddr> + '_ {
    conf.lines().filter_map(nameserver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_ipv6_nameservers_are_dropped_the_rest_kept() {
        let host = "# generated\nnameserver 127.0.0.1\nnameserver 10.0.0.2\n\
                    nameserver ::1\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\n\
                    search example.com\noptions ndots:2 edns0\n";
        assert_eq!(
            for_container(host),
            "# generated\nnameserver 10.0.0.2\nsearch example.com\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn nothing_reachable_means_public_fallbacks() {
        let out = for_container("nameserver 127.0.0.53\nsearch lan\n");
        assert_eq!(out, "search lan\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        assert_eq!(
            for_container(""),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }

    #[test]
    fn systemd_resolved_stub_is_replaced_by_its_upstreams() {
        let stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n";
        let upstream = "nameserver 192.0.2.1\nnameserver 192.0.2.2\n";
        assert_eq!(pick_host_file(stub, Some(upstream)), upstream);
        // Without resolved's file, the host's is used (and then falls back).
        assert_eq!(pick_host_file(stub, None), stub);
        // A host with a real server besides the stub keeps its own file.
        let mixed = "nameserver 127.0.0.53\nnameserver 10.0.0.2\n";
        assert_eq!(pick_host_file(mixed, Some(upstream)), mixed);
    }

    #[test]
    fn dns_config_carries_servers_search_and_options() {
        let c = dns_config_of(
            "# x\nnameserver 10.0.0.2\ndomain corp\nnameserver 10.0.0.3\n\
             options ndots:2\noptions edns0\n",
        );
        assert_eq!(c.nameservers, ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(c.search, ["corp"]);
        assert_eq!(c.options, ["ndots:2", "edns0"]);
        let c = dns_config_of(&for_container("nameserver 127.0.0.53\nsearch a b\n"));
        assert_eq!(c.nameservers, FALLBACK_NAMESERVERS);
        assert_eq!(c.search, ["a", "b"]);
    }

    #[test]
    fn malformed_lines_pass_through_untouched() {
        let host = "nameserver\nnameserver not-an-ip\n  nameserver 10.1.1.1\n";
        // Unparseable nameserver lines are not nameservers we know to be unreachable: keep
        // them, but they do not count, so the fallbacks are added only if nothing valid is left.
        assert_eq!(for_container(host), host.to_string());
    }
}
