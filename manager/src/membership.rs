//! Manager joins: a node holding a fresh manager certificate asks to become a Raft voter. It is
//! recorded in its Node object (so agents and `node ls` know where it is), added as a learner,
//! and promoted once caught up; the call returns when it votes.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::manager_membership_server::ManagerMembership;
use shoal_proto::{
    JoinManagerRequest, JoinManagerResponse, ManagerStatus, Node, manager_status::Reachability,
};
use shoal_raft::{MembershipError, RaftNode, Store};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::ca::{Role, require_role};
use crate::controlapi::ApiError;

/// How long a new manager may take to catch up before the join is given up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct MembershipServer {
    store: Store,
    raft: Arc<RaftNode>,
}

impl MembershipServer {
    pub fn new(store: Store, raft: Arc<RaftNode>) -> MembershipServer {
        MembershipServer { store, raft }
    }
}

fn membership_status(e: MembershipError) -> Status {
    match e {
        MembershipError::NoLeader(_) | MembershipError::NotLeader(_) => {
            Status::unavailable(e.to_string())
        }
        MembershipError::Timeout(_) => Status::deadline_exceeded(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

#[tonic::async_trait]
impl ManagerMembership for MembershipServer {
    async fn join_manager(
        &self,
        request: Request<JoinManagerRequest>,
    ) -> Result<Response<JoinManagerResponse>, Status> {
        let caller = require_role(&request, &[Role::Manager])?
            .node()
            .cloned()
            .ok_or_else(|| Status::permission_denied("only a manager node can join Raft"))?;
        let JoinManagerRequest { raft_id, addr } = request.into_inner();
        if raft_id == 0 || addr.is_empty() {
            return Err(Status::invalid_argument(
                "join needs a Raft ID and an address",
            ));
        }
        self.store
            .update(|tx| {
                let Some(mut node) = tx.get::<Node>(&caller.node_id) else {
                    return Err(ApiError(Status::permission_denied(format!(
                        "node {} is not a member of this cluster",
                        caller.node_id
                    ))));
                };
                node.manager_status = Some(ManagerStatus {
                    raft_id,
                    addr: addr.clone(),
                    leader: false,
                    reachability: Reachability::Unknown as i32,
                });
                tx.update(node)?;
                Ok(())
            })
            .await?;
        match self.raft.add_learner(raft_id, addr.clone()).await {
            Ok(_) => {}
            // A retried join of a node already in Raft carries on from where it is.
            Err(MembershipError::AlreadyVoter(_)) => return Ok(Response::new(self.managers())),
            Err(e) => return Err(membership_status(e)),
        }
        let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            match self.raft.promote(raft_id).await {
                Ok(_) | Err(MembershipError::AlreadyVoter(_)) => break,
                Err(MembershipError::NotCaughtUp { .. }) | Err(MembershipError::Unreachable(_))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(membership_status(e)),
            }
        }
        info!(node = %caller.node_id, raft_id, %addr, "manager joined Raft as a voter");
        Ok(Response::new(self.managers()))
    }
}

impl MembershipServer {
    fn managers(&self) -> JoinManagerResponse {
        JoinManagerResponse {
            managers: self
                .store
                .view(|v| crate::dispatcher::manager_peers(&v.list::<Node>())),
        }
    }
}
