//! Restart supervision: what happens to a task that stopped while it was meant to run, and to
//! the tasks of a node that went down.
//!
//! A task whose desired state is RUNNING but which reached a terminal state (it exited, failed,
//! or was rejected) is judged against its service's restart policy, with Swarm's defaults
//! (condition ANY, delay 5 s, unlimited attempts, unbounded window):
//!
//! - condition NONE, or ON_FAILURE with a task that COMPLETEd (exit 0), or `max_attempts`
//!   restarts of the slot already within the window: it is left as it is, with desired state
//!   COMPLETE, which keeps its slot filled so nothing replaces it;
//! - otherwise, once `delay` has passed since the task's status timestamp, it is retired
//!   (desired SHUTDOWN) and a new task takes its slot (its node, for a global service) in the
//!   same transaction. The delay is computed from the timestamp, not from a timer alone, so a
//!   new leader honours what is left of it; the restarts of a slot are counted in the
//!   `restart_history` each new task inherits, so the count survives leader changes too.
//!
//! A replicated task on a node that is DOWN (or was removed) is replaced at once, without delay
//! and without counting as a restart: the task did not fail, its node did, and this is what makes
//! recovering from a lost node fast. The old task is retired, so when its node comes back the
//! worker stops its container. Global tasks of a down node are the global orchestrator's.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_proto::{
    Node, ObjectKind, RestartPolicy, Service, Task, TaskState, Timestamp, node_status,
    restart_policy::Condition,
};
use shoal_raft::{By, Event, Snapshot, Store, StoreError, Tx};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{
    MAX_WRITES_PER_TX, Reconciler, commit, drive, is_global, node_state, observed, replace,
    task_change,
};
use crate::clock::{self, Clock};
use crate::leader::{Controller, ControllerFuture};

/// Swarm's default pause before a task is restarted.
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(5);

/// The restart supervisor as a leader controller.
pub struct RestartSupervisor {
    store: Store,
    clock: Clock,
}

impl RestartSupervisor {
    pub fn new(store: Store, clock: Clock) -> RestartSupervisor {
        RestartSupervisor { store, clock }
    }
}

impl Controller for RestartSupervisor {
    fn name(&self) -> &'static str {
        "restart supervisor"
    }

    fn run(&self, cancel: CancellationToken) -> ControllerFuture {
        let store = self.store.clone();
        let r = Supervising {
            store: self.store.clone(),
            clock: self.clock.clone(),
            delayed: BTreeMap::new(),
        };
        Box::pin(
            async move { drive(&store, &[ObjectKind::Task, ObjectKind::Node], r, cancel).await },
        )
    }
}

struct Supervising {
    store: Store,
    clock: Clock,
    /// Restarts waiting for their delay: task ID -> when it is due.
    delayed: BTreeMap<String, Instant>,
}

/// What [`judge`] did with a task.
enum Verdict {
    /// Nothing to do (or done already).
    Settled,
    /// A restart is due at this time.
    Later(Timestamp),
}

/// Whether the task needs the supervisor: meant to run, and stopped or on a node.
fn candidate(task: &Task) -> bool {
    task.desired_state() == TaskState::Running
        && (observed(task).is_terminal() || !task.node_id.is_empty())
}

impl Reconciler for Supervising {
    async fn full(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.delayed.clear();
        let ids: Vec<String> = (snapshot.list::<Task>().into_iter())
            .filter(|t| candidate(t) && needs_look(t, &snapshot))
            .map(|t| t.id)
            .collect();
        drop(snapshot);
        self.judge_all(ids).await
    }

    async fn changes(&mut self, events: Vec<Event>) -> Result<(), StoreError> {
        let mut ids = BTreeSet::new();
        let mut down_nodes = Vec::new();
        for event in &events {
            if let Some((task, _)) = task_change(event) {
                if event.action != shoal_raft::Action::Remove
                    && candidate(task)
                    && observed(task).is_terminal()
                {
                    ids.insert(task.id.clone());
                } else {
                    self.delayed.remove(&task.id);
                }
            } else if let Some(node) = event.get::<Node>() {
                let gone = event.action == shoal_raft::Action::Remove;
                if gone || node_state(node) == node_status::State::Down {
                    down_nodes.push(node.id.clone());
                }
            }
        }
        drop(events);
        for node in down_nodes {
            for task in self.store.find::<Task>(By::NodeId(&node)) {
                if candidate(&task) {
                    ids.insert(task.id);
                }
            }
        }
        self.judge_all(ids.into_iter().collect()).await
    }

    fn next_tick(&self) -> Option<Instant> {
        self.delayed.values().min().copied()
    }

    async fn tick(&mut self) -> Result<(), StoreError> {
        let now = Instant::now();
        let due: Vec<String> = (self.delayed.iter())
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &due {
            self.delayed.remove(id);
        }
        self.judge_all(due).await
    }
}

/// Whether a candidate task in `snapshot` warrants a transaction: it stopped, or its node is
/// down or gone.
fn needs_look(task: &Task, snapshot: &Snapshot) -> bool {
    observed(task).is_terminal()
        || snapshot
            .get::<Node>(&task.node_id)
            .is_none_or(|n| node_state(&n) == node_status::State::Down)
}

impl Supervising {
    /// Judges the tasks, in transactions of bounded size, and remembers the delayed ones.
    async fn judge_all(&mut self, ids: Vec<String>) -> Result<(), StoreError> {
        for chunk in ids.chunks(MAX_WRITES_PER_TX / 2) {
            let now = self.clock.now();
            let verdicts = commit(&self.store, |tx| {
                let mut later = Vec::new();
                for id in chunk {
                    if let Verdict::Later(at) = judge(tx, id, &now, &self.clock)? {
                        later.push((id.clone(), at));
                    }
                }
                Ok(later)
            })
            .await?;
            for (id, at) in verdicts.value {
                self.delayed.insert(id, self.clock.instant_at(&at));
            }
        }
        Ok(())
    }
}

/// Decides, on the transaction's fresh reads, what becomes of task `id`, and stages it.
fn judge(tx: &mut Tx<'_>, id: &str, now: &Timestamp, clock: &Clock) -> Result<Verdict, StoreError> {
    let Some(mut task) = tx.get::<Task>(id).filter(candidate) else {
        return Ok(Verdict::Settled);
    };
    // Tasks of removed services are the replicated orchestrator's to retire.
    let Some(service) = tx.get::<Service>(&task.service_id) else {
        return Ok(Verdict::Settled);
    };
    let node_lost = !task.node_id.is_empty()
        && tx
            .get::<Node>(&task.node_id)
            .is_none_or(|n| node_state(&n) == node_status::State::Down);
    if node_lost {
        if !is_global(&service) {
            info!(task = %task.id, service = %service.id, node = %task.node_id, slot = task.slot,
                "node is down: replacing its task");
            let history = task.restart_history.clone();
            replace(tx, &service, task, history, clock)?;
        }
        return Ok(Verdict::Settled);
    }
    let state = observed(&task);
    if !state.is_terminal() {
        return Ok(Verdict::Settled);
    }
    let policy = task
        .spec
        .as_ref()
        .and_then(|s| s.restart)
        .unwrap_or_default();
    let recent = recent_restarts(&task.restart_history, &policy, now);
    let give_up = match policy.condition() {
        Condition::None => true,
        Condition::OnFailure => state == TaskState::Complete,
        Condition::Any => false,
    } || (policy.max_attempts > 0 && recent.len() as u64 >= policy.max_attempts);
    if give_up {
        info!(task = %task.id, service = %service.id, slot = task.slot, ?state,
            restarts = recent.len(), "task stopped and is not restarted (restart policy)");
        task.desired_state = TaskState::Complete as i32;
        tx.update(task)?;
        return Ok(Verdict::Settled);
    }
    let stopped = task
        .status
        .as_ref()
        .and_then(|s| s.timestamp)
        .unwrap_or(*now);
    let delay = policy.delay.map_or(DEFAULT_RESTART_DELAY, |d| d.to_std());
    let due = clock::add(&stopped, delay);
    if clock::key(&due) > clock::key(now) {
        return Ok(Verdict::Later(due));
    }
    let mut history = recent;
    if policy.max_attempts > 0 {
        history.push(*now);
        let excess = history.len().saturating_sub(policy.max_attempts as usize);
        history.drain(..excess);
    }
    info!(task = %task.id, service = %service.id, slot = task.slot, node = %task.node_id,
        ?state, "restarting task (restart policy)");
    replace(tx, &service, task, history, clock)?;
    Ok(Verdict::Settled)
}

/// The earlier restarts that count against `max_attempts` now: those within the window (all of
/// them when the window is unset or zero); none are kept when attempts are unlimited.
fn recent_restarts(
    history: &[Timestamp],
    policy: &RestartPolicy,
    now: &Timestamp,
) -> Vec<Timestamp> {
    if policy.max_attempts == 0 {
        return Vec::new();
    }
    let window = policy.window.map(|w| w.to_std()).unwrap_or_default();
    let since = if window.is_zero() {
        None
    } else {
        Some(clock::key(&clock::sub(now, window)))
    };
    let mut recent: Vec<Timestamp> = (history.iter())
        .filter(|t| since.is_none_or(|s| clock::key(t) >= s))
        .copied()
        .collect();
    recent.sort_by_key(clock::key);
    recent
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::fills_slot;
    use crate::orchestrator::replicated::ReplicatedOrchestrator;
    use crate::orchestrator::testutil::*;

    fn policy(condition: Condition, max_attempts: u64, window_s: i64) -> RestartPolicy {
        RestartPolicy {
            condition: condition as i32,
            delay: None,
            max_attempts,
            window: (window_s > 0).then(|| Duration::from_secs(window_s as u64).into()),
        }
    }

    /// The replicated orchestrator and the supervisor over a fresh store; tasks are "assigned"
    /// and reported by hand.
    async fn setup(policy: Option<RestartPolicy>) -> (Store, Clock, String, Vec<Running>) {
        let store = Store::in_memory();
        let clock = clock();
        let mut s = spec("web", replicated(1));
        s.task.as_mut().unwrap().restart = policy;
        let svc = create_service_spec(&store, s).await;
        let running = vec![
            spawn(ReplicatedOrchestrator::new(store.clone(), clock.clone())),
            spawn(RestartSupervisor::new(store.clone(), clock.clone())),
        ];
        wait_for(|| live_tasks(&store, &svc).len() == 1).await;
        (store, clock, svc, running)
    }

    fn the_task(store: &Store, svc: &str) -> Task {
        let mut live = live_tasks(store, svc);
        assert_eq!(live.len(), 1, "one task fills the slot");
        live.remove(0)
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_in_the_same_slot_after_the_delay() {
        let (store, clock, svc, _r) = setup(None).await;
        let first = the_task(&store, &svc);
        report(&store, &first.id, TaskState::Failed, 1, &clock).await;
        let failed_at = Instant::now();
        // Not before the default 5 s delay...
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(the_task(&store, &svc).id, first.id);
        // ...but then, in slot 1, the old task retired.
        wait_for(|| the_task(&store, &svc).id != first.id).await;
        assert!(failed_at.elapsed() >= DEFAULT_RESTART_DELAY);
        let second = the_task(&store, &svc);
        assert_eq!(second.slot, 1);
        assert_eq!(second.desired_state(), TaskState::Running);
        let old = store.get::<Task>(&first.id).unwrap();
        assert_eq!(old.desired_state(), TaskState::Shutdown);
        // A task that completes restarts too under condition ANY.
        report(&store, &second.id, TaskState::Complete, 0, &clock).await;
        wait_for(|| the_task(&store, &svc).id != second.id).await;
    }

    #[tokio::test(start_paused = true)]
    async fn on_failure_leaves_completed_tasks_alone() {
        let (store, clock, svc, _r) = setup(Some(policy(Condition::OnFailure, 0, 0))).await;
        let first = the_task(&store, &svc);
        report(&store, &first.id, TaskState::Complete, 0, &clock).await;
        wait_for(|| the_task(&store, &svc).desired_state() == TaskState::Complete).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(the_task(&store, &svc).id, first.id);
        assert_eq!(store.find::<Task>(By::ServiceId(&svc)).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn on_failure_restarts_failures_and_none_never_restarts() {
        let (store, clock, svc, _r) = setup(Some(policy(Condition::OnFailure, 0, 0))).await;
        let first = the_task(&store, &svc);
        report(&store, &first.id, TaskState::Failed, 3, &clock).await;
        wait_for(|| the_task(&store, &svc).id != first.id).await;

        let (store, clock, svc, _r) = setup(Some(policy(Condition::None, 0, 0))).await;
        let first = the_task(&store, &svc);
        report(&store, &first.id, TaskState::Failed, 3, &clock).await;
        wait_for(|| the_task(&store, &svc).desired_state() == TaskState::Complete).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(the_task(&store, &svc).id, first.id);
    }

    #[tokio::test(start_paused = true)]
    async fn max_attempts_within_the_window() {
        // Two restarts per minute at most.
        let (store, clock, svc, _r) = setup(Some(policy(Condition::Any, 2, 60))).await;
        let mut ids = vec![the_task(&store, &svc).id];
        for _ in 0..2 {
            let t = the_task(&store, &svc);
            report(&store, &t.id, TaskState::Failed, 1, &clock).await;
            wait_for(|| the_task(&store, &svc).id != t.id).await;
            ids.push(the_task(&store, &svc).id);
        }
        assert_eq!(the_task(&store, &svc).restart_history.len(), 2);
        // The third failure within the minute is not restarted.
        let t = the_task(&store, &svc);
        report(&store, &t.id, TaskState::Failed, 1, &clock).await;
        wait_for(|| the_task(&store, &svc).desired_state() == TaskState::Complete).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(the_task(&store, &svc).id, t.id);

        // Once the earlier restarts leave the window, a new failure is restarted again.
        let (store, clock, svc, _r) = setup(Some(policy(Condition::Any, 1, 60))).await;
        let t = the_task(&store, &svc);
        report(&store, &t.id, TaskState::Failed, 1, &clock).await;
        wait_for(|| the_task(&store, &svc).id != t.id).await;
        tokio::time::sleep(Duration::from_secs(61)).await;
        let t = the_task(&store, &svc);
        report(&store, &t.id, TaskState::Failed, 1, &clock).await;
        wait_for(|| the_task(&store, &svc).id != t.id).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_delay_survives_a_leader_change() {
        let (store, clock, svc, r) = setup(None).await;
        let first = the_task(&store, &svc);
        report(&store, &first.id, TaskState::Failed, 1, &clock).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(r);
        // A new leader 3 s later restarts it 2 s after taking over, not 5.
        let started = Instant::now();
        let _r = [
            spawn(ReplicatedOrchestrator::new(store.clone(), clock.clone())),
            spawn(RestartSupervisor::new(store.clone(), clock.clone())),
        ];
        wait_for(|| the_task(&store, &svc).id != first.id).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(3));
        assert_eq!(store.find::<Task>(By::ServiceId(&svc)).len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_node_has_its_tasks_replaced_at_once() {
        let (store, clock, svc, _r) = setup(None).await;
        let node = add_node(&store, "one", &[]).await;
        let t = the_task(&store, &svc);
        // Assigned and running there.
        store
            .update(|tx| {
                let mut t = tx.get::<Task>(&t.id).unwrap();
                t.node_id = node.clone();
                tx.update(t)
            })
            .await
            .unwrap();
        report(&store, &t.id, TaskState::Running, 0, &clock).await;
        let before = Instant::now();
        set_node_state(&store, &node, node_status::State::Down).await;
        wait_for(|| the_task(&store, &svc).id != t.id).await;
        assert!(before.elapsed() < Duration::from_secs(1));
        let new = the_task(&store, &svc);
        assert_eq!(new.slot, t.slot);
        assert!(new.node_id.is_empty());
        let old = store.get::<Task>(&t.id).unwrap();
        assert_eq!(old.desired_state(), TaskState::Shutdown);
        assert!(!fills_slot(&old));
    }

    #[tokio::test(start_paused = true)]
    async fn global_tasks_restart_on_their_node_and_removed_nodes_count_as_lost() {
        let store = Store::in_memory();
        let clock = clock();
        let a = add_node(&store, "a", &[]).await;
        let agent = create_service(&store, "agent", global()).await;
        let web = create_service(&store, "web", replicated(1)).await;
        let _r = [
            spawn(ReplicatedOrchestrator::new(store.clone(), clock.clone())),
            spawn(crate::orchestrator::global::GlobalOrchestrator::new(
                store.clone(),
                clock.clone(),
            )),
            spawn(RestartSupervisor::new(store.clone(), clock.clone())),
        ];
        wait_for(|| live_tasks(&store, &agent).len() == 1 && live_tasks(&store, &web).len() == 1)
            .await;
        let g = the_task(&store, &agent);
        report(&store, &g.id, TaskState::Failed, 1, &clock).await;
        wait_for(|| the_task(&store, &agent).id != g.id).await;
        let g2 = the_task(&store, &agent);
        assert_eq!((g2.node_id.as_str(), g2.slot), (a.as_str(), 0));

        // The replicated task runs on a, then a is removed from the cluster.
        let t = the_task(&store, &web);
        store
            .update(|tx| {
                let mut t = tx.get::<Task>(&t.id).unwrap();
                t.node_id = a.clone();
                tx.update(t)
            })
            .await
            .unwrap();
        report(&store, &t.id, TaskState::Running, 0, &clock).await;
        store.update(|tx| tx.delete::<Node>(&a)).await.unwrap();
        wait_for(|| the_task(&store, &web).id != t.id).await;
        assert!(the_task(&store, &web).node_id.is_empty());
        // The global service has no node left to run on.
        wait_for(|| live_tasks(&store, &agent).is_empty()).await;
    }
}
