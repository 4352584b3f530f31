//! The task reaper: deletes task history beyond what the cluster keeps.
//!
//! Every restart or move leaves the old task behind, retired, for `service ps` to show. As in
//! Swarm, each slot (each node, for a global service) keeps at most the cluster's
//! `task_history_retention_limit` tasks (5 by default), the current one included; the oldest
//! dead ones go first. Only tasks that are retired and dead (stopped, or never assigned to a
//! node) are deleted, so a worker is never left running a task the managers forgot. Slots a
//! scale-down emptied, and every task of a removed service, are deleted as soon as their tasks
//! are dead; a removed service's tasks on a node that is down or gone are deleted too (the
//! worker, when it comes back, gets the full assignment set without them and drops them).
//! Deleting a task is also what makes the dispatcher tell its worker to remove the container.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::{Cluster, Node, ObjectKind, Service, Task, TaskState, node_status};
use shoal_raft::{Action, By, Event, Snapshot, Store, StoreError, Tx};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{
    MAX_WRITES_PER_TX, Mode, Reconciler, commit, drive, fills_slot, history_limit, mode,
    node_state, observed, task_change,
};
use crate::clock;
use crate::leader::{Controller, ControllerFuture};

/// The task reaper as a leader controller.
pub struct TaskReaper {
    store: Store,
}

impl TaskReaper {
    pub fn new(store: Store) -> TaskReaper {
        TaskReaper { store }
    }
}

impl Controller for TaskReaper {
    fn name(&self) -> &'static str {
        "task reaper"
    }

    fn run(&self, cancel: CancellationToken) -> ControllerFuture {
        let store = self.store.clone();
        let r = Reaping {
            store: self.store.clone(),
        };
        let kinds = [
            ObjectKind::Task,
            ObjectKind::Service,
            ObjectKind::Cluster,
            ObjectKind::Node,
        ];
        Box::pin(async move { drive(&store, &kinds, r, cancel).await })
    }
}

struct Reaping {
    store: Store,
}

/// Whether the task may be deleted: retired, and not running anywhere.
fn dead(task: &Task) -> bool {
    let state = observed(task);
    !fills_slot(task) && (state.is_terminal() || state < TaskState::Assigned)
}

impl Reconciler for Reaping {
    async fn full(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        let ids: BTreeSet<String> = (snapshot.list::<Task>().into_iter())
            .map(|t| t.service_id)
            .collect();
        drop(snapshot);
        for id in ids {
            self.reap(&id).await?;
        }
        Ok(())
    }

    async fn changes(&mut self, events: Vec<Event>) -> Result<(), StoreError> {
        let mut dirty = BTreeSet::new();
        let mut down_nodes = Vec::new();
        for event in &events {
            if let Some((task, old)) = task_change(event) {
                let grew_or_died = match event.action {
                    Action::Create => true,
                    Action::Update => old.is_none_or(|o| dead(task) && !dead(o)),
                    Action::Remove => false,
                };
                if grew_or_died {
                    dirty.insert(task.service_id.clone());
                }
            } else if let Some(service) = event.get::<Service>() {
                if event.action != Action::Create {
                    dirty.insert(service.id.clone());
                }
            } else if event.get::<Cluster>().is_some() {
                let all = self.store.snapshot();
                return self.full(all).await;
            } else if let Some(node) = event.get::<Node>()
                && (event.action == Action::Remove || node_state(node) == node_status::State::Down)
            {
                down_nodes.push(node.id.clone());
            }
        }
        drop(events);
        for node in down_nodes {
            dirty.extend(
                (self.store.find::<Task>(By::NodeId(&node)).into_iter())
                    .filter(|t| self.store.get::<Service>(&t.service_id).is_none())
                    .map(|t| t.service_id),
            );
        }
        for id in dirty {
            self.reap(&id).await?;
        }
        Ok(())
    }
}

impl Reaping {
    async fn reap(&self, service_id: &str) -> Result<(), StoreError> {
        loop {
            let done = commit(&self.store, |tx| stage(tx, service_id)).await?;
            let (more, deleted) = done.value;
            if deleted > 0 {
                info!(service = %service_id, tasks = deleted, "deleted old tasks");
            }
            if !more {
                return Ok(());
            }
        }
    }
}

/// Stages the deletions one service needs, at most [`MAX_WRITES_PER_TX`]; returns whether
/// more remain and how many it staged.
fn stage(tx: &mut Tx<'_>, service_id: &str) -> Result<(bool, usize), StoreError> {
    let tasks = tx.find::<Task>(By::ServiceId(service_id));
    let mut doomed: Vec<String> = Vec::new();
    match tx.get::<Service>(service_id) {
        None => {
            for task in &tasks {
                let node_gone = !task.node_id.is_empty()
                    && tx
                        .get::<Node>(&task.node_id)
                        .is_none_or(|n| node_state(&n) == node_status::State::Down);
                if dead(task) || (!fills_slot(task) && node_gone) {
                    doomed.push(task.id.clone());
                }
            }
        }
        Some(service) => {
            let limit = history_limit(tx.list::<Cluster>().first());
            let service_mode = mode(&service);
            let mut slots: BTreeMap<(u64, &str), Vec<&Task>> = BTreeMap::new();
            for task in &tasks {
                let key = match service_mode {
                    Mode::Global => (0, task.node_id.as_str()),
                    Mode::Replicated(_) => (task.slot, ""),
                };
                slots.entry(key).or_default().push(task);
            }
            for ((slot, _), mut history) in slots {
                let emptied = matches!(service_mode, Mode::Replicated(n) if slot > n)
                    && !history.iter().any(|t| fills_slot(t));
                let keep = if emptied { 0 } else { limit as usize };
                if history.len() <= keep {
                    continue;
                }
                let mut excess = history.len() - keep;
                // Oldest first.
                history.sort_by_key(|t| {
                    let ts = t
                        .status
                        .as_ref()
                        .and_then(|s| s.timestamp)
                        .unwrap_or_default();
                    (clock::key(&ts), t.meta.as_ref().map_or(0, |m| m.version))
                });
                for task in history.into_iter().filter(|t| dead(t)) {
                    if excess == 0 {
                        break;
                    }
                    doomed.push(task.id.clone());
                    excess -= 1;
                }
            }
        }
    }
    let more = doomed.len() > MAX_WRITES_PER_TX;
    doomed.truncate(MAX_WRITES_PER_TX);
    for id in &doomed {
        tx.delete::<Task>(id)?;
    }
    Ok((more, doomed.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::replicated::ReplicatedOrchestrator;
    use crate::orchestrator::restart::RestartSupervisor;
    use crate::orchestrator::testutil::*;
    use shoal_proto::{ClusterSpec, OrchestrationConfig};

    #[tokio::test(start_paused = true)]
    async fn keeps_five_tasks_per_slot() {
        let store = Store::in_memory();
        let clock = clock();
        let svc = create_service(&store, "web", replicated(2)).await;
        let _r = [
            spawn(ReplicatedOrchestrator::new(store.clone(), clock.clone())),
            spawn(RestartSupervisor::new(store.clone(), clock.clone())),
            spawn(TaskReaper::new(store.clone())),
        ];
        wait_for(|| live_tasks(&store, &svc).len() == 2).await;
        let mut failed = Vec::new();
        // Slot 1 fails eight times.
        for _ in 0..8 {
            let t = live_tasks(&store, &svc).remove(0);
            failed.push(t.id.clone());
            report(&store, &t.id, TaskState::Failed, 1, &clock).await;
            wait_for(|| live_tasks(&store, &svc)[0].id != t.id).await;
        }
        settle().await;
        let slot1: Vec<String> = (store.find::<Task>(By::ServiceId(&svc)).into_iter())
            .filter(|t| t.slot == 1)
            .map(|t| t.id)
            .collect();
        assert_eq!(slot1.len(), 5, "the live task and the 4 latest failures");
        for old in &failed[..4] {
            assert!(!slot1.contains(old), "oldest failures deleted first");
        }
        for recent in &failed[4..] {
            assert!(slot1.contains(recent));
        }
        // Slot 2 is untouched.
        assert_eq!(
            store
                .find::<Task>(By::ServiceId(&svc))
                .iter()
                .filter(|t| t.slot == 2)
                .count(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn honours_the_cluster_limit() {
        let store = Store::in_memory();
        let clock = clock();
        store
            .update(|tx| {
                tx.create(Cluster {
                    id: "cluster".into(),
                    spec: Some(ClusterSpec {
                        orchestration: Some(OrchestrationConfig {
                            task_history_retention_limit: 2,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            })
            .await
            .unwrap();
        let svc = create_service(&store, "web", replicated(1)).await;
        let _r = [
            spawn(ReplicatedOrchestrator::new(store.clone(), clock.clone())),
            spawn(RestartSupervisor::new(store.clone(), clock.clone())),
            spawn(TaskReaper::new(store.clone())),
        ];
        for _ in 0..4 {
            wait_for(|| live_tasks(&store, &svc).len() == 1).await;
            let t = live_tasks(&store, &svc).remove(0);
            report(&store, &t.id, TaskState::Failed, 1, &clock).await;
            wait_for(|| live_tasks(&store, &svc)[0].id != t.id).await;
        }
        settle().await;
        assert_eq!(store.find::<Task>(By::ServiceId(&svc)).len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn deletes_dead_tasks_of_removed_services_and_scaled_down_slots() {
        let store = Store::in_memory();
        let clock = clock();
        let node = add_node(&store, "a", &[]).await;
        let svc = create_service(&store, "web", replicated(3)).await;
        let _r = [
            spawn(ReplicatedOrchestrator::new(store.clone(), clock.clone())),
            spawn(TaskReaper::new(store.clone())),
        ];
        wait_for(|| live_tasks(&store, &svc).len() == 3).await;
        // Slot 1 runs on a node; slots 2 and 3 were never assigned.
        let t1 = live_tasks(&store, &svc).remove(0);
        store
            .update(|tx| {
                let mut t = tx.get::<Task>(&t1.id).unwrap();
                t.node_id = node.clone();
                tx.update(t)
            })
            .await
            .unwrap();
        report(&store, &t1.id, TaskState::Running, 0, &clock).await;
        set_replicas(&store, &svc, 1).await;
        wait_for(|| store.find::<Task>(By::ServiceId(&svc)).len() == 1).await;

        store.update(|tx| tx.delete::<Service>(&svc)).await.unwrap();
        settle().await;
        // Still running on its node: kept until it stops.
        assert_eq!(store.find::<Task>(By::ServiceId(&svc)).len(), 1);
        report(&store, &t1.id, TaskState::Shutdown, 0, &clock).await;
        wait_for(|| store.find::<Task>(By::ServiceId(&svc)).is_empty()).await;
    }
}
