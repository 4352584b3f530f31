//! The on-disk state of containers, one directory each, shared by the daemon and the shims:
//!
//! ```text
//! containers/<id>/
//!   container.json  ContainerRecord: what was asked and merged at create (daemon writes once)
//!   config.json     the OCI runtime spec
//!   shim.json       what the shim needs beyond the spec (cgroup, rootfs layers, log rotation)
//!   state.json      StateFile: status, pids, exit code, OOM (the shim writes it while it runs)
//!   container.log   json-file logs (+ .1, .2 when rotated)
//!   shim.sock       the shim's control socket, while it runs
//!   upper/ work/ l/ rootfs/   overlayfs upper and work dirs, layer links, mount point
//!   hostname hosts resolv.conf
//! ```
//!
//! Files are written atomically (temp + rename) so a reader never sees half a state, and the
//! state file is the record of last resort: whoever restarts reads the truth from it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shoal_proto::{ContainerRunState, ContainerSpec, HealthConfig, Resources, Timestamp};

use super::cgroups::Limits;
use super::error::{EngineError, Result, io_err};
use super::images::digest::Digest;
use super::runtime::plan::RootfsMount;

/// What a container is, fixed at create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// The image reference as given.
    pub image: String,
    pub image_id: Digest,
    pub created: Timestamp,
    pub spec: ContainerSpec,
    pub limits: Resources,
    pub cpu_shares: Option<u64>,
    pub netns: Option<String>,
    // Merged with the image's defaults:
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub hostname: String,
    pub stop_signal: String,
    pub stop_grace_ms: u64,
    pub healthcheck: Option<HealthConfig>,
    /// cgroup path relative to the hierarchy roots.
    pub cgroup: String,
    /// Removed by the engine once it has exited.
    #[serde(default)]
    pub auto_remove: bool,
}

/// What the shim needs besides the runtime spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    pub id: String,
    pub cgroup: String,
    pub limits: Limits,
    pub rootfs: RootfsMount,
    pub log_max_size: u64,
    pub log_max_files: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Exited,
    /// The supervisor vanished without recording an exit.
    Dead,
}

impl Status {
    pub fn to_proto(self) -> ContainerRunState {
        match self {
            Status::Created => ContainerRunState::Created,
            Status::Running => ContainerRunState::Running,
            Status::Exited => ContainerRunState::Exited,
            Status::Dead => ContainerRunState::Dead,
        }
    }
}

/// How a container is doing; the shim's record of last resort.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub status: Status,
    /// Host PID of the container's process.
    pub pid: i32,
    pub shim_pid: i32,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub error: String,
}

/// Paths of one container's directory.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub root: PathBuf,
}

impl ContainerDir {
    pub fn new(root: PathBuf) -> ContainerDir {
        ContainerDir { root }
    }
    pub fn record(&self) -> PathBuf {
        self.root.join("container.json")
    }
    pub fn spec(&self) -> PathBuf {
        self.root.join("config.json")
    }
    pub fn shim_config(&self) -> PathBuf {
        self.root.join("shim.json")
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("container.log")
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("shim.sock")
    }
    /// The socket's path through `/proc/self/fd/<dir fd>`, short enough for sun_path (108
    /// bytes) however deep the state directory is; valid while `dir_fd` is open.
    pub fn socket_via(&self, dir_fd: &std::fs::File) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}/shim.sock", dir_fd.as_raw_fd()))
    }

    /// Opens the directory for `socket_via`.
    pub fn open_dir(&self) -> std::io::Result<std::fs::File> {
        std::fs::File::open(&self.root)
    }

    pub fn shim_log(&self) -> PathBuf {
        self.root.join("shim.log")
    }

    pub fn read_state(&self) -> Result<StateFile> {
        read_json(&self.state())
    }

    pub fn write_state(&self, state: &StateFile) -> Result<()> {
        write_json(&self.root, &self.state(), state)
    }
}

/// Reads a JSON file the engine wrote.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let data = std::fs::read(path).map_err(io_err("cannot read", path))?;
    serde_json::from_slice(&data)
        .map_err(|e| EngineError::Internal(format!("{} is corrupt: {e}", path.display())))
}

/// Writes JSON atomically through a temp file in `dir`.
pub fn write_json<T: Serialize>(dir: &Path, path: &Path, value: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(value)
        .map_err(|e| EngineError::Internal(format!("cannot encode {}: {e}", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, &data)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io_err("cannot write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_atomically() {
        let dir = std::env::temp_dir().join(format!("shoal-cstate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = ContainerDir::new(dir.clone());
        let s = StateFile {
            status: Status::Exited,
            exit_code: 137,
            oom_killed: true,
            ..Default::default()
        };
        c.write_state(&s).unwrap();
        assert_eq!(c.read_state().unwrap(), s);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
