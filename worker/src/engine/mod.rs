//! The local container engine: images, overlayfs root filesystems, a built-in OCI runtime,
//! per-container supervisors (shims), logs. No dockerd, no containerd, no runc.
//!
//! ```text
//!  executor / daemon API ──> Engine (trait) ──> LocalEngine
//!                                                 ├─ images/   store, import, unpack
//!                                                 ├─ runtime/  spec -> plan -> clone + init
//!                                                 ├─ cgroups/  v1 | v2 behind one trait
//!                                                 └─ exec `shoal shim <dir>` per container
//!                                                       └─ container (PID 1 of its pid ns)
//! ```
//!
//! The [`Engine`] trait is what the executor (task -> container) programs against, so its state
//! machine is tested with a fake engine; [`LocalEngine`] is the real one.

pub mod cgroups;
pub mod containers;
pub mod error;
pub mod images;
mod local;
pub mod logs;
mod names;
pub mod nsexec;
pub mod runtime;
pub mod shim;
pub mod time;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use shoal_proto::{
    ContainerDetails, ContainerExit, ContainerSpec, ContainerSummary, EngineSummary, ImageDetails,
    ImageImportResponse, ImageRemoveResponse, ImageSummary, LogEntry, Resources,
};
use tokio::sync::mpsc;

pub use error::{EngineError, Result};
pub use images::ImportOptions;
pub use local::{LocalEngine, LocalEngineOptions};

/// What a container is made from: the same ContainerSpec and limits a task carries, so the
/// executor passes a task's spec straight through.
#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    /// Unique name; generated (Docker-style) when None.
    pub name: Option<String>,
    /// `spec.image` names the image.
    pub spec: ContainerSpec,
    pub limits: Resources,
    /// Relative CPU weight (v1 shares, 2..262144); None: the kernel's default.
    pub cpu_shares: Option<u64>,
    /// A network namespace to join (e.g. the overlay's, for tasks); None: a fresh one with
    /// only loopback.
    pub network_namespace: Option<String>,
    /// Remove the container once it has exited.
    pub auto_remove: bool,
}

/// A command to run inside a running container (`container exec`, health checks).
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// The program and its arguments; the program is looked up in the container's PATH.
    pub cmd: Vec<String>,
    /// KEY=VALUE added to (and overriding) the container's environment.
    pub env: Vec<String>,
    /// user[:group]; None: the container's user.
    pub user: Option<String>,
    /// Working directory; None: the container's.
    pub workdir: Option<String>,
    /// Kill the command after this long; None: no limit.
    pub timeout: Option<Duration>,
}

/// How an exec ended and what it wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status, 128 + signal when a signal ended it, 126/127 when it could not be run
    /// (as Docker), -1 when it timed out.
    pub exit_code: i32,
    /// Each stream is cut at [`EXEC_OUTPUT_LIMIT`] bytes.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

/// Most bytes of each stream an exec keeps.
pub const EXEC_OUTPUT_LIMIT: usize = 1 << 20;

/// Options of reading a container's logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOptions {
    /// Keep streaming until the container exits.
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
}

/// The container engine as the executor and the local API use it. All methods are async and
/// Send, so callers may spawn them; errors say what to do next.
pub trait Engine: Send + Sync + 'static {
    /// Imports an image archive (OCI layout, docker save) or a root filesystem tarball.
    fn import_image(
        &self,
        archive: PathBuf,
        options: ImportOptions,
    ) -> impl Future<Output = Result<ImageImportResponse>> + Send;
    fn list_images(&self) -> impl Future<Output = Result<Vec<ImageSummary>>> + Send;
    /// By name[:tag], ID or unique ID prefix.
    fn inspect_image(&self, reference: &str) -> impl Future<Output = Result<ImageDetails>> + Send;
    /// Refused while a container uses the image.
    fn remove_image(
        &self,
        reference: &str,
        force: bool,
    ) -> impl Future<Output = Result<ImageRemoveResponse>> + Send;

    /// Creates (does not start) a container; returns its ID and any warnings.
    fn create_container(
        &self,
        config: ContainerConfig,
    ) -> impl Future<Output = Result<(String, Vec<String>)>> + Send;
    fn start_container(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Stop signal, then SIGKILL after `timeout` (default: the container's grace period).
    fn stop_container(
        &self,
        id: &str,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Sends a signal (name or number) to the container's process.
    fn kill_container(&self, id: &str, signal: &str) -> impl Future<Output = Result<()>> + Send;
    /// Resolves once the container has exited.
    fn wait_container(&self, id: &str) -> impl Future<Output = Result<ContainerExit>> + Send;
    /// Removes a stopped container (with `force`, kills a running one first).
    fn remove_container(&self, id: &str, force: bool) -> impl Future<Output = Result<()>> + Send;
    fn list_containers(
        &self,
        all: bool,
    ) -> impl Future<Output = Result<Vec<ContainerSummary>>> + Send;
    fn inspect_container(&self, id: &str) -> impl Future<Output = Result<ContainerDetails>> + Send;
    /// Log lines; with `follow` the channel closes once the container exited and all is read.
    fn container_logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> impl Future<Output = Result<mpsc::Receiver<Result<LogEntry>>>> + Send;
    /// Runs a command in a running container: its namespaces, cgroup, user, capabilities and
    /// seccomp filter, as `docker exec` does. Returns once the command has ended (or timed out).
    fn exec(
        &self,
        id: &str,
        options: ExecOptions,
    ) -> impl Future<Output = Result<ExecOutput>> + Send;
    /// Counts for `shoal info`.
    fn summary(&self) -> impl Future<Output = Result<EngineSummary>> + Send;
}
