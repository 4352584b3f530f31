//! This node's place in a cluster: none, manager or worker, and moving between them.
//!
//! ```text
//!  inactive ──init──▶ manager (new Raft cluster, new CA)      ──leave──▶ inactive
//!           ──join──▶ worker | manager (token decides)        ──leave──▶ inactive
//!  worker ◀──promote/demote (via the session: renew the certificate, start/stop Raft)──▶ manager
//! ```
//!
//! Every member runs an agent (managers run tasks too) and renews its certificate before it
//! expires. Managers also run `ManagerRole`. What a restart needs (cluster.json, certificates,
//! Raft data) is written before a change is reported done, so a daemon restarted at any point
//! carries on as the same node.

mod advertise;
mod lifecycle;
mod manager_role;
mod renew;
pub mod state;
mod worker_role;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use shoal_manager::ca::{NodeCredentials, NodeTls, Role};
use shoal_manager::caserver::CaServer;
use shoal_manager::controlapi::ControlApi;
use shoal_proto::{NodeDescription, NodeRole};
use shoal_worker::engine::LocalEngine;
use tokio::sync::Mutex;
use tonic::Status;
use tracing::{info, warn};

use manager_role::ManagerRole;
use state::ClusterState;
use worker_role::WorkerRole;

/// Facts about the node the cluster code needs.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub state_dir: PathBuf,
    /// The daemon's --listen-addr and --advertise-addr, used when a request names none.
    pub listen_addr: SocketAddr,
    pub advertise_addr: Option<SocketAddr>,
    pub engine_version: String,
    /// The node's one bridge network (tasks' namespaces, addresses, NAT), shared with the
    /// local container API: a clone for the task executor, never a second instance.
    // Read by the worker's task executor, which is wired in separately.
    #[allow(dead_code)]
    pub networks: shoal_overlay::LazyBridgeNetworks,
}

/// The node's membership, shared by the local API and the background tasks.
pub struct Cluster {
    ctx: NodeContext,
    /// This node's ID: made on first start, replaced by the one a cluster assigns at join.
    node_id: RwLock<String>,
    /// Serializes init, join, leave and role changes.
    member: Mutex<Option<Member>>,
    /// What the local socket's Control and CA services delegate to (managers only).
    local: RwLock<Option<LocalServices>>,
    /// Runs the tasks assigned to this node (through the worker role's executor).
    engine: Arc<LocalEngine>,
}

#[derive(Clone)]
pub struct LocalServices {
    pub control: ControlApi,
    pub ca: Arc<CaServer>,
    pub logs: Arc<shoal_manager::logbroker::LogsService>,
}

struct Member {
    state: ClusterState,
    tls: NodeTls,
    manager: Option<ManagerRole>,
    worker: WorkerRole,
}

/// What a refused lifecycle call tells the user.
fn refuse(msg: impl Into<String>) -> Status {
    Status::failed_precondition(msg.into())
}

fn internal(e: anyhow::Error) -> Status {
    Status::internal(format!("{e:#}"))
}

impl Cluster {
    pub fn new(ctx: NodeContext, node_id: String, engine: LocalEngine) -> Arc<Cluster> {
        Arc::new(Cluster {
            ctx,
            node_id: RwLock::new(node_id),
            member: Mutex::new(None),
            local: RwLock::new(None),
            engine: Arc::new(engine),
        })
    }

    pub fn node_id(&self) -> String {
        self.node_id.read().unwrap().clone()
    }

    pub fn context(&self) -> &NodeContext {
        &self.ctx
    }

    /// The manager services for the local socket, if this node is a manager.
    pub fn local_services(&self) -> Option<LocalServices> {
        self.local.read().unwrap().clone()
    }

    /// Picks up where a previous run left off (no-op for a node outside any cluster).
    pub async fn resume(self: &Arc<Self>) -> Result<()> {
        let Some(state) = ClusterState::load(&self.ctx.state_dir)? else {
            return Ok(());
        };
        let creds = shoal_manager::ca::CertDir::new(state::certificates_dir(&self.ctx.state_dir))
            .load()
            .await?
            .context(
                "cluster.json exists but the certificates are missing; run `shoal cluster leave \
                 --force` and join again",
            )?;
        let tls = NodeTls::new(&creds)?;
        *self.node_id.write().unwrap() = creds.identity().node_id.clone();
        let manager = if creds.identity().role == Role::Manager && state.raft_id != 0 {
            Some(
                self.start_manager(&tls, &state, manager_role::Bootstrap::Existing)
                    .await?,
            )
        } else {
            None
        };
        info!(cluster = %state.cluster_id, role = %creds.identity().role, "rejoined the cluster after restart");
        self.activate(state, tls, manager).await;
        Ok(())
    }

    /// Makes this node a member: starts its agent and publishes manager services.
    async fn activate(
        self: &Arc<Self>,
        state: ClusterState,
        tls: NodeTls,
        manager: Option<ManagerRole>,
    ) {
        let worker = WorkerRole::start(self.clone(), &tls, &state);
        self.publish(manager.as_ref());
        *self.member.lock().await = Some(Member {
            state,
            tls,
            manager,
            worker,
        });
    }

    fn publish(&self, manager: Option<&ManagerRole>) {
        *self.local.write().unwrap() = manager.map(|m| LocalServices {
            control: m.manager().control_api(),
            ca: Arc::new(m.manager().ca_service()),
            logs: Arc::new(m.manager().logs_service()),
        });
    }

    async fn start_manager(
        &self,
        tls: &NodeTls,
        state: &ClusterState,
        bootstrap: manager_role::Bootstrap,
    ) -> Result<ManagerRole> {
        let listen: SocketAddr = state.listen_addr.parse().context("bad listen address")?;
        let advertise: SocketAddr = state
            .advertise_addr
            .parse()
            .context("bad advertise address")?;
        ManagerRole::start(
            tls,
            &self.ctx.state_dir,
            state.raft_id,
            listen,
            advertise,
            bootstrap,
        )
        .await
    }

    /// What the node reports about itself to the cluster.
    pub fn description(&self) -> NodeDescription {
        let host = shoal_worker::host::HostInfo::detect();
        NodeDescription {
            hostname: host.hostname,
            platform: Some(shoal_proto::Platform {
                os: std::env::consts::OS.to_string(),
                architecture: host.architecture,
            }),
            resources: Some(shoal_proto::Resources {
                nano_cpus: host.ncpu * 1_000_000_000,
                memory_bytes: host.memory_bytes,
                pids: 0,
            }),
            engine: Some(shoal_proto::EngineDescription {
                engine_version: self.ctx.engine_version.clone(),
                labels: Default::default(),
            }),
        }
    }

    /// Membership as `shoal info` shows it.
    pub async fn membership(&self) -> shoal_proto::ClusterMembership {
        use shoal_proto::cluster_membership::State;
        let guard = self.member.lock().await;
        let Some(m) = guard.as_ref() else {
            return shoal_proto::ClusterMembership::default();
        };
        let role = m.tls.identity().role;
        let (managers, nodes, is_leader) = match &m.manager {
            Some(r) => {
                let store = r.manager().store();
                let nodes = store.list::<shoal_proto::Node>();
                let managers = nodes.iter().filter(|n| n.manager_status.is_some()).count();
                (
                    managers as u32,
                    nodes.len() as u32,
                    r.manager().raft().is_leader(),
                )
            }
            None => (m.state.managers.len() as u32, 0, false),
        };
        let status = m.worker.status();
        shoal_proto::ClusterMembership {
            state: if status.connected_to.is_some() {
                State::Active
            } else {
                State::Pending
            } as i32,
            cluster_id: m.state.cluster_id.clone(),
            role: role.node_role().unwrap_or(NodeRole::Worker) as i32,
            is_leader,
            managers,
            nodes,
            error: status
                .last_error
                .filter(|_| status.connected_to.is_none())
                .unwrap_or_default(),
        }
    }

    /// `shoal cluster info`.
    pub async fn info(&self) -> Result<shoal_proto::ClusterInfoResponse, Status> {
        let guard = self.member.lock().await;
        let m = guard
            .as_ref()
            .ok_or_else(|| refuse("this node is not part of a cluster; run `shoal cluster init` or `shoal cluster join`"))?;
        let certs = shoal_manager::ca::CertDir::new(state::certificates_dir(&self.ctx.state_dir))
            .load()
            .await
            .ok()
            .flatten();
        let (managers, leader) = match &m.manager {
            Some(r) => (
                r.manager().store().view(|v| {
                    shoal_manager::dispatcher::manager_peers(&v.list::<shoal_proto::Node>())
                }),
                r.manager().raft().status().leader_id,
            ),
            None => (m.state.manager_peers(), 0),
        };
        let status = m.worker.status();
        Ok(shoal_proto::ClusterInfoResponse {
            cluster_id: m.state.cluster_id.clone(),
            node_id: self.node_id(),
            role: m
                .tls
                .identity()
                .role
                .node_role()
                .unwrap_or(NodeRole::Worker) as i32,
            managers,
            leader_raft_id: leader,
            cert_not_after: certs.map(|c: NodeCredentials| c.info().not_after.into()),
            listen_addr: m.state.listen_addr.clone(),
            advertise_addr: m.state.advertise_addr.clone(),
            session_manager: status.connected_to.unwrap_or_default(),
            session_error: status.last_error.unwrap_or_default(),
        })
    }

    /// Stops everything at daemon shutdown (the node stays a member; restart resumes).
    pub async fn shutdown(&self) {
        let member = self.member.lock().await.take();
        *self.local.write().unwrap() = None;
        if let Some(m) = member {
            m.worker.stop().await;
            if let Some(r) = m.manager {
                r.stop().await;
            }
        }
    }

    /// Persists a new manager list heard through the session.
    async fn remember_managers(&self, managers: &[shoal_proto::ManagerPeer]) {
        let mut guard = self.member.lock().await;
        if let Some(m) = guard.as_mut() {
            let peers: Vec<state::Peer> = managers.iter().map(state::Peer::from).collect();
            if peers != m.state.managers && !peers.is_empty() {
                m.state.managers = peers;
                if let Err(e) = m.state.save(&self.ctx.state_dir) {
                    warn!(error = %format!("{e:#}"), "cannot persist the manager list");
                }
            }
        }
    }
}

impl Cluster {
    /// Addresses of the managers this node knows, its own first when it is one.
    pub(super) async fn manager_addrs(&self) -> Vec<String> {
        let guard = self.member.lock().await;
        let Some(m) = guard.as_ref() else {
            return Vec::new();
        };
        let mut addrs: Vec<String> = m.state.managers.iter().map(|p| p.addr.clone()).collect();
        if m.manager.is_some() {
            addrs.retain(|a| *a != m.state.advertise_addr);
            addrs.insert(0, m.state.advertise_addr.clone());
        }
        addrs
    }

    /// A renewal brought a new role: start or stop this node's manager role to match.
    pub(super) async fn role_changed(&self, tls: &NodeTls, role: Role) {
        let mut guard = self.member.lock().await;
        let Some(m) = guard.as_mut() else {
            return;
        };
        match (role, m.manager.is_some()) {
            (Role::Manager, false) => {
                m.state.raft_id = rand::random::<u64>().max(1);
                let _ = std::fs::remove_dir_all(state::raft_dir(&self.ctx.state_dir));
                match self.join_raft(tls, &m.state).await {
                    Ok(r) => {
                        if let Err(e) = m.state.save(&self.ctx.state_dir) {
                            warn!(error = %format!("{e:#}"), "cannot persist the Raft ID");
                        }
                        self.publish(Some(&r));
                        m.manager = Some(r);
                        info!("promoted: this node is now a manager");
                    }
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "promotion could not join Raft; will retry at the next renewal")
                    }
                }
            }
            (Role::Worker, true) => {
                let r = m.manager.take().expect("checked");
                self.publish(None);
                r.stop().await;
                let _ = std::fs::remove_dir_all(state::raft_dir(&self.ctx.state_dir));
                m.state.raft_id = 0;
                if let Err(e) = m.state.save(&self.ctx.state_dir) {
                    warn!(error = %format!("{e:#}"), "cannot persist the demotion");
                }
                info!("demoted: this node is now a worker");
            }
            _ => {}
        }
    }
}
