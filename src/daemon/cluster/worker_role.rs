//! The part every member runs: the agent's session with the managers, the handling of what the
//! session brings (assignments for the executor, manager lists to remember, role changes to
//! act on), and certificate renewal. The executor lives as long as the membership: stopping
//! the role (daemon shutdown) leaves task containers running for the next run to adopt;
//! leaving the cluster removes them.

use std::sync::{Arc, Mutex};

use shoal_manager::ca::NodeTls;
use shoal_overlay::LazyBridgeNetworks;
use shoal_proto::{Assignments, NodeRole};
use shoal_worker::agent::{Agent, AgentConfig, AgentEvent, AgentStatus, Connector};
use shoal_worker::engine::LocalEngine;
use shoal_worker::executor::Executor;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Cluster;
use super::state::ClusterState;

pub struct WorkerRole {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    status: Arc<Mutex<AgentStatus>>,
    /// Ends with the role, handing back the executor (to remove its containers at leave).
    executor: JoinHandle<Executor<LocalEngine, LazyBridgeNetworks>>,
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
        // The executor sends task status on the channel the agent carries to the managers.
        let (assignments_tx, assignments_rx) = mpsc::channel(64);
        let executor = Executor::new(
            cluster.engine.clone(),
            Arc::new(cluster.ctx.networks.clone()),
            cluster.node_id(),
            status_tx,
        );
        let executor = tokio::spawn(executor.run(assignments_rx, cancel.clone()));
        let renew_now = Arc::new(Notify::new());
        let tasks = vec![
            tokio::spawn(agent.run(cancel.clone())),
            tokio::spawn(handle_events(
                cluster.clone(),
                tls.clone(),
                events_rx,
                assignments_tx,
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
            executor,
        }
    }

    pub fn status(&self) -> AgentStatus {
        self.status.lock().unwrap().clone()
    }

    /// Stops the session and the executor; task containers keep running (daemon shutdown).
    pub async fn stop(self) {
        let _ = self.stop_all().await;
    }

    /// Stops like `stop`, then stops and removes every task container (cluster leave).
    pub async fn leave(self) {
        if let Some(executor) = self.stop_all().await {
            executor.leave().await;
        }
    }

    async fn stop_all(self) -> Option<Executor<LocalEngine, LazyBridgeNetworks>> {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.executor.await.ok()
    }
}

async fn handle_events(
    cluster: Arc<Cluster>,
    tls: NodeTls,
    mut events: mpsc::Receiver<AgentEvent>,
    assignments: mpsc::Sender<Assignments>,
    renew_now: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut logs = LogListener::default();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = events.recv() => match e { Some(e) => e, None => return },
        };
        match event {
            AgentEvent::Connected { manager_addr } => {
                info!(manager = %manager_addr, "session up");
                logs.start(&cluster, &tls, manager_addr, &cancel);
            }
            AgentEvent::Disconnected { reason } => {
                debug!(%reason, "session down");
                logs.stop();
            }
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
                if assignments.send(a).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The node's log subscription listener (`service logs`), held with the manager the session is
/// with (the leader): restarted at every new session, stopped when the session ends.
#[derive(Default)]
struct LogListener {
    running: Option<CancellationToken>,
}

impl LogListener {
    fn start(
        &mut self,
        cluster: &Arc<Cluster>,
        tls: &NodeTls,
        manager_addr: String,
        parent: &CancellationToken,
    ) {
        self.stop();
        let token = parent.child_token();
        self.running = Some(token.clone());
        let engine = cluster.engine.clone();
        let connector = TlsAgentConnector { tls: tls.clone() };
        tokio::spawn(async move {
            let channel = match connector.connect(&manager_addr).await {
                Ok(c) => c,
                Err(e) => {
                    warn!(manager = %manager_addr, error = %e, "log listener: cannot connect");
                    return;
                }
            };
            if let Err(e) = shoal_worker::logpublisher::serve(engine, channel, token).await {
                warn!(manager = %manager_addr, error = %e, "log listener ended");
            }
        });
    }

    fn stop(&mut self) {
        if let Some(t) = self.running.take() {
            t.cancel();
        }
    }
}
