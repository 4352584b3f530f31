//! IPv4 subnets in CIDR form, with the few operations the bridge needs: the gateway (first
//! host address), the range handed to tasks, and overlap with the host's routes.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::error::NetworkError;

/// An IPv4 network: address with every host bit zero, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// The network with `prefix` bits; refuses host bits and prefixes too long to hold a
    /// gateway and at least one task (/31 and /32) or so short they would swallow the host's
    /// own networks (< /8).
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Subnet, NetworkError> {
        if !(8..=30).contains(&prefix) {
            return Err(NetworkError::InvalidConfig(format!(
                "subnet {network}/{prefix}: the prefix length must be between 8 and 30 (e.g. \
                 172.29.0.0/16)"
            )));
        }
        let s = Subnet { network, prefix };
        if u32::from(network) & !s.mask() != 0 {
            let base = Ipv4Addr::from(u32::from(network) & s.mask());
            return Err(NetworkError::InvalidConfig(format!(
                "subnet {network}/{prefix} has host bits set; did you mean {base}/{prefix}?"
            )));
        }
        Ok(s)
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The bridge's own address, as Docker takes it: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// First and last address given to tasks: after the gateway, before the broadcast address.
    pub fn task_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        let base = u32::from(self.network);
        let broadcast = base | !self.mask();
        (Ipv4Addr::from(base + 2), Ipv4Addr::from(broadcast - 1))
    }

    /// How many addresses tasks can have.
    pub fn capacity(&self) -> u32 {
        let (first, last) = self.task_range();
        u32::from(last) - u32::from(first) + 1
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// Whether two networks share any address (one contains the other).
    pub fn overlaps(&self, network: Ipv4Addr, prefix: u8) -> bool {
        let other_mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let common = self.mask() & other_mask;
        u32::from(self.network) & common == u32::from(network) & common
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Subnet, NetworkError> {
        let bad = || {
            NetworkError::InvalidConfig(format!(
                "subnet {s:?} is not an IPv4 network in CIDR form; write it like 172.29.0.0/16"
            ))
        };
        let (ip, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Subnet::new(ip, prefix)
    }
}

impl serde::Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Subnet, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_derives_gateway_and_range() {
        let s: Subnet = "172.29.0.0/16".parse().unwrap();
        assert_eq!(s.to_string(), "172.29.0.0/16");
        assert_eq!(s.gateway(), Ipv4Addr::new(172, 29, 0, 1));
        assert_eq!(
            s.task_range(),
            (
                Ipv4Addr::new(172, 29, 0, 2),
                Ipv4Addr::new(172, 29, 255, 254)
            )
        );
        assert_eq!(s.capacity(), 65533);
        let small: Subnet = "10.0.0.0/30".parse().unwrap();
        assert_eq!(small.capacity(), 1);
    }

    #[test]
    fn refuses_what_cannot_work_and_says_why() {
        let e = "172.29.0.1/16".parse::<Subnet>().unwrap_err().to_string();
        assert!(e.contains("did you mean 172.29.0.0/16"), "{e}");
        let e = "10.0.0.0/31".parse::<Subnet>().unwrap_err().to_string();
        assert!(e.contains("between 8 and 30"), "{e}");
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0/8",
            "10.0.0.0/33",
            "fd00::/64",
            "x/8",
        ] {
            let e = bad.parse::<Subnet>().unwrap_err().to_string();
            assert!(e.contains("CIDR") || e.contains("between"), "{bad}: {e}");
        }
    }

    #[test]
    fn overlap_is_containment_either_way() {
        let s: Subnet = "172.29.0.0/16".parse().unwrap();
        assert!(s.overlaps(Ipv4Addr::new(172, 29, 3, 0), 24));
        assert!(s.overlaps(Ipv4Addr::new(172, 16, 0, 0), 12));
        assert!(!s.overlaps(Ipv4Addr::new(172, 30, 0, 0), 16));
        assert!(!s.overlaps(Ipv4Addr::new(10, 88, 0, 0), 24));
        assert!(s.contains(Ipv4Addr::new(172, 29, 255, 255)));
        assert!(!s.contains(Ipv4Addr::new(172, 28, 0, 1)));
    }
}
