//! Leadership supervision: the controllers (dispatcher, manager health, roles, and the
//! orchestrators) run only on the Raft leader, all started in one place from the Store and all
//! stopped together when leadership moves.
//!
//! A controller that fails while this manager still leads takes the others down with it; they
//! restart together from the Store after a pause (they are built to start from a
//! view-and-watch, so a restart loses nothing). openraft 0.9 cannot hand leadership away, so a
//! restart is the strongest reset available; the failure is logged at error level.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use shoal_raft::RaftNode;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Pause before restarting controllers that failed.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

pub type ControllerFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Something that runs on the leader until cancelled.
pub trait Controller: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn run(&self, cancel: CancellationToken) -> ControllerFuture;
}

/// What the supervisor tells the rest of the manager about leadership.
pub trait LeadershipListener: Send + Sync + 'static {
    /// The current leader's cluster address ("" when none is known).
    fn leader_changed(&self, leader_addr: &str, this_node_leads: bool);
}

/// Runs `controllers` whenever this node leads, until `cancel` fires.
pub async fn supervise(
    raft: Arc<RaftNode>,
    controllers: Vec<Arc<dyn Controller>>,
    listener: Arc<dyn LeadershipListener>,
    cancel: CancellationToken,
) {
    let mut metrics = raft.raft().metrics();
    loop {
        let (leads, leader_addr) = leadership(&raft);
        listener.leader_changed(&leader_addr, leads);
        if leads {
            info!("this manager leads: starting controllers");
            let failed = run_term(&raft, &controllers, &mut metrics, &cancel).await;
            if cancel.is_cancelled() {
                return;
            }
            if failed {
                tokio::time::sleep(RESTART_PAUSE).await;
            }
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

/// One term of leadership; true if it ended because a controller failed.
async fn run_term<M>(
    raft: &RaftNode,
    controllers: &[Arc<dyn Controller>],
    metrics: &mut tokio::sync::watch::Receiver<M>,
    cancel: &CancellationToken,
) -> bool {
    let term = cancel.child_token();
    let mut set = JoinSet::new();
    for c in controllers {
        let c = c.clone();
        let token = term.clone();
        set.spawn(async move { (c.name(), c.run(token).await) });
    }
    let mut failed = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = metrics.changed() => {
                if changed.is_err() || !leadership(raft).0 {
                    info!("leadership lost: stopping controllers");
                    break;
                }
            }
            Some(done) = set.join_next() => {
                let (name, result) = match done {
                    Ok(r) => r,
                    Err(e) => ("a controller", Err(format!("panicked: {e}"))),
                };
                if let Err(e) = result {
                    error!(controller = name, error = %e, "controller failed; restarting all controllers");
                    failed = true;
                    break;
                }
                // A controller that returns Ok without being cancelled has nothing more to do.
            }
        }
    }
    term.cancel();
    while set.join_next().await.is_some() {}
    failed
}

/// Whether this node leads, and the leader's address.
fn leadership(raft: &RaftNode) -> (bool, String) {
    let status = raft.status();
    let addr = status
        .members
        .iter()
        .find(|m| m.id == status.leader_id && status.leader_id != 0)
        .map(|m| m.addr.clone())
        .unwrap_or_default();
    (raft.is_leader(), addr)
}
