//! The listening side of the transport: hands peers' messages to openraft, and serves the
//! calls followers make on the leader (proposals, read index, membership, status).
//!
//! The leader-side handlers never forward again: a node that is not the leader answers
//! `not_leader` with its best hint and the caller decides where to go, which keeps forwarding
//! loop-free and makes "not appended, safe to retry" an explicit answer.

use std::io::Cursor;
use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{BasicNode, Snapshot, SnapshotMeta, Vote};
use shoal_proto::raft_transport_server::RaftTransport;
use shoal_proto::{
    MembershipChangeRequest, MembershipChangeResponse, ProposeRequest, ProposeResponse,
    RaftLeaderHint, RaftPayload, RaftSnapshotChunk, RaftStatusRequest, RaftStatusResponse,
    ReadIndexRequest, ReadIndexResponse, membership_change_response, propose_response,
    read_index_response,
};
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use crate::membership::MembershipError;
use crate::node::{LocalWrite, NodeInner};
use crate::types::{NodeId, TypeConfig, decode, encode};

/// The `RaftTransport` gRPC service of one node.
#[derive(Clone)]
pub struct RaftService {
    inner: Arc<NodeInner>,
}

impl RaftService {
    pub(crate) fn new(inner: Arc<NodeInner>) -> Self {
        RaftService { inner }
    }
}

fn bad_request(what: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!(
        "undecodable {what}: {e} (mismatched shoal versions?)"
    ))
}

fn payload<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let data = encode(value).map_err(|e| Status::internal(format!("encoding a reply: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}

fn to_hint(h: Option<(NodeId, String)>) -> RaftLeaderHint {
    h.map(|(leader_id, leader_addr)| RaftLeaderHint {
        leader_id,
        leader_addr,
    })
    .unwrap_or_default()
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode(&req.into_inner().data).map_err(|e| bad_request("append-entries", e))?;
        payload(&self.inner.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> =
            decode(&req.into_inner().data).map_err(|e| bad_request("vote", e))?;
        payload(&self.inner.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<RaftSnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (Vote<NodeId>, SnapshotMeta<NodeId, BasicNode>) =
            decode(&first.header).map_err(|e| bad_request("snapshot header", e))?;
        let mut data = first.data;
        while let Some(chunk) = stream.message().await? {
            data.extend_from_slice(&chunk.data);
        }
        tracing::info!(
            node = self.inner.id,
            bytes = data.len(),
            snapshot = %meta.snapshot_id,
            "installing a snapshot from the leader"
        );
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        };
        payload(&self.inner.raft.install_full_snapshot(vote, snapshot).await)
    }

    async fn propose(
        &self,
        req: Request<ProposeRequest>,
    ) -> Result<Response<ProposeResponse>, Status> {
        let proposal = req.into_inner().proposal.unwrap_or_default();
        let deadline = Instant::now() + self.inner.config.propose_timeout;
        let outcome = match self.inner.write_local(proposal, deadline).await {
            LocalWrite::Done(c) => propose_response::Outcome::Commit(c),
            LocalWrite::NotLeader(h) => propose_response::Outcome::NotLeader(to_hint(h)),
            LocalWrite::Failed(e) => propose_response::Outcome::Error(e.to_string()),
        };
        Ok(Response::new(ProposeResponse {
            outcome: Some(outcome),
        }))
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let outcome = match self.inner.read_index_local().await {
            Ok(i) => read_index_response::Outcome::Index(i),
            Err(h) => read_index_response::Outcome::NotLeader(to_hint(h)),
        };
        Ok(Response::new(ReadIndexResponse {
            outcome: Some(outcome),
        }))
    }

    async fn change_membership(
        &self,
        req: Request<MembershipChangeRequest>,
    ) -> Result<Response<MembershipChangeResponse>, Status> {
        let change = req
            .into_inner()
            .change
            .ok_or_else(|| Status::invalid_argument("no membership change given"))?;
        let outcome = match self.inner.change_membership_local(change).await {
            Ok(status) => membership_change_response::Outcome::Done(status),
            Err(MembershipError::NotLeader(h)) => {
                membership_change_response::Outcome::NotLeader(to_hint(h))
            }
            Err(e) => membership_change_response::Outcome::Error(e.to_string()),
        };
        Ok(Response::new(MembershipChangeResponse {
            outcome: Some(outcome),
        }))
    }

    async fn status(
        &self,
        _req: Request<RaftStatusRequest>,
    ) -> Result<Response<RaftStatusResponse>, Status> {
        Ok(Response::new(self.inner.status()))
    }
}
