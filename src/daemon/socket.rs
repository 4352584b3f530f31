//! The local API's Unix socket: root only (mode 0600, owner root), like Docker's.
//!
//! A socket file left by a daemon that crashed is replaced; one that still answers belongs to a
//! live daemon and is never stolen.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use tokio::net::UnixListener;

pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create socket directory {}", parent.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another shoal daemon is already serving {}; stop it first, or give this one \
                 its own --socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set mode 0600 on {}", path.display()))?;
    std::os::unix::fs::chown(path, Some(0), Some(0))
        .with_context(|| format!("cannot make root the owner of {}", path.display()))?;
    Ok(listener)
}

/// Removes the socket file at shutdown; a failure only costs a stale file the next start replaces.
pub fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::debug!(path = %path.display(), error = %e, "could not remove socket");
    }
}
