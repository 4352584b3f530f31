//! Promotion and demotion: turning a node's desired role into its actual role, in the order
//! that keeps Raft safe.
//!
//! Promotion: the node's role becomes manager at once; the node learns it through its
//! session, renews its certificate (now a manager's), starts Raft and asks to join.
//! Demotion: the node leaves Raft first (refused while that would cost the quorum, retried),
//! and only then does its role become worker, so its next certificate is a worker's.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::{Node, NodeRole};
use shoal_raft::{RaftNode, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::leader::{Controller, ControllerFuture};

/// Demotions refused for quorum are retried this often.
const RETRY: Duration = Duration::from_secs(2);

pub struct RoleController {
    store: Store,
    raft: Arc<RaftNode>,
}

impl RoleController {
    pub fn new(store: Store, raft: Arc<RaftNode>) -> RoleController {
        RoleController { store, raft }
    }
}

/// The next thing to do for one node.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Record the manager role; the node does the rest.
    Promote,
    /// Remove this Raft member, then record the worker role.
    LeaveRaft(u64),
    /// Not in Raft: record the worker role.
    Demote,
}

pub fn next_step(node: &Node) -> Option<Step> {
    let desired = node
        .spec
        .as_ref()
        .and_then(|s| NodeRole::try_from(s.desired_role).ok())
        .unwrap_or_default();
    let actual = NodeRole::try_from(node.role).unwrap_or_default();
    match (desired, actual) {
        (NodeRole::Manager, NodeRole::Worker) => Some(Step::Promote),
        (NodeRole::Worker, NodeRole::Manager) => match &node.manager_status {
            Some(ms) if ms.raft_id != 0 => Some(Step::LeaveRaft(ms.raft_id)),
            _ => Some(Step::Demote),
        },
        _ => None,
    }
}

impl Controller for RoleController {
    fn name(&self) -> &'static str {
        "roles"
    }

    fn run(&self, cancel: CancellationToken) -> ControllerFuture {
        let store = self.store.clone();
        let raft = self.raft.clone();
        Box::pin(async move {
            let mut watch = store.watch(&[shoal_proto::ObjectKind::Node]);
            loop {
                let pending: Vec<(Node, Step)> = store
                    .list::<Node>()
                    .into_iter()
                    .filter_map(|n| next_step(&n).map(|s| (n, s)))
                    .collect();
                let mut retry = false;
                for (node, step) in pending {
                    if let Err(e) = apply(&store, &raft, &node, step).await {
                        warn!(node = %node.id, error = %e, "role change waits");
                        retry = true;
                    }
                }
                // Wake on any node change, or to retry what had to wait.
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    e = watch.next() => if e.is_err() { watch = store.watch(&[shoal_proto::ObjectKind::Node]) },
                    _ = tokio::time::sleep(RETRY), if retry => {}
                }
            }
        })
    }
}

async fn apply(store: &Store, raft: &RaftNode, node: &Node, step: Step) -> Result<(), String> {
    let role = match step {
        Step::Promote => NodeRole::Manager,
        Step::LeaveRaft(raft_id) => {
            raft.remove_member(raft_id)
                .await
                .map_err(|e| e.to_string())?;
            NodeRole::Worker
        }
        Step::Demote => NodeRole::Worker,
    };
    let id = node.id.clone();
    store
        .update(|tx| {
            let Some(mut node) = tx.get::<Node>(&id) else {
                return Ok(());
            };
            node.role = role as i32;
            if role == NodeRole::Worker {
                node.manager_status = None;
            }
            tx.update(node)
        })
        .await
        .map_err(|e: StoreError| e.to_string())?;
    info!(node = %id, ?role, "node role changed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{ManagerStatus, NodeSpec};

    fn node(desired: NodeRole, actual: NodeRole, raft_id: Option<u64>) -> Node {
        Node {
            spec: Some(NodeSpec {
                desired_role: desired as i32,
                ..Default::default()
            }),
            role: actual as i32,
            manager_status: raft_id.map(|raft_id| ManagerStatus {
                raft_id,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn steps_follow_the_safe_order() {
        use NodeRole::*;
        assert_eq!(next_step(&node(Manager, Worker, None)), Some(Step::Promote));
        assert_eq!(
            next_step(&node(Worker, Manager, Some(7))),
            Some(Step::LeaveRaft(7))
        );
        assert_eq!(next_step(&node(Worker, Manager, None)), Some(Step::Demote));
        assert_eq!(next_step(&node(Manager, Manager, Some(7))), None);
        assert_eq!(next_step(&node(Worker, Worker, None)), None);
    }
}
