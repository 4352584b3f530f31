//! shoal-raft: the managers' replicated Store.
//!
//! openraft (0.9, storage-v2) with a sled-backed log and state machine, and a tonic transport
//! between managers that runs inside rustls when given a `TlsConfig`. It exposes the `Store`:
//! typed tables of the proto model with transactions and watch streams, which the manager's
//! controllers read and write. It depends only on shoal-proto among Shoal's crates, and must not
//! depend on the manager, the worker or the overlay.
//!
//! # Using the Store
//!
//! ```no_run
//! # async fn demo() -> Result<(), shoal_raft::StoreError> {
//! use shoal_raft::{By, Store};
//! use shoal_proto::{Service, Task};
//!
//! let store = Store::in_memory(); // or RaftNode::start(..).await?.store()
//! // A transaction: reads see the local replica plus the transaction's own writes; writes are
//! // committed atomically, or refused as a whole (Conflict, NotFound, NameTaken, ...).
//! let svc_id = shoal_proto::ids::new_id();
//! let committed = store
//!     .update(|tx| {
//!         tx.create(Service { id: svc_id.clone(), ..Default::default() })?;
//!         Ok::<_, shoal_raft::StoreError>(())
//!     })
//!     .await?;
//! // Every written object's meta.version is the commit's Raft log index.
//! let svc: Service = committed.get(&svc_id).unwrap();
//! assert_eq!(svc.meta.unwrap().version, committed.index);
//!
//! // Local reads (this replica) and linearizable ones (confirmed with the leader).
//! let tasks: Vec<Task> = store.find(By::ServiceId(&svc_id));
//! let n = store.linearizable(|v| v.count::<Task>()).await?;
//!
//! // Controllers start from a consistent snapshot and every change after it.
//! let (snapshot, mut watch) = store.view_and_watch(&[]);
//! # let _ = (tasks, n, snapshot);
//! while let Ok(event) = watch.next().await {
//!     // event.version, event.action, event.object (and event.old for updates)
//! #   let _ = event; break;
//! }
//! # Ok(()) }
//! ```
//!
//! # Running a manager's node
//!
//! `RaftNode::start(NodeConfig::new(id, addr, dir), Some(listener))` opens the state and serves
//! the transport; `initialize` bootstraps a new cluster; `add_learner`, `promote` and
//! `remove_member` change membership with safety checks (any node forwards to the leader);
//! `shutdown` stops it as a crash would. Writes on a follower are forwarded to the leader;
//! callers get the committed result, a refusal, or `NoLeader` / `Uncertain`.
//!
//! Modules: `store` (API, tables, transactions, watches), `storage` (sled log and state
//! machine), `network` (tonic transport and the TLS seam), `node` (wiring and forwarding),
//! `group_commit` (many transactions per log entry under load),
//! `membership` (checked membership changes), `config` (settings), `types` (openraft types).

#![forbid(unsafe_code)]
// openraft's StorageError and ConfigError are large by design and its traits return them.
#![allow(clippy::result_large_err)]

pub mod config;
pub mod error;
pub(crate) mod group_commit;
pub mod membership;
pub mod network;
pub mod node;
pub(crate) mod storage;
pub mod store;
pub mod types;

pub use config::NodeConfig;
pub use error::StoreError;
pub use membership::MembershipError;
pub use network::server::RaftService;
pub use network::tls::{Dialer, Io, PeerInfo, TcpDialer, TlsConfig, TlsError};
pub use node::{NodeError, RaftNode};
pub use storage::OpenError;
pub use store::object::{By, Index, Object};
pub use store::tx::Tx;
pub use store::watch::{Action, Event, Watch, WatchError};
pub use store::{BoxFuture, Committed, Proposer, Snapshot, Store, View};
pub use types::{NodeId, TypeConfig};
