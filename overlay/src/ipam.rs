//! The node's address book for its bridge: which task (or container) holds which address.
//!
//! Persisted as one small JSON file, rewritten atomically (temp + rename) after every change,
//! so that a daemon restart finds every allocation again and `attach` of a running task returns
//! the address its container already uses. Allocation is next-fit (continue after the last
//! address handed out, wrapping), as Docker's IPAM does: an address just freed is not reused at
//! once, so peers' stale ARP entries for it have time to expire.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{NetworkError, Result, io_err};
use crate::subnet::Subnet;

/// Allocations within one subnet; pure logic, no I/O.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    subnet: Subnet,
    /// The last address handed out; the next search starts after it.
    #[serde(default)]
    last: Option<Ipv4Addr>,
    /// Key (task ID or container key) -> address.
    #[serde(default)]
    allocations: BTreeMap<String, Ipv4Addr>,
}

impl Ipam {
    pub fn new(subnet: Subnet) -> Ipam {
        Ipam {
            subnet,
            last: None,
            allocations: BTreeMap::new(),
        }
    }

    #[cfg(test)]
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The key's address, if it has one.
    pub fn get(&self, key: &str) -> Option<Ipv4Addr> {
        self.allocations.get(key).copied()
    }

    /// Every key holding an address.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.allocations.keys().map(String::as_str)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.allocations.len()
    }

    /// The key's address, allocating one if it has none. Returns the address and whether it
    /// is new (so a failed attach can give it back).
    pub fn allocate(&mut self, key: &str) -> Result<(Ipv4Addr, bool)> {
        if let Some(ip) = self.get(key) {
            return Ok((ip, false));
        }
        let (first, last) = self.subnet.task_range();
        let (first, last) = (u32::from(first), u32::from(last));
        let used: std::collections::HashSet<u32> =
            self.allocations.values().map(|ip| u32::from(*ip)).collect();
        let start = match self.last.map(u32::from) {
            Some(l) if l >= first && l < last => l + 1,
            _ => first,
        };
        // Two passes: from `start` to the end, then from the beginning.
        let candidate = (start..=last)
            .chain(first..start)
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| NetworkError::Exhausted {
                subnet: self.subnet.to_string(),
                in_use: self.allocations.len(),
            })?;
        let ip = Ipv4Addr::from(candidate);
        self.allocations.insert(key.to_string(), ip);
        self.last = Some(ip);
        Ok((ip, true))
    }

    /// Frees the key's address; returns it if there was one.
    pub fn release(&mut self, key: &str) -> Option<Ipv4Addr> {
        self.allocations.remove(key)
    }
}

/// An [`Ipam`] bound to its file.
#[derive(Debug)]
pub struct IpamStore {
    path: PathBuf,
    ipam: Ipam,
}

impl IpamStore {
    /// Loads the file, or starts empty when there is none. A file made for another subnet is
    /// taken over only if it holds no allocation: moving live tasks to new addresses behind
    /// their back would break them.
    pub fn open(path: PathBuf, subnet: Subnet) -> Result<IpamStore> {
        let ipam = match std::fs::read(&path) {
            Ok(data) => {
                let saved: Ipam = serde_json::from_slice(&data).map_err(|e| {
                    NetworkError::InvalidConfig(format!(
                        "{} is corrupt ({e}); move it away to start with no allocations",
                        path.display()
                    ))
                })?;
                if saved.subnet != subnet && !saved.allocations.is_empty() {
                    return Err(NetworkError::Conflict(format!(
                        "the bridge subnet changed from {} to {subnet}, but {} containers or \
                         tasks still hold addresses in {} (listed in {}); remove them first, \
                         or keep --bridge-subnet {}",
                        saved.subnet,
                        saved.allocations.len(),
                        saved.subnet,
                        path.display(),
                        saved.subnet
                    )));
                }
                if saved.subnet != subnet {
                    Ipam::new(subnet)
                } else {
                    saved
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ipam::new(subnet),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        Ok(IpamStore { path, ipam })
    }

    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    /// Applies `change` and saves; on a failed save the change is undone, so memory and disk
    /// never disagree.
    pub fn update<T>(&mut self, change: impl FnOnce(&mut Ipam) -> Result<T>) -> Result<T> {
        let before = self.ipam.clone();
        let out = change(&mut self.ipam)?;
        if self.ipam != before
            && let Err(e) = save(&self.path, &self.ipam)
        {
            self.ipam = before;
            return Err(e);
        }
        Ok(out)
    }
}

/// Writes atomically: a reader (or a crash) sees the old file or the new one, never half.
fn save(path: &Path, ipam: &Ipam) -> Result<()> {
    let data = serde_json::to_vec_pretty(ipam)
        .map_err(|e| NetworkError::InvalidConfig(format!("cannot encode IPAM state: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, data).map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("replace", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_after_the_gateway_and_is_idempotent_per_key() {
        let mut ipam = Ipam::new(subnet("172.29.0.0/16"));
        assert_eq!(
            ipam.allocate("a").unwrap(),
            (Ipv4Addr::new(172, 29, 0, 2), true)
        );
        assert_eq!(
            ipam.allocate("b").unwrap(),
            (Ipv4Addr::new(172, 29, 0, 3), true)
        );
        assert_eq!(
            ipam.allocate("a").unwrap(),
            (Ipv4Addr::new(172, 29, 0, 2), false)
        );
        assert_eq!(ipam.len(), 2);
    }

    #[test]
    fn freed_addresses_are_reused_only_after_a_full_turn() {
        // /29: network .0, gateway .1, tasks .2-.6, broadcast .7.
        let mut ipam = Ipam::new(subnet("10.1.0.0/29"));
        for k in ["a", "b", "c"] {
            ipam.allocate(k).unwrap();
        }
        assert_eq!(ipam.release("a"), Some(Ipv4Addr::new(10, 1, 0, 2)));
        assert_eq!(ipam.release("a"), None);
        // Next-fit: .5 and .6 before .2 comes round again.
        assert_eq!(ipam.allocate("d").unwrap().0, Ipv4Addr::new(10, 1, 0, 5));
        assert_eq!(ipam.allocate("e").unwrap().0, Ipv4Addr::new(10, 1, 0, 6));
        assert_eq!(ipam.allocate("f").unwrap().0, Ipv4Addr::new(10, 1, 0, 2));
    }

    #[test]
    fn exhaustion_names_the_subnet() {
        let mut ipam = Ipam::new(subnet("10.1.0.0/30"));
        ipam.allocate("only").unwrap();
        let e = ipam.allocate("more").unwrap_err();
        assert!(matches!(e, NetworkError::Exhausted { in_use: 1, .. }));
        let msg = e.to_string();
        assert!(msg.contains("10.1.0.0/30"), "{msg}");
        assert!(msg.contains("--bridge-subnet"), "{msg}");
        // The failed allocation changed nothing.
        assert_eq!(ipam.get("more"), None);
    }

    #[test]
    fn allocations_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let s = subnet("172.29.0.0/16");
        let mut store = IpamStore::open(path.clone(), s).unwrap();
        let (a, _) = store.update(|i| i.allocate("task-a")).unwrap();
        let (b, _) = store.update(|i| i.allocate("task-b")).unwrap();
        store.update(|i| Ok(i.release("task-a"))).unwrap();
        drop(store);

        let mut again = IpamStore::open(path.clone(), s).unwrap();
        assert_eq!(again.ipam().get("task-b"), Some(b));
        assert_eq!(again.ipam().get("task-a"), None);
        // The next-fit cursor survived too: the freed address is not handed out next.
        let (c, _) = again.update(|i| i.allocate("task-c")).unwrap();
        assert_ne!(c, a);
        assert_ne!(c, b);
        // No temp file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ipam.json")]);
    }

    #[test]
    fn a_subnet_change_is_refused_while_addresses_are_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let mut store = IpamStore::open(path.clone(), subnet("172.29.0.0/16")).unwrap();
        store.update(|i| i.allocate("t")).unwrap();
        let e = IpamStore::open(path.clone(), subnet("172.30.0.0/16")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("172.29.0.0/16") && msg.contains("172.30.0.0/16"),
            "{msg}"
        );
        store.update(|i| Ok(i.release("t"))).unwrap();
        let moved = IpamStore::open(path, subnet("172.30.0.0/16")).unwrap();
        assert_eq!(moved.ipam().subnet(), subnet("172.30.0.0/16"));
    }

    #[test]
    fn a_corrupt_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        std::fs::write(&path, b"{not json").unwrap();
        let msg = IpamStore::open(path.clone(), subnet("172.29.0.0/16"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
}
