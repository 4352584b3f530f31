//! Named network namespaces, made the way `ip netns add` makes them: a file whose bind mount
//! of an nsfs inode keeps the namespace alive with no process in it.
//!
//! Namespace changes are per thread (unshare and setns of CLONE_NEWNET affect only the calling
//! thread), so each operation that must stand inside a namespace runs on a short-lived thread
//! of its own that dies afterwards: never on a tokio worker or blocking-pool thread, which would
//! carry the namespace into unrelated work.
//!
//! ```text
//!  create:  thread ── unshare(NEWNET) ── mount --bind /proc/self/task/<tid>/ns/net <file> ── exit
//!  netlink: thread ── setns(<file>) ── open NETLINK_ROUTE socket (bound to that netns) ── exit
//!                     └─ the socket is driven by the daemon's runtime afterwards
//! ```

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::{NetworkError, Result, io_err};

/// Runs `f` on a fresh OS thread and awaits its result without blocking the runtime.
async fn on_own_thread<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shoal-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| NetworkError::Netlink {
            what: format!("start a thread to {what}"),
            source: e,
        })?;
    rx.await.map_err(|_| NetworkError::Netlink {
        what: what.to_string(),
        source: std::io::Error::other("the namespace thread panicked"),
    })?
}

/// Whether `path` is a live namespace mount (nsfs), not just a leftover file.
pub fn is_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Makes a named network namespace at `path` unless one is already mounted there. Returns
/// whether it made one.
pub async fn ensure(path: &Path) -> Result<bool> {
    if is_netns(path) {
        return Ok(false);
    }
    let path = path.to_path_buf();
    on_own_thread("create a network namespace", move || create(&path)).await?;
    Ok(true)
}

/// Body of [`ensure`], on its own thread.
fn create(path: &Path) -> Result<()> {
    // The mount point: an empty file (a leftover from a crash is reused).
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err("create the namespace file", path))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| io_err("make a network namespace for", path)(e.into()))?;
    let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
    nix::mount::mount(
        Some(own.as_str()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| io_err("bind-mount the network namespace on", path)(e.into()))?;
    Ok(())
}

/// Unmounts and deletes a namespace file; missing or unmounted is fine. The namespace itself
/// lives on while a process is still in it, and goes with the last one.
pub async fn remove(path: &Path) -> Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        // A racing create could have stacked two mounts; take them all off.
        for _ in 0..8 {
            match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
                Err(e) => return Err(io_err("unmount the network namespace", &path)(e.into())),
            }
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove the network namespace file", &path)(e)),
        }
    })
    .await
    .map_err(|e| NetworkError::Netlink {
        what: "remove a network namespace".into(),
        source: std::io::Error::other(e.to_string()),
    })?
}

/// A netlink handle whose socket lives in the namespace at `path`: requests through it act on
/// that namespace's links, addresses and routes. The connection runs on the current runtime
/// and ends when the handle is dropped.
pub async fn netlink_in(path: &Path) -> Result<rtnetlink::Handle> {
    let file = File::open(path).map_err(io_err("open the network namespace", path))?;
    let runtime = tokio::runtime::Handle::current();
    let shown = path.to_path_buf();
    let (conn, handle) = on_own_thread("open netlink in a namespace", move || {
        nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| io_err("enter the network namespace", shown.clone())(e.into()))?;
        // Registering the socket with the reactor needs the runtime's context, not its thread.
        let _guard = runtime.enter();
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(io_err("open a netlink socket in", shown.clone()))?;
        Ok((conn, handle))
    })
    .await?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The host's netlink handle (the daemon's own namespace).
pub fn netlink_here() -> Result<rtnetlink::Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NetworkError::Netlink {
        what: "open a netlink socket".into(),
        source: e,
    })?;
    tokio::spawn(conn);
    Ok(handle)
}
