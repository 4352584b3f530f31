//! The errors callers of shoal-raft see, each saying what failed, why, and what to do next.
//!
//! `StoreError` separates refusals (nothing was applied: conflict, not found, name taken) from
//! uncertain outcomes (a timeout or a lost connection after the write was sent: it may have been
//! committed). Callers may retry refusals after re-reading; after an uncertain outcome they must
//! read back first, because a blind retry could apply a write twice.

use std::time::Duration;

use shoal_proto::{ObjectKind, StoreFailure, store_failure};

use crate::store::object::kind_name;

/// Why a Store read or write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{kind} {id} was changed by another writer (you read version {expected}, it is now at \
         {actual}); nothing was applied: read it again and redo the change"
    )]
    Conflict {
        kind: &'static str,
        id: String,
        expected: u64,
        actual: u64,
    },
    #[error("{kind} {id} does not exist; nothing was applied")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id} already exists; nothing was applied")]
    AlreadyExists { kind: &'static str, id: String },
    #[error(
        "{kind} name {name:?} is already used by {kind} {holder}; nothing was applied: choose \
         another name or remove {holder} first"
    )]
    NameTaken {
        kind: &'static str,
        name: String,
        holder: String,
    },
    #[error("invalid write: {0}; nothing was applied")]
    Invalid(String),
    #[error(
        "no Raft leader is known after waiting {0:?}; a majority of managers may be down or \
         unreachable: check `shoal node ls` and the managers' network, then retry"
    )]
    NoLeader(Duration),
    #[error(
        "the outcome of the write is unknown ({0}); it may or may not have been committed: \
         read the objects back before retrying"
    )]
    Uncertain(String),
    #[error(
        "timed out after {0:?} waiting for the local store to catch up with the leader; this \
         manager may be partitioned or overloaded"
    )]
    ReadTimeout(Duration),
    #[error("the store is shutting down; retry on another manager")]
    Shutdown,
    #[error("replication failed: {0}")]
    Raft(String),
}

impl StoreError {
    /// Builds the error for a proposal refused at apply time.
    pub(crate) fn from_failure(f: &StoreFailure) -> Self {
        let kind = kind_name(ObjectKind::try_from(f.kind).unwrap_or(ObjectKind::Unspecified));
        let id = f.id.clone();
        match store_failure::Reason::try_from(f.reason) {
            Ok(store_failure::Reason::Conflict) => StoreError::Conflict {
                kind,
                id,
                expected: f.expected_version,
                actual: f.actual_version,
            },
            Ok(store_failure::Reason::NotFound) => StoreError::NotFound { kind, id },
            Ok(store_failure::Reason::AlreadyExists) => StoreError::AlreadyExists { kind, id },
            Ok(store_failure::Reason::NameTaken) => StoreError::NameTaken {
                kind,
                name: f.detail.clone(),
                holder: id,
            },
            _ => StoreError::Invalid(if f.detail.is_empty() {
                format!("{kind} {id} was refused")
            } else {
                f.detail.clone()
            }),
        }
    }

    /// True when nothing was applied, so the caller may re-read and retry.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. }
                | StoreError::NotFound { .. }
                | StoreError::AlreadyExists { .. }
                | StoreError::NameTaken { .. }
                | StoreError::Invalid(_)
        )
    }
}
