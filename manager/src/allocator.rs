//! The allocator: moves new tasks from NEW to PENDING once the cluster resources they need are
//! reserved for them.
//!
//! In Swarm this is where virtual IPs and overlay addresses are allocated before a task may be
//! scheduled. Shoal has no cluster-wide networks yet (containers get node-local bridge
//! networking from the worker), so nothing needs reserving and the allocator only advances the
//! state; [`allocate`] is the seam where VIP/IPAM allocation will go, and a task it cannot
//! serve yet would simply stay NEW.

use std::collections::BTreeSet;

use shoal_proto::{ObjectKind, Task, TaskState};
use shoal_raft::{Event, Snapshot, Store, StoreError, Tx};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::clock::Clock;
use crate::leader::{Controller, ControllerFuture};
use crate::orchestrator::{MAX_WRITES_PER_TX, Reconciler, commit, drive, observed};

/// The allocator as a leader controller.
pub struct Allocator {
    store: Store,
    clock: Clock,
}

impl Allocator {
    pub fn new(store: Store, clock: Clock) -> Allocator {
        Allocator { store, clock }
    }
}

impl Controller for Allocator {
    fn name(&self) -> &'static str {
        "allocator"
    }

    fn run(&self, cancel: CancellationToken) -> ControllerFuture {
        let store = self.store.clone();
        let r = Allocating {
            store: self.store.clone(),
            clock: self.clock.clone(),
        };
        Box::pin(async move { drive(&store, &[ObjectKind::Task], r, cancel).await })
    }
}

struct Allocating {
    store: Store,
    clock: Clock,
}

/// Whether the task waits for the allocator: NEW, and still wanted.
fn waiting(task: &Task) -> bool {
    observed(task) == TaskState::New && task.desired_state() <= TaskState::Running
}

impl Reconciler for Allocating {
    async fn full(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        let ids: Vec<String> = (snapshot.list::<Task>().into_iter())
            .filter(waiting)
            .map(|t| t.id)
            .collect();
        drop(snapshot);
        self.allocate_all(ids).await
    }

    async fn changes(&mut self, events: Vec<Event>) -> Result<(), StoreError> {
        let ids: BTreeSet<String> = (events.iter())
            .filter_map(|e| e.get::<Task>())
            .filter(|t| waiting(t))
            .map(|t| t.id.clone())
            .collect();
        drop(events);
        self.allocate_all(ids.into_iter().collect()).await
    }
}

impl Allocating {
    async fn allocate_all(&self, ids: Vec<String>) -> Result<(), StoreError> {
        for chunk in ids.chunks(MAX_WRITES_PER_TX) {
            let now = self.clock.now();
            commit(&self.store, |tx| {
                for id in chunk {
                    // Re-read: it may have been retired or deleted meanwhile.
                    if let Some(task) = tx.get::<Task>(id).filter(waiting) {
                        allocate(tx, task, &now)?;
                    }
                }
                Ok(())
            })
            .await?;
            debug!(tasks = chunk.len(), "allocated tasks");
        }
        Ok(())
    }
}

/// Reserves what `task` needs (nothing yet) and makes it PENDING, ready for the scheduler.
fn allocate(
    tx: &mut Tx<'_>,
    mut task: Task,
    now: &shoal_proto::Timestamp,
) -> Result<(), StoreError> {
    let status = task.status.get_or_insert_with(Default::default);
    status.state = TaskState::Pending as i32;
    status.message = "pending task scheduling".to_string();
    status.timestamp = Some(*now);
    tx.update(task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::replicated::ReplicatedOrchestrator;
    use crate::orchestrator::testutil::*;

    #[tokio::test(start_paused = true)]
    async fn new_tasks_become_pending() {
        let store = Store::in_memory();
        let svc = create_service(&store, "web", replicated(3)).await;
        let _o = spawn(ReplicatedOrchestrator::new(store.clone(), clock()));
        let _a = spawn(Allocator::new(store.clone(), clock()));
        wait_for(|| {
            let tasks = live_tasks(&store, &svc);
            tasks.len() == 3 && tasks.iter().all(|t| observed(t) == TaskState::Pending)
        })
        .await;
        let t = &live_tasks(&store, &svc)[0];
        assert_eq!(
            t.status.as_ref().unwrap().message,
            "pending task scheduling"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retired_new_tasks_stay_new() {
        let store = Store::in_memory();
        let svc = create_service(&store, "web", replicated(1)).await;
        let service = store.get::<shoal_proto::Service>(&svc).unwrap();
        let mut task = crate::orchestrator::new_task(&service, 1, "", &clock());
        task.desired_state = TaskState::Shutdown as i32;
        let id = task.id.clone();
        store.update(|tx| tx.create(task)).await.unwrap();
        let _a = spawn(Allocator::new(store.clone(), clock()));
        settle().await;
        assert_eq!(observed(&store.get::<Task>(&id).unwrap()), TaskState::New);
    }
}
