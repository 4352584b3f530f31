//! Durable Raft state on sled: the log and vote (`log`), the Store's tables (`state_machine`).
//!
//! One sled database per manager holds four trees, so a single flush covers all of them:
//!
//! ```text
//! log    index (u64 BE)         -> postcard(Entry)
//! raft   "vote" | "purged"      -> postcard(Vote | LogId)
//! sm     "o"+kind+id            -> prost(StoreObject)        the tables, as of "applied"
//!        "applied" | "members"  -> postcard(LogId | StoredMembership)
//! snap   "meta" | "data"        -> the last snapshot built or installed
//! ```
//!
//! The tables are persisted at most 200 ms behind the applied index (and in full before every
//! snapshot, so the log openraft purges behind a snapshot is never needed again): a restart
//! loads them and re-applies only the entries between the persisted "applied" and the commit
//! index, not the whole log.

pub(crate) mod log;
pub(crate) mod state_machine;

use std::path::Path;
use std::sync::Arc;

use crate::store::Shared;

pub(crate) use log::LogStore;
pub(crate) use state_machine::StateMachine;

/// Why a node's state directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "cannot open the Raft state in {path}: {source}; check that no other shoal process uses \
         this state directory and that the disk is writable"
    )]
    Sled { path: String, source: sled::Error },
    #[error(
        "the Raft state in {path} is unreadable ({what}); it was written by an incompatible \
         version or is damaged: remove this manager from the cluster, wipe the directory and \
         re-join"
    )]
    Corrupt { path: String, what: String },
}

/// Opens sled, waiting up to 10 s for the lock: a node restarted in the same process (or a
/// daemon restarted quickly) may find its previous instance still closing the database.
fn open_db(path: &Path) -> Result<sled::Db, sled::Error> {
    let config = sled::Config::new()
        .path(path)
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(128 << 20);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Opens (or creates) the state under `dir`; returns the log store, the state machine and the
/// tables they share with the Store.
pub(crate) async fn open(
    dir: &Path,
    watch_buffer: usize,
) -> Result<(LogStore, StateMachine, Arc<Shared>), OpenError> {
    let path = dir.to_path_buf();
    // Opening sled reads its files: keep that off the async threads.
    tokio::task::spawn_blocking(move || {
        let shown = path.display().to_string();
        let sled_err = |source| OpenError::Sled {
            path: shown.clone(),
            source,
        };
        let db = open_db(&path).map_err(sled_err)?;
        let (sm, shared) = StateMachine::open(db.clone(), watch_buffer).map_err(|e| match e {
            state_machine::LoadError::Sled(e) => sled_err(e),
            state_machine::LoadError::Decode(what) => OpenError::Corrupt {
                path: shown.clone(),
                what,
            },
        })?;
        let log = LogStore::open(db).map_err(sled_err)?;
        Ok((log, sm, shared))
    })
    .await
    .map_err(|e| OpenError::Corrupt {
        path: dir.display().to_string(),
        what: format!("loading panicked: {e}"),
    })?
}

#[cfg(test)]
mod tests {
    use openraft::StorageError;
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;
    use crate::types::{NodeId, TypeConfig};

    /// Each conformance test gets a fresh sled database in its own temporary directory.
    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = tempfile::tempdir().expect("temp dir");
            let (log, sm, _) = open(dir.path(), 16).await.expect("open sled");
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn sled_storage_passes_openraft_conformance_suite() {
        Suite::test_all(Builder).expect("openraft storage suite");
    }

    #[tokio::test]
    async fn tables_are_written_after_an_interval_and_before_a_snapshot_and_reopen_there() {
        use openraft::storage::RaftStateMachine;
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
        use shoal_proto::{StoreAction, StoreBatch, StoreProposal, Task};

        use crate::store::object::Object;
        use crate::types::Command;

        let create = |id: &str| StoreProposal {
            actions: vec![StoreAction {
                kind: 0,
                object: Some(
                    Task {
                        id: id.into(),
                        ..Default::default()
                    }
                    .into_store(),
                ),
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        {
            let (_log, mut sm, shared) = open(dir.path(), 16).await.unwrap();
            // One entry, three transactions; the second is refused on its own.
            let entry = Entry::<TypeConfig> {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), 5),
                payload: EntryPayload::Normal(Command(StoreBatch {
                    proposals: vec![create("t1"), create("t1"), create("t2")],
                })),
            };
            let results = sm.apply([entry]).await.unwrap();
            let commits = &results[0];
            assert_eq!(commits.len(), 3);
            assert!(commits.iter().all(|c| c.index == 5));
            assert!(commits[0].failure.is_none());
            assert!(commits[1].failure.is_some(), "t1 already exists");
            assert!(commits[2].failure.is_none());
            assert_eq!(shared.index(), 5);
            // Changes are written once they have waited PERSIST_INTERVAL, with a later apply.
            tokio::time::sleep(state_machine::PERSIST_INTERVAL).await;
            let blank = Entry::<TypeConfig> {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), 6),
                payload: EntryPayload::Blank,
            };
            sm.apply([blank]).await.unwrap();
            // And at once before a snapshot, which lets openraft purge the log behind it.
            let entry = Entry::<TypeConfig> {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), 7),
                payload: EntryPayload::Normal(Command(StoreBatch {
                    proposals: vec![create("t3")],
                })),
            };
            sm.apply([entry]).await.unwrap();
            let _ = sm.get_snapshot_builder().await;
        }
        let (_log, mut sm, shared) = open(dir.path(), 16).await.unwrap();
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(7));
        assert_eq!(shared.index(), 7);
        for (id, version) in [("t1", 5), ("t2", 5), ("t3", 7)] {
            let t = shared
                .read()
                .tables
                .get(shoal_proto::ObjectKind::Task, id)
                .cloned();
            assert_eq!(crate::store::object::version_of(&t.unwrap()), version);
        }
    }
}
