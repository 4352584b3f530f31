//! A manager's Raft settings, with defaults tuned for sub-second leader failover.
//!
//! SwarmKit's defaults (1 s heartbeat, 10 s election) take several seconds to fail over. openraft
//! 0.9 lets a follower campaign only after its leader lease (= election_timeout_max) plus a
//! random election timeout have passed since the last heartbeat, so 300-600 ms would mean a new
//! leader 0.9-1.2 s after a crash; 200-400 ms with a 100 ms heartbeat gives 0.6-0.8 s, and costs
//! nothing on a LAN. Everything is overridable (ClusterSpec.raft carries the user's choice).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::network::tls::{Dialer, TcpDialer, TlsConfig};
use crate::store::DEFAULT_WATCH_BUFFER;
use crate::types::NodeId;

/// Everything a manager's Raft node needs to start.
#[derive(Clone)]
pub struct NodeConfig {
    /// This node's Raft ID (unique in the cluster, never reused while the old one is a member).
    pub id: NodeId,
    /// host:port where peers reach this node's transport.
    pub advertise_addr: String,
    /// Directory of the sled database (log, vote, tables, last snapshot).
    pub data_dir: PathBuf,
    /// Leader heartbeat period (default 100 ms).
    pub heartbeat_interval: Duration,
    /// A follower that hears nothing for max + a random time in [min, max) calls an election
    /// (default 200-400 ms, so 600-800 ms after the leader's last heartbeat).
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Log entries between snapshots (default 10,000, as SwarmKit).
    pub snapshot_interval: u64,
    /// Entries kept behind a snapshot, so a briefly lagging follower catches up from the log
    /// instead of a whole snapshot (default 500).
    pub keep_log_entries: u64,
    /// How long a write may take to commit before the caller gets `Uncertain` (default 5 s).
    pub propose_timeout: Duration,
    /// How long a linearizable read waits for this replica to catch up (default 5 s).
    pub read_timeout: Duration,
    /// TCP connect plus TLS handshake limit per attempt (default 1 s).
    pub connect_timeout: Duration,
    /// Size of each streamed snapshot chunk (default 1 MiB).
    pub snapshot_chunk_size: usize,
    /// Limit for sending one whole snapshot (default 120 s).
    pub snapshot_timeout: Duration,
    /// Limit for a membership change, including a new learner catching up (default 60 s).
    pub membership_timeout: Duration,
    /// Unread events a watcher may hold before it is cut off.
    pub watch_buffer: usize,
    /// TLS for the transport (both directions); `None` is plaintext, for tests only.
    pub tls: Option<TlsConfig>,
    /// How connections to peers are opened.
    pub dialer: Arc<dyn Dialer>,
}

impl NodeConfig {
    /// Defaults for node `id` reachable at `advertise_addr`, storing its state in `data_dir`.
    pub fn new(
        id: NodeId,
        advertise_addr: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        NodeConfig {
            id,
            advertise_addr: advertise_addr.into(),
            data_dir: data_dir.into(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(200),
            election_timeout_max: Duration::from_millis(400),
            snapshot_interval: 10_000,
            keep_log_entries: 500,
            propose_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            snapshot_chunk_size: 1 << 20,
            snapshot_timeout: Duration::from_secs(120),
            membership_timeout: Duration::from_secs(60),
            watch_buffer: DEFAULT_WATCH_BUFFER,
            tls: None,
            dialer: Arc::new(TcpDialer),
        }
    }

    /// How long since the last successful RPC a peer still counts as reachable.
    pub(crate) fn reachable_window(&self) -> Duration {
        (self.election_timeout_max * 3).max(Duration::from_secs(2))
    }

    /// The openraft configuration these settings amount to.
    pub(crate) fn raft_config(&self) -> Result<openraft::Config, openraft::ConfigError> {
        let ms = |d: Duration| d.as_millis().max(1) as u64;
        openraft::Config {
            cluster_name: "shoal".into(),
            heartbeat_interval: ms(self.heartbeat_interval),
            election_timeout_min: ms(self.election_timeout_min),
            election_timeout_max: ms(self.election_timeout_max),
            install_snapshot_timeout: ms(self.snapshot_timeout),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_interval.max(1)),
            max_in_snapshot_log_to_keep: self.keep_log_entries,
            // Purge in batches, but never more than a quarter of a snapshot interval at once.
            purge_batch_size: (self.snapshot_interval / 4).clamp(1, 256),
            ..Default::default()
        }
        .validate()
    }
}
