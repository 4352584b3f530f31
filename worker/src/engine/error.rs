//! The engine's one error type. Each variant maps to a gRPC status code in the daemon, so the
//! CLI can tell "you asked for something wrong" (fix your input) from "the host cannot do it"
//! (fix the machine) from "something broke" (read the daemon log). Messages name the object and
//! say what to do next; the caller adds nothing but the transport.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such image or container.
    #[error("{0}")]
    NotFound(String),
    /// Bad input: an invalid limit, name, mount or reference.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request clashes with the current state (name taken, image in use, still running).
    #[error("{0}")]
    Conflict(String),
    /// An archive that is corrupt, truncated, inconsistent or malicious.
    #[error("{0}")]
    BadArchive(String),
    /// The host lacks what is needed (kernel feature, cgroup controller, privilege).
    #[error("{0}")]
    Host(String),
    /// The container could not be started; `exit_code` follows Docker (126 cannot invoke,
    /// 127 not found, 125 anything else).
    #[error("{message}")]
    StartFailed { message: String, exit_code: i32 },
    /// A file operation in the engine's own store failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An internal invariant broke (e.g. a state file the engine wrote cannot be read back).
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// An I/O error on `path`, saying what was being done.
    pub fn io(what: &str, path: &Path, source: std::io::Error) -> EngineError {
        EngineError::Io {
            context: format!("{what} {}", path.display()),
            source,
        }
    }
}

/// Shorthand: `.map_err(io_err("cannot read", &path))`.
pub fn io_err<'a>(
    what: &'a str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> EngineError + 'a {
    move |e| EngineError::io(what, path, e)
}
