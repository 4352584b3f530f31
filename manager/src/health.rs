//! Manager health: the leader copies Raft's view of its managers (who leads, who answers) into
//! the Node objects, so `shoal node ls` shows the same MANAGER STATUS on every manager, and a
//! dead leader shows as Unreachable once a new one takes over.

use std::sync::Arc;
use std::time::Duration;

use shoal_proto::{ManagerStatus, Node, RaftStatusResponse, manager_status::Reachability};
use shoal_raft::{RaftNode, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::leader::{Controller, ControllerFuture};

/// How often the leader compares Raft's view with the Store's.
const INTERVAL: Duration = Duration::from_millis(500);

pub struct ManagerHealth {
    store: Store,
    raft: Arc<RaftNode>,
}

impl ManagerHealth {
    pub fn new(store: Store, raft: Arc<RaftNode>) -> ManagerHealth {
        ManagerHealth { store, raft }
    }
}

impl Controller for ManagerHealth {
    fn name(&self) -> &'static str {
        "manager-health"
    }

    fn run(&self, cancel: CancellationToken) -> ControllerFuture {
        let store = self.store.clone();
        let raft = self.raft.clone();
        Box::pin(async move {
            loop {
                let status = raft.status();
                let changed = store.view(|v| reconcile(&v.list::<Node>(), &status));
                if !changed.is_empty() {
                    let result = store
                        .update(|tx| {
                            for node in changed {
                                tx.update(node)?;
                            }
                            Ok::<_, StoreError>(())
                        })
                        .await;
                    match result {
                        Ok(_) | Err(StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(INTERVAL) => {}
                }
            }
        })
    }
}

/// The manager nodes whose stored status differs from what Raft (seen from the leader) says.
pub fn reconcile(nodes: &[Node], status: &RaftStatusResponse) -> Vec<Node> {
    let mut changed = Vec::new();
    for node in nodes {
        let Some(ms) = &node.manager_status else {
            continue;
        };
        let member = status.members.iter().find(|m| m.id == ms.raft_id);
        let reachable = ms.raft_id == status.id || member.is_some_and(|m| m.reachable);
        let want = ManagerStatus {
            leader: ms.raft_id == status.leader_id && status.leader_id != 0,
            reachability: if member.is_none() && ms.raft_id != status.id {
                Reachability::Unknown
            } else if reachable {
                Reachability::Reachable
            } else {
                Reachability::Unreachable
            } as i32,
            ..ms.clone()
        };
        if &want != ms {
            let mut node = node.clone();
            node.manager_status = Some(want);
            changed.push(node);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::RaftMember;

    fn manager(id: &str, raft_id: u64) -> Node {
        Node {
            id: id.into(),
            manager_status: Some(ManagerStatus {
                raft_id,
                addr: format!("10.0.0.{raft_id}:2377"),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn marks_leader_reachable_and_dead_managers() {
        let nodes = vec![
            manager("a", 1),
            manager("b", 2),
            manager("c", 3),
            Node::default(),
        ];
        let status = RaftStatusResponse {
            id: 2,
            leader_id: 2,
            members: vec![
                RaftMember {
                    id: 1,
                    reachable: false,
                    voter: true,
                    ..Default::default()
                },
                RaftMember {
                    id: 2,
                    reachable: false,
                    voter: true,
                    ..Default::default()
                },
                RaftMember {
                    id: 3,
                    reachable: true,
                    voter: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let changed = reconcile(&nodes, &status);
        let get = |id: &str| {
            changed
                .iter()
                .find(|n| n.id == id)
                .unwrap()
                .manager_status
                .clone()
                .unwrap()
        };
        assert_eq!(get("a").reachability, Reachability::Unreachable as i32);
        assert!(!get("a").leader);
        assert!(get("b").leader, "the leader itself");
        assert_eq!(get("b").reachability, Reachability::Reachable as i32);
        assert_eq!(get("c").reachability, Reachability::Reachable as i32);
        // Applying the changes makes the next round a no-op.
        let updated: Vec<Node> = nodes
            .iter()
            .map(|n| changed.iter().find(|c| c.id == n.id).unwrap_or(n).clone())
            .collect();
        assert!(reconcile(&updated, &status).is_empty());
    }
}
