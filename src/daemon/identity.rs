//! The node's identity: an ID made on first start and kept in `<state-dir>/node-id`, so a
//! restarted daemon is the same node (certificates and membership refer to it).

use std::path::Path;

use anyhow::{Context, Result, bail};

pub struct NodeIdentity {
    pub node_id: String,
}

impl NodeIdentity {
    pub fn load_or_create(state_dir: &Path) -> Result<NodeIdentity> {
        let path = state_dir.join("node-id");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let node_id = text.trim().to_string();
                if !shoal_proto::ids::is_valid_id(&node_id) {
                    bail!(
                        "{} holds {node_id:?}, which is not a node ID; the state directory is \
                         damaged. Move it aside to start as a new node",
                        path.display()
                    );
                }
                Ok(NodeIdentity { node_id })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let node_id = shoal_proto::ids::new_id();
                // Write then rename, so a crash never leaves a half-written ID behind.
                let tmp = state_dir.join("node-id.tmp");
                std::fs::write(&tmp, format!("{node_id}\n"))
                    .and_then(|_| std::fs::rename(&tmp, &path))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(NodeIdentity { node_id })
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_restart_and_rejects_garbage() {
        let dir = std::env::temp_dir().join(format!("shoal-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = NodeIdentity::load_or_create(&dir).unwrap().node_id;
        let b = NodeIdentity::load_or_create(&dir).unwrap().node_id;
        assert_eq!(a, b);
        std::fs::write(dir.join("node-id"), "../../etc").unwrap();
        let err = NodeIdentity::load_or_create(&dir)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a node ID"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
