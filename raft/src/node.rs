//! A manager's Raft node: openraft wired to the sled storage, the tonic transport and the Store.
//!
//! ```text
//!   Store::update --> RaftProposer --(leader? local client_write : Propose RPC to the leader)
//!                                      |
//!   peers <--- tonic RaftTransport ---> openraft ---> sled log  (flushed before ack)
//!                                      `-----------> StateMachine --> Store tables + watchers
//! ```
//!
//! Forwarding rule: a proposal is retried elsewhere only when it certainly was not appended
//! (the receiver said it is not the leader, or no connection could be made); any other failure
//! after sending is reported as `StoreError::Uncertain`, never silently retried, so no write is
//! ever applied twice by this layer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{BasicNode, Raft, ServerState};
use shoal_proto::raft_transport_client::RaftTransportClient;
use shoal_proto::raft_transport_server::RaftTransportServer;
use shoal_proto::{
    ProposeRequest, RaftMember, RaftStatusResponse, ReadIndexRequest, StoreCommit, StoreProposal,
    propose_response, read_index_response,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::NodeConfig;
use crate::error::StoreError;
use crate::group_commit::{self, GroupCommit, Outcome};
use crate::network::client::{MAX_MESSAGE, Peers};
use crate::network::server::RaftService;
use crate::network::tls;
use crate::storage::{self, OpenError};
use crate::store::{BoxFuture, Proposer, Shared, Store};
use crate::types::{NodeId, TypeConfig};

/// Why a node could not start or be bootstrapped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(
        "invalid Raft settings: {0}; fix the cluster's raft settings (heartbeat, election timeout)"
    )]
    Config(String),
    #[error("the Raft node {id} failed to start: {detail}")]
    Start { id: NodeId, detail: String },
    #[error(
        "cannot bootstrap the cluster: {0}; a node that already has Raft state must join or \
         restart, not initialize"
    )]
    Initialize(String),
    #[error(
        "no leader was elected within {0:?}; check that a majority of managers is running and can reach each other"
    )]
    NoLeader(Duration),
}

/// Outcome of a write attempted on this node's own Raft.
pub(crate) enum LocalWrite {
    Done(StoreCommit),
    /// Not the leader: nothing was appended. Carries the leader, if known.
    NotLeader(Option<(NodeId, String)>),
    Failed(StoreError),
}

/// What the transport, the proposer and the membership code share.
pub(crate) struct NodeInner {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) peers: Peers,
    pub(crate) config: NodeConfig,
    /// Gathers this node's writes into log entries while it leads.
    group: GroupCommit,
}

impl NodeInner {
    /// The leader this node believes in, with its address.
    pub(crate) fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        Some((id, addr))
    }

    /// Appends a proposal through this node's Raft (gathered with others into one entry by
    /// group commit), if it leads.
    pub(crate) async fn write_local(
        &self,
        proposal: StoreProposal,
        deadline: Instant,
    ) -> LocalWrite {
        match tokio::time::timeout_at(deadline, self.group.submit(proposal)).await {
            Ok(Outcome::Committed(commit)) => LocalWrite::Done(commit),
            Ok(Outcome::NotLeader(hint)) => {
                LocalWrite::NotLeader(hint.filter(|(id, _)| *id != self.id))
            }
            Ok(Outcome::Refused(e)) => LocalWrite::Failed(StoreError::Raft(e)),
            Ok(Outcome::Stopped(e)) => LocalWrite::Failed(StoreError::Uncertain(format!(
                "Raft on manager {} stopped ({e})",
                self.id
            ))),
            Err(_) => LocalWrite::Failed(StoreError::Uncertain(format!(
                "not committed within {:?}",
                self.config.propose_timeout
            ))),
        }
    }

    /// The read index, if this node leads and can confirm it with a quorum.
    pub(crate) async fn read_index_local(&self) -> Result<u64, Option<(NodeId, String)>> {
        match self.raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(read.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Err(f
                .leader_id
                .zip(f.leader_node.map(|n| n.addr))
                .filter(|(id, _)| *id != self.id)),
            Err(_) => Err(None),
        }
    }

    /// Commits a proposal, forwarding it to the leader when this node is a follower.
    async fn propose(&self, proposal: StoreProposal) -> Result<StoreCommit, StoreError> {
        let timeout = self.config.propose_timeout;
        let deadline = Instant::now() + timeout;
        let mut hint: Option<(NodeId, String)> = None;
        loop {
            match hint.take().or_else(|| self.leader()) {
                None => {}
                Some((id, _)) if id == self.id => {
                    match self.write_local(proposal.clone(), deadline).await {
                        LocalWrite::Done(c) => return Ok(c),
                        LocalWrite::NotLeader(h) => hint = h,
                        LocalWrite::Failed(e) => return Err(e),
                    }
                }
                Some((id, addr)) => {
                    let mut client = RaftTransportClient::new(self.peers.channel(id, &addr))
                        .max_decoding_message_size(MAX_MESSAGE)
                        .max_encoding_message_size(MAX_MESSAGE);
                    let req = ProposeRequest {
                        proposal: Some(proposal.clone()),
                    };
                    let reply = tokio::time::timeout_at(deadline, client.propose(req)).await;
                    match reply {
                        Err(_) => {
                            return Err(StoreError::Uncertain(format!(
                                "leader {id} at {addr} did not answer within {timeout:?}"
                            )));
                        }
                        // Never connected, so never sent: safe to try again.
                        Ok(Err(status)) if never_sent(&status) => {
                            tracing::debug!(leader = id, %status, "leader unreachable, retrying");
                        }
                        Ok(Err(status)) => {
                            return Err(StoreError::Uncertain(format!(
                                "forwarding to leader {id} at {addr} failed: {}",
                                status.message()
                            )));
                        }
                        Ok(Ok(resp)) => match resp.into_inner().outcome {
                            Some(propose_response::Outcome::Commit(c)) => return Ok(c),
                            Some(propose_response::Outcome::NotLeader(h)) => {
                                hint = (h.leader_id != 0 && h.leader_id != id)
                                    .then_some((h.leader_id, h.leader_addr));
                            }
                            Some(propose_response::Outcome::Error(e)) => {
                                return Err(StoreError::Uncertain(format!("leader {id}: {e}")));
                            }
                            None => {
                                return Err(StoreError::Uncertain(format!(
                                    "leader {id} sent an empty answer"
                                )));
                            }
                        },
                    }
                }
            }
            self.pause(deadline)
                .await
                .map_err(|_| StoreError::NoLeader(timeout))?;
        }
    }

    /// The index a linearizable read must wait for. Reads are idempotent, so every failure is
    /// retried until the deadline.
    async fn read_index(&self) -> Result<u64, StoreError> {
        let timeout = self.config.read_timeout;
        let deadline = Instant::now() + timeout;
        let mut hint: Option<(NodeId, String)> = None;
        loop {
            match hint.take().or_else(|| self.leader()) {
                None => {}
                Some((id, _)) if id == self.id => match self.read_index_local().await {
                    Ok(index) => return Ok(index),
                    Err(h) => hint = h,
                },
                Some((id, addr)) => {
                    let mut client = RaftTransportClient::new(self.peers.channel(id, &addr));
                    let reply =
                        tokio::time::timeout_at(deadline, client.read_index(ReadIndexRequest {}))
                            .await;
                    if let Ok(Ok(resp)) = reply {
                        match resp.into_inner().outcome {
                            Some(read_index_response::Outcome::Index(i)) => return Ok(i),
                            Some(read_index_response::Outcome::NotLeader(h)) => {
                                hint = (h.leader_id != 0 && h.leader_id != id)
                                    .then_some((h.leader_id, h.leader_addr));
                            }
                            _ => {}
                        }
                    }
                }
            }
            self.pause(deadline)
                .await
                .map_err(|_| StoreError::NoLeader(timeout))?;
        }
    }

    /// Waits a little before another attempt (or for a leader change); fails past the deadline.
    pub(crate) async fn pause(&self, deadline: Instant) -> Result<(), ()> {
        let now = Instant::now();
        if now >= deadline {
            return Err(());
        }
        let mut metrics = self.raft.metrics();
        let until = deadline.min(now + Duration::from_millis(50));
        // Woken early by any metrics change (a new leader, typically).
        let _ = tokio::time::timeout_at(until, metrics.changed()).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(())
    }

    /// This node's view of the cluster.
    pub(crate) fn status(&self) -> RaftStatusResponse {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let replication = m.replication.clone().unwrap_or_default();
        let leading = m.state == ServerState::Leader;
        let members = membership
            .nodes()
            .map(|(id, node)| RaftMember {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
                reachable: leading && self.peers.is_reachable(*id),
                matched_index: if *id == self.id {
                    m.last_log_index.unwrap_or(0)
                } else {
                    replication
                        .get(id)
                        .copied()
                        .flatten()
                        .map_or(0, |l| l.index)
                },
            })
            .collect();
        RaftStatusResponse {
            id: self.id,
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.map_or(0, |l| l.index),
            members,
        }
    }
}

/// Whether a failed call certainly never reached the server (the connection was never made).
pub(crate) fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The Store's way into Raft.
struct RaftProposer {
    inner: Arc<NodeInner>,
}

impl Proposer for RaftProposer {
    fn propose(&self, proposal: StoreProposal) -> BoxFuture<'_, Result<StoreCommit, StoreError>> {
        Box::pin(self.inner.propose(proposal))
    }

    fn read_index(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.inner.read_index())
    }
}

/// A running manager Raft node: its Store, its transport server and its membership calls.
pub struct RaftNode {
    pub(crate) inner: Arc<NodeInner>,
    store: Store,
    cancel: CancellationToken,
    server: Option<JoinHandle<()>>,
}

impl RaftNode {
    /// Opens the state in `config.data_dir` and starts Raft. With a listener, the node serves
    /// its transport there (over `config.tls`); without one, mount `transport_service()` on
    /// another tonic server. A new node waits, empty, until it is initialized or added.
    pub async fn start(
        config: NodeConfig,
        listener: Option<TcpListener>,
    ) -> Result<RaftNode, NodeError> {
        let id = config.id;
        let span = tracing::info_span!("raft", node = id);
        let raft_config = config
            .raft_config()
            .map_err(|e| NodeError::Config(e.to_string()))?;
        let (log, sm, shared) = storage::open(&config.data_dir, config.watch_buffer)
            .instrument(span.clone())
            .await?;
        let peers = Peers::new(config.clone());
        let raft = Raft::new(id, Arc::new(raft_config), peers.clone(), log, sm)
            .instrument(span.clone())
            .await
            .map_err(|e| NodeError::Start {
                id,
                detail: e.to_string(),
            })?;
        let group = GroupCommit::start(raft.clone(), group_commit::DEFAULT_WINDOW);
        let inner = Arc::new(NodeInner {
            id,
            raft,
            group,
            peers,
            config: config.clone(),
        });
        let store = store_for(&inner, shared);
        let cancel = CancellationToken::new();
        let mut node = RaftNode {
            inner,
            store,
            cancel,
            server: None,
        };
        if let Some(listener) = listener {
            node.server = Some(node.serve(listener, span));
        }
        tracing::info!(node = id, addr = %config.advertise_addr, "raft node started");
        Ok(node)
    }

    fn serve(&self, listener: TcpListener, span: tracing::Span) -> JoinHandle<()> {
        let service = self.transport_service();
        let tls = self.inner.config.tls.as_ref().map(|t| t.server.clone());
        let cancel = self.cancel.clone();
        let incoming = tls::incoming(listener, tls, cancel.clone());
        tokio::spawn(
            async move {
                let served = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the Raft transport server failed");
                }
            }
            .instrument(span),
        )
    }

    /// The gRPC service, for a daemon that serves several services on one listener.
    pub fn transport_service(&self) -> RaftTransportServer<RaftService> {
        RaftTransportServer::new(RaftService::new(self.inner.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// The replicated Store.
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The underlying openraft handle (metrics, triggers), for diagnostics and tests.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// Bootstraps a new cluster whose voters are `members` (ID -> address); usually just this
    /// node (`cluster init`). Refused if this node already has Raft state.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), NodeError> {
        let members: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(|e| NodeError::Initialize(e.to_string()))
    }

    /// Whether this node has Raft state (was initialized, or joined and received the log).
    pub async fn is_initialized(&self) -> bool {
        self.inner.raft.is_initialized().await.unwrap_or(false)
    }

    /// The current leader, as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Waits until this node knows a leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, NodeError> {
        let mut metrics = self.inner.raft.metrics();
        let found = tokio::time::timeout(timeout, async {
            loop {
                if let Some(l) = metrics.borrow_and_update().current_leader {
                    return Some(l);
                }
                if metrics.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match found {
            Ok(Some(l)) => Ok(l),
            _ => Err(NodeError::NoLeader(timeout)),
        }
    }

    /// This node's view of the cluster (leader, term, members; reachability if it leads).
    pub fn status(&self) -> RaftStatusResponse {
        self.inner.status()
    }

    /// Stops Raft and the transport server at once, as a crash would (nothing is lost: every
    /// acknowledged entry is on disk). Restart from the same `data_dir`.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(node = self.inner.id, error = %e, "raft shutdown");
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }
}

fn store_for(inner: &Arc<NodeInner>, shared: Arc<Shared>) -> Store {
    let proposer = Arc::new(RaftProposer {
        inner: inner.clone(),
    });
    Store::new(shared, proposer, inner.config.read_timeout)
}

impl Drop for RaftNode {
    fn drop(&mut self) {
        // A node dropped without shutdown still stops serving.
        self.cancel.cancel();
    }
}
