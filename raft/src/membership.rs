//! Membership changes (add learner, promote, remove) with the checks that keep a cluster alive.
//!
//! These are the calls the cluster lifecycle exposes (`cluster join`, `node promote/demote`,
//! `node rm`). They run on the leader, which alone knows who is reachable and how far each
//! member has replicated; any other node forwards them there. Refused: removing the last voter,
//! any change after which the reachable voters could not form a quorum, and promoting a learner
//! that is unreachable or still far behind (it would count towards quorum without helping it).

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use shoal_proto::raft_transport_client::RaftTransportClient;
use shoal_proto::{
    MembershipChangeRequest, RaftMember, RaftStatusResponse, membership_change_request::Change,
    membership_change_response,
};
use tokio::time::Instant;

use crate::node::{NodeInner, RaftNode, never_sent};
use crate::types::NodeId;

/// Why a membership change was refused or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MembershipError {
    #[error("this manager is not the Raft leader")]
    NotLeader(Option<(NodeId, String)>),
    #[error("node {0} is not a member of the Raft cluster; check `shoal node ls`")]
    NotAMember(NodeId),
    #[error("node {0} is already a voting manager")]
    AlreadyVoter(NodeId),
    #[error(
        "refusing to remove node {0}: it is the last voting manager and the cluster state would \
         be lost; promote another manager first, or leave with --force to abandon the cluster"
    )]
    LastVoter(NodeId),
    #[error(
        "refusing to {change}: afterwards {reachable} of {voters} voting managers would be \
         reachable, fewer than the {quorum} needed to commit anything; bring the unreachable \
         managers back (or remove them) first"
    )]
    WouldLoseQuorum {
        change: String,
        voters: usize,
        reachable: usize,
        quorum: usize,
    },
    #[error(
        "refusing to promote node {id}: it is {behind} log entries behind the leader; wait for \
         it to catch up and retry"
    )]
    NotCaughtUp { id: NodeId, behind: u64 },
    #[error(
        "refusing to promote node {0}: the leader has not heard from it recently; check that it \
         is running and reachable from the leader"
    )]
    Unreachable(NodeId),
    #[error("no Raft leader could be reached within {0:?}; a majority of managers may be down")]
    NoLeader(Duration),
    #[error("the leader refused the change: {0}")]
    Refused(String),
    #[error("the membership change failed: {0}")]
    Raft(String),
    #[error(
        "the membership change did not complete within {0:?}; it may still complete: check the \
         members with `shoal node ls` before retrying"
    )]
    Timeout(Duration),
}

impl RaftNode {
    /// Adds a non-voting member that receives the log (a joining manager's first step); waits
    /// until it has caught up.
    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: impl Into<String>,
    ) -> Result<RaftStatusResponse, MembershipError> {
        let member = RaftMember {
            id,
            addr: addr.into(),
            ..Default::default()
        };
        self.inner
            .change_membership(Change::AddLearner(member))
            .await
    }

    /// Makes a caught-up learner a voter.
    pub async fn promote(&self, id: NodeId) -> Result<RaftStatusResponse, MembershipError> {
        self.inner.change_membership(Change::Promote(id)).await
    }

    /// Removes a voter or learner from the cluster.
    pub async fn remove_member(&self, id: NodeId) -> Result<RaftStatusResponse, MembershipError> {
        self.inner.change_membership(Change::Remove(id)).await
    }
}

fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

impl NodeInner {
    /// Runs a change on the leader, forwarding it there if need be.
    async fn change_membership(
        &self,
        change: Change,
    ) -> Result<RaftStatusResponse, MembershipError> {
        let timeout = self.config.membership_timeout;
        let deadline = Instant::now() + timeout;
        let mut hint: Option<(NodeId, String)> = None;
        loop {
            match hint.take().or_else(|| self.leader()) {
                None => {}
                Some((id, _)) if id == self.id => {
                    match self.change_membership_local(change.clone()).await {
                        Err(MembershipError::NotLeader(h)) => hint = h,
                        other => return other,
                    }
                }
                Some((id, addr)) => {
                    let mut client = RaftTransportClient::new(self.peers.channel(id, &addr));
                    let req = MembershipChangeRequest {
                        change: Some(change.clone()),
                    };
                    match tokio::time::timeout_at(deadline, client.change_membership(req)).await {
                        Err(_) => return Err(MembershipError::Timeout(timeout)),
                        Ok(Err(status)) if never_sent(&status) => {}
                        Ok(Err(status)) => {
                            return Err(MembershipError::Raft(status.message().to_string()));
                        }
                        Ok(Ok(resp)) => match resp.into_inner().outcome {
                            Some(membership_change_response::Outcome::Done(s)) => return Ok(s),
                            Some(membership_change_response::Outcome::NotLeader(h)) => {
                                hint = (h.leader_id != 0 && h.leader_id != id)
                                    .then_some((h.leader_id, h.leader_addr));
                            }
                            Some(membership_change_response::Outcome::Error(e)) => {
                                return Err(MembershipError::Refused(e));
                            }
                            None => {
                                return Err(MembershipError::Raft(
                                    "empty answer from the leader".into(),
                                ));
                            }
                        },
                    }
                }
            }
            self.pause(deadline)
                .await
                .map_err(|_| MembershipError::NoLeader(timeout))?;
        }
    }

    /// Waits until the leader has heard from `id` and replicated it up to `index`.
    async fn wait_caught_up(&self, id: NodeId, index: u64, deadline: Instant) -> Result<(), ()> {
        loop {
            let caught_up = self
                .status()
                .members
                .iter()
                .any(|m: &RaftMember| m.id == id && m.reachable && m.matched_index >= index);
            if caught_up {
                return Ok(());
            }
            self.pause(deadline).await?;
        }
    }

    /// Checks and applies a change on this node, which must be the leader.
    pub(crate) async fn change_membership_local(
        &self,
        change: Change,
    ) -> Result<RaftStatusResponse, MembershipError> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.id) {
            return Err(MembershipError::NotLeader(
                self.leader().filter(|(id, _)| *id != self.id),
            ));
        }
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        let timeout = self.config.membership_timeout;
        let check_quorum = |what: String, new_voters: &BTreeSet<NodeId>| {
            // During the change both the old and the new voter sets must reach a majority.
            for set in [&voters, new_voters] {
                let reachable = set.iter().filter(|v| self.peers.is_reachable(**v)).count();
                if reachable < quorum(set.len()) {
                    return Err(MembershipError::WouldLoseQuorum {
                        change: what,
                        voters: set.len(),
                        reachable,
                        quorum: quorum(set.len()),
                    });
                }
            }
            Ok(())
        };

        let result = match change {
            Change::AddLearner(member) => {
                if voters.contains(&member.id) {
                    return Err(MembershipError::AlreadyVoter(member.id));
                }
                tracing::info!(node = self.id, learner = member.id, addr = %member.addr, "adding learner");
                let id = member.id;
                let deadline = Instant::now() + timeout;
                let add = self
                    .raft
                    .add_learner(id, BasicNode::new(member.addr), false);
                let added = tokio::time::timeout_at(deadline, add).await;
                if let Ok(Ok(resp)) = &added {
                    // openraft's own wait can trust replication state left by an earlier
                    // membership of the same ID: wait for fresh contact and the new entry.
                    self.wait_caught_up(id, resp.log_id.index, deadline)
                        .await
                        .map_err(|_| MembershipError::Timeout(timeout))?;
                }
                added
            }
            Change::Promote(id) => {
                if voters.contains(&id) {
                    return Ok(self.status());
                }
                if !learners.contains(&id) {
                    return Err(MembershipError::NotAMember(id));
                }
                if !self.peers.is_reachable(id) {
                    return Err(MembershipError::Unreachable(id));
                }
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).copied().flatten())
                    .map_or(0, |l| l.index);
                let behind = metrics.last_log_index.unwrap_or(0).saturating_sub(matched);
                if behind > self.config.keep_log_entries {
                    return Err(MembershipError::NotCaughtUp { id, behind });
                }
                let mut new_voters = voters.clone();
                new_voters.insert(id);
                check_quorum(format!("promote node {id}"), &new_voters)?;
                tracing::info!(node = self.id, voter = id, "promoting learner");
                let ids = BTreeSet::from([id]);
                tokio::time::timeout(
                    timeout,
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(ids), false),
                )
                .await
            }
            Change::Remove(id) => {
                let members = if voters.contains(&id) {
                    let mut new_voters = voters.clone();
                    new_voters.remove(&id);
                    if new_voters.is_empty() {
                        return Err(MembershipError::LastVoter(id));
                    }
                    check_quorum(format!("remove node {id}"), &new_voters)?;
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else if learners.contains(&id) {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                } else {
                    return Err(MembershipError::NotAMember(id));
                };
                tracing::info!(node = self.id, removed = id, "removing member");
                tokio::time::timeout(timeout, self.raft.change_membership(members, false)).await
            }
        };
        match result {
            Err(_) => Err(MembershipError::Timeout(timeout)),
            Ok(Ok(_)) => Ok(self.status()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => Err(
                MembershipError::NotLeader(f.leader_id.zip(f.leader_node.map(|n| n.addr))),
            ),
            Ok(Err(e)) => Err(MembershipError::Raft(e.to_string())),
        }
    }
}
