//! Bridged networking for `shoal container run --network bridge`: the daemon's side of
//! [`shoal_overlay`].
//!
//! The node has one [`LazyBridgeNetworks`], shared by this local container API and the task
//! executor; it makes the bridge only when something first asks for it, so a node that never
//! runs a bridged container leaves the host's network as it was.
//!
//! A bridged container is attached under a fresh key `ctr-<random>` before it is created (the
//! engine needs the namespace path at create), and the key is the namespace file's name, so
//! the container's own record says which attachment is its:
//!
//! ```text
//!  create --network bridge ─ attach(ctr-<rand>) ─ engine create(netns = <netns_dir>/ctr-...)
//!                                                 └ failed: detach
//!  rm ─ inspect (netns path) ─ engine remove ─ detach(ctr-...)
//!  at start, every minute, after each bridged create ─ sweep: detach ctr-* keys no
//!                                                      container refers to
//! ```
//!
//! The sweep catches what the engine removes by itself (`run -d --rm`) and what a crash cut
//! short. Task attachments (keyed by task ID, without the prefix) belong to the executor and are
//! never touched here.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_overlay::{
    Attachment, BridgeConfig, LazyBridgeNetworks, NetworkError, Subnet, TaskNetworks,
};
use shoal_worker::engine::{Engine, LocalEngine};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, info, warn};

/// Keys of attachments made for local containers (task IDs never contain '-').
const KEY_PREFIX: &str = "ctr-";

/// How often attachments of containers removed behind our back are collected.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The `--network` values of `container run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    None,
    Bridge,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, Status> {
        match s {
            "" | "none" => Ok(Mode::None),
            "bridge" => Ok(Mode::Bridge),
            other => Err(Status::invalid_argument(format!(
                "unknown network {other:?}: use --network bridge (node-local bridge with \
                 outbound NAT) or --network none (loopback only)"
            ))),
        }
    }
}

/// The bridge network's settings from the daemon's flags: its state beside the node's, its
/// namespace files beside the socket (/run/shoal/netns by default; a test daemon's stay in its
/// own directory, where teardown finds and unmounts them).
pub fn bridge_config(state_dir: &Path, socket: &Path, subnet: Subnet) -> BridgeConfig {
    let run_dir = socket.parent().unwrap_or(Path::new("/run/shoal"));
    BridgeConfig {
        subnet,
        netns_dir: run_dir.join("netns"),
        ..BridgeConfig::new(state_dir.join("network"))
    }
}

/// Bridged local containers: attach before create, detach after remove, sweep the rest.
pub struct ContainerNetworks {
    nets: LazyBridgeNetworks,
    /// Keys attached for a create that has not returned yet: the sweep must not take them.
    pending: Mutex<HashSet<String>>,
}

impl ContainerNetworks {
    pub fn new(nets: LazyBridgeNetworks) -> ContainerNetworks {
        ContainerNetworks {
            nets,
            pending: Mutex::new(HashSet::new()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new attachment for a container about to be created; call [`Self::created`] once the
    /// create has returned, whatever its outcome.
    pub async fn attach_new(&self) -> Result<(String, Attachment), Status> {
        let key = format!("{KEY_PREFIX}{:016x}", rand::random::<u64>());
        self.pending().insert(key.clone());
        match self.nets.attach(&key).await {
            Ok(a) => Ok((key, a)),
            Err(e) => {
                self.pending().remove(&key);
                Err(status(e))
            }
        }
    }

    /// The create of `key`'s container returned; when it failed, the attachment goes.
    pub async fn created(&self, key: &str, ok: bool) {
        if !ok {
            self.release(key).await;
        }
        self.pending().remove(key);
    }

    /// The key of a container's bridge attachment, from its namespace path.
    pub fn key_of(&self, netns: &str) -> Option<String> {
        let path = Path::new(netns);
        if path.parent()? != self.nets.config().netns_dir {
            return None;
        }
        let name = path.file_name()?.to_str()?;
        name.starts_with(KEY_PREFIX).then(|| name.to_string())
    }

    /// Detaches `key`; a failure is logged and left to the next sweep, since the container
    /// it served is already gone.
    pub async fn release(&self, key: &str) {
        match self.nets.detach(key).await {
            Ok(()) => debug!(key, "released a container's bridge attachment"),
            Err(e) => warn!(key, error = %e, "cannot release a container's bridge attachment"),
        }
    }

    /// Detaches every container attachment that no container refers to any more.
    pub async fn sweep(&self, engine: &LocalEngine) {
        let Some(bridge) = self.nets.opened() else {
            return;
        };
        // Keys first, containers second: a key not pending now belongs to a container that
        // exists by now (or to a failed create being undone), so the listing below sees it.
        let candidates: Vec<String> = {
            let pending = self.pending();
            bridge
                .keys()
                .into_iter()
                .filter(|k| k.starts_with(KEY_PREFIX) && !pending.contains(k))
                .collect()
        };
        if candidates.is_empty() {
            return;
        }
        let in_use = match used_netns(engine).await {
            Ok(paths) => paths,
            Err(e) => {
                warn!(error = %e, "cannot list containers to collect unused bridge attachments");
                return;
            }
        };
        for key in candidates {
            if !in_use.contains(&bridge.config().netns_dir.join(&key)) {
                info!(
                    key,
                    "releasing the bridge attachment of a container that is gone"
                );
                self.release(&key).await;
            }
        }
    }

    /// A sweep in the background, after a bridged create: what the engine removed by itself
    /// since the last one (`run -d --rm`) is released without waiting for the next round.
    pub fn sweep_soon(self: &Arc<Self>, engine: &LocalEngine) {
        let (me, engine) = (self.clone(), engine.clone());
        tokio::spawn(async move { me.sweep(&engine).await });
    }

    /// At start (if the bridge was ever used: it is set up again after a reboot, and what a
    /// crash left is collected), then every [`SWEEP_EVERY`] until cancelled; each round also
    /// puts back bridge and firewall rules that someone removed (Docker rebuilding its FORWARD
    /// chain drops the accepts we added there).
    pub async fn run_sweeper(&self, engine: LocalEngine, cancel: CancellationToken) {
        if self.nets.was_used()
            && let Err(e) = self.nets.get().await
        {
            warn!(error = %e, "cannot set up the bridge network again");
        }
        loop {
            self.sweep(&engine).await;
            if let Some(bridge) = self.nets.opened()
                && let Err(e) = bridge.reconcile().await
            {
                warn!(error = %e, "cannot restore the bridge network's setup");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
    }
}

/// Namespace paths of every container the engine knows, running or not.
async fn used_netns(engine: &LocalEngine) -> shoal_worker::engine::Result<HashSet<PathBuf>> {
    let mut paths = HashSet::new();
    for c in engine.list_containers(true).await? {
        // Removed between list and inspect: then it uses nothing.
        if let Ok(d) = engine.inspect_container(&c.id).await
            && !d.network_namespace.is_empty()
        {
            paths.insert(PathBuf::from(d.network_namespace));
        }
    }
    Ok(paths)
}

/// Network errors as gRPC statuses: the caller's fault, the host's state, or ours.
pub fn status(e: NetworkError) -> Status {
    let msg = format!("bridge network: {e}");
    match e {
        NetworkError::InvalidConfig(_) | NetworkError::InvalidKey { .. } => {
            Status::invalid_argument(msg)
        }
        NetworkError::Exhausted { .. } => Status::resource_exhausted(msg),
        NetworkError::Conflict(_) | NetworkError::Firewall(_) => Status::failed_precondition(msg),
        NetworkError::Netlink { .. } | NetworkError::Io { .. } => Status::internal(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_their_errors() {
        assert_eq!(Mode::parse("").unwrap(), Mode::None);
        assert_eq!(Mode::parse("none").unwrap(), Mode::None);
        assert_eq!(Mode::parse("bridge").unwrap(), Mode::Bridge);
        let e = Mode::parse("host").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("--network bridge"), "{}", e.message());
    }

    #[test]
    fn namespace_files_sit_beside_the_socket() {
        let subnet: Subnet = "172.29.0.0/16".parse().unwrap();
        let c = bridge_config(
            Path::new("/var/lib/shoal"),
            Path::new("/run/shoal/shoal.sock"),
            subnet,
        );
        assert_eq!(c.netns_dir, Path::new(shoal_overlay::DEFAULT_NETNS_DIR));
        assert_eq!(c.state_dir, Path::new("/var/lib/shoal/network"));
        let t = bridge_config(
            Path::new("/tmp/n1/state"),
            Path::new("/tmp/n1/s.sock"),
            subnet,
        );
        assert_eq!(t.netns_dir, Path::new("/tmp/n1/netns"));
    }

    #[test]
    fn only_our_own_container_keys_are_recognised() {
        // Nothing is made on disk: the network is never opened here.
        let dir = PathBuf::from("/nonexistent/shoal-unit");
        let nets = ContainerNetworks::new(LazyBridgeNetworks::new(bridge_config(
            &dir,
            &dir.join("s.sock"),
            "172.29.0.0/16".parse().unwrap(),
        )));
        let ns = dir.join("netns");
        let key = |p: PathBuf| nets.key_of(p.to_str().unwrap());
        assert_eq!(key(ns.join("ctr-00ff")), Some("ctr-00ff".into()));
        // A task's attachment, or a namespace elsewhere, is not ours to release.
        assert_eq!(key(ns.join("x5kq2m9p0a1b2c3d4e5f6g7h8")), None);
        assert_eq!(key(PathBuf::from("/run/netns/ctr-00ff")), None);
        assert_eq!(nets.key_of(""), None);
    }
}
