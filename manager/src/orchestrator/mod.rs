//! The orchestrator: the leader's controllers that turn services into tasks and keep them alive.
//!
//! ```text
//!  Service ──▶ replicated / global ──▶ Task NEW ──▶ allocator ──▶ PENDING ──▶ scheduler ──▶ ASSIGNED
//!                     ▲                                                                     │
//!                     │                  restart supervisor ◀── FAILED / COMPLETE / node DOWN
//!                     │                  constraint enforcer ◀── node drained or relabelled
//!                     └──── task reaper deletes history beyond the retention limit
//! ```
//!
//! One module per controller, as SwarmKit: each starts from `Store::view_and_watch` (so a new
//! leader reconciles from scratch), reacts to batches of store events, and writes only through
//! transactions that re-read what they change. They share one invariant, which is what keeps
//! them from creating duplicates without locking each other out: **a slot (a replicated
//! service's 1..N, or a global service's node) is filled by the tasks whose desired state is at
//! most COMPLETE**. Only the replicated and global orchestrators fill empty slots; every other
//! controller replaces a task by retiring it (desired SHUTDOWN) and creating its successor in
//! the same transaction, so the slot is never seen empty. A retired task is history, kept for
//! `service ps` until the reaper deletes it.

pub mod constraintenforcer;
pub mod global;
pub mod replicated;
pub mod restart;
pub mod taskreaper;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use shoal_proto::{
    Cluster, Node, NodeAvailability, ObjectKind, Service, Task, TaskState, TaskStatus, node_status,
    service_spec,
};
use shoal_raft::{Action, Committed, Event, Snapshot, Store, StoreError, Tx, Watch, WatchError};
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::cluster_spec::DEFAULT_TASK_HISTORY;

/// Most writes staged in one transaction: keeps each Raft entry small when a service of
/// thousands of replicas is created or removed (the rest follows in further transactions).
pub const MAX_WRITES_PER_TX: usize = 256;

/// How often a transaction refused for a concurrent write is retried before giving up (the
/// controller then fails, and the leader restarts every controller from the Store).
const MAX_RETRIES: usize = 32;

/// How a service runs its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Slots 1..=N.
    Replicated(u64),
    /// One task per eligible node.
    Global,
}

/// The service's mode; a spec without one is Docker's default, one replica.
pub fn mode(service: &Service) -> Mode {
    match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(service_spec::Mode::Global(_)) => Mode::Global,
        Some(service_spec::Mode::Replicated(r)) => Mode::Replicated(r.replicas),
        None => Mode::Replicated(1),
    }
}

pub fn is_global(service: &Service) -> bool {
    mode(service) == Mode::Global
}

/// The task's observed state (NEW when unset).
pub fn observed(task: &Task) -> TaskState {
    task.status.as_ref().map_or(TaskState::New, |s| s.state())
}

/// Whether the task fills its slot: it is meant to run, or it finished and is not to be
/// restarted. Exactly one such task per slot is the orchestrators' goal.
pub fn fills_slot(task: &Task) -> bool {
    task.desired_state() <= TaskState::Complete
}

/// A fresh task for `slot` (replicated) or `node_id` (global) of `service`, as SwarmKit's
/// NewTask: NEW, desired RUNNING, carrying the service's task spec and name.
pub fn new_task(service: &Service, slot: u64, node_id: &str, clock: &Clock) -> Task {
    let spec = service.spec.clone().unwrap_or_default();
    Task {
        id: shoal_proto::ids::new_id(),
        meta: None,
        spec: spec.task,
        service_id: service.id.clone(),
        slot,
        node_id: node_id.to_string(),
        service_annotations: Some(spec.annotations.unwrap_or_default()),
        status: Some(TaskStatus {
            timestamp: Some(clock.now()),
            state: TaskState::New as i32,
            message: "created".to_string(),
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        networks: Vec::new(),
        endpoint: None,
        spec_version: service.meta.as_ref().map_or(0, |m| m.version),
        restart_history: Vec::new(),
    }
}

/// Retires `task` (desired SHUTDOWN) unless it is already retired; true if it staged a write.
pub fn retire(tx: &mut Tx<'_>, mut task: Task) -> Result<bool, StoreError> {
    if task.desired_state() >= TaskState::Shutdown {
        return Ok(false);
    }
    task.desired_state = TaskState::Shutdown as i32;
    tx.update(task)?;
    Ok(true)
}

/// Replaces `old` by a new task in its slot (same node for a global service), in one
/// transaction so the slot is never empty: the old one is retired, the new one carries
/// `restart_history`.
pub fn replace(
    tx: &mut Tx<'_>,
    service: &Service,
    old: Task,
    restart_history: Vec<shoal_proto::Timestamp>,
    clock: &Clock,
) -> Result<Task, StoreError> {
    let node = if is_global(service) { &old.node_id } else { "" };
    let mut new = new_task(service, old.slot, node, clock);
    new.restart_history = restart_history;
    retire(tx, old)?;
    tx.create(new.clone())?;
    Ok(new)
}

/// The node's status (UNKNOWN when unset).
pub fn node_state(node: &Node) -> node_status::State {
    node.status
        .as_ref()
        .and_then(|s| node_status::State::try_from(s.state).ok())
        .unwrap_or_default()
}

/// The node's availability (ACTIVE when unset, as a node never paused or drained).
pub fn availability(node: &Node) -> NodeAvailability {
    node.spec
        .as_ref()
        .and_then(|s| NodeAvailability::try_from(s.availability).ok())
        .unwrap_or(NodeAvailability::Active)
}

/// Whether the task's constraints and platforms accept `node` (its state and load aside).
/// A placement that cannot be parsed (it bypassed validation) accepts nothing.
pub fn placement_accepts(task: &Task, node: &Node) -> bool {
    crate::scheduler::satisfies_placement(task, node).unwrap_or(false)
}

/// Dead tasks kept per slot (Cluster.spec.orchestration), Swarm's 5 when unset.
pub fn history_limit(cluster: Option<&Cluster>) -> u64 {
    cluster
        .and_then(|c| c.spec.as_ref()?.orchestration.as_ref())
        .map_or(DEFAULT_TASK_HISTORY, |o| o.task_history_retention_limit)
}

/// Runs a transaction, retrying it on refusals caused by concurrent writers (a version
/// conflict, or an object deleted meanwhile). `f` must re-read what it decides on.
/// Runs `stage` (at most [`MAX_WRITES_PER_TX`] writes; returns whether more are needed and how
/// many tasks it created and retired) in transactions until the service is where it should be.
pub async fn reconcile_in_batches(
    store: &Store,
    kind: &str,
    service_id: &str,
    mut stage: impl FnMut(&mut Tx<'_>) -> Result<(bool, usize, usize), StoreError>,
) -> Result<(), StoreError> {
    loop {
        let (more, created, retired) = commit(store, &mut stage).await?.value;
        if created + retired > 0 {
            tracing::info!(service = %service_id, created, retired, "reconciled {kind} service");
        }
        if !more {
            return Ok(());
        }
    }
}

pub async fn commit<R>(
    store: &Store,
    mut f: impl FnMut(&mut Tx<'_>) -> Result<R, StoreError>,
) -> Result<Committed<R>, StoreError> {
    let mut attempt = 0;
    loop {
        match store.update(&mut f).await {
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. })
                if attempt < MAX_RETRIES =>
            {
                attempt += 1;
                tokio::task::yield_now().await;
            }
            other => return other,
        }
    }
}

/// What a controller's watch delivered.
pub enum Batch {
    /// Every change that was ready, in commit order (at least one).
    Events(Vec<Event>),
    /// The watch fell behind and was replaced: reconcile everything from this snapshot.
    Resync(Box<Snapshot>),
}

/// A controller's watch on the Store, handing out changes in batches so that one transaction
/// that wrote a hundred tasks costs one pass, not a hundred.
pub struct Events {
    store: Store,
    kinds: Vec<ObjectKind>,
    watch: Watch,
}

/// Most events handed out in one batch, to bound a pass's latency.
const MAX_BATCH: usize = 8192;

impl Events {
    /// A consistent snapshot to start from, and every change after it.
    pub fn start(store: &Store, kinds: &[ObjectKind]) -> (Snapshot, Events) {
        let (snapshot, watch) = store.view_and_watch(kinds);
        let events = Events {
            store: store.clone(),
            kinds: kinds.to_vec(),
            watch,
        };
        (snapshot, events)
    }

    /// Waits for changes; cancel-safe (it only waits while it holds nothing). Fails only when
    /// the store stops.
    pub async fn next(&mut self) -> Result<Batch, String> {
        let first = match self.watch.next().await {
            Ok(e) => e,
            Err(WatchError::Lagged(_)) => return Ok(self.resync()),
            Err(WatchError::Closed) => return Err("the store stopped".to_string()),
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match try_next(&mut self.watch).await {
                Some(Some(Ok(e))) => batch.push(e),
                Some(Some(Err(_))) => return Ok(self.resync()),
                // Nothing ready (or the store closed: the next call reports it).
                Some(None) | None => break,
            }
        }
        Ok(Batch::Events(batch))
    }

    fn resync(&mut self) -> Batch {
        tracing::warn!("store watch fell behind; reconciling from a fresh snapshot");
        let (snapshot, watch) = self.store.view_and_watch(&self.kinds);
        self.watch = watch;
        Batch::Resync(Box::new(snapshot))
    }
}

/// The next change if one is ready now, without waiting.
async fn try_next(watch: &mut Watch) -> Option<Option<Result<Event, WatchError>>> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *watch).poll_next(cx) {
            Poll::Ready(item) => Some(item),
            Poll::Pending => None,
        })
    })
    .await
}

/// Task and its previous version from a watch event, if it is about a task.
pub fn task_change(event: &Event) -> Option<(&Task, Option<&Task>)> {
    let task = event.get::<Task>()?;
    let old = event
        .old
        .as_deref()
        .and_then(<Task as shoal_raft::Object>::from_store_ref);
    Some((task, old))
}

/// The task whose service lost a slot-filling task with this event (removed, or moved out of
/// the states that fill a slot): the service needs a replacement.
pub fn emptied_slot(event: &Event) -> Option<&Task> {
    let (task, old) = task_change(event)?;
    let emptied = match event.action {
        Action::Remove => fills_slot(task),
        Action::Update => old.is_some_and(fills_slot) && !fills_slot(task),
        Action::Create => false,
    };
    emptied.then_some(task)
}

/// A controller's logic, driven by [`drive`]: a full pass over a snapshot when it starts (or
/// fell behind), then a pass per batch of changes, and optionally timed work (delayed restarts).
pub(crate) trait Reconciler: Send {
    /// Reconciles everything the snapshot holds.
    fn full(&mut self, snapshot: Snapshot) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Reacts to changes committed after the last pass.
    fn changes(
        &mut self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// When [`Reconciler::tick`] should next run; `None` while nothing waits.
    fn next_tick(&self) -> Option<Instant> {
        None
    }
    /// Timed work that came due.
    fn tick(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }
}

/// Runs `r` on the changes to `kinds` until `cancel`; an error (the store refusing writes,
/// e.g. leadership lost mid-transaction) ends the controller, and the supervisor restarts it.
pub(crate) async fn drive<R: Reconciler>(
    store: &Store,
    kinds: &[ObjectKind],
    mut r: R,
    cancel: CancellationToken,
) -> Result<(), String> {
    let (snapshot, mut events) = Events::start(store, kinds);
    r.full(snapshot).await.map_err(|e| e.to_string())?;
    loop {
        let tick = r.next_tick();
        let due = async {
            match tick {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = due => r.tick().await,
            batch = events.next() => match batch? {
                Batch::Events(events) => r.changes(events).await,
                Batch::Resync(snapshot) => r.full(*snapshot).await,
            },
        };
        result.map_err(|e| e.to_string())?;
    }
}
