//! The Store: the managers' replicated tables of the model, as the manager's controllers use it.
//!
//! ```text
//!  update(|tx| ..) --proposal--> Proposer --(Raft: leader, log, quorum)--> apply on every replica
//!        ^                                                                   |
//!        +------------------ StoreCommit (index, objects) ------------------+--> watchers
//! ```
//!
//! Reads are local and cheap (an `RwLock` over in-memory tables). Writes reach Raft only through
//! the `Proposer` trait, so `Store::in_memory()` (which applies at once, without Raft) serves the
//! controllers' unit tests with exactly the same conflict and index rules.

pub mod object;
pub(crate) mod tables;
pub mod tx;
pub mod watch;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use shoal_proto::{ObjectKind, StoreBatch, StoreCommit, StoreObject, StoreProposal};
use tokio::sync::watch as tokio_watch;

use crate::error::StoreError;
use object::{By, Object};
use tables::{Change, Tables};
use tx::Tx;
use watch::{Subscribers, Watch};

/// A boxed future, as the `Proposer` trait returns (it must be object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Default number of events a watcher may have unread before it is cut off.
pub const DEFAULT_WATCH_BUFFER: usize = 65_536;

/// How the Store gets a proposal committed. Raft implements it; so does the in-memory test store.
pub trait Proposer: Send + Sync + 'static {
    /// Commits the proposal and returns what applying it did (which may be a refusal).
    fn propose(&self, proposal: StoreProposal) -> BoxFuture<'_, Result<StoreCommit, StoreError>>;
    /// A log index such that a replica that has applied it reflects every write committed before
    /// this call: the basis of linearizable reads.
    fn read_index(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
}

/// What the tables hold at one log index, and who watches them.
pub(crate) struct State {
    pub(crate) tables: Tables,
    /// Last log index applied (proposals, but also blank and membership entries).
    pub(crate) index: u64,
    subscribers: Subscribers,
}

impl State {
    /// Applies one transaction at `index` (all of it, or none) and publishes its changes.
    fn apply_one(&mut self, index: u64, proposal: &StoreProposal) -> (StoreCommit, Vec<Change>) {
        match self.tables.apply(index, proposal) {
            Ok(changes) => {
                self.subscribers.publish(index, &changes);
                let objects = changes.iter().map(|c| (*c.object).clone()).collect();
                let commit = StoreCommit {
                    index,
                    objects,
                    failure: None,
                };
                (commit, changes)
            }
            Err(failure) => {
                let commit = StoreCommit {
                    index,
                    objects: Vec::new(),
                    failure: Some(failure),
                };
                (commit, Vec::new())
            }
        }
    }
}

/// The tables of one replica, shared by the state machine (writer) and the Store (readers).
pub(crate) struct Shared {
    state: RwLock<State>,
    applied: tokio_watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new(tables: Tables, index: u64, watch_buffer: usize) -> Arc<Self> {
        Arc::new(Shared {
            state: RwLock::new(State {
                tables,
                index,
                subscribers: Subscribers::new(watch_buffer),
            }),
            applied: tokio_watch::Sender::new(index),
        })
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while applying is a bug; the tables are still whole, so keep serving.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn index(&self) -> u64 {
        self.read().index
    }

    /// Applies a log entry's transactions, in order, as log entry `index`, and publishes their
    /// changes. One write lock covers the whole entry, so no reader or new watcher ever sees
    /// part of an index. Returns each transaction's commit and every change (for persisting).
    pub(crate) fn apply(&self, index: u64, batch: &StoreBatch) -> (Vec<StoreCommit>, Vec<Change>) {
        let mut state = self.write();
        let mut commits = Vec::with_capacity(batch.proposals.len());
        let mut all = Vec::new();
        for proposal in &batch.proposals {
            let (commit, changes) = state.apply_one(index, proposal);
            commits.push(commit);
            all.extend(changes);
        }
        state.index = state.index.max(index);
        drop(state);
        self.applied.send_replace(index);
        (commits, all)
    }

    /// Applies at the next index: the in-memory Store's whole "consensus".
    fn apply_next(&self, proposal: &StoreProposal) -> StoreCommit {
        let mut state = self.write();
        let index = state.index + 1;
        let (commit, _) = state.apply_one(index, proposal);
        state.index = index;
        drop(state);
        self.applied.send_replace(index);
        commit
    }

    /// Records a log entry that changes no table (blank, membership).
    pub(crate) fn mark_applied(&self, index: u64) {
        let mut state = self.write();
        state.index = state.index.max(index);
        drop(state);
        self.applied.send_replace(index);
    }

    /// Replaces every table with a snapshot's, telling watchers what changed.
    pub(crate) fn install(&self, tables: Tables, index: u64) {
        let mut state = self.write();
        let changes = state.tables.diff(&tables);
        state.tables = tables;
        state.index = index;
        state.subscribers.publish(index, &changes);
        drop(state);
        self.applied.send_replace(index);
    }

    fn subscribe(&self, kinds: &[ObjectKind]) -> Watch {
        self.write().subscribers.subscribe(kinds)
    }

    fn view_and_watch(&self, kinds: &[ObjectKind]) -> (Snapshot, Watch) {
        let mut state = self.write();
        let snapshot = Snapshot {
            tables: state.tables.clone(),
            index: state.index,
        };
        let watch = state.subscribers.subscribe(kinds);
        (snapshot, watch)
    }

    /// Waits until this replica has applied `index`.
    pub(crate) async fn wait_applied(
        &self,
        index: u64,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let mut rx = self.applied.subscribe();
        let wait = rx.wait_for(|applied| *applied >= index);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Shutdown),
            Err(_) => Err(StoreError::ReadTimeout(timeout)),
        }
    }
}

/// A read-only view of the tables at one log index, borrowed for the length of a closure.
#[derive(Clone, Copy)]
pub struct View<'a> {
    tables: &'a Tables,
    index: u64,
}

impl<'a> View<'a> {
    /// The object with this ID, if any.
    pub fn get<T: Object>(&self, id: &str) -> Option<T> {
        self.tables
            .get(T::KIND, id)
            .and_then(|o| T::from_store_ref(o).cloned())
    }

    /// Objects answering `by`, in ID order.
    pub fn find<T: Object>(&self, by: By<'_>) -> Vec<T> {
        self.tables
            .table(T::KIND)
            .map(|t| {
                t.find(by)
                    .into_iter()
                    .filter_map(|o| T::from_store_ref(o).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every object of the kind, in ID order.
    pub fn list<T: Object>(&self) -> Vec<T> {
        self.find::<T>(By::All)
    }

    /// How many objects of the kind there are.
    pub fn count<T: Object>(&self) -> usize {
        self.tables.table(T::KIND).map_or(0, |t| t.len())
    }

    /// Any object by kind and ID.
    pub fn get_any(&self, kind: ObjectKind, id: &str) -> Option<&'a StoreObject> {
        self.tables.get(kind, id).map(|o| &**o)
    }

    /// Every object of every kind.
    pub fn all(&self) -> impl Iterator<Item = &'a StoreObject> {
        self.tables.all().map(|o| &**o)
    }

    /// The service with this (unique) name.
    pub fn service_by_name(&self, name: &str) -> Option<shoal_proto::Service> {
        self.find(By::Name(name)).into_iter().next()
    }

    /// Tasks of a service.
    pub fn tasks_by_service(&self, service_id: &str) -> Vec<shoal_proto::Task> {
        self.find(By::ServiceId(service_id))
    }

    /// Tasks assigned to a node.
    pub fn tasks_by_node(&self, node_id: &str) -> Vec<shoal_proto::Task> {
        self.find(By::NodeId(node_id))
    }

    /// Nodes with this hostname.
    pub fn nodes_by_hostname(&self, hostname: &str) -> Vec<shoal_proto::Node> {
        self.find(By::Hostname(hostname))
    }

    /// The log index this view reflects.
    pub fn index(&self) -> u64 {
        self.index
    }
}

/// An owned, consistent copy of the tables at one log index (cheap: objects are shared).
#[derive(Clone)]
pub struct Snapshot {
    tables: Tables,
    index: u64,
}

impl Snapshot {
    pub fn view(&self) -> View<'_> {
        View {
            tables: &self.tables,
            index: self.index,
        }
    }

    /// The log index it reflects; a watch taken with it starts after this index.
    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn get<T: Object>(&self, id: &str) -> Option<T> {
        self.view().get(id)
    }

    pub fn find<T: Object>(&self, by: By<'_>) -> Vec<T> {
        self.view().find(by)
    }

    pub fn list<T: Object>(&self) -> Vec<T> {
        self.view().list()
    }

    /// Number of objects of all kinds.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.len() == 0
    }
}

/// The result of a committed transaction.
#[derive(Clone, Debug)]
pub struct Committed<R> {
    /// What the transaction closure returned.
    pub value: R,
    /// Log index of the commit (the new `meta.version` of every object written); for a
    /// transaction that wrote nothing, the index its reads reflected.
    pub index: u64,
    /// The objects as stored by the commit (deleted ones as they were), in write order.
    pub objects: Vec<StoreObject>,
}

impl<R> Committed<R> {
    /// The stored version of an object this commit wrote.
    pub fn get<T: Object>(&self, id: &str) -> Option<T> {
        self.objects
            .iter()
            .filter_map(T::from_store_ref)
            .find(|o| o.id() == id)
            .cloned()
    }
}

/// The manager's handle on the cluster state. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    proposer: Arc<dyn Proposer>,
    read_timeout: Duration,
}

/// Default wait for a replica to catch up in linearizable reads.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// A Store with no Raft behind it: writes apply at once, with the same rules as replicas.
    /// For controllers' unit tests and single-process tools.
    pub fn in_memory() -> Store {
        let shared = Shared::new(Tables::default(), 0, DEFAULT_WATCH_BUFFER);
        let proposer = Arc::new(LocalProposer {
            shared: shared.clone(),
        });
        Store::new(shared, proposer, DEFAULT_READ_TIMEOUT)
    }

    pub(crate) fn new(
        shared: Arc<Shared>,
        proposer: Arc<dyn Proposer>,
        read_timeout: Duration,
    ) -> Store {
        Store {
            shared,
            proposer,
            read_timeout,
        }
    }

    /// Local read of one object (this replica may lag the leader by a few entries).
    pub fn get<T: Object>(&self, id: &str) -> Option<T> {
        self.view(|v| v.get(id))
    }

    /// Local read of the objects answering `by`.
    pub fn find<T: Object>(&self, by: By<'_>) -> Vec<T> {
        self.view(|v| v.find(by))
    }

    /// Local read of every object of the kind.
    pub fn list<T: Object>(&self) -> Vec<T> {
        self.view(|v| v.list())
    }

    /// Runs `f` on a consistent local view of all tables (keep it short: it holds a read lock).
    pub fn view<R>(&self, f: impl FnOnce(&View<'_>) -> R) -> R {
        let state = self.shared.read();
        f(&View {
            tables: &state.tables,
            index: state.index,
        })
    }

    /// An owned consistent copy of the local tables.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.shared.read();
        Snapshot {
            tables: state.tables.clone(),
            index: state.index,
        }
    }

    /// Last log index applied locally.
    pub fn index(&self) -> u64 {
        self.shared.index()
    }

    /// Makes this replica reflect every write committed before the call (asking the leader
    /// for its commit index if need be); returns that index.
    pub async fn read_barrier(&self) -> Result<u64, StoreError> {
        let index = self.proposer.read_index().await?;
        self.shared.wait_applied(index, self.read_timeout).await?;
        Ok(index)
    }

    /// A linearizable read: `f` sees every write committed before this call.
    pub async fn linearizable<R>(&self, f: impl FnOnce(&View<'_>) -> R) -> Result<R, StoreError> {
        self.read_barrier().await?;
        Ok(self.view(f))
    }

    /// Waits until this replica has applied log index `index` (e.g. a commit made elsewhere).
    pub async fn wait_for_index(&self, index: u64, timeout: Duration) -> Result<(), StoreError> {
        self.shared.wait_applied(index, timeout).await
    }

    /// Runs a transaction: `f` reads and stages writes, which are then committed atomically.
    ///
    /// Updates carry the `meta.version` they were read at; if any object changed meanwhile the
    /// whole transaction is refused with `StoreError::Conflict` and nothing is applied. `f`
    /// runs once: on a conflict, call `update` again (it will read fresh state).
    pub async fn update<R, E>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, E>,
    ) -> Result<Committed<R>, E>
    where
        E: From<StoreError>,
    {
        let (value, proposal, read_index) = {
            let state = self.shared.read();
            let mut tx = Tx::new(View {
                tables: &state.tables,
                index: state.index,
            });
            let value = f(&mut tx)?;
            (value, tx.into_proposal(), state.index)
        };
        if proposal.actions.is_empty() {
            return Ok(Committed {
                value,
                index: read_index,
                objects: Vec::new(),
            });
        }
        let commit = self.proposer.propose(proposal).await?;
        if let Some(failure) = &commit.failure {
            return Err(StoreError::from_failure(failure).into());
        }
        Ok(Committed {
            value,
            index: commit.index,
            objects: commit.objects,
        })
    }

    /// Every change committed from now on to objects of `kinds` (all kinds if empty).
    pub fn watch(&self, kinds: &[ObjectKind]) -> Watch {
        self.shared.subscribe(kinds)
    }

    /// A consistent snapshot plus every change committed after it, nothing missed or doubled:
    /// how a controller starts (or restarts on a new leader).
    pub fn view_and_watch(&self, kinds: &[ObjectKind]) -> (Snapshot, Watch) {
        self.shared.view_and_watch(kinds)
    }
}

/// The in-memory Store's proposer: applies at the next index, at once.
struct LocalProposer {
    shared: Arc<Shared>,
}

impl Proposer for LocalProposer {
    fn propose(&self, proposal: StoreProposal) -> BoxFuture<'_, Result<StoreCommit, StoreError>> {
        Box::pin(async move { Ok(self.shared.apply_next(&proposal)) })
    }

    fn read_index(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { Ok(self.shared.index()) })
    }
}

#[cfg(test)]
mod tests;
