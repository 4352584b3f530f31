//! The global orchestrator: every global service has one task on each eligible node.
//!
//! A node is eligible when it is not DOWN, not drained, and satisfies the service's constraints
//! and platforms (the scheduler's own test, [`super::placement_accepts`]). A node that joins,
//! comes back or gains the label gets a task; one that is drained, goes down, loses the label or
//! is removed has its task retired (desired SHUTDOWN), so its worker stops it. Tasks are created
//! with `node_id` already set and slot 0; the scheduler only checks them against that node
//! (resources, readiness) before assigning them. Nodes that are merely not READY yet (UNKNOWN,
//! DISCONNECTED) keep their tasks, so a leader change or a brief disconnection restarts nothing.
//!
//! It reconciles a service when it changes or loses a task, and every global service when a
//! node changes; restarts of a task on its node are the restart supervisor's.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::{Node, NodeAvailability, ObjectKind, Service, Task, node_status};
use shoal_raft::{Action, By, Event, Snapshot, Store, StoreError, Tx};
use tokio_util::sync::CancellationToken;

use super::{
    MAX_WRITES_PER_TX, Reconciler, availability, drive, emptied_slot, fills_slot, is_global,
    new_task, node_state, observed, placement_accepts, retire,
};
use crate::clock::Clock;
use crate::leader::{Controller, ControllerFuture};

/// The global orchestrator as a leader controller.
pub struct GlobalOrchestrator {
    store: Store,
    clock: Clock,
}

impl GlobalOrchestrator {
    pub fn new(store: Store, clock: Clock) -> GlobalOrchestrator {
        GlobalOrchestrator { store, clock }
    }
}

impl Controller for GlobalOrchestrator {
    fn name(&self) -> &'static str {
        "global orchestrator"
    }

    fn run(&self, cancel: CancellationToken) -> ControllerFuture {
        let store = self.store.clone();
        let r = Global {
            store: self.store.clone(),
            clock: self.clock.clone(),
        };
        let kinds = [ObjectKind::Service, ObjectKind::Task, ObjectKind::Node];
        Box::pin(async move { drive(&store, &kinds, r, cancel).await })
    }
}

struct Global {
    store: Store,
    clock: Clock,
}

/// Whether `node` should run a task of the service whose tasks look like `probe`.
pub fn eligible(node: &Node, probe: &Task) -> bool {
    node_state(node) != node_status::State::Down
        && availability(node) != NodeAvailability::Drain
        && placement_accepts(probe, node)
}

impl Reconciler for Global {
    async fn full(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        let ids: Vec<String> = (snapshot.list::<Service>().into_iter())
            .filter(is_global)
            .map(|s| s.id)
            .collect();
        drop(snapshot);
        for id in ids {
            self.reconcile(&id).await?;
        }
        Ok(())
    }

    async fn changes(&mut self, events: Vec<Event>) -> Result<(), StoreError> {
        let mut dirty = BTreeSet::new();
        let mut nodes_changed = false;
        for event in &events {
            if let Some(service) = event.get::<Service>() {
                if event.action != Action::Remove && is_global(service) {
                    dirty.insert(service.id.clone());
                }
            } else if let Some(task) = emptied_slot(event) {
                dirty.insert(task.service_id.clone());
            } else if event.get::<Node>().is_some() {
                nodes_changed = true;
            }
        }
        drop(events);
        if nodes_changed {
            let all = self.store.list::<Service>();
            dirty.extend(all.into_iter().filter(is_global).map(|s| s.id));
        }
        for id in dirty {
            self.reconcile(&id).await?;
        }
        Ok(())
    }
}

impl Global {
    /// Gives the service one task per eligible node and none elsewhere, in bounded transactions.
    async fn reconcile(&self, service_id: &str) -> Result<(), StoreError> {
        super::reconcile_in_batches(&self.store, "global", service_id, |tx| {
            self.stage(tx, service_id)
        })
        .await
    }

    fn stage(&self, tx: &mut Tx<'_>, service_id: &str) -> Result<(bool, usize, usize), StoreError> {
        // Removed services are retired by the replicated orchestrator, which sees every service.
        let Some(service) = tx.get::<Service>(service_id).filter(is_global) else {
            return Ok((false, 0, 0));
        };
        let probe = new_task(&service, 0, "", &self.clock);
        let mut by_node: BTreeMap<String, Vec<Task>> = BTreeMap::new();
        for task in tx.find::<Task>(By::ServiceId(service_id)) {
            if fills_slot(&task) {
                by_node.entry(task.node_id.clone()).or_default().push(task);
            }
        }
        let nodes: BTreeMap<String, Node> = (tx.list::<Node>().into_iter())
            .map(|n| (n.id.clone(), n))
            .collect();
        let (mut created, mut retired) = (0, 0);
        // Tasks on nodes that should not run one (or a second one).
        for (node_id, tasks) in &mut by_node {
            let keep = match nodes.get(node_id) {
                Some(node) if eligible(node, &probe) => best(tasks),
                _ => None,
            };
            for (i, task) in tasks.drain(..).enumerate() {
                if Some(i) == keep {
                    continue;
                }
                if created + retired >= MAX_WRITES_PER_TX {
                    return Ok((true, created, retired));
                }
                retired += usize::from(retire(tx, task)?);
            }
        }
        // Eligible nodes without one.
        for (node_id, node) in &nodes {
            if by_node.contains_key(node_id) || !eligible(node, &probe) {
                continue;
            }
            if created + retired >= MAX_WRITES_PER_TX {
                return Ok((true, created, retired));
            }
            tx.create(new_task(&service, 0, node_id, &self.clock))?;
            created += 1;
        }
        Ok((false, created, retired))
    }
}

/// Which of a node's filling tasks to keep: the one furthest along that has not ended.
fn best(tasks: &[Task]) -> Option<usize> {
    (0..tasks.len()).max_by_key(|&i| {
        let state = observed(&tasks[i]);
        (!state.is_terminal(), state, std::cmp::Reverse(i))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::testutil::*;
    use shoal_proto::{Placement, TaskState};

    fn nodes_of(store: &Store, svc: &str) -> Vec<String> {
        let mut n: Vec<String> = live_tasks(store, svc)
            .into_iter()
            .map(|t| t.node_id)
            .collect();
        n.sort();
        n
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[tokio::test(start_paused = true)]
    async fn one_task_per_node_including_late_joiners() {
        let store = Store::in_memory();
        let a = add_node(&store, "a", &[]).await;
        let b = add_node(&store, "b", &[]).await;
        let _g = spawn(GlobalOrchestrator::new(store.clone(), clock()));
        let svc = create_service(&store, "agent", global()).await;
        wait_for(|| nodes_of(&store, &svc) == sorted(vec![a.clone(), b.clone()])).await;
        let t = &live_tasks(&store, &svc)[0];
        assert_eq!(t.slot, 0);
        assert_eq!(t.desired_state(), TaskState::Running);
        let c = add_node(&store, "c", &[]).await;
        wait_for(|| nodes_of(&store, &svc) == sorted(vec![a.clone(), b.clone(), c.clone()])).await;
        settle().await;
        assert_eq!(store.find::<Task>(By::ServiceId(&svc)).len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn drained_down_and_removed_nodes_lose_their_task() {
        let store = Store::in_memory();
        let a = add_node(&store, "a", &[]).await;
        let b = add_node(&store, "b", &[]).await;
        let c = add_node(&store, "c", &[]).await;
        let _g = spawn(GlobalOrchestrator::new(store.clone(), clock()));
        let svc = create_service(&store, "agent", global()).await;
        wait_for(|| live_tasks(&store, &svc).len() == 3).await;
        set_availability(&store, &a, NodeAvailability::Drain).await;
        set_node_state(&store, &b, node_status::State::Down).await;
        store.update(|tx| tx.delete::<Node>(&c)).await.unwrap();
        wait_for(|| live_tasks(&store, &svc).is_empty()).await;
        let all = store.find::<Task>(By::ServiceId(&svc));
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|t| t.desired_state() == TaskState::Shutdown));
        // Back to active: a new task, the old one stays history.
        set_availability(&store, &a, NodeAvailability::Active).await;
        wait_for(|| nodes_of(&store, &svc) == vec![a.clone()]).await;
        assert_eq!(store.find::<Task>(By::ServiceId(&svc)).len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn follows_constraints() {
        let store = Store::in_memory();
        let a = add_node(&store, "a", &[("zone", "x")]).await;
        let b = add_node(&store, "b", &[]).await;
        let _g = spawn(GlobalOrchestrator::new(store.clone(), clock()));
        let mut s = spec("agent", global());
        s.task.as_mut().unwrap().placement = Some(Placement {
            constraints: vec!["node.labels.zone==x".into()],
            ..Default::default()
        });
        let svc = create_service_spec(&store, s).await;
        wait_for(|| nodes_of(&store, &svc) == vec![a.clone()]).await;
        // b gains the label, a loses it.
        update_node(&store, &b, |n| {
            let a = n.spec.as_mut().unwrap().annotations.as_mut().unwrap();
            a.labels.insert("zone".into(), "x".into());
        })
        .await;
        update_node(&store, &a, |n| {
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
        wait_for(|| nodes_of(&store, &svc) == vec![b.clone()]).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_does_not_duplicate() {
        let store = Store::in_memory();
        add_node(&store, "a", &[]).await;
        add_node(&store, "b", &[]).await;
        let svc = create_service(&store, "agent", global()).await;
        {
            let _g = spawn(GlobalOrchestrator::new(store.clone(), clock()));
            wait_for(|| live_tasks(&store, &svc).len() == 2).await;
        }
        let _g = spawn(GlobalOrchestrator::new(store.clone(), clock()));
        settle().await;
        assert_eq!(store.find::<Task>(By::ServiceId(&svc)).len(), 2);
    }
}
