//! The node-local bridge network: one bridge with outbound NAT, one namespace per task.
//!
//! ```text
//!  attach(key) ─ lock key ─ IPAM: address (persisted) ─ namespace file <netns_dir>/<key>
//!              └─ already wired? ─ yes: return it
//!                                 └ no: delete stale veth, make veth shv<hash> <-> eth0, address,
//!                                       default route via the gateway
//!  detach(key) ─ lock key ─ delete veth ─ unmount + remove namespace file ─ free the address
//! ```
//!
//! The logic here is generic over [`NetHost`] and unit-tested with a fake one; [`BridgeNetworks`]
//! is the same logic on the real kernel. Concurrent attaches of different keys run in parallel
//! (each key has its own lock; the IPAM file has one mutex), so starting 100 tasks at once
//! does not queue behind one lock.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;
use tracing::{debug, warn};

use crate::error::{NetworkError, Result, io_err};
use crate::host::{NetHost, Wiring};
use crate::ipam::{Ipam, IpamStore};
use crate::kernel::Kernel;
use crate::names;
use crate::subnet::Subnet;
use crate::{Attachment, TaskNetworks};

/// Docker's default bridge is docker0; ours is shoal0.
pub const DEFAULT_BRIDGE: &str = "shoal0";
/// Away from Docker's 172.17-172.28 defaults and the test harness's 10.88.0.0/24.
pub const DEFAULT_SUBNET: &str = "172.29.0.0/16";
/// Beside `ip netns`'s /run/netns, so runtime state vanishes at reboot with the namespaces.
pub const DEFAULT_NETNS_DIR: &str = "/run/shoal/netns";

/// Where and how the bridge network is made.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The bridge interface (at most 15 bytes).
    pub bridge_name: String,
    /// Tasks get addresses here; the first host address is the bridge's (the gateway).
    pub subnet: Subnet,
    /// Persistent state (the IPAM file).
    pub state_dir: PathBuf,
    /// Namespace files, one per attachment (bind mounts; runtime state).
    pub netns_dir: PathBuf,
}

impl BridgeConfig {
    /// The defaults, with state kept in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> BridgeConfig {
        BridgeConfig {
            bridge_name: DEFAULT_BRIDGE.to_string(),
            subnet: DEFAULT_SUBNET.parse().expect("the default subnet is valid"),
            state_dir: state_dir.into(),
            netns_dir: PathBuf::from(DEFAULT_NETNS_DIR),
        }
    }

    /// The IPAM file; its presence means the bridge has been used on this node.
    pub fn ipam_path(&self) -> PathBuf {
        self.state_dir.join("ipam.json")
    }
}

/// Per-key locks: the same task never attaches and detaches at once; different tasks never
/// wait for each other. Entries go when nobody holds or waits for them.
#[derive(Default)]
struct KeyLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyLocks {
    async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let m = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        KeyGuard {
            locks: self,
            key: key.to_string(),
            guard: Some(m.lock_owned().await),
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = self.guard.take() {
            // The map's reference and ours: nobody else waits, so the entry can go.
            if Arc::strong_count(OwnedMutexGuard::mutex(&g)) == 2 {
                map.remove(&self.key);
            }
        }
    }
}

/// The bridge logic over any [`NetHost`].
pub(crate) struct Bridge<H> {
    host: H,
    config: BridgeConfig,
    ipam: Arc<Mutex<IpamStore>>,
    locks: KeyLocks,
    /// Held while open: a second instance over the same state (in this process or another)
    /// would keep its own copy of the address book and overwrite this one's.
    _owner: nix::fcntl::Flock<std::fs::File>,
}

/// Takes the state directory for this instance alone.
fn own_state_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = dir.join("ipam.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        NetworkError::Conflict(format!(
            "the bridge network's state {} is already in use by another instance; a daemon \
             must share one handle (LazyBridgeNetworks is Clone) between its users",
            dir.display()
        ))
    })
}

impl<H: NetHost> Bridge<H> {
    /// Loads the IPAM state and sets up bridge, forwarding and NAT.
    pub async fn open(config: BridgeConfig, host: H) -> Result<Bridge<H>> {
        names::validate_ifname(&config.bridge_name)?;
        for dir in [&config.state_dir, &config.netns_dir] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(io_err("create directory", dir))?;
        }
        let owner = own_state_dir(&config.state_dir)?;
        let (path, subnet) = (config.ipam_path(), config.subnet);
        let store = tokio::task::spawn_blocking(move || IpamStore::open(path, subnet))
            .await
            .map_err(|e| NetworkError::InvalidConfig(format!("IPAM load failed: {e}")))??;
        host.setup_bridge(&config.bridge_name, config.subnet)
            .await?;
        Ok(Bridge {
            host,
            config,
            ipam: Arc::new(Mutex::new(store)),
            locks: KeyLocks::default(),
            _owner: owner,
        })
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    /// Sets the bridge up again as at open: what someone removed since (the bridge, its
    /// address, forwarding, our nft table, the accepts in a foreign dropping chain, which
    /// Docker loses whenever it rebuilds its FORWARD chain) is put back.
    pub async fn reconcile(&self) -> Result<()> {
        self.host
            .setup_bridge(&self.config.bridge_name, self.config.subnet)
            .await
    }

    /// Runs an IPAM change (which writes the file) on the blocking pool.
    async fn ipam<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Ipam) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.ipam.clone();
        tokio::task::spawn_blocking(move || {
            store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .update(change)
        })
        .await
        .map_err(|e| NetworkError::InvalidConfig(format!("IPAM update failed: {e}")))?
    }

    fn read_ipam<T>(&self, f: impl FnOnce(&Ipam) -> T) -> T {
        f(self.ipam.lock().unwrap_or_else(|p| p.into_inner()).ipam())
    }

    fn netns_path(&self, key: &str) -> PathBuf {
        self.config.netns_dir.join(key)
    }

    fn attachment(&self, key: &str, ip: Ipv4Addr) -> Attachment {
        Attachment {
            netns_path: self.netns_path(key),
            address: format!("{ip}/{}", self.config.subnet.prefix()),
            gateway: self.config.subnet.gateway().to_string(),
        }
    }

    /// The key's attachment as recorded, without touching the host.
    pub fn get(&self, key: &str) -> Option<Attachment> {
        self.read_ipam(|i| i.get(key))
            .map(|ip| self.attachment(key, ip))
    }

    /// Every key holding an address.
    pub fn keys(&self) -> Vec<String> {
        self.read_ipam(|i| i.keys().map(str::to_string).collect())
    }

    pub async fn attach(&self, key: &str) -> Result<Attachment> {
        names::validate_key(key)?;
        let _guard = self.locks.lock(key).await;
        let owned = key.to_string();
        let (ip, new) = self.ipam(move |i| i.allocate(&owned)).await?;
        match self.wire(key, ip).await {
            Ok(()) => Ok(self.attachment(key, ip)),
            Err(e) => {
                // A first attach that fails leaves nothing behind; a re-attach keeps the
                // address, which a running container may still use.
                if new {
                    self.undo(key).await;
                }
                Err(e)
            }
        }
    }

    /// Namespace, then the veth pair unless it is already as it should be.
    async fn wire(&self, key: &str, ip: Ipv4Addr) -> Result<()> {
        let netns = self.netns_path(key);
        let veth = names::host_veth(key);
        let subnet = self.config.subnet;
        let wiring = Wiring {
            netns: &netns,
            veth: &veth,
            bridge: &self.config.bridge_name,
            address: ip,
            prefix: subnet.prefix(),
            gateway: subnet.gateway(),
        };
        let created = self.host.ensure_netns(&netns).await?;
        if !created && self.host.is_wired(&wiring).await? {
            debug!(key, address = %ip, "attachment found as it was");
            return Ok(());
        }
        // Whatever a crash left half-made goes first: the veth is made in one piece.
        self.host.unwire(&veth).await?;
        self.host.wire(&wiring).await?;
        debug!(key, address = %ip, netns = %netns.display(), veth, "attached to the bridge");
        Ok(())
    }

    /// Best-effort removal after a failed first attach; the original error is what matters.
    async fn undo(&self, key: &str) {
        if let Err(e) = self.teardown(key).await {
            warn!(key, error = %e, "cannot undo a failed attach");
        }
    }

    async fn teardown(&self, key: &str) -> Result<()> {
        self.host.unwire(&names::host_veth(key)).await?;
        self.host.remove_netns(&self.netns_path(key)).await?;
        let owned = key.to_string();
        self.ipam(move |i| Ok(i.release(&owned))).await?;
        Ok(())
    }

    pub async fn detach(&self, key: &str) -> Result<()> {
        names::validate_key(key)?;
        let _guard = self.locks.lock(key).await;
        self.teardown(key).await?;
        debug!(key, "detached from the bridge");
        Ok(())
    }
}

/// The node-local bridge network on the real kernel: what the daemon and the executor use.
pub struct BridgeNetworks {
    inner: Bridge<Kernel>,
}

impl BridgeNetworks {
    /// Sets up the bridge (gateway = the subnet's first address), IPv4 forwarding and the NAT
    /// rules, and loads the address book. Must run inside a tokio runtime, in the network
    /// namespace the bridge belongs in (the daemon's).
    pub async fn open(config: BridgeConfig) -> Result<BridgeNetworks> {
        let kernel = Kernel::new()?;
        Ok(BridgeNetworks {
            inner: Bridge::open(config, kernel).await?,
        })
    }

    pub fn config(&self) -> &BridgeConfig {
        self.inner.config()
    }

    /// The key's attachment as recorded (address, namespace path), without checking the host.
    pub fn get(&self, key: &str) -> Option<Attachment> {
        self.inner.get(key)
    }

    /// Puts back the bridge, forwarding and firewall rules if anything removed them (another
    /// firewall manager reloading its rules, say); idempotent. The daemon calls it now and then.
    pub async fn reconcile(&self) -> Result<()> {
        self.inner.reconcile().await
    }

    /// Every key that holds an attachment, for reconciliation after a restart.
    pub fn keys(&self) -> Vec<String> {
        self.inner.keys()
    }

    /// Whether `path` is one of this network's namespace files; returns its key.
    pub fn key_of(&self, path: &Path) -> Option<String> {
        (path.parent()? == self.config().netns_dir)
            .then(|| path.file_name()?.to_str().map(str::to_string))
            .flatten()
    }
}

impl TaskNetworks for BridgeNetworks {
    async fn attach(&self, task_id: &str) -> Result<Attachment> {
        self.inner.attach(task_id).await
    }

    async fn detach(&self, task_id: &str) -> Result<()> {
        self.inner.detach(task_id).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// The host as a few sets, with switches to make steps fail.
    #[derive(Default)]
    struct FakeHost {
        state: Mutex<FakeState>,
        fail_wire: AtomicBool,
    }

    #[derive(Default, Debug, Clone, PartialEq)]
    struct FakeState {
        bridges: BTreeMap<String, Subnet>,
        netns: BTreeSet<PathBuf>,
        /// veth -> (netns, address)
        veths: BTreeMap<String, (PathBuf, Ipv4Addr)>,
        wires: usize,
    }

    impl NetHost for Arc<FakeHost> {
        async fn setup_bridge(&self, bridge: &str, subnet: Subnet) -> Result<()> {
            let mut s = self.state.lock().unwrap();
            if let Some(old) = s.bridges.get(bridge)
                && *old != subnet
            {
                return Err(NetworkError::Conflict(format!("{bridge} has {old}")));
            }
            s.bridges.insert(bridge.into(), subnet);
            Ok(())
        }
        async fn ensure_netns(&self, path: &Path) -> Result<bool> {
            Ok(self.state.lock().unwrap().netns.insert(path.into()))
        }
        async fn remove_netns(&self, path: &Path) -> Result<()> {
            self.state.lock().unwrap().netns.remove(path);
            Ok(())
        }
        async fn is_wired(&self, w: &Wiring<'_>) -> Result<bool> {
            let s = self.state.lock().unwrap();
            Ok(s.veths.get(w.veth) == Some(&(w.netns.to_path_buf(), w.address)))
        }
        async fn wire(&self, w: &Wiring<'_>) -> Result<()> {
            if self.fail_wire.load(Ordering::SeqCst) {
                return Err(NetworkError::Conflict("wire failed".into()));
            }
            let mut s = self.state.lock().unwrap();
            assert!(s.netns.contains(w.netns), "wired before the netns existed");
            assert!(
                !s.veths.contains_key(w.veth),
                "stale veth not removed first"
            );
            s.veths
                .insert(w.veth.into(), (w.netns.to_path_buf(), w.address));
            s.wires += 1;
            Ok(())
        }
        async fn unwire(&self, veth: &str) -> Result<()> {
            self.state.lock().unwrap().veths.remove(veth);
            Ok(())
        }
    }

    fn config(dir: &Path, subnet: &str) -> BridgeConfig {
        BridgeConfig {
            subnet: subnet.parse().unwrap(),
            netns_dir: dir.join("netns"),
            ..BridgeConfig::new(dir.join("state"))
        }
    }

    async fn open(dir: &Path, host: &Arc<FakeHost>) -> Bridge<Arc<FakeHost>> {
        Bridge::open(config(dir, "172.29.0.0/16"), host.clone())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn attach_gives_namespace_address_and_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(FakeHost::default());
        let b = open(dir.path(), &host).await;
        let a = b.attach("task1").await.unwrap();
        assert_eq!(a.netns_path, dir.path().join("netns/task1"));
        assert_eq!(a.address, "172.29.0.2/16");
        assert_eq!(a.gateway, "172.29.0.1");
        let s = host.state.lock().unwrap().clone();
        assert_eq!(s.bridges.len(), 1);
        assert_eq!(
            s.veths.get(&names::host_veth("task1")),
            Some(&(a.netns_path.clone(), Ipv4Addr::new(172, 29, 0, 2)))
        );
        assert!(dir.path().join("netns").is_dir());
    }

    #[tokio::test]
    async fn attach_is_idempotent_and_repairs_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(FakeHost::default());
        let b = open(dir.path(), &host).await;
        let first = b.attach("t").await.unwrap();
        assert_eq!(b.attach("t").await.unwrap(), first);
        assert_eq!(
            host.state.lock().unwrap().wires,
            1,
            "a wired task is left alone"
        );
        // Someone deleted the veth: the next attach puts it back, same address.
        host.state.lock().unwrap().veths.clear();
        assert_eq!(b.attach("t").await.unwrap(), first);
        assert_eq!(host.state.lock().unwrap().wires, 2);
    }

    #[tokio::test]
    async fn a_restart_finds_every_attachment_again() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(FakeHost::default());
        let (a, b_att) = {
            let b = open(dir.path(), &host).await;
            (b.attach("a").await.unwrap(), b.attach("b").await.unwrap())
        };
        // A new daemon over the same host and state dir.
        let b = open(dir.path(), &host).await;
        assert_eq!(b.get("a"), Some(a.clone()));
        assert_eq!(b.keys(), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(b.attach("a").await.unwrap(), a);
        assert_eq!(host.state.lock().unwrap().wires, 2, "nothing re-wired");
        let c = b.attach("c").await.unwrap();
        assert_ne!(c.address, a.address);
        assert_ne!(c.address, b_att.address);
    }

    #[tokio::test]
    async fn detach_removes_everything_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(FakeHost::default());
        let b = open(dir.path(), &host).await;
        b.attach("gone").await.unwrap();
        b.detach("gone").await.unwrap();
        b.detach("gone").await.unwrap();
        b.detach("never-attached").await.unwrap();
        let s = host.state.lock().unwrap().clone();
        assert!(s.veths.is_empty() && s.netns.is_empty(), "{s:?}");
        assert_eq!(b.get("gone"), None);
        assert!(b.keys().is_empty());
        assert!(
            b.locks.0.lock().unwrap().is_empty(),
            "lock entries are dropped"
        );
    }

    #[tokio::test]
    async fn a_failed_first_attach_leaves_nothing_but_a_failed_reattach_keeps_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(FakeHost::default());
        let b = open(dir.path(), &host).await;
        host.fail_wire.store(true, Ordering::SeqCst);
        assert!(b.attach("new").await.is_err());
        assert_eq!(b.get("new"), None);
        assert!(host.state.lock().unwrap().netns.is_empty());

        host.fail_wire.store(false, Ordering::SeqCst);
        let kept = b.attach("kept").await.unwrap();
        host.state.lock().unwrap().veths.clear();
        host.fail_wire.store(true, Ordering::SeqCst);
        assert!(b.attach("kept").await.is_err());
        assert_eq!(b.get("kept"), Some(kept));
    }

    #[tokio::test]
    async fn bad_keys_are_refused_before_anything_happens() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(FakeHost::default());
        let b = open(dir.path(), &host).await;
        for key in ["", "../x", "a/b", ".x"] {
            let e = b.attach(key).await.unwrap_err();
            assert!(matches!(e, NetworkError::InvalidKey { .. }), "{key}: {e}");
            assert!(b.detach(key).await.is_err());
        }
        assert!(b.keys().is_empty());
    }

    #[tokio::test]
    async fn exhaustion_fails_the_attach_and_names_the_subnet() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(FakeHost::default());
        let b = Bridge::open(config(dir.path(), "10.7.0.0/30"), host.clone())
            .await
            .unwrap();
        b.attach("one").await.unwrap();
        let e = b.attach("two").await.unwrap_err().to_string();
        assert!(e.contains("10.7.0.0/30"), "{e}");
        assert_eq!(host.state.lock().unwrap().netns.len(), 1);
    }

    #[tokio::test]
    async fn parallel_attaches_get_distinct_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(FakeHost::default());
        let b = Arc::new(open(dir.path(), &host).await);
        let mut joins = Vec::new();
        for i in 0..50 {
            let b = b.clone();
            joins.push(tokio::spawn(async move {
                b.attach(&format!("t{i}")).await.unwrap()
            }));
        }
        let mut addrs = BTreeSet::new();
        for j in joins {
            addrs.insert(j.await.unwrap().address);
        }
        assert_eq!(addrs.len(), 50);
        // All 50 are on disk.
        drop(b);
        let reopened = open(dir.path(), &host).await;
        assert_eq!(reopened.keys().len(), 50);
    }

    #[tokio::test]
    async fn reconcile_puts_the_bridge_back() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(FakeHost::default());
        let b = open(dir.path(), &host).await;
        host.state.lock().unwrap().bridges.clear();
        b.reconcile().await.unwrap();
        assert_eq!(
            host.state.lock().unwrap().bridges.get("shoal0"),
            Some(&"172.29.0.0/16".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn one_instance_at_a_time_owns_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(FakeHost::default());
        let first = open(dir.path(), &host).await;
        let e = Bridge::open(config(dir.path(), "172.29.0.0/16"), host.clone())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("already in use") && e.contains("share one handle"),
            "{e}"
        );
        drop(first);
        open(dir.path(), &host).await;
    }

    #[tokio::test]
    async fn a_bad_bridge_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), "172.29.0.0/16");
        c.bridge_name = "much-too-long-name".into();
        let e = Bridge::open(c, Arc::new(FakeHost::default()))
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("interface name"), "{e}");
    }
}
