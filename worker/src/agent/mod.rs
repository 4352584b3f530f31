//! The agent: this node's session with the cluster's dispatcher.
//!
//! ```text
//!            ┌──────── managers (known list, persisted) ────────┐
//!  Agent ────┤ connect ─▶ Register ─▶ heartbeats + task status ─▶ │ leader's dispatcher
//!    │       └──◀ Started / Assignments / ManagerList / Node ────┘
//!    └─▶ events (to the daemon: what to run, role changes)   ◀─ status updates (executor)
//! ```
//!
//! A node loses its manager when the manager dies, is partitioned, or stops leading; the agent
//! then tries the next known manager (or the leader a follower points it to), with jittered
//! backoff so a cluster's worth of agents do not stampede the new leader. The TLS connection
//! itself comes from a `Connector` the daemon supplies, so the agent never touches keys.

mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use shoal_proto::{Assignments, ManagerPeer, Node, NodeDescription, TaskStatusUpdate};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use session::SessionEnd;

/// Opens a gRPC channel to a manager's cluster port (mutual TLS in the daemon).
pub trait Connector: Send + Sync + 'static {
    fn connect(
        &self,
        addr: &str,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<tonic::transport::Channel, String>> + Send + '_,
        >,
    >;
}

/// What the agent tells the rest of the node.
#[derive(Debug, Clone)]
pub enum AgentEvent {
    /// A session is up with the manager at this address.
    Connected { manager_addr: String },
    /// The session ended; the agent is looking for a manager.
    Disconnected { reason: String },
    /// What this node must run (full at the start of each session, then changes).
    Assignments(Assignments),
    /// This node's object as the cluster sees it (e.g. a new desired role). Boxed: it is
    /// large and rare.
    Node(Box<Node>),
    /// The current managers, for reconnecting and for the daemon to persist.
    Managers(Vec<ManagerPeer>),
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub description: NodeDescription,
    /// What the node registers as its address.
    pub advertise_addr: String,
    /// Managers known at start (from join, or persisted by the daemon).
    pub managers: Vec<ManagerPeer>,
    /// Seed for retry jitter (DESIGN: seeded, so simulations can replay it).
    pub jitter_seed: u64,
}

/// How the agent is doing, for `shoal info`.
#[derive(Debug, Clone, Default)]
pub struct AgentStatus {
    pub connected_to: Option<String>,
    pub last_error: Option<String>,
}

pub struct Agent {
    config: AgentConfig,
    connector: Arc<dyn Connector>,
    events: mpsc::Sender<AgentEvent>,
    statuses: mpsc::Receiver<TaskStatusUpdate>,
    status: Arc<Mutex<AgentStatus>>,
}

/// Backoff between attempts: grows to this, with jitter.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);

impl Agent {
    /// `events` receives what the node must do; `statuses` carries task status to report.
    pub fn new(
        config: AgentConfig,
        connector: Arc<dyn Connector>,
        events: mpsc::Sender<AgentEvent>,
        statuses: mpsc::Receiver<TaskStatusUpdate>,
    ) -> Agent {
        Agent {
            config,
            connector,
            events,
            statuses,
            status: Arc::new(Mutex::new(AgentStatus::default())),
        }
    }

    /// A handle on the agent's status that stays valid while it runs.
    pub fn status_handle(&self) -> Arc<Mutex<AgentStatus>> {
        self.status.clone()
    }

    /// Keeps a session up until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.config.jitter_seed);
        let mut managers = self.config.managers.clone();
        let mut next = 0usize;
        let mut redirect: Option<String> = None;
        let mut backoff = MIN_BACKOFF;
        // Status not yet acknowledged by a session is kept (latest per task) and resent.
        let mut pending: HashMap<String, TaskStatusUpdate> = HashMap::new();
        while !cancel.is_cancelled() {
            let addr = match redirect.take() {
                Some(a) => a,
                None if managers.is_empty() => {
                    self.set_status(None, Some("no manager is known".into()));
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(MAX_BACKOFF) => continue,
                    }
                }
                None => {
                    next %= managers.len();
                    let a = managers[next].addr.clone();
                    next += 1;
                    a
                }
            };
            let outcome = session::run(
                &self.config,
                self.connector.as_ref(),
                &addr,
                &self.events,
                &mut self.statuses,
                &mut pending,
                &cancel,
                &self.status,
                &mut managers,
            )
            .await;
            match outcome {
                SessionEnd::Cancelled => return,
                SessionEnd::Redirect(leader) => {
                    info!(from = %addr, to = %leader, "following the dispatcher to the leader");
                    redirect = Some(leader);
                    backoff = MIN_BACKOFF;
                    continue;
                }
                SessionEnd::Ended { reason, was_up } => {
                    if was_up {
                        backoff = MIN_BACKOFF;
                    }
                    warn!(manager = %addr, %reason, "session with manager ended");
                    self.set_status(None, Some(reason.clone()));
                    let _ = self.events.send(AgentEvent::Disconnected { reason }).await;
                }
            }
            // Full jitter: anywhere between the minimum and the current backoff.
            let wait = rng.random_range(MIN_BACKOFF..=backoff.max(MIN_BACKOFF));
            backoff = (backoff * 2).min(MAX_BACKOFF);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn set_status(&self, connected_to: Option<String>, last_error: Option<String>) {
        let mut s = self.status.lock().unwrap();
        s.connected_to = connected_to;
        if last_error.is_some() {
            s.last_error = last_error;
        }
    }
}
