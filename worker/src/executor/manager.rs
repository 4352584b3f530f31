//! The executor proper: keeps one task worker per assigned task and reports their status.
//!
//! A full assignment set (each session start) replaces what the node runs: workers of tasks
//! not in it are told to go, and containers carrying a task label of no assigned task are
//! stopped and removed (tasks deleted or moved while this node was away). Incremental sets
//! add, update (desired state) or remove tasks. A worker told to go stops and removes its
//! container. When the daemon stops, workers just end: containers outlive the daemon, and the
//! next run's workers adopt them from the state the manager last heard.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use shoal_overlay::TaskNetworks;
use shoal_proto::{Assignments, Task, TaskState, TaskStatus, TaskStatusUpdate};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::container::{ContainerController, LABEL_TASK_ID};
use super::controller::Controller;
use super::step::{step, stop_grace};
use crate::engine::{Engine, EngineError};

/// Runs this node's assigned tasks on `engine`, networked by `networks`.
pub struct Executor<E: Engine, N: TaskNetworks> {
    engine: Arc<E>,
    networks: Arc<N>,
    node_id: String,
    status_tx: mpsc::Sender<TaskStatusUpdate>,
    workers: HashMap<String, Worker>,
    /// Ends workers without touching containers (daemon shutdown).
    cancel: CancellationToken,
}

struct Worker {
    /// The latest task from the manager; dropping it tells the worker to go.
    task: watch::Sender<Task>,
    handle: JoinHandle<()>,
}

impl<E: Engine, N: TaskNetworks> Executor<E, N> {
    pub fn new(
        engine: Arc<E>,
        networks: Arc<N>,
        node_id: String,
        status_tx: mpsc::Sender<TaskStatusUpdate>,
    ) -> Self {
        Executor {
            engine,
            networks,
            node_id,
            status_tx,
            workers: HashMap::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Applies assignments until `assignments` closes or `cancel` fires (daemon shutdown):
    /// then workers end and containers are left as they are.
    pub async fn run(
        mut self,
        mut assignments: mpsc::Receiver<Assignments>,
        cancel: CancellationToken,
    ) -> Self {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                a = assignments.recv() => match a {
                    Some(a) => self.apply(a).await,
                    None => break,
                },
            }
        }
        self.detach().await;
        self
    }

    /// IDs of the tasks with a worker.
    pub fn task_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.workers.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Applies one Assignments message.
    pub async fn apply(&mut self, a: Assignments) {
        debug!(
            full = a.full,
            tasks = a.tasks.len(),
            removed = a.removed_task_ids.len(),
            "assignments"
        );
        if a.full {
            let keep: HashSet<&str> = a.tasks.iter().map(|t| t.id.as_str()).collect();
            let gone: Vec<String> = self
                .workers
                .keys()
                .filter(|id| !keep.contains(id.as_str()))
                .cloned()
                .collect();
            for id in gone {
                self.release(&id);
            }
            // Removals go on in the background; assignments must not wait on grace periods.
            drop(self.sweep(&keep).await);
        }
        for id in &a.removed_task_ids {
            self.release(id);
        }
        for task in a.tasks {
            if task.desired_state() >= TaskState::Remove {
                self.release(&task.id);
                continue;
            }
            match self.workers.get(&task.id) {
                Some(w) if !w.handle.is_finished() => {
                    w.task.send_if_modified(|cur| {
                        let changed = cur.desired_state != task.desired_state;
                        *cur = task.clone();
                        changed
                    });
                }
                _ => self.spawn(task),
            }
        }
    }

    fn spawn(&mut self, task: Task) {
        info!(task = %task.id, state = ?task.status.as_ref().map(|s| s.state()), "task assigned");
        let id = task.id.clone();
        let (tx, rx) = watch::channel(task.clone());
        let ctlr = ContainerController::new(
            self.engine.clone(),
            self.networks.clone(),
            task,
            self.node_id.clone(),
        );
        let handle = tokio::spawn(run_worker(
            ctlr,
            rx,
            self.status_tx.clone(),
            self.cancel.child_token(),
        ));
        self.workers.insert(id, Worker { task: tx, handle });
    }

    /// Tells a task's worker to stop and remove its container, then go.
    fn release(&mut self, id: &str) {
        if let Some(w) = self.workers.remove(id) {
            info!(task = %id, "task no longer assigned: removing it");
            drop(w.task);
            // The worker finishes on its own; its handle is not awaited.
            drop(w.handle);
        }
    }

    /// Stops and removes containers of tasks this node no longer has.
    /// Returns the removals under way, for a caller that must see them finished (leave).
    async fn sweep(&self, keep: &HashSet<&str>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut removals = Vec::new();
        let containers = match self.engine.list_containers(true).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot list containers to remove those of unassigned tasks");
                return removals;
            }
        };
        for c in containers {
            let Some(task) = c.labels.get(LABEL_TASK_ID) else {
                continue;
            };
            if keep.contains(task.as_str()) || self.workers.contains_key(task) {
                continue;
            }
            info!(task = %task, container = %c.id, "removing the container of an unassigned task");
            let (engine, networks) = (self.engine.clone(), self.networks.clone());
            let task = task.clone();
            removals.push(tokio::spawn(async move {
                let _ = engine
                    .stop_container(&c.id, Some(super::step::DEFAULT_STOP_GRACE))
                    .await;
                match engine.remove_container(&c.id, true).await {
                    Ok(()) | Err(EngineError::NotFound(_)) => {}
                    Err(e) => {
                        warn!(container = %c.id, error = %e, "cannot remove container");
                        return;
                    }
                }
                if let Err(e) = networks.detach(&task).await {
                    warn!(task = %task, error = %e, "cannot detach the task's network");
                }
            }));
        }
        removals
    }

    /// Ends every worker, leaving containers as they are (daemon shutdown).
    async fn detach(&mut self) {
        self.cancel.cancel();
        for (_, w) in self.workers.drain() {
            let _ = w.handle.await;
        }
    }

    /// Leaving the cluster: stops and removes every task container, as Swarm does.
    pub async fn leave(mut self) {
        self.detach().await;
        // Await the removals themselves, network detach included: returning when the
        // containers are gone would let the daemon exit with attachments still held.
        for removal in self.sweep(&HashSet::new()).await {
            let _ = removal.await;
        }
        // Wait until the sweep's removals are done, so leave returns with nothing left.
        for _ in 0..600 {
            match self.engine.list_containers(true).await {
                Ok(c) if c.iter().any(|c| c.labels.contains_key(LABEL_TASK_ID)) => {}
                _ => return,
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// What woke a worker up while its task was running or idle.
enum Wake {
    Stepped(TaskStatus),
    Updated,
    Removed,
    Cancelled,
}

/// One task's life: step until terminal, follow desired-state changes, and when removed stop
/// and remove the container.
async fn run_worker<C: Controller>(
    mut ctlr: C,
    mut updates: watch::Receiver<Task>,
    status_tx: mpsc::Sender<TaskStatusUpdate>,
    cancel: CancellationToken,
) {
    let mut task = updates.borrow_and_update().clone();
    let mut status = task.status.clone().unwrap_or_default();
    // Whether the last step changed nothing: then wait for news rather than step again.
    let mut idle = false;
    loop {
        let wake = if idle {
            tokio::select! {
                _ = cancel.cancelled() => Wake::Cancelled,
                c = updates.changed() => if c.is_ok() { Wake::Updated } else { Wake::Removed },
            }
        } else if matches!(status.state(), TaskState::Starting | TaskState::Running)
            && task.desired_state() <= TaskState::Running
        {
            // Waiting for health or for the exit: a new desired state (shutdown) interrupts
            // the wait (both steps may be dropped and taken again).
            tokio::select! {
                _ = cancel.cancelled() => Wake::Cancelled,
                c = updates.changed() => if c.is_ok() { Wake::Updated } else { Wake::Removed },
                s = step(&task, &status, &mut ctlr) => Wake::Stepped(s),
            }
        } else {
            tokio::select! {
                _ = cancel.cancelled() => Wake::Cancelled,
                s = step(&task, &status, &mut ctlr) => Wake::Stepped(s),
            }
        };
        match wake {
            Wake::Cancelled => return,
            Wake::Removed => break,
            Wake::Updated => {
                task = updates.borrow_and_update().clone();
                idle = false;
            }
            Wake::Stepped(next) => {
                if next.state() == status.state() {
                    idle = true;
                } else {
                    debug!(task = %task.id, from = ?status.state(), to = ?next.state(), "task state");
                    status = next;
                    let update = TaskStatusUpdate {
                        task_id: task.id.clone(),
                        status: Some(status.clone()),
                    };
                    if status_tx.send(update).await.is_err() {
                        return;
                    }
                }
                // News that came while stepping.
                match updates.has_changed() {
                    Ok(true) => {
                        task = updates.borrow_and_update().clone();
                        idle = false;
                    }
                    Ok(false) => {}
                    Err(_) => break,
                }
            }
        }
    }
    // No longer assigned: nothing of it stays on the node.
    if let Err(e) = ctlr.shutdown(stop_grace(&task)).await {
        warn!(task = %task.id, error = %e, "cannot stop the container of a removed task");
    }
    if let Err(e) = ctlr.remove().await {
        warn!(task = %task.id, error = %e, "cannot remove the container of a removed task");
    }
    debug!(task = %task.id, "task worker done");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shoal_proto::{ContainerRunState, HealthConfig};

    use super::*;
    use crate::executor::testing::{FakeEngine, FakeNetworks, task};

    type Rx = mpsc::Receiver<TaskStatusUpdate>;

    fn executor(engine: &Arc<FakeEngine>) -> (Executor<FakeEngine, FakeNetworks>, Rx) {
        let (tx, rx) = mpsc::channel(256);
        let nets = engine.networks.clone();
        (Executor::new(engine.clone(), nets, "n1".into(), tx), rx)
    }

    fn full(tasks: Vec<Task>) -> Assignments {
        Assignments {
            full: true,
            tasks,
            removed_task_ids: Vec::new(),
        }
    }

    /// Reads updates until every one of `tasks` has reported `state` (in any order: reading
    /// them one by one would drop one task's updates while waiting for another's); returns
    /// those statuses in the order of `tasks`.
    async fn until_all(rx: &mut Rx, tasks: &[&str], state: TaskState) -> Vec<TaskStatus> {
        let mut found: std::collections::HashMap<String, TaskStatus> = Default::default();
        let waited = tokio::time::timeout(Duration::from_secs(600), async {
            while found.len() < tasks.len() {
                let u = rx.recv().await.expect("executor gone");
                let s = u.status.unwrap();
                if tasks.contains(&u.task_id.as_str()) && s.state() == state {
                    found.insert(u.task_id, s);
                }
            }
        })
        .await;
        if waited.is_err() {
            panic!(
                "not all of {tasks:?} reached {state:?}; only {:?}",
                found.keys()
            );
        }
        tasks.iter().map(|t| found[*t].clone()).collect()
    }

    /// Reads updates until `task` reports `state`; returns that status and the states seen.
    async fn until(rx: &mut Rx, task: &str, state: TaskState) -> (TaskStatus, Vec<TaskState>) {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(Duration::from_secs(600), async {
            loop {
                let u = rx.recv().await.expect("executor gone");
                if u.task_id != task {
                    continue;
                }
                let s = u.status.unwrap();
                seen.push(s.state());
                if s.state() == state {
                    return s;
                }
            }
        })
        .await;
        match found {
            Ok(s) => (s, seen),
            Err(_) => panic!("task {task} never reached {state:?}; saw {seen:?}"),
        }
    }

    /// Polls the fake engine until `check` holds.
    async fn eventually(engine: &FakeEngine, what: &str, check: impl Fn(&FakeEngine) -> bool) {
        for _ in 0..1000 {
            if check(engine) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "never happened: {what}; containers: {:?}",
            engine.containers()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_assigned_task_runs_as_a_labelled_container_and_completes() {
        let engine = Arc::new(FakeEngine::with_image("busybox", None));
        let (mut ex, mut rx) = executor(&engine);
        ex.apply(full(vec![task("t1", TaskState::Running)])).await;
        let (running, seen) = until(&mut rx, "t1", TaskState::Running).await;
        use TaskState::*;
        assert_eq!(seen, vec![Accepted, Preparing, Ready, Starting, Running]);
        assert_eq!(running.container.as_ref().unwrap().container_id, "c1");
        let labels = engine.labels("web.1.t1");
        assert_eq!(labels[LABEL_TASK_ID], "t1");
        assert_eq!(labels["shoal.service.id"], "svc1");
        assert_eq!(labels["shoal.service.name"], "web");
        assert_eq!(labels["shoal.node.id"], "n1");
        // In the task's own namespace on the bridge.
        assert_eq!(engine.netns("web.1.t1").unwrap(), "/run/netns/t1");
        assert_eq!(engine.networks.attached(), vec!["t1"]);
        engine.exit("web.1.t1", 0);
        let (done, _) = until(&mut rx, "t1", Complete).await;
        assert_eq!(done.container.unwrap().exit_code, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_image_is_rejected_with_the_node_named() {
        let engine = Arc::new(FakeEngine::default());
        let (mut ex, mut rx) = executor(&engine);
        ex.apply(full(vec![task("t1", TaskState::Running)])).await;
        let (s, _) = until(&mut rx, "t1", TaskState::Rejected).await;
        assert!(
            s.err.starts_with("image busybox not found on node n1"),
            "{}",
            s.err
        );
        assert!(engine.containers().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_set_removes_containers_of_tasks_no_longer_assigned() {
        let engine = Arc::new(FakeEngine::with_image("busybox", None));
        let (mut ex, mut rx) = executor(&engine);
        ex.apply(full(vec![
            task("t1", TaskState::Running),
            task("t2", TaskState::Running),
        ]))
        .await;
        until_all(&mut rx, &["t1", "t2"], TaskState::Running).await;
        // A container of a task this executor never heard of (e.g. left from a past run).
        engine
            .create_container(crate::engine::ContainerConfig {
                name: Some("old.1.t0".into()),
                spec: shoal_proto::ContainerSpec {
                    labels: [(LABEL_TASK_ID.to_string(), "t0".to_string())].into(),
                    ..Default::default()
                },
                ..Default::default()
            })
            .await
            .unwrap();
        ex.apply(full(vec![task("t2", TaskState::Running)])).await;
        eventually(&engine, "only t2's container left", |e| {
            e.containers()
                .iter()
                .map(|c| c.0.clone())
                .collect::<Vec<_>>()
                == vec!["web.1.t2".to_string()]
        })
        .await;
        assert_eq!(ex.task_ids(), vec!["t2"]);
        eventually(&engine, "t1 detached", |e| {
            e.networks.attached() == vec!["t2"]
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn incremental_changes_add_and_remove_tasks() {
        let engine = Arc::new(FakeEngine::with_image("busybox", None));
        let (mut ex, mut rx) = executor(&engine);
        ex.apply(full(vec![task("t1", TaskState::Running)])).await;
        until(&mut rx, "t1", TaskState::Running).await;
        ex.apply(Assignments {
            full: false,
            tasks: vec![task("t2", TaskState::Running)],
            removed_task_ids: vec!["t1".into()],
        })
        .await;
        until(&mut rx, "t2", TaskState::Running).await;
        eventually(&engine, "t1 removed", |e| {
            e.containers().iter().all(|c| c.0 != "web.1.t1")
        })
        .await;
        assert_eq!(ex.task_ids(), vec!["t2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn desired_shutdown_stops_then_leaving_the_assignments_removes() {
        let engine = Arc::new(FakeEngine::with_image("busybox", None));
        let (mut ex, mut rx) = executor(&engine);
        ex.apply(full(vec![task("t1", TaskState::Running)])).await;
        until(&mut rx, "t1", TaskState::Running).await;
        ex.apply(Assignments {
            full: false,
            tasks: vec![task("t1", TaskState::Shutdown)],
            removed_task_ids: Vec::new(),
        })
        .await;
        let (s, seen) = until(&mut rx, "t1", TaskState::Shutdown).await;
        assert_eq!(
            seen,
            vec![TaskState::Shutdown],
            "the wait is interrupted, not reported"
        );
        assert_eq!(s.message, "shutdown");
        // Stopped, but kept until the task leaves the assignments (logs stay readable).
        assert_eq!(
            engine.containers(),
            vec![("web.1.t1".into(), ContainerRunState::Exited, 1)]
        );
        ex.apply(full(vec![])).await;
        eventually(&engine, "t1 removed", |e| e.containers().is_empty()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_executor_adopts_running_containers_without_restarting_them() {
        let engine = Arc::new(FakeEngine::with_image("busybox", None));
        let (ex, mut rx) = executor(&engine);
        let (a_tx, a_rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let first = tokio::spawn(ex.run(a_rx, cancel.clone()));
        a_tx.send(full(vec![
            task("t1", TaskState::Running),
            task("t2", TaskState::Running),
        ]))
        .await
        .unwrap();
        let both = until_all(&mut rx, &["t1", "t2"], TaskState::Running).await;
        let (r1, r2) = (both[0].clone(), both[1].clone());
        // The daemon stops: containers are left running.
        cancel.cancel();
        first.await.unwrap();
        assert!(
            engine
                .containers()
                .iter()
                .all(|c| c.1 == ContainerRunState::Running)
        );
        // t2 exits while the daemon is down.
        engine.exit("web.1.t2", 7);

        // The next daemon gets the tasks as the manager last heard of them: RUNNING.
        let (mut ex, mut rx) = executor(&engine);
        let mut t1 = task("t1", TaskState::Running);
        t1.status = Some(r1);
        let mut t2 = task("t2", TaskState::Running);
        t2.status = Some(r2);
        ex.apply(full(vec![t1, t2])).await;
        let (s2, seen) = until(&mut rx, "t2", TaskState::Failed).await;
        assert_eq!(seen, vec![TaskState::Failed]);
        assert_eq!(s2.container.unwrap().exit_code, 7);
        engine.exit("web.1.t1", 0);
        let (_, seen) = until(&mut rx, "t1", TaskState::Complete).await;
        assert_eq!(seen, vec![TaskState::Complete]);
        // Each container was started once, by the first executor.
        assert!(engine.containers().iter().all(|c| c.2 == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_assigned_again_after_a_crash_mid_start_reuses_its_container() {
        let engine = Arc::new(FakeEngine::with_image("busybox", None));
        // The container exists (created before a crash) but the manager heard only PREPARING.
        let c = ContainerController::new(
            engine.clone(),
            engine.networks.clone(),
            task("t1", TaskState::Running),
            "n1".into(),
        );
        let mut c = c;
        c.prepare().await.unwrap();
        let (mut ex, mut rx) = executor(&engine);
        let mut t1 = task("t1", TaskState::Running);
        t1.status.as_mut().unwrap().set_state(TaskState::Preparing);
        ex.apply(full(vec![t1])).await;
        until(&mut rx, "t1", TaskState::Running).await;
        assert_eq!(
            engine.containers(),
            vec![("web.1.t1".into(), ContainerRunState::Running, 1)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_health_check_fails_the_task_after_its_retries_and_stops_it() {
        let health = HealthConfig {
            test: vec!["CMD-SHELL".into(), "wget -q localhost".into()],
            interval: Some(Duration::from_secs(5).into()),
            retries: 2,
            ..Default::default()
        };
        let engine = Arc::new(FakeEngine::with_image("busybox", Some(health)));
        let (mut ex, mut rx) = executor(&engine);
        ex.apply(full(vec![task("t1", TaskState::Running)])).await;
        // Healthy first: RUNNING only after the first probe passed.
        let started = tokio::time::Instant::now();
        let (_, _) = until(&mut rx, "t1", TaskState::Running).await;
        assert!(started.elapsed() >= Duration::from_secs(5));
        engine.state.lock().unwrap().exec_exit_code = 1;
        let before = engine.state.lock().unwrap().execs;
        let (failed, _) = until(&mut rx, "t1", TaskState::Failed).await;
        assert_eq!(failed.err, "unhealthy: connection refused");
        assert_eq!(engine.state.lock().unwrap().execs - before, 2, "retries");
        assert_eq!(
            engine.containers(),
            vec![("web.1.t1".into(), ContainerRunState::Exited, 1)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_interrupts_the_wait_for_health() {
        let health = HealthConfig {
            test: vec!["CMD".into(), "false".into()],
            start_period: Some(Duration::from_secs(3600).into()),
            ..Default::default()
        };
        let engine = Arc::new(FakeEngine::with_image("busybox", Some(health)));
        engine.state.lock().unwrap().exec_exit_code = 1;
        let (mut ex, mut rx) = executor(&engine);
        ex.apply(full(vec![task("t1", TaskState::Running)])).await;
        until(&mut rx, "t1", TaskState::Starting).await;
        eventually(&engine, "started", |e| {
            e.containers() == vec![("web.1.t1".into(), ContainerRunState::Running, 1)]
        })
        .await;
        ex.apply(full(vec![task("t1", TaskState::Shutdown)])).await;
        let (_, seen) = until(&mut rx, "t1", TaskState::Shutdown).await;
        assert_eq!(seen, vec![TaskState::Shutdown]);
        assert_eq!(
            engine.containers(),
            vec![("web.1.t1".into(), ContainerRunState::Exited, 1)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leaving_removes_every_task_container() {
        let engine = Arc::new(FakeEngine::with_image("busybox", None));
        let (mut ex, mut rx) = executor(&engine);
        ex.apply(full(vec![task("t1", TaskState::Running)])).await;
        until(&mut rx, "t1", TaskState::Running).await;
        ex.leave().await;
        assert!(engine.containers().is_empty());
        eventually(&engine, "detached", |e| e.networks.attached().is_empty()).await;
    }
}
