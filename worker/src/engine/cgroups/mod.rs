//! Container cgroups: one small interface over cgroup v1 (and the hybrid layout, whose
//! controllers are v1) and cgroup v2, as youki's libcgroups does, so the shim neither knows nor
//! cares which layout the host has.
//!
//! Only the controllers the engine sets limits with are joined (memory, cpu, cpuacct, pids):
//! a cgroup in a controller hierarchy we do not configure would only be something more to clean
//! up. Device access is not policed by the devices controller (v2 has no file for it, only BPF
//! programs); instead every filesystem a container can create device nodes on is mounted nodev,
//! which holds on both layouts.

pub mod v1;
pub mod v2;

use std::path::Path;

use crate::engine::error::{EngineError, Result};
use crate::host::CgroupMode;

/// The limits a container's cgroup enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Hard memory limit in bytes; swap is not allowed on top of it.
    pub memory: Option<i64>,
    /// CFS quota (µs per period); with `cpu_period`.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// Relative CPU weight in v1 shares (2..262144); converted for v2.
    pub cpu_shares: Option<u64>,
    /// Maximum number of processes.
    pub pids: Option<i64>,
}

/// One container's cgroup, in whatever hierarchies the host has.
pub trait Cgroup: Send + Sync {
    /// Creates the cgroup (and missing parents) and writes the limits.
    fn create(&self, limits: &Limits) -> Result<()>;
    /// Moves a process into the cgroup.
    fn add_process(&self, pid: i32) -> Result<()>;
    /// Whether the kernel OOM-killed anything in the cgroup.
    fn oom_killed(&self) -> bool;
    /// PIDs still in the cgroup.
    fn procs(&self) -> Vec<i32>;
    /// Removes the cgroup; its processes must be gone.
    fn destroy(&self) -> Result<()>;
    /// Where the cgroup lives, for `inspect` and error messages.
    fn describe(&self) -> String;
}

/// The cgroup `rel` (e.g. `shoal/<id>`) on this host's layout.
pub fn open(rel: &str) -> Result<Box<dyn Cgroup>> {
    let root = Path::new("/sys/fs/cgroup");
    match CgroupMode::detect(root) {
        CgroupMode::V2 => Ok(Box::new(v2::V2Cgroup::new(root, rel))),
        CgroupMode::V1 | CgroupMode::Hybrid => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(|e| EngineError::Host(format!("cannot read /proc/self/mountinfo: {e}")))?;
            Ok(Box::new(v1::V1Cgroup::new(v1::mounts(&mountinfo), rel)))
        }
    }
}

/// Validates a cgroup path relative to the hierarchy roots: no `..`, no empty parts.
pub fn validate_rel(rel: &str) -> Result<()> {
    let ok = !rel.is_empty()
        && rel
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains('\0'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidArgument(format!(
            "cgroup path {rel:?} is invalid; use names separated by '/', e.g. shoal or \
             system.slice/shoal"
        )))
    }
}

/// Writes one control file, naming file and value in the error.
pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| {
        EngineError::Host(format!("cannot write {value:?} to {}: {e}", path.display()))
    })
}

/// Removes a cgroup directory, waiting a little for the kernel to let go of exited tasks.
pub(crate) fn remove_dir(path: &Path) -> Result<()> {
    for attempt in 0..100 {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt < 99 && e.raw_os_error() == Some(nix::libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => {
                return Err(EngineError::Host(format!(
                    "cannot remove cgroup {}: {e}",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// Parses a cgroup.procs file.
pub(crate) fn read_procs(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The `oom_kill N` counter of memory.events (v2) or memory.oom_control (v1).
pub(crate) fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_are_validated() {
        assert!(validate_rel("shoal/abc").is_ok());
        assert!(validate_rel("../escape").is_err());
        assert!(validate_rel("a//b").is_err());
        assert!(validate_rel("").is_err());
    }

    #[test]
    fn oom_counter_is_read_from_either_format() {
        assert_eq!(
            oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(
            oom_kill_count("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n"),
            1
        );
        assert_eq!(oom_kill_count("oom 0\n"), 0);
    }
}
