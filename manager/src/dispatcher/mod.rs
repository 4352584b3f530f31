//! The dispatcher: the leader's end of every node's session.
//!
//! ```text
//!  agent ──Register──▶ session ──node READY──▶ Store
//!  agent ──Heartbeat─▶ session ──deadline────▶ Liveness ──expired──▶ node DOWN (Store)
//!  agent ──Status────▶ session ──────────────▶ StatusBatcher ──one tx per batch──▶ Store
//!  agent ◀─Started / ManagerList / Node / Assignments── session ◀── Store watch
//! ```
//!
//! Only the Raft leader dispatches: node liveness must be judged in one place, or a manager
//! with no session for a node would call it dead. Other managers answer with the leader's
//! address and agents move there. When leadership changes every session ends with it, and the
//! new leader gives each READY node a full grace period to reconnect before judging it.

mod liveness;
mod service;
mod session;
mod status;

use std::sync::Arc;
use std::time::Duration;

use shoal_raft::Store;
use tokio::sync::watch;

pub use service::DispatcherService;
pub use session::manager_peers;

/// Swarm's default heartbeat period.
pub const DEFAULT_HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);
/// A node is DOWN after this many heartbeat periods without one (Swarm uses 3).
pub const GRACE_MULTIPLIER: u32 = 3;

/// Shared by the gRPC service (every manager) and the leader-only loops.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Some while this manager leads: the running dispatch state.
    active: watch::Sender<Option<Arc<session::Active>>>,
    /// host:port of the current leader's cluster listener, for redirecting agents.
    leader_addr: watch::Sender<String>,
}

impl Dispatcher {
    pub fn new(store: Store) -> Dispatcher {
        Dispatcher {
            inner: Arc::new(Inner {
                store,
                active: watch::channel(None).0,
                leader_addr: watch::channel(String::new()).0,
            }),
        }
    }

    /// Where agents should go when this manager does not lead (set by the manager as
    /// leadership moves).
    pub fn set_leader_addr(&self, addr: String) {
        self.inner.leader_addr.send_replace(addr);
    }

    /// Dispatches until `cancel` fires (leadership lost): sessions, liveness, status batching.
    /// Every session ends when this returns.
    pub async fn run(
        &self,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<(), shoal_raft::StoreError> {
        let period = heartbeat_period(&self.inner.store);
        let (active, loops) = session::Active::start(self.inner.store.clone(), period);
        let active = Arc::new(active);
        self.inner.active.send_replace(Some(active.clone()));
        let result = tokio::select! {
            r = loops.run() => r,
            _ = cancel.cancelled() => Ok(()),
        };
        self.inner.active.send_replace(None);
        active.close();
        result
    }
}

/// The cluster's heartbeat period (Cluster.spec.dispatcher), or Swarm's default.
pub fn heartbeat_period(store: &Store) -> Duration {
    store
        .list::<shoal_proto::Cluster>()
        .first()
        .and_then(|c| c.spec.as_ref()?.dispatcher.as_ref()?.heartbeat_period)
        .map(|d| d.to_std())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_HEARTBEAT_PERIOD)
}
