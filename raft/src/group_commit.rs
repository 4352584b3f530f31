//! Group commit on the leader: transactions that arrive while earlier log entries are still in
//! flight are gathered into one Raft entry.
//!
//! ```text
//!  write_local ─┐                       ┌─ entry n   [tx1]            ─┐
//!  write_local ─┼─> queue ─> gatherer ──┼─ entry n+1 [tx2 tx3 tx4]     ├─ client_write, at most
//!  write_local ─┘                       └─ entry n+2 [tx5 ... tx40]   ─┘  `window` in flight
//! ```
//!
//! A lone write goes out at once, so an idle cluster pays no extra latency. Under load the
//! window fills, the queue grows meanwhile, and the next entry takes everything queued (up to a
//! size limit): one log append, one replication message, one fsync and one apply for many
//! transactions. That is what lets a Raft log flushed on every entry keep up with many
//! concurrent writers. The transactions of one entry share its index and are applied in order,
//! each atomically on its own (`StoreBatch`), and every caller gets its own transaction's
//! result.

use std::sync::Arc;

use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};
use prost::Message;
use shoal_proto::{StoreBatch, StoreCommit, StoreProposal};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::types::{Command, NodeId, TypeConfig};

/// Log entries one leader keeps in flight (appended, not yet applied) before it gathers the
/// waiting transactions into the next one. One is best with openraft 0.9, whose core appends
/// and flushes one entry at a time: a second entry in flight only means a second fsync before
/// the first can be replicated, where waiting lets it join a larger next entry. Measured with
/// 64 concurrent writers (`raft_store` bench): about 6,000 writes/s with 1, 5,000-5,500 with 2
/// or 4.
pub(crate) const DEFAULT_WINDOW: usize = 1;

/// Largest entry the gatherer builds, in encoded bytes; a single larger transaction still goes
/// alone. Bounded so that an append-entries message of openraft's at most 300 entries stays
/// well under the transport's 64 MiB message limit.
const MAX_ENTRY_BYTES: usize = 128 << 10;

/// Most transactions in one entry.
const MAX_ENTRY_PROPOSALS: usize = 1024;

/// What became of one transaction submitted to the leader's Raft.
pub(crate) enum Outcome {
    Committed(StoreCommit),
    /// This node does not lead: nothing was appended. Carries the leader openraft knows of.
    NotLeader(Option<(NodeId, String)>),
    /// A membership change was in the way (openraft refuses writes during some of them).
    Refused(String),
    /// Raft stopped; the transaction may or may not have been committed.
    Stopped(String),
}

struct Waiting {
    proposal: StoreProposal,
    reply: oneshot::Sender<Outcome>,
}

/// The queue into the gatherer. Dropping it stops the gatherer once the queue is drained.
pub(crate) struct GroupCommit {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl GroupCommit {
    /// Starts the gatherer for `raft`, with at most `window` entries in flight.
    pub(crate) fn start(raft: Raft<TypeConfig>, window: usize) -> GroupCommit {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(gather(raft, rx, window.max(1)));
        GroupCommit { queue }
    }

    /// Submits one transaction and waits for its outcome. Dropping the future abandons only
    /// the wait: a transaction already gathered into an entry may still commit.
    pub(crate) async fn submit(&self, proposal: StoreProposal) -> Outcome {
        let (reply, rx) = oneshot::channel();
        if self.queue.send(Waiting { proposal, reply }).is_err() {
            return Outcome::Stopped("the Raft node is shutting down".into());
        }
        rx.await
            .unwrap_or_else(|_| Outcome::Stopped("the Raft node stopped".into()))
    }
}

/// Takes the first waiting transaction and everything queued behind it, within the limits.
fn take_batch(first: Waiting, rx: &mut mpsc::UnboundedReceiver<Waiting>) -> Vec<Waiting> {
    let mut bytes = first.proposal.encoded_len();
    let mut batch = vec![first];
    while batch.len() < MAX_ENTRY_PROPOSALS && bytes < MAX_ENTRY_BYTES {
        match rx.try_recv() {
            Ok(next) => {
                bytes += next.proposal.encoded_len();
                batch.push(next);
            }
            Err(_) => break,
        }
    }
    batch
}

async fn gather(raft: Raft<TypeConfig>, mut rx: mpsc::UnboundedReceiver<Waiting>, window: usize) {
    let in_flight = Arc::new(Semaphore::new(window));
    loop {
        // Wait for room in the window first: whatever queues up meanwhile joins the next entry.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let batch = take_batch(first, &mut rx);
        let raft = raft.clone();
        tokio::spawn(async move {
            let (proposals, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|w| (w.proposal, w.reply)).unzip();
            let written = raft.client_write(Command(StoreBatch { proposals })).await;
            drop(permit);
            deliver(written, replies);
        });
    }
}

/// Hands each caller its own transaction's outcome.
fn deliver(
    written: Result<
        openraft::raft::ClientWriteResponse<TypeConfig>,
        RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>,
    >,
    replies: Vec<oneshot::Sender<Outcome>>,
) {
    let shared = |e: &RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>| match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Outcome::NotLeader(
            f.leader_id
                .zip(f.leader_node.as_ref().map(|n| n.addr.clone())),
        ),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Outcome::Refused(e.to_string())
        }
        RaftError::Fatal(e) => Outcome::Stopped(e.to_string()),
    };
    match written {
        Ok(resp) => {
            let mut commits = resp.data.into_iter();
            for reply in replies {
                let outcome = match commits.next() {
                    Some(commit) => Outcome::Committed(commit),
                    // Applying yields one commit per transaction; anything else is a bug.
                    None => Outcome::Stopped("the entry's results were incomplete".into()),
                };
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(shared(&e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(bytes: usize) -> (Waiting, oneshot::Receiver<Outcome>) {
        use shoal_proto::{StoreAction, StoreObject, Task, store_object};
        let (reply, rx) = oneshot::channel();
        let task = Task {
            id: "x".repeat(bytes),
            ..Default::default()
        };
        let proposal = StoreProposal {
            actions: vec![StoreAction {
                kind: 0,
                object: Some(StoreObject {
                    object: Some(store_object::Object::Task(task)),
                }),
            }],
        };
        (Waiting { proposal, reply }, rx)
    }

    #[test]
    fn a_batch_takes_everything_queued_up_to_the_size_limit() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut receivers = Vec::new();
        for _ in 0..5 {
            let (w, r) = waiting(100);
            receivers.push(r);
            tx.send(w).unwrap();
        }
        let first = rx.try_recv().unwrap();
        assert_eq!(
            take_batch(first, &mut rx).len(),
            5,
            "all five queued join one entry"
        );

        // Big transactions: an entry stops growing once it passes the byte limit.
        for _ in 0..3 {
            let (w, r) = waiting(MAX_ENTRY_BYTES / 2);
            receivers.push(r);
            tx.send(w).unwrap();
        }
        let first = rx.try_recv().unwrap();
        assert_eq!(take_batch(first, &mut rx).len(), 2);
        let first = rx.try_recv().unwrap();
        assert_eq!(take_batch(first, &mut rx).len(), 1, "the rest goes next");
        assert!(rx.try_recv().is_err());
    }
}
