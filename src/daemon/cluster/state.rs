//! What a node remembers about its cluster between restarts (`<state-dir>/cluster.json`),
//! beside its certificates (`<state-dir>/certificates/`) and, for managers, its Raft data
//! (`<state-dir>/raft/`). Together they let a restarted daemon carry on without re-joining.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use shoal_proto::ManagerPeer;

const FILE: &str = "cluster.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterState {
    pub cluster_id: String,
    /// This node's Raft ID while it is a manager (0 otherwise).
    pub raft_id: u64,
    /// Where the cluster port listens (managers).
    pub listen_addr: String,
    /// Where other nodes reach this one.
    pub advertise_addr: String,
    /// Managers last heard of, for reconnecting after a restart.
    pub managers: Vec<Peer>,
}

/// A manager as persisted (ManagerPeer without prost, so the file stays plain JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Peer {
    pub node_id: String,
    pub addr: String,
    pub raft_id: u64,
}

impl From<&ManagerPeer> for Peer {
    fn from(p: &ManagerPeer) -> Peer {
        Peer {
            node_id: p.node_id.clone(),
            addr: p.addr.clone(),
            raft_id: p.raft_id,
        }
    }
}

impl From<&Peer> for ManagerPeer {
    fn from(p: &Peer) -> ManagerPeer {
        ManagerPeer {
            node_id: p.node_id.clone(),
            addr: p.addr.clone(),
            raft_id: p.raft_id,
        }
    }
}

pub fn certificates_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("certificates")
}

pub fn raft_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("raft")
}

impl ClusterState {
    pub fn load(state_dir: &Path) -> Result<Option<ClusterState>> {
        let path = state_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
                format!(
                    "{} is damaged; move it aside (and certificates/) to start this node \
                     outside any cluster",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes atomically: a crash leaves the old file or the new one.
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let path = state_dir.join(FILE);
        let tmp = state_dir.join(format!("{FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self)?;
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Forgets the cluster: state, certificates and Raft data.
    pub fn remove_all(state_dir: &Path) -> Result<()> {
        for dir in [certificates_dir(state_dir), raft_dir(state_dir)] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", dir.display()));
                }
            }
        }
        match std::fs::remove_file(state_dir.join(FILE)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).context("cannot remove cluster.json"),
        }
    }

    pub fn manager_peers(&self) -> Vec<ManagerPeer> {
        self.managers.iter().map(ManagerPeer::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_forgets() {
        let dir = std::env::temp_dir().join(format!("shoal-cs-{}", std::process::id()));
        std::fs::create_dir_all(certificates_dir(&dir)).unwrap();
        assert_eq!(ClusterState::load(&dir).unwrap(), None);
        let s = ClusterState {
            cluster_id: "c".into(),
            raft_id: 7,
            listen_addr: "0.0.0.0:2377".into(),
            advertise_addr: "10.0.0.1:2377".into(),
            managers: vec![Peer {
                node_id: "n".into(),
                addr: "10.0.0.1:2377".into(),
                raft_id: 7,
            }],
        };
        s.save(&dir).unwrap();
        assert_eq!(ClusterState::load(&dir).unwrap(), Some(s));
        ClusterState::remove_all(&dir).unwrap();
        assert_eq!(ClusterState::load(&dir).unwrap(), None);
        assert!(!certificates_dir(&dir).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
