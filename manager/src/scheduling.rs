//! The scheduler controller: places PENDING tasks on nodes with the pure [`Scheduler`].
//!
//! Each pass reads one consistent snapshot of nodes and tasks, asks the scheduler where every
//! waiting task goes, and writes the outcome: ASSIGNED with its node, or the reason it fits
//! nowhere in its status message (written only when the reason changed, so an unplaceable task
//! does not cost a Raft entry per pass). A pass runs when a task starts waiting, when any node
//! changes (joins, becomes ready, gets a label, is drained), and, while some task waits, when
//! capacity frees up (a task ends or is deleted): a waiting task is placed as soon as a node
//! fits. Recent failures are passed along, so nodes where a service keeps failing rank last.
//!
//! Writes re-read each task: one retired or placed meanwhile is left alone, and a decision made
//! on a snapshot a little stale is at worst a placement the next pass would also have made.

use shoal_proto::{Node, ObjectKind, Task, TaskState};
use shoal_raft::{Action, Event, Snapshot, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::clock::Clock;
use crate::leader::{Controller, ControllerFuture};
use crate::orchestrator::{MAX_WRITES_PER_TX, Reconciler, commit, drive, observed, task_change};
use crate::scheduler::{Decision, Scheduler};

/// The status message of a task the scheduler just placed (Swarm's words).
pub const ASSIGNED_MESSAGE: &str = "scheduler assigned task to node";

/// The scheduler as a leader controller.
pub struct SchedulerController {
    store: Store,
    clock: Clock,
}

impl SchedulerController {
    pub fn new(store: Store, clock: Clock) -> SchedulerController {
        SchedulerController { store, clock }
    }
}

impl Controller for SchedulerController {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    fn run(&self, cancel: CancellationToken) -> ControllerFuture {
        let store = self.store.clone();
        let r = Scheduling {
            store: self.store.clone(),
            clock: self.clock.clone(),
            waiting: false,
        };
        Box::pin(
            async move { drive(&store, &[ObjectKind::Task, ObjectKind::Node], r, cancel).await },
        )
    }
}

struct Scheduling {
    store: Store,
    clock: Clock,
    /// Whether the last pass left tasks unplaced (so freed capacity deserves a new pass).
    waiting: bool,
}

/// Whether the task waits for a node: PENDING and still wanted.
fn pending(task: &Task) -> bool {
    observed(task) == TaskState::Pending && task.desired_state() <= TaskState::Running
}

impl Reconciler for Scheduling {
    async fn full(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.pass(snapshot).await
    }

    async fn changes(&mut self, events: Vec<Event>) -> Result<(), StoreError> {
        if events.iter().any(|e| self.relevant(e)) {
            drop(events);
            let snapshot = self.store.snapshot();
            self.pass(snapshot).await?;
        }
        Ok(())
    }
}

impl Scheduling {
    /// Whether the change may let a waiting task be placed.
    fn relevant(&self, event: &Event) -> bool {
        if event.get::<Node>().is_some() {
            return true;
        }
        let Some((task, old)) = task_change(event) else {
            return false;
        };
        if event.action != Action::Remove && pending(task) {
            return true;
        }
        // Capacity freed: a task that counted on its node ended or went away.
        let held = |t: &Task| !t.node_id.is_empty() && !observed(t).is_terminal();
        self.waiting
            && match event.action {
                Action::Remove => held(task),
                Action::Update => old.is_some_and(held) && !held(task),
                Action::Create => false,
            }
    }

    /// Decides for every waiting task against `snapshot` and writes the outcomes.
    async fn pass(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        let decisions = {
            let tasks = snapshot.list::<Task>();
            let waiting: Vec<Task> = tasks.iter().filter(|t| pending(t)).cloned().collect();
            if waiting.is_empty() {
                self.waiting = false;
                return Ok(());
            }
            let nodes = snapshot.list::<Node>();
            let mut scheduler = Scheduler::with_clock(&nodes, &tasks, &self.clock.now());
            scheduler.schedule(&waiting)
        };
        drop(snapshot);
        self.waiting = decisions
            .iter()
            .any(|d| matches!(d, Decision::Unplaceable { .. }));
        for chunk in decisions.chunks(MAX_WRITES_PER_TX) {
            let now = self.clock.now();
            let written = commit(&self.store, |tx| {
                let mut assigned = 0;
                for decision in chunk {
                    let Some(mut task) = tx.get::<Task>(decision.task_id()).filter(pending) else {
                        continue;
                    };
                    let status = task.status.get_or_insert_with(Default::default);
                    match decision {
                        Decision::Assigned { node_id, .. } => {
                            if !task.node_id.is_empty() && task.node_id != *node_id {
                                continue;
                            }
                            task.node_id = node_id.clone();
                            status.state = TaskState::Assigned as i32;
                            status.message = ASSIGNED_MESSAGE.to_string();
                            status.err.clear();
                            status.timestamp = Some(now);
                            assigned += 1;
                        }
                        Decision::Unplaceable { reason, .. } => {
                            if status.message == *reason {
                                continue;
                            }
                            debug!(task = %task.id, service = %task.service_id, %reason, "task cannot be placed yet");
                            status.message = reason.clone();
                        }
                    }
                    tx.update(task)?;
                }
                Ok(assigned)
            })
            .await?;
            if written.value > 0 {
                info!(tasks = written.value, "scheduled tasks");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::Allocator;
    use crate::orchestrator::replicated::ReplicatedOrchestrator;
    use crate::orchestrator::testutil::*;
    use shoal_proto::{Placement, ServiceSpec};

    fn constrained(name: &str, n: u64, constraint: &str) -> ServiceSpec {
        let mut s = spec(name, replicated(n));
        s.task.as_mut().unwrap().placement = Some(Placement {
            constraints: vec![constraint.to_string()],
            ..Default::default()
        });
        s
    }

    /// Orchestrator, allocator and scheduler together: a service becomes assigned tasks.
    fn pipeline(store: &Store) -> Vec<Running> {
        vec![
            spawn(ReplicatedOrchestrator::new(store.clone(), clock())),
            spawn(Allocator::new(store.clone(), clock())),
            spawn(SchedulerController::new(store.clone(), clock())),
        ]
    }

    fn states(store: &Store, svc: &str) -> Vec<TaskState> {
        live_tasks(store, svc).iter().map(observed).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn assigns_pending_tasks_across_nodes() {
        let store = Store::in_memory();
        let n1 = add_node(&store, "one", &[]).await;
        let n2 = add_node(&store, "two", &[]).await;
        let _c = pipeline(&store);
        let svc = create_service(&store, "web", replicated(4)).await;
        wait_for(|| states(&store, &svc) == vec![TaskState::Assigned; 4]).await;
        let tasks = live_tasks(&store, &svc);
        for n in [&n1, &n2] {
            assert_eq!(tasks.iter().filter(|t| &t.node_id == n).count(), 2);
        }
        assert_eq!(tasks[0].status.as_ref().unwrap().message, ASSIGNED_MESSAGE);
    }

    #[tokio::test(start_paused = true)]
    async fn explains_then_places_once_a_node_fits() {
        let store = Store::in_memory();
        let n1 = add_node(&store, "one", &[]).await;
        let _c = pipeline(&store);
        let svc = create_service_spec(&store, constrained("db", 1, "node.labels.disk==ssd")).await;
        wait_for(|| {
            live_tasks(&store, &svc)
                .first()
                .is_some_and(|t| t.status.as_ref().unwrap().message.contains("constraint"))
        })
        .await;
        let t = live_tasks(&store, &svc).remove(0);
        assert_eq!(observed(&t), TaskState::Pending);
        let version = t.meta.as_ref().unwrap().version;
        // A pass that finds the same reason does not rewrite it.
        update_node(&store, &n1, |n| {
            n.status.as_mut().unwrap().message = "hi".into()
        })
        .await;
        settle().await;
        let t = live_tasks(&store, &svc).remove(0);
        assert_eq!(t.meta.as_ref().unwrap().version, version);
        // The label appears: the task is placed there.
        update_node(&store, &n1, |n| {
            let a = n.spec.as_mut().unwrap().annotations.as_mut().unwrap();
            a.labels.insert("disk".into(), "ssd".into());
        })
        .await;
        wait_for(|| states(&store, &svc) == vec![TaskState::Assigned]).await;
        assert_eq!(live_tasks(&store, &svc)[0].node_id, n1);
    }

    #[tokio::test(start_paused = true)]
    async fn places_once_a_node_joins() {
        let store = Store::in_memory();
        let _c = pipeline(&store);
        let svc = create_service(&store, "web", replicated(2)).await;
        wait_for(|| {
            live_tasks(&store, &svc).iter().all(|t| {
                observed(t) == TaskState::Pending
                    && t.status
                        .as_ref()
                        .unwrap()
                        .message
                        .starts_with("no suitable node")
            }) && live_tasks(&store, &svc).len() == 2
        })
        .await;
        let n = add_node(&store, "late", &[]).await;
        wait_for(|| states(&store, &svc) == vec![TaskState::Assigned; 2]).await;
        assert!(live_tasks(&store, &svc).iter().all(|t| t.node_id == n));
    }

    #[tokio::test(start_paused = true)]
    async fn places_a_waiting_task_when_capacity_frees() {
        let store = Store::in_memory();
        let clock = clock();
        add_node(&store, "one", &[]).await; // 4 CPUs
        let mut s = spec("big", replicated(2));
        s.task.as_mut().unwrap().resources = Some(shoal_proto::ResourceRequirements {
            reservations: Some(shoal_proto::Resources {
                nano_cpus: 3_000_000_000,
                ..Default::default()
            }),
            ..Default::default()
        });
        let svc = create_service_spec(&store, s).await;
        let _c = pipeline(&store);
        wait_for(|| {
            let mut st = states(&store, &svc);
            st.sort();
            st == vec![TaskState::Pending, TaskState::Assigned]
                && live_tasks(&store, &svc)
                    .iter()
                    .any(|t| t.status.as_ref().unwrap().message.contains("CPU"))
        })
        .await;
        // The assigned task ends (and nothing restarts it here): the other one takes its place.
        let placed = (live_tasks(&store, &svc).into_iter())
            .find(|t| observed(t) == TaskState::Assigned)
            .unwrap();
        report(&store, &placed.id, TaskState::Failed, 1, &clock).await;
        wait_for(|| {
            live_tasks(&store, &svc)
                .iter()
                .any(|t| t.id != placed.id && observed(t) == TaskState::Assigned)
        })
        .await;
    }
}
