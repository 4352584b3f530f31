//! The replicated orchestrator: every replicated service has exactly one task in each of its
//! slots 1..=N.
//!
//! It is the only controller that fills empty slots and empties surplus ones, so it needs no
//! coordination beyond the slot invariant (see the parent module): it looks at the tasks that
//! fill a slot (desired state at most COMPLETE), creates one where a slot has none, retires the
//! extras of a slot that somehow got two, and retires the tasks of slots above N (scaling down
//! removes the highest slots, so `service ps` keeps its numbering). A removed service has all
//! of its tasks retired; the task reaper deletes them once they stopped. Tasks are
//! node-independent: the scheduler places them.
//!
//! It reconciles a service when the service changes and when one of its slots may have emptied
//! (a filling task was retired or deleted), not on every status update of its tasks.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::{ObjectKind, Service, Task};
use shoal_raft::{By, Event, Snapshot, Store, StoreError, Tx};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{MAX_WRITES_PER_TX, Mode, Reconciler, drive, fills_slot, mode, new_task};
use super::{emptied_slot, observed, retire};
use crate::clock::Clock;
use crate::leader::{Controller, ControllerFuture};

/// The replicated orchestrator as a leader controller.
pub struct ReplicatedOrchestrator {
    store: Store,
    clock: Clock,
}

impl ReplicatedOrchestrator {
    pub fn new(store: Store, clock: Clock) -> ReplicatedOrchestrator {
        ReplicatedOrchestrator { store, clock }
    }
}

impl Controller for ReplicatedOrchestrator {
    fn name(&self) -> &'static str {
        "replicated orchestrator"
    }

    fn run(&self, cancel: CancellationToken) -> ControllerFuture {
        let store = self.store.clone();
        let r = Replicated {
            store: self.store.clone(),
            clock: self.clock.clone(),
        };
        Box::pin(
            async move { drive(&store, &[ObjectKind::Service, ObjectKind::Task], r, cancel).await },
        )
    }
}

struct Replicated {
    store: Store,
    clock: Clock,
}

impl Reconciler for Replicated {
    async fn full(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        // Every service, and the services gone since that left tasks filling slots.
        let mut ids: BTreeSet<String> = snapshot
            .list::<Service>()
            .into_iter()
            .map(|s| s.id)
            .collect();
        for task in snapshot.list::<Task>() {
            if fills_slot(&task) && !task.service_id.is_empty() {
                ids.insert(task.service_id);
            }
        }
        drop(snapshot);
        for id in ids {
            self.reconcile(&id).await?;
        }
        Ok(())
    }

    async fn changes(&mut self, events: Vec<Event>) -> Result<(), StoreError> {
        let mut dirty = BTreeSet::new();
        for event in &events {
            if let Some(service) = event.get::<Service>() {
                dirty.insert(service.id.clone());
            } else if let Some(task) = emptied_slot(event) {
                dirty.insert(task.service_id.clone());
            }
        }
        drop(events);
        for id in dirty {
            self.reconcile(&id).await?;
        }
        Ok(())
    }
}

impl Replicated {
    /// Brings one service's slots to its replica count, in transactions of bounded size.
    async fn reconcile(&self, service_id: &str) -> Result<(), StoreError> {
        super::reconcile_in_batches(&self.store, "replicated", service_id, |tx| {
            self.stage(tx, service_id)
        })
        .await
    }

    /// Stages at most [`MAX_WRITES_PER_TX`] writes toward the goal; returns whether more are
    /// needed, and how many tasks it created and retired.
    fn stage(&self, tx: &mut Tx<'_>, service_id: &str) -> Result<(bool, usize, usize), StoreError> {
        let service = tx.get::<Service>(service_id);
        let replicas = match service.as_ref().map(mode) {
            Some(Mode::Replicated(n)) => Some(n),
            // Global services are the global orchestrator's.
            Some(Mode::Global) => return Ok((false, 0, 0)),
            None => None,
        };
        let mut slots: BTreeMap<u64, Vec<Task>> = BTreeMap::new();
        for task in tx.find::<Task>(By::ServiceId(service_id)) {
            if fills_slot(&task) {
                slots.entry(task.slot).or_default().push(task);
            }
        }
        let (mut created, mut retired) = (0, 0);
        let budget = |c: usize, r: usize| c + r < MAX_WRITES_PER_TX;
        // Surplus: every task of a removed service, of slots above N (highest first), and all
        // but the best task of a slot that has several.
        for (&slot, tasks) in slots.iter_mut().rev() {
            let keep = match replicas {
                Some(n) if slot >= 1 && slot <= n => best(tasks),
                _ => None,
            };
            for (i, task) in tasks.drain(..).enumerate() {
                if Some(i) == keep {
                    continue;
                }
                if !budget(created, retired) {
                    return Ok((true, created, retired));
                }
                debug!(service = %service_id, task = %task.id, slot, "retiring surplus task");
                retired += usize::from(retire(tx, task)?);
            }
        }
        // Missing: slots 1..=N that nothing fills.
        if let (Some(n), Some(service)) = (replicas, service.as_ref()) {
            for slot in 1..=n {
                if slots.contains_key(&slot) {
                    continue;
                }
                if !budget(created, retired) {
                    return Ok((true, created, retired));
                }
                tx.create(new_task(service, slot, "", &self.clock))?;
                created += 1;
            }
        }
        Ok((false, created, retired))
    }
}

/// Which of a slot's filling tasks to keep: the one furthest along its lifecycle that has not
/// ended, else the first.
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
    use shoal_proto::TaskState;

    #[tokio::test(start_paused = true)]
    async fn creates_scales_up_and_down_by_highest_slots() {
        let store = Store::in_memory();
        let _c = spawn(ReplicatedOrchestrator::new(store.clone(), clock()));
        let svc = create_service(&store, "web", replicated(5)).await;
        wait_for(|| live_slots(&store, &svc) == (1..=5).collect::<Vec<_>>()).await;
        for t in live_tasks(&store, &svc) {
            assert_eq!(t.desired_state(), TaskState::Running);
            assert_eq!(observed(&t), TaskState::New);
            assert_eq!(t.service_annotations.as_ref().unwrap().name, "web");
            assert_eq!(
                t.spec_version,
                store.get::<Service>(&svc).unwrap().meta.unwrap().version
            );
            assert!(t.node_id.is_empty());
        }

        set_replicas(&store, &svc, 10).await;
        wait_for(|| live_slots(&store, &svc) == (1..=10).collect::<Vec<_>>()).await;
        let before: Vec<String> = live_tasks(&store, &svc)
            .iter()
            .map(|t| t.id.clone())
            .collect();

        set_replicas(&store, &svc, 2).await;
        wait_for(|| live_slots(&store, &svc) == vec![1, 2]).await;
        // Slots 1 and 2 kept their tasks; the others were retired, not deleted.
        let after: Vec<String> = live_tasks(&store, &svc)
            .iter()
            .map(|t| t.id.clone())
            .collect();
        assert_eq!(after, before[..2].to_vec());
        let all = store.find::<Task>(By::ServiceId(&svc));
        assert_eq!(all.len(), 10);
        assert!(
            all.iter()
                .filter(|t| t.slot > 2)
                .all(|t| t.desired_state() == TaskState::Shutdown)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn removing_a_service_retires_its_tasks() {
        let store = Store::in_memory();
        let _c = spawn(ReplicatedOrchestrator::new(store.clone(), clock()));
        let svc = create_service(&store, "web", replicated(3)).await;
        wait_for(|| live_slots(&store, &svc).len() == 3).await;
        store.update(|tx| tx.delete::<Service>(&svc)).await.unwrap();
        wait_for(|| live_slots(&store, &svc).is_empty()).await;
        assert_eq!(store.find::<Task>(By::ServiceId(&svc)).len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_reconciles_without_duplicates() {
        let store = Store::in_memory();
        let svc = create_service(&store, "web", replicated(4)).await;
        {
            let _c = spawn(ReplicatedOrchestrator::new(store.clone(), clock()));
            wait_for(|| live_slots(&store, &svc).len() == 4).await;
        }
        // Leadership moves while the service is scaled and a slot's task is retired.
        set_replicas(&store, &svc, 3).await;
        let t1 = live_tasks(&store, &svc).remove(0);
        store.update(|tx| retire(tx, t1)).await.unwrap();
        let _c = spawn(ReplicatedOrchestrator::new(store.clone(), clock()));
        wait_for(|| live_slots(&store, &svc) == vec![1, 2, 3]).await;
        settle().await;
        assert_eq!(live_slots(&store, &svc), vec![1, 2, 3]);
        assert_eq!(store.find::<Task>(By::ServiceId(&svc)).len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_service_is_created_in_bounded_transactions() {
        let store = Store::in_memory();
        let svc = create_service(&store, "big", replicated(1000)).await;
        let _c = spawn(ReplicatedOrchestrator::new(store.clone(), clock()));
        wait_for(|| live_slots(&store, &svc).len() == 1000).await;
        let versions: BTreeSet<u64> = live_tasks(&store, &svc)
            .iter()
            .map(|t| t.meta.as_ref().unwrap().version)
            .collect();
        assert_eq!(versions.len(), 1000usize.div_ceil(MAX_WRITES_PER_TX));
    }
}
