//! What the state machine needs from whatever runs a task: SwarmKit's exec.Controller, one
//! instance per task. Every operation is idempotent, because after a daemon restart the state
//! machine replays from the last reported state against work that may already be done.

use std::future::Future;
use std::time::Duration;

use shoal_proto::ContainerStatus;

/// Why a controller operation failed, in words for `service ps` (status.err).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    /// Anything that stops the task: missing image, bad spec, engine failure.
    #[error("{0}")]
    Failed(String),
    /// The health check failed `retries` times in a row; carries the last probe's output.
    #[error("unhealthy: {0}")]
    Unhealthy(String),
}

/// How a task's process ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exit {
    pub exit_code: i32,
    pub oom_killed: bool,
    /// Set when the process could not run at all (e.g. executable not found).
    pub error: String,
}

/// Runs one task. Each method may be called again after a restart for work already done and
/// must then succeed without redoing it.
pub trait Controller: Send + 'static {
    /// Everything short of starting: image resolved, network attached, container created.
    fn prepare(&mut self) -> impl Future<Output = Result<(), ControllerError>> + Send;
    /// Starts the container (not again if it already ran) and, when it has a health check,
    /// returns once it is healthy; the status names the container and its process.
    fn start(&mut self) -> impl Future<Output = Result<ContainerStatus, ControllerError>> + Send;
    /// Resolves when the process has exited (or the health check declared it unhealthy).
    fn wait(&mut self) -> impl Future<Output = Result<Exit, ControllerError>> + Send;
    /// Stop signal, then SIGKILL after `grace`; fine when there is nothing running.
    fn shutdown(
        &mut self,
        grace: Duration,
    ) -> impl Future<Output = Result<(), ControllerError>> + Send;
    /// SIGKILL at once; fine when there is nothing running.
    fn terminate(&mut self) -> impl Future<Output = Result<(), ControllerError>> + Send;
    /// Removes the container and frees what prepare took; fine when already gone.
    fn remove(&mut self) -> impl Future<Output = Result<(), ControllerError>> + Send;
}
