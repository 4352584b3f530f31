//! The Raft state machine: applies committed entries to the Store's tables and persists them.
//!
//! Each `apply` call changes the in-memory tables (through `Shared`, which also feeds watchers)
//! and notes the touched objects. The noted objects are written to sled, with the "applied"
//! position they amount to, in one atomic batch at most every `PERSIST_INTERVAL` (or
//! `PERSIST_MAX_PENDING` objects), so the on-disk tables always match some applied index that
//! trails the real one by a fraction of a second. Nothing is lost by the lag: every applied
//! entry is committed and in the flushed log, and after a restart openraft re-applies the
//! entries between the persisted position and the commit index. What the lag buys is that a
//! busy object (a task whose status changes every second, a writer hammering one key) is
//! encoded and written once per interval rather than once per change, and that applying an
//! entry never waits on sled. Snapshots are the tables
//! prost-encoded; the last one is kept on disk so a restarted leader can still send it.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use prost::Message;
use shoal_proto::{StoreCommit, StoreObject};

use crate::store::Shared;
use crate::store::object::table_slot;
use crate::store::tables::{Change, Tables};
use crate::store::watch::Action;
use crate::types::{NodeId, TypeConfig, decode, encode};

const APPLIED: &[u8] = b"applied";
const MEMBERS: &[u8] = b"members";
const OBJECT_PREFIX: u8 = b'o';
const SNAP_META: &[u8] = b"meta";
const SNAP_DATA: &[u8] = b"data";

/// Longest time applied changes stay only in memory (a restart re-applies them from the log).
pub(crate) const PERSIST_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);
/// Most distinct objects waiting to be written before they are written regardless.
const PERSIST_MAX_PENDING: usize = 4096;

type Membership = StoredMembership<NodeId, BasicNode>;

/// Why the persisted tables could not be loaded.
pub(crate) enum LoadError {
    Sled(sled::Error),
    Decode(String),
}

impl From<sled::Error> for LoadError {
    fn from(e: sled::Error) -> Self {
        LoadError::Sled(e)
    }
}

/// The sled key of a stored object: prefix, table slot, ID.
fn object_key(obj: &StoreObject) -> Vec<u8> {
    let slot = table_slot(obj.kind()).unwrap_or(u8::MAX as usize) as u8;
    let mut key = Vec::with_capacity(2 + obj.id().len());
    key.push(OBJECT_PREFIX);
    key.push(slot);
    key.extend_from_slice(obj.id().as_bytes());
    key
}

pub(crate) struct StateMachine {
    db: sled::Db,
    sm: sled::Tree,
    snap: sled::Tree,
    shared: Arc<Shared>,
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    snapshot_seq: u64,
    /// Objects changed since the tables were last written: sled key -> object (None: removed).
    pending: std::collections::HashMap<Vec<u8>, Option<Arc<StoreObject>>>,
    /// When the oldest pending change was applied.
    pending_since: Option<std::time::Instant>,
}

impl StateMachine {
    /// Loads the persisted tables (blocking: call from a blocking thread).
    pub(crate) fn open(
        db: sled::Db,
        watch_buffer: usize,
    ) -> Result<(Self, Arc<Shared>), LoadError> {
        let sm = db.open_tree("sm")?;
        let snap = db.open_tree("snap")?;
        let decode_meta = |key: &[u8]| -> Result<Option<Vec<u8>>, LoadError> {
            Ok(sm.get(key)?.map(|v| v.to_vec()))
        };
        let last_applied: Option<LogId<NodeId>> = match decode_meta(APPLIED)? {
            Some(b) => decode(&b).map_err(|e| LoadError::Decode(format!("applied index: {e}")))?,
            None => None,
        };
        let membership: Membership = match decode_meta(MEMBERS)? {
            Some(b) => decode(&b).map_err(|e| LoadError::Decode(format!("membership: {e}")))?,
            None => Membership::default(),
        };
        let mut objects = Vec::new();
        for item in sm.scan_prefix([OBJECT_PREFIX]) {
            let (_, v) = item?;
            objects.push(
                StoreObject::decode(&*v).map_err(|e| LoadError::Decode(format!("object: {e}")))?,
            );
        }
        let tables = Tables::from_objects(objects);
        let index = last_applied.map_or(0, |l| l.index);
        let shared = Shared::new(tables, index, watch_buffer);
        let machine = StateMachine {
            db,
            sm,
            snap,
            shared: shared.clone(),
            last_applied,
            membership,
            snapshot_seq: 0,
            pending: Default::default(),
            pending_since: None,
        };
        Ok((machine, shared))
    }

    /// Adds the position (applied index, membership) to a batch.
    fn stamp(&self, batch: &mut sled::Batch) -> Result<(), StorageError<NodeId>> {
        let applied =
            encode(&self.last_applied).map_err(|e| StorageIOError::write_state_machine(&e))?;
        let members =
            encode(&self.membership).map_err(|e| StorageIOError::write_state_machine(&e))?;
        batch.insert(APPLIED, applied);
        batch.insert(MEMBERS, members);
        Ok(())
    }

    /// Notes one entry's changes for the next write (a later change of an object replaces an
    /// earlier one).
    fn note(&mut self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.pending_since
            .get_or_insert_with(std::time::Instant::now);
        for change in changes {
            let key = object_key(&change.object);
            let value = match change.action {
                Action::Remove => None,
                Action::Create | Action::Update => Some(change.object),
            };
            self.pending.insert(key, value);
        }
    }

    /// Writes the pending objects and the applied position in one atomic batch, if they have
    /// waited long enough (or `now`).
    fn persist(&mut self, now: bool) -> Result<(), StorageError<NodeId>> {
        let due = self
            .pending_since
            .is_some_and(|t| t.elapsed() >= PERSIST_INTERVAL)
            || self.pending.len() >= PERSIST_MAX_PENDING;
        if !(now || due) {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (key, value) in self.pending.drain() {
            match value {
                Some(obj) => batch.insert(key, obj.encode_to_vec()),
                None => batch.remove(key),
            }
        }
        self.pending_since = None;
        self.stamp(&mut batch)?;
        self.sm
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<StoreCommit>>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {
                    self.shared.mark_applied(index);
                    results.push(Vec::new());
                }
                EntryPayload::Normal(command) => {
                    let (commits, changes) = self.shared.apply(index, &command.0);
                    self.note(changes);
                    results.push(commits);
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    self.shared.mark_applied(index);
                    results.push(Vec::new());
                }
            }
        }
        self.persist(false)?;
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        // openraft purges the log up to (a little before) this snapshot once it is built: the
        // persisted tables must not be older than that, or a restart would find the entries it
        // needs to re-apply gone. Write them now; the snapshot's flush makes them durable.
        let persisted = self.persist(true).err();
        // Taken between two applies, so the tables match last_applied exactly.
        let tables = self.shared.read().tables.clone();
        SnapshotBuilder {
            persisted,
            db: self.db.clone(),
            snap: self.snap.clone(),
            tables,
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            seq: self.snapshot_seq,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let signature = Some(meta.signature());
        let data = snapshot.into_inner();
        let tables = Tables::decode_snapshot(&data)
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), &e))?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();

        // Replace the persisted tables in one atomic batch; what was pending is superseded.
        self.pending.clear();
        self.pending_since = None;
        let mut batch = sled::Batch::default();
        for item in self.sm.scan_prefix([OBJECT_PREFIX]) {
            let (k, _) = item.map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
            batch.remove(k);
        }
        for obj in tables.all() {
            batch.insert(object_key(obj), obj.encode_to_vec());
        }
        self.stamp(&mut batch)?;
        self.sm
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        save_snapshot(&self.db, &self.snap, meta, &data).await?;

        self.shared
            .install(tables, meta.last_log_id.map_or(0, |l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let read = |e: &sled::Error| StorageIOError::read_snapshot(None, e);
        let (Some(meta), Some(data)) = (
            self.snap.get(SNAP_META).map_err(|e| read(&e))?,
            self.snap.get(SNAP_DATA).map_err(|e| read(&e))?,
        ) else {
            return Ok(None);
        };
        let meta: SnapshotMeta<NodeId, BasicNode> =
            decode(&meta).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}

/// Stores a snapshot as the current one and flushes it (together with the tables it reflects,
/// which must be durable before openraft purges the log they came from).
async fn save_snapshot(
    db: &sled::Db,
    snap: &sled::Tree,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: &[u8],
) -> Result<(), StorageError<NodeId>> {
    let signature = Some(meta.signature());
    let meta_bytes =
        encode(meta).map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
    let mut batch = sled::Batch::default();
    batch.insert(SNAP_META, meta_bytes);
    batch.insert(SNAP_DATA, data);
    snap.apply_batch(batch)
        .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
    db.flush_async()
        .await
        .map_err(|e| StorageIOError::write_snapshot(signature, &e))?;
    Ok(())
}

/// Builds a snapshot from tables captured between two applies.
pub(crate) struct SnapshotBuilder {
    /// Why the tables could not be written before this snapshot, if they could not.
    persisted: Option<StorageError<NodeId>>,
    db: sled::Db,
    snap: sled::Tree,
    tables: Tables,
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        if let Some(e) = self.persisted.take() {
            return Err(e);
        }
        let tables = std::mem::take(&mut self.tables);
        // Encoding a large store is CPU work: keep it off the async threads.
        let data = tokio::task::spawn_blocking(move || tables.encode_snapshot())
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.seq),
            None => format!("none-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        save_snapshot(&self.db, &self.snap, &meta, &data).await?;
        tracing::info!(index = ?self.last_applied.map(|l| l.index), bytes = data.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
