//! The part every member runs: the agent's session with the managers, the handling of what the
//! session brings (manager lists to remember, role changes to act on), and certificate renewal.

use std::sync::{Arc, Mutex};

use shoal_manager::ca::NodeTls;
use shoal_proto::{NodeRole, TaskStatusUpdate};
use shoal_worker::agent::{Agent, AgentConfig, AgentEvent, AgentStatus, Connector};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Cluster;
use super::state::ClusterState;

pub struct WorkerRole {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    status: Arc<Mutex<AgentStatus>>,
    /// Where the executor (services issue) sends task status for the session to carry.
    #[allow(dead_code)]
    status_tx: mpsc::Sender<TaskStatusUpdate>,
}

/// Dials managers for the agent with this node's certificate.
struct TlsAgentConnector {
    tls: NodeTls,
}

impl Connector for TlsAgentConnector {
    fn connect(
        &self,
        addr: &str,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<tonic::transport::Channel, String>> + Send + '_,
        >,
    > {
        let addr = addr.to_string();
        Box::pin(async move {
            let connector = self.tls.connector().map_err(|e| e.to_string())?;
            super::lifecycle::dial(connector, &addr)
                .await
                .map_err(|e| format!("{e:#}"))
        })
    }
}

impl WorkerRole {
    pub fn start(cluster: Arc<Cluster>, tls: &NodeTls, state: &ClusterState) -> WorkerRole {
        let (events_tx, events_rx) = mpsc::channel(64);
        let (status_tx, status_rx) = mpsc::channel(1024);
        let advertise_ip = state
            .advertise_addr
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| state.advertise_addr.clone());
        let agent = Agent::new(
            AgentConfig {
                description: cluster.description(),
                advertise_addr: advertise_ip,
                managers: state.manager_peers(),
                jitter_seed: rand::random(),
            },
            Arc::new(TlsAgentConnector { tls: tls.clone() }),
            events_tx,
            status_rx,
        );
        let status = agent.status_handle();
        let cancel = CancellationToken::new();
        let renew_now = Arc::new(Notify::new());
        let tasks = vec![
            tokio::spawn(agent.run(cancel.clone())),
            tokio::spawn(handle_events(
                cluster.clone(),
                tls.clone(),
                events_rx,
                renew_now.clone(),
                cancel.clone(),
            )),
            tokio::spawn(super::renew::run(
                cluster,
                tls.clone(),
                renew_now,
                cancel.clone(),
            )),
        ];
        WorkerRole {
            cancel,
            tasks,
            status,
            status_tx,
        }
    }

    pub fn status(&self) -> AgentStatus {
        self.status.lock().unwrap().clone()
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn handle_events(
    cluster: Arc<Cluster>,
    tls: NodeTls,
    mut events: mpsc::Receiver<AgentEvent>,
    renew_now: Arc<Notify>,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = events.recv() => match e { Some(e) => e, None => return },
        };
        match event {
            AgentEvent::Connected { manager_addr } => info!(manager = %manager_addr, "session up"),
            AgentEvent::Disconnected { reason } => debug!(%reason, "session down"),
            AgentEvent::Managers(list) => cluster.remember_managers(&list).await,
            AgentEvent::Node(node) => {
                // The cluster settled on another role than our certificate carries: renew now,
                // the new certificate brings the role.
                let settled = NodeRole::try_from(node.role).unwrap_or_default();
                let held = tls.identity().role.node_role().unwrap_or(NodeRole::Worker);
                if settled != held {
                    info!(from = ?held, to = ?settled, "role change: renewing the certificate");
                    renew_now.notify_one();
                }
            }
            AgentEvent::Assignments(a) => {
                debug!(
                    tasks = a.tasks.len(),
                    removed = a.removed_task_ids.len(),
                    full = a.full,
                    "assignments"
                );
            }
        }
    }
}
