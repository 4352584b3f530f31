//! `cluster init`, `cluster join` and `cluster leave`: each checks everything it can before it
//! changes anything, and writes what a restart needs before it reports success.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use shoal_manager::ca::{
    CaCert, CertDir, Csr, JoinToken, JoinTokens, NodeCredentials, NodeIdentity, NodeKey, NodeTls,
    Role, RootCa, TlsConnector, join_client_config,
};
use shoal_manager::cluster_spec;
use shoal_proto::manager_membership_client::ManagerMembershipClient;
use shoal_proto::node_ca_client::NodeCaClient;
use shoal_proto::{
    Annotations, Cluster as ClusterObject, ClusterInitRequest, ClusterInitResponse,
    ClusterJoinRequest, ClusterJoinResponse, JoinManagerRequest, ManagerStatus, Node,
    NodeAvailability, NodeRole, NodeSpec, NodeStatus, manager_status, node_status,
};
use shoal_raft::StoreError;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use super::manager_role::{Bootstrap, ManagerRole};
use super::state::{self, ClusterState, Peer};
use super::{Cluster, Member, internal, refuse};
use crate::daemon::addr;

/// How long a join may wait for the remote manager.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// HTTP/2 pings on every cluster connection, both ways: a peer that stops answering them is
/// gone, whatever TCP thinks.
pub(super) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
pub(super) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(4);

const ALREADY_MEMBER: &str = "this node is already part of a cluster; use `shoal cluster leave` \
                              to leave it before joining or creating another";

/// The command another machine runs to join with `token`.
pub fn join_command(token: &str, advertise: &str) -> String {
    format!("shoal cluster join --token {token} {advertise}")
}

fn new_raft_id() -> u64 {
    // Never 0: 0 means "no Raft ID" in the model.
    rand::random::<u64>().max(1)
}

impl Cluster {
    fn addresses(&self, listen: &str, advertise: &str) -> Result<(SocketAddr, SocketAddr), Status> {
        let listen = if listen.is_empty() {
            self.ctx.listen_addr
        } else {
            addr::resolve(listen, "--listen-addr")
                .map_err(|e| Status::invalid_argument(format!("{e:#}")))?
        };
        let advertise = if advertise.is_empty() {
            self.ctx.advertise_addr
        } else {
            Some(
                addr::resolve(advertise, "--advertise-addr")
                    .map_err(|e| Status::invalid_argument(format!("{e:#}")))?,
            )
        };
        // An advertised address without a port takes the listen port.
        let advertise = super::advertise::choose(advertise, listen)
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        Ok((listen, advertise))
    }

    /// `shoal cluster init`: a new cluster with this node as its first manager.
    pub async fn init(
        self: &Arc<Self>,
        req: ClusterInitRequest,
    ) -> Result<ClusterInitResponse, Status> {
        if req.force_new_cluster {
            return self.force_new_cluster().await;
        }
        if self.member.lock().await.is_some() {
            return Err(refuse(ALREADY_MEMBER));
        }
        let (listen, advertise) = self.addresses(&req.listen_addr, &req.advertise_addr)?;
        let mut spec = cluster_spec::default_spec("default");
        if let Some(expiry) = req.cert_expiry {
            spec.ca = Some(shoal_proto::CaConfig {
                node_cert_expiry: Some(expiry),
            });
        }
        if let Some(period) = req.dispatcher_heartbeat {
            spec.dispatcher = Some(shoal_proto::DispatcherConfig {
                heartbeat_period: Some(period),
            });
        }
        cluster_spec::validate(&spec).map_err(Status::invalid_argument)?;

        let cluster_id = shoal_proto::ids::new_id();
        let node_id = self.node_id();
        let now = SystemTime::now();
        let root = RootCa::create(&cluster_id, now).map_err(|e| internal(e.into()))?;
        let tokens = JoinTokens::generate(root.cert().digest());
        let key = NodeKey::generate().map_err(|e| internal(e.into()))?;
        let csr = Csr::from_pem(&key.csr_pem().map_err(|e| internal(e.into()))?)
            .map_err(|e| internal(e.into()))?;
        let identity = NodeIdentity {
            node_id: node_id.clone(),
            role: Role::Manager,
            cluster_id: cluster_id.clone(),
        };
        let issued = root
            .issue(&csr, &identity, cluster_spec::cert_expiry(Some(&spec)), now)
            .map_err(|e| internal(e.into()))?;
        let creds = NodeCredentials::new(root.cert().clone(), &issued.cert_pem, key)
            .map_err(|e| internal(e.into()))?;
        let tls = NodeTls::new(&creds).map_err(|e| internal(e.into()))?;

        let raft_id = new_raft_id();
        let state = ClusterState {
            cluster_id: cluster_id.clone(),
            raft_id,
            listen_addr: listen.to_string(),
            advertise_addr: advertise.to_string(),
            managers: vec![Peer {
                node_id: node_id.clone(),
                addr: advertise.to_string(),
                raft_id,
            }],
        };
        // A leftover Raft directory from an earlier cluster must not be mistaken for this one.
        let _ = std::fs::remove_dir_all(state::raft_dir(&self.ctx.state_dir));
        let role = ManagerRole::start(
            &tls,
            &self.ctx.state_dir,
            raft_id,
            listen,
            advertise,
            Bootstrap::NewCluster,
        )
        .await
        .map_err(internal)?;
        let written = async {
            role.manager()
                .raft()
                .wait_for_leader(Duration::from_secs(10))
                .await
                .context("the new one-member Raft cluster elected no leader")?;
            let description = self.description();
            role.manager()
                .store()
                .update(|tx| {
                    tx.create(ClusterObject {
                        id: cluster_id.clone(),
                        spec: Some(spec.clone()),
                        root_ca: Some(root.to_proto(&tokens)),
                        ..Default::default()
                    })?;
                    tx.create(Node {
                        id: node_id.clone(),
                        spec: Some(NodeSpec {
                            annotations: Some(Annotations::default()),
                            desired_role: NodeRole::Manager as i32,
                            availability: NodeAvailability::Active as i32,
                        }),
                        description: Some(description),
                        status: Some(NodeStatus {
                            state: node_status::State::Unknown as i32,
                            message: "starting its session".into(),
                            addr: advertise.ip().to_string(),
                        }),
                        manager_status: Some(ManagerStatus {
                            raft_id,
                            addr: advertise.to_string(),
                            leader: true,
                            reachability: manager_status::Reachability::Reachable as i32,
                        }),
                        role: NodeRole::Manager as i32,
                        certificate: Some(issued.to_proto()),
                        ..Default::default()
                    })?;
                    Ok::<_, StoreError>(())
                })
                .await?;
            CertDir::new(state::certificates_dir(&self.ctx.state_dir))
                .save(&creds)
                .await?;
            state.save(&self.ctx.state_dir)?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = written {
            role.stop().await;
            let _ = ClusterState::remove_all(&self.ctx.state_dir);
            return Err(internal(e));
        }
        info!(cluster = %cluster_id, %advertise, "initialized a new cluster");
        self.activate(state, tls, Some(role)).await;
        Ok(ClusterInitResponse {
            cluster_id,
            node_id,
            worker_join_command: join_command(&tokens.worker.to_string(), &advertise.to_string()),
            manager_join_command: join_command(&tokens.manager.to_string(), &advertise.to_string()),
        })
    }

    /// `shoal cluster join`: checks the manager's CA against the token, gets a certificate,
    /// and becomes a worker or a manager as the token says.
    pub async fn join(
        self: &Arc<Self>,
        req: ClusterJoinRequest,
    ) -> Result<ClusterJoinResponse, Status> {
        if self.member.lock().await.is_some() {
            return Err(refuse(ALREADY_MEMBER));
        }
        let token = JoinToken::parse(&req.token).map_err(|e| {
            Status::invalid_argument(format!(
                "invalid join token: {e}. Copy it again from `shoal cluster join-token worker` \
                 (or manager) on a manager"
            ))
        })?;
        let remote = addr::resolve(&req.remote_addr, "the manager address")
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        let (listen, advertise) = self.addresses(&req.listen_addr, &req.advertise_addr)?;

        let (config, verifier) =
            join_client_config(token.ca_digest()).map_err(|e| internal(e.into()))?;
        let channel = dial(
            TlsConnector::new(config).with_timeout(JOIN_TIMEOUT),
            &remote.to_string(),
        )
        .await
        .map_err(|e| {
            Status::unavailable(format!(
                "cannot reach a manager at {remote}: {e:#}. Check the address, that the \
                     manager is running, and that port {}/tcp is open; a manager whose CA does \
                     not match the token is refused before anything is sent",
                remote.port()
            ))
        })?;
        let key = NodeKey::generate().map_err(|e| internal(e.into()))?;
        let csr_pem = key.csr_pem().map_err(|e| internal(e.into()))?;
        let issued = NodeCaClient::new(channel)
            .issue_node_certificate(shoal_proto::IssueNodeCertificateRequest {
                token: req.token.trim().to_string(),
                csr_pem: csr_pem.into_bytes(),
                node_id: self.node_id(),
                description: Some(self.description()),
                advertise_addr: advertise.ip().to_string(),
            })
            .await
            .map_err(|s| {
                Status::new(
                    s.code(),
                    format!("the manager refused to join this node: {}", s.message()),
                )
            })?
            .into_inner();
        // The CA the handshake proved matches the token; what the response says must be it too.
        let ca = verifier
            .verified_ca()
            .ok_or_else(|| Status::internal("the join handshake recorded no CA"))?;
        let sent = CaCert::from_pem(&String::from_utf8_lossy(&issued.root_ca_pem))
            .map_err(|e| Status::internal(format!("the manager sent an unreadable CA: {e}")))?;
        if sent.digest() != ca.digest() {
            return Err(Status::permission_denied(
                "the manager sent a CA other than the one it presented; refusing to join",
            ));
        }
        let creds =
            NodeCredentials::new(ca, &String::from_utf8_lossy(&issued.certificate_pem), key)
                .map_err(|e| internal(e.into()))?;
        let tls = NodeTls::new(&creds).map_err(|e| internal(e.into()))?;
        let role = NodeRole::try_from(issued.role).unwrap_or_default();
        let raft_id = if role == NodeRole::Manager {
            new_raft_id()
        } else {
            0
        };
        let mut state = ClusterState {
            cluster_id: issued.cluster_id.clone(),
            raft_id,
            listen_addr: listen.to_string(),
            advertise_addr: advertise.to_string(),
            managers: issued.managers.iter().map(Peer::from).collect(),
        };
        if state.managers.is_empty() {
            state.managers.push(Peer {
                node_id: String::new(),
                addr: remote.to_string(),
                raft_id: 0,
            });
        }
        CertDir::new(state::certificates_dir(&self.ctx.state_dir))
            .save(&creds)
            .await
            .map_err(|e| internal(e.into()))?;
        state.save(&self.ctx.state_dir).map_err(internal)?;
        self.set_node_id(&issued.node_id);

        let manager = if role == NodeRole::Manager {
            let _ = std::fs::remove_dir_all(state::raft_dir(&self.ctx.state_dir));
            match self.join_raft(&tls, &state).await {
                Ok(r) => Some(r),
                Err(e) => {
                    let _ = ClusterState::remove_all(&self.ctx.state_dir);
                    return Err(Status::unavailable(format!("{e:#}")));
                }
            }
        } else {
            None
        };
        info!(cluster = %issued.cluster_id, ?role, "joined the cluster");
        self.activate(state, tls, manager).await;
        Ok(ClusterJoinResponse {
            cluster_id: issued.cluster_id,
            node_id: issued.node_id,
            role: role as i32,
        })
    }

    fn set_node_id(&self, id: &str) {
        if *self.node_id.read().unwrap() != id {
            // The cluster already knew this node's old ID (an earlier membership): it gave a new one.
            let path = self.ctx.state_dir.join("node-id");
            if let Err(e) = std::fs::write(&path, format!("{id}\n")) {
                warn!(error = %e, "cannot record the node ID the cluster assigned");
            }
            *self.node_id.write().unwrap() = id.to_string();
        }
    }

    /// Starts an empty Raft replica and asks a manager to make it a voter.
    pub(super) async fn join_raft(
        &self,
        tls: &NodeTls,
        state: &ClusterState,
    ) -> anyhow::Result<ManagerRole> {
        let role = self.start_manager(tls, state, Bootstrap::Existing).await?;
        let mut last = anyhow!("no manager is known");
        for peer in &state.managers {
            if peer.addr == state.advertise_addr {
                continue;
            }
            let attempt = async {
                let channel = dial(tls.connector()?, &peer.addr).await?;
                ManagerMembershipClient::new(channel)
                    .join_manager(JoinManagerRequest {
                        raft_id: state.raft_id,
                        addr: state.advertise_addr.clone(),
                    })
                    .await
                    .map_err(|s| anyhow!("{}", s.message()))?;
                anyhow::Ok(())
            };
            match attempt.await {
                Ok(()) => return Ok(role),
                Err(e) => {
                    last = e.context(format!(
                        "manager {} could not add this node to Raft",
                        peer.addr
                    ))
                }
            }
        }
        role.stop().await;
        Err(last)
    }

    /// `shoal cluster leave`.
    pub async fn leave(&self, force: bool) -> Result<(), Status> {
        let mut guard = self.member.lock().await;
        let Some(member) = guard.as_ref() else {
            return Err(refuse("this node is not part of a cluster"));
        };
        if let Some(role) = &member.manager {
            let store = role.manager().store().clone();
            let managers: Vec<Node> = store
                .list::<Node>()
                .into_iter()
                .filter(|n| n.manager_status.is_some())
                .collect();
            if !force {
                if managers.len() <= 1 {
                    return Err(refuse(
                        "this node is the last manager: leaving erases the cluster's state. Use \
                         --force to do it anyway",
                    ));
                }
                let remaining = managers.len() - 1;
                let quorum = remaining / 2 + 1;
                let reachable = managers
                    .iter()
                    .filter(|n| n.id != self.node_id())
                    .filter(|n| {
                        n.manager_status.as_ref().is_some_and(|m| {
                            m.reachability == manager_status::Reachability::Reachable as i32
                        })
                    })
                    .count();
                if reachable < quorum {
                    return Err(refuse(format!(
                        "leaving would break the quorum: {reachable} of the {remaining} remaining \
                         managers are reachable and {quorum} are needed. Demote this node \
                         (`shoal node demote`) once the others are back, or use --force"
                    )));
                }
            }
            // Leave Raft while this replica can still reach the others.
            let raft_id = member.state.raft_id;
            if managers.len() > 1 {
                if let Err(e) = role.manager().raft().remove_member(raft_id).await {
                    if !force {
                        return Err(refuse(format!("cannot leave Raft: {e}")));
                    }
                    warn!(error = %e, "leaving without removing this manager from Raft (--force)");
                }
                let id = self.node_id();
                let _ = store
                    .update(|tx| {
                        if let Some(mut n) = tx.get::<Node>(&id) {
                            n.manager_status = None;
                            n.role = NodeRole::Worker as i32;
                            if let Some(s) = n.spec.as_mut() {
                                s.desired_role = NodeRole::Worker as i32;
                            }
                            tx.update(n)?;
                        }
                        Ok::<_, StoreError>(())
                    })
                    .await;
            }
        }
        let member = guard.take().expect("checked above");
        // Background tasks being stopped may wait on this lock: release it first.
        drop(guard);
        *self.local.write().unwrap() = None;
        // As Swarm: leaving stops and removes the node's task containers.
        member.worker.leave().await;
        if let Some(role) = member.manager {
            role.stop().await;
        }
        ClusterState::remove_all(&self.ctx.state_dir).map_err(internal)?;
        info!("left the cluster");
        Ok(())
    }

    /// `cluster init --force-new-cluster` on a manager that lost its quorum: keeps the state
    /// and makes this replica the only member.
    async fn force_new_cluster(self: &Arc<Self>) -> Result<ClusterInitResponse, Status> {
        let mut guard = self.member.lock().await;
        let Some(member) = guard.take() else {
            return Err(refuse(
                "--force-new-cluster recovers a manager that lost its quorum; this node is not \
                 in a cluster (use `shoal cluster init` without it)",
            ));
        };
        if member.manager.is_none() {
            *guard = Some(member);
            return Err(refuse(
                "--force-new-cluster needs a manager; this node is a worker",
            ));
        }
        drop(guard);
        *self.local.write().unwrap() = None;
        let Member {
            mut state,
            tls,
            manager,
            worker,
        } = member;
        worker.stop().await;
        let role = manager.expect("checked above");
        let raft_id = state.raft_id;
        // Take the state as this replica has it, then restart Raft alone with it.
        let objects = role.manager().store().snapshot();
        role.stop().await;
        let new_raft_id = new_raft_id();
        let recovered = async {
            let _ = std::fs::remove_dir_all(state::raft_dir(&self.ctx.state_dir));
            state.raft_id = new_raft_id;
            let listen: SocketAddr = state.listen_addr.parse()?;
            let advertise: SocketAddr = state.advertise_addr.parse()?;
            let role = ManagerRole::start(
                &tls,
                &self.ctx.state_dir,
                new_raft_id,
                listen,
                advertise,
                Bootstrap::NewCluster,
            )
            .await?;
            role.manager()
                .raft()
                .wait_for_leader(Duration::from_secs(10))
                .await?;
            let me = self.node_id();
            role.manager()
                .store()
                .update(|tx| {
                    for obj in objects.view().all() {
                        let mut obj = obj.clone();
                        if let Some(shoal_proto::store_object::Object::Node(n)) =
                            obj.object.as_mut()
                        {
                            if n.id == me {
                                n.manager_status = Some(ManagerStatus {
                                    raft_id: new_raft_id,
                                    addr: advertise.to_string(),
                                    leader: true,
                                    reachability: manager_status::Reachability::Reachable as i32,
                                });
                            } else if n.manager_status.is_some() {
                                // The other managers are gone from Raft: they are workers now.
                                n.manager_status = None;
                                n.role = NodeRole::Worker as i32;
                                if let Some(s) = n.spec.as_mut() {
                                    s.desired_role = NodeRole::Worker as i32;
                                }
                            }
                        }
                        create_any(tx, obj)?;
                    }
                    Ok::<_, StoreError>(())
                })
                .await?;
            state.managers = vec![Peer {
                node_id: me,
                addr: advertise.to_string(),
                raft_id: new_raft_id,
            }];
            state.save(&self.ctx.state_dir)?;
            anyhow::Ok(role)
        }
        .await;
        let role = recovered.map_err(|e| {
            internal(e.context(format!("recovery of Raft member {raft_id} failed")))
        })?;
        let tokens = role
            .manager()
            .store()
            .list::<ClusterObject>()
            .into_iter()
            .next()
            .and_then(|c| c.root_ca?.join_tokens)
            .unwrap_or_default();
        let advertise = state.advertise_addr.clone();
        let cluster_id = state.cluster_id.clone();
        info!(cluster = %cluster_id, "forced a new one-manager cluster from this manager's state");
        self.activate(state, tls, Some(role)).await;
        Ok(ClusterInitResponse {
            cluster_id,
            node_id: self.node_id(),
            worker_join_command: join_command(&tokens.worker, &advertise),
            manager_join_command: join_command(&tokens.manager, &advertise),
        })
    }
}

/// A gRPC channel to a manager through `connector` (which does TCP and TLS).
pub(super) async fn dial(connector: TlsConnector, addr: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(JOIN_TIMEOUT)
        .tcp_nodelay(true)
        // A manager behind a cut link sends no RST: pings notice it in seconds, not minutes.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_with_connector(connector).await?)
}

/// Creates a stored object of whatever kind it is (recovery copies every table).
fn create_any(
    tx: &mut shoal_raft::Tx<'_>,
    obj: shoal_proto::StoreObject,
) -> Result<(), StoreError> {
    use shoal_proto::store_object::Object;
    match obj.object {
        Some(Object::Cluster(o)) => tx.create(o),
        Some(Object::Node(o)) => tx.create(o),
        Some(Object::Service(o)) => tx.create(o),
        Some(Object::Task(o)) => tx.create(o),
        Some(Object::Network(o)) => tx.create(o),
        Some(Object::Secret(o)) => tx.create(o),
        Some(Object::Config(o)) => tx.create(o),
        None => Ok(()),
    }
}
