//! The constraint enforcer: tasks leave nodes they may no longer run on.
//!
//! When a node is drained, or changes so that a task placed there no longer satisfies its
//! constraints or platforms (a label removed, say), the replicated tasks it runs are replaced:
//! each is retired (desired SHUTDOWN, so the worker stops it) and a new task for the same slot
//! is created in the same transaction, for the scheduler to place elsewhere. A paused node keeps
//! its tasks (the scheduler just sends it no new ones). Global services' tasks are left to the
//! global orchestrator, which retires them and has no elsewhere to move them to.
//!
//! Tasks still waiting for a node are not concerned: the scheduler checks them when it places
//! them. Tasks that already stopped are left to the restart supervisor, whose replacement is
//! placed on an eligible node anyway.

use std::collections::BTreeSet;

use shoal_proto::{Node, NodeAvailability, ObjectKind, Service, Task, TaskState};
use shoal_raft::{Action, By, Event, Snapshot, Store, StoreError, Tx};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{
    MAX_WRITES_PER_TX, Reconciler, availability, commit, drive, is_global, observed,
    placement_accepts, replace,
};
use crate::clock::Clock;
use crate::leader::{Controller, ControllerFuture};

/// The constraint enforcer as a leader controller.
pub struct ConstraintEnforcer {
    store: Store,
    clock: Clock,
}

impl ConstraintEnforcer {
    pub fn new(store: Store, clock: Clock) -> ConstraintEnforcer {
        ConstraintEnforcer { store, clock }
    }
}

impl Controller for ConstraintEnforcer {
    fn name(&self) -> &'static str {
        "constraint enforcer"
    }

    fn run(&self, cancel: CancellationToken) -> ControllerFuture {
        let store = self.store.clone();
        let r = Enforcing {
            store: self.store.clone(),
            clock: self.clock.clone(),
        };
        Box::pin(async move { drive(&store, &[ObjectKind::Node], r, cancel).await })
    }
}

struct Enforcing {
    store: Store,
    clock: Clock,
}

/// Whether the task holds its node: placed there, meant to run, not stopped.
fn placed(task: &Task) -> bool {
    let state = observed(task);
    task.desired_state() == TaskState::Running
        && state >= TaskState::Assigned
        && !state.is_terminal()
}

impl Reconciler for Enforcing {
    async fn full(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        let ids: Vec<String> = snapshot.list::<Node>().into_iter().map(|n| n.id).collect();
        drop(snapshot);
        for id in ids {
            self.enforce(&id).await?;
        }
        Ok(())
    }

    async fn changes(&mut self, events: Vec<Event>) -> Result<(), StoreError> {
        // Removed nodes are the restart supervisor's (their tasks are replaced at once).
        let ids: BTreeSet<String> = (events.iter())
            .filter(|e| e.action != Action::Remove)
            .filter_map(|e| e.get::<Node>())
            .map(|n| n.id.clone())
            .collect();
        drop(events);
        for id in ids {
            self.enforce(&id).await?;
        }
        Ok(())
    }
}

impl Enforcing {
    /// Replaces the tasks that may no longer run on node `node_id`.
    async fn enforce(&self, node_id: &str) -> Result<(), StoreError> {
        loop {
            let done = commit(&self.store, |tx| self.stage(tx, node_id)).await?;
            let (more, replaced) = done.value;
            if replaced > 0 {
                info!(node = %node_id, tasks = replaced, "moved tasks off a node they may no longer run on");
            }
            if !more {
                return Ok(());
            }
        }
    }

    fn stage(&self, tx: &mut Tx<'_>, node_id: &str) -> Result<(bool, usize), StoreError> {
        let Some(node) = tx.get::<Node>(node_id) else {
            return Ok((false, 0));
        };
        let drained = availability(&node) == NodeAvailability::Drain;
        let mut replaced = 0;
        for task in tx.find::<Task>(By::NodeId(node_id)) {
            let must_leave = drained || !placement_accepts(&task, &node);
            if !placed(&task) || !must_leave {
                continue;
            }
            let Some(service) = tx.get::<Service>(&task.service_id) else {
                continue;
            };
            if is_global(&service) {
                continue;
            }
            // Two writes per replacement.
            if replaced * 2 + 2 > MAX_WRITES_PER_TX {
                return Ok((true, replaced));
            }
            let why = if drained {
                "node drained"
            } else {
                "constraints no longer met"
            };
            info!(task = %task.id, service = %service.id, node = %node_id, slot = task.slot, why, "replacing task");
            let history = task.restart_history.clone();
            replace(tx, &service, task, history, &self.clock)?;
            replaced += 1;
        }
        Ok((false, replaced))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::testutil::*;
    use crate::orchestrator::{fills_slot, replicated::ReplicatedOrchestrator};
    use shoal_proto::Placement;

    /// Puts every live task of `svc` on `node`, RUNNING.
    async fn run_on(store: &Store, svc: &str, node: &str) {
        for t in live_tasks(store, svc) {
            store
                .update(|tx| {
                    let mut t = tx.get::<Task>(&t.id).unwrap();
                    t.node_id = node.to_string();
                    t.status.get_or_insert_with(Default::default).state = TaskState::Running as i32;
                    tx.update(t)
                })
                .await
                .unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn drain_moves_tasks_and_pause_does_not() {
        let store = Store::in_memory();
        let n = add_node(&store, "a", &[]).await;
        let svc = create_service(&store, "web", replicated(2)).await;
        let _r = [
            spawn(ReplicatedOrchestrator::new(store.clone(), clock())),
            spawn(ConstraintEnforcer::new(store.clone(), clock())),
        ];
        wait_for(|| live_tasks(&store, &svc).len() == 2).await;
        run_on(&store, &svc, &n).await;
        let before: Vec<String> = live_tasks(&store, &svc).into_iter().map(|t| t.id).collect();

        set_availability(&store, &n, NodeAvailability::Pause).await;
        settle().await;
        let same: Vec<String> = live_tasks(&store, &svc).into_iter().map(|t| t.id).collect();
        assert_eq!(same, before);

        set_availability(&store, &n, NodeAvailability::Drain).await;
        wait_for(|| {
            live_tasks(&store, &svc)
                .iter()
                .all(|t| t.node_id.is_empty())
        })
        .await;
        assert_eq!(live_slots(&store, &svc), vec![1, 2]);
        for id in before {
            let old = store.get::<Task>(&id).unwrap();
            assert!(!fills_slot(&old));
            assert_eq!(old.desired_state(), TaskState::Shutdown);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_label_moves_constrained_tasks_only() {
        let store = Store::in_memory();
        let n = add_node(&store, "a", &[("disk", "ssd")]).await;
        let mut s = spec("db", replicated(1));
        s.task.as_mut().unwrap().placement = Some(Placement {
            constraints: vec!["node.labels.disk==ssd".into()],
            ..Default::default()
        });
        let db = create_service_spec(&store, s).await;
        let web = create_service(&store, "web", replicated(1)).await;
        let _r = [
            spawn(ReplicatedOrchestrator::new(store.clone(), clock())),
            spawn(ConstraintEnforcer::new(store.clone(), clock())),
        ];
        wait_for(|| live_tasks(&store, &db).len() == 1 && live_tasks(&store, &web).len() == 1)
            .await;
        run_on(&store, &db, &n).await;
        run_on(&store, &web, &n).await;
        let web_task = live_tasks(&store, &web).remove(0).id;
        update_node(&store, &n, |n| {
            n.spec
                .as_mut()
                .unwrap()
                .annotations
                .as_mut()
                .unwrap()
                .labels
                .clear();
        })
        .await;
        wait_for(|| live_tasks(&store, &db)[0].node_id.is_empty()).await;
        settle().await;
        assert_eq!(live_tasks(&store, &web)[0].id, web_task);
    }
}
