//! The dialing side of the transport: openraft's `RaftNetwork` over tonic, one per peer.
//!
//! Each peer has its own lazily connected HTTP/2 channel (tonic reconnects it after a failure)
//! and openraft runs one replication task per peer, so a dead or slow peer only ever delays its
//! own stream. Every call has a deadline: openraft's for append-entries and votes, ours for
//! snapshots. Connection failures are reported as `Unreachable`, which makes openraft back off
//! that peer instead of hammering it. Successful calls are recorded per peer: membership safety
//! checks use them to tell reachable voters from unreachable ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RPCTypes, Snapshot, Vote};
use shoal_proto::raft_transport_client::RaftTransportClient;
use shoal_proto::{RaftPayload, RaftSnapshotChunk};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::config::NodeConfig;
use crate::types::{NodeId, TypeConfig, decode, encode};

/// Largest message either side accepts (append-entries batches can be large).
pub(crate) const MAX_MESSAGE: usize = 64 << 20;

/// Connections to every peer, shared by replication, forwarding and membership checks.
#[derive(Clone)]
pub(crate) struct Peers {
    inner: Arc<PeersInner>,
}

struct PeersInner {
    config: NodeConfig,
    channels: Mutex<HashMap<NodeId, (String, Channel)>>,
    /// Per peer: when the last RPC succeeded, and when one last failed.
    contact: Mutex<HashMap<NodeId, Contact>>,
}

#[derive(Clone, Copy, Default)]
struct Contact {
    ok: Option<Instant>,
    failed: Option<Instant>,
}

impl Peers {
    pub(crate) fn new(config: NodeConfig) -> Self {
        Peers {
            inner: Arc::new(PeersInner {
                config,
                channels: Mutex::new(HashMap::new()),
                contact: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The channel to `id` at `addr`, made on first use and replaced if the address changed.
    pub(crate) fn channel(&self, id: NodeId, addr: &str) -> Channel {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((known, channel)) = channels.get(&id)
            && known == addr
        {
            return channel.clone();
        }
        let config = &self.inner.config;
        let channel = super::tls::channel(
            addr,
            config.tls.clone(),
            config.dialer.clone(),
            config.connect_timeout,
        );
        channels.insert(id, (addr.to_string(), channel.clone()));
        channel
    }

    pub(crate) fn client(&self, id: NodeId, addr: &str) -> RaftTransportClient<Channel> {
        RaftTransportClient::new(self.channel(id, addr))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    pub(crate) fn record_contact(&self, id: NodeId) {
        let mut contact = self.inner.contact.lock().unwrap_or_else(|e| e.into_inner());
        contact.entry(id).or_default().ok = Some(Instant::now());
    }

    pub(crate) fn record_failure(&self, id: NodeId) {
        let mut contact = self.inner.contact.lock().unwrap_or_else(|e| e.into_inner());
        contact.entry(id).or_default().failed = Some(Instant::now());
    }

    /// Whether `id` answered recently and its last RPC did not fail (this node always counts).
    /// With a 100 ms heartbeat, a peer that died is seen as unreachable almost at once.
    pub(crate) fn is_reachable(&self, id: NodeId) -> bool {
        if id == self.inner.config.id {
            return true;
        }
        let contact = self.inner.contact.lock().unwrap_or_else(|e| e.into_inner());
        let Some(c) = contact.get(&id) else {
            return false;
        };
        let Some(ok) = c.ok else { return false };
        ok.elapsed() < self.inner.config.reachable_window() && c.failed.is_none_or(|f| f < ok)
    }

    pub(crate) fn config(&self) -> &NodeConfig {
        &self.inner.config
    }
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            client: self.client(target, &node.addr),
            peers: self.clone(),
        }
    }
}

/// openraft's connection to one peer.
pub(crate) struct PeerClient {
    target: NodeId,
    client: RaftTransportClient<Channel>,
    peers: Peers,
}

/// How a call failed before a reply arrived.
enum CallError {
    Timeout(Duration),
    Status(tonic::Status),
    Encode(postcard::Error),
}

impl PeerClient {
    /// Maps a failed call to openraft's view: unreachable (back off), timeout, or network.
    fn rpc_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        err: CallError,
    ) -> RPCError<NodeId, BasicNode, E> {
        self.peers.record_failure(self.target);
        match err {
            CallError::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.peers.config().id,
                target: self.target,
                timeout,
            }),
            // tonic reports a failed connect as Unavailable.
            CallError::Status(s) if s.code() == tonic::Code::Unavailable => {
                RPCError::Unreachable(Unreachable::new(&s))
            }
            CallError::Status(s) => RPCError::Network(NetworkError::new(&s)),
            CallError::Encode(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }

    /// Sends one unary openraft message and decodes the peer's `Result`.
    async fn unary<Req, Resp, E>(
        &mut self,
        action: RPCTypes,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let data = encode(req).map_err(|e| self.rpc_error(action, CallError::Encode(e)))?;
        let mut client = self.client.clone();
        let payload = RaftPayload { data };
        let call = async move {
            match action {
                RPCTypes::Vote => client.vote(payload).await,
                _ => client.append_entries(payload).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, call).await {
            Err(_) => return Err(self.rpc_error(action, CallError::Timeout(ttl))),
            Ok(Err(status)) => return Err(self.rpc_error(action, CallError::Status(status))),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        self.peers.record_contact(self.target);
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply.data).map_err(|e| self.rpc_error(action, CallError::Encode(e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.unary::<_, _, openraft::error::Infallible>(
            RPCTypes::AppendEntries,
            &rpc,
            option.hard_ttl(),
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.unary::<_, _, openraft::error::Infallible>(RPCTypes::Vote, &rpc, option.hard_ttl())
            .await
    }

    /// Not used: `full_snapshot` below streams whole snapshots over one RPC.
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let e = std::io::Error::other("shoal streams whole snapshots; chunked install is unused");
        Err(RPCError::Network(NetworkError::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let config = self.peers.config();
        let header = encode(&(vote, snapshot.meta.clone()))
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let data = Arc::new(snapshot.snapshot.into_inner());
        let chunk = config.snapshot_chunk_size.max(1);
        let count = data.len().div_ceil(chunk).max(1);
        tracing::info!(
            target_node = self.target,
            bytes = data.len(),
            chunks = count,
            "sending snapshot"
        );
        // Chunks are cut as the stream is polled, so only one extra chunk is in memory.
        let chunks = tokio_stream::iter((0..count).map(move |i| {
            let end = ((i + 1) * chunk).min(data.len());
            RaftSnapshotChunk {
                header: if i == 0 { header.clone() } else { Vec::new() },
                data: data[(i * chunk).min(end)..end].to_vec(),
            }
        }));
        let mut client = self.client.clone();
        let timeout = config.snapshot_timeout;
        let send = tokio::time::timeout(
            timeout,
            async move { client.install_snapshot(chunks).await },
        );
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = send => r,
        };
        if !matches!(reply, Ok(Ok(_))) {
            self.peers.record_failure(self.target);
        }
        let reply = match reply {
            Err(_) => {
                return Err(StreamingError::Timeout(Timeout {
                    action: RPCTypes::InstallSnapshot,
                    id: config.id,
                    target: self.target,
                    timeout,
                }));
            }
            Ok(Err(s)) if s.code() == tonic::Code::Unavailable => {
                return Err(StreamingError::Unreachable(Unreachable::new(&s)));
            }
            Ok(Err(s)) => return Err(StreamingError::Network(NetworkError::new(&s))),
            Ok(Ok(r)) => r.into_inner(),
        };
        self.peers.record_contact(self.target);
        let result: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            decode(&reply.data).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}
