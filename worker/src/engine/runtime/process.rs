//! Creating the container process: the clone into new namespaces and the handshake with the
//! child (see the module above for the sequence).

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{OFlag, open};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{Pid, pipe2};
use seccompiler::BpfProgram;

use super::init;
use super::plan::Plan;
use crate::engine::error::{EngineError, Result};

/// Stack of the cloned child until it execs; the init needs little, this is generous.
const CHILD_STACK: usize = 1 << 20;

/// Starts the container process; `before_go` runs (in the caller) once the child exists and
/// before it may exec: the place to put it in its cgroup. Returns the child's host PID.
pub fn spawn(
    plan: &Plan,
    filters: &[BpfProgram],
    stdout_w: OwnedFd,
    stderr_w: OwnedFd,
    before_go: impl FnOnce(Pid) -> Result<()>,
) -> Result<Pid> {
    let host = |what: &str, e: nix::Error| EngineError::Host(format!("{what}: {e}"));
    let devnull = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| host("open /dev/null", e))?;
    let netns = match &plan.netns_path {
        Some(p) => Some(
            open(p, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
                EngineError::InvalidArgument(format!(
                    "cannot open network namespace {}: {e}; give the path of an existing netns \
                 (e.g. /run/netns/NAME)",
                    p.display()
                ))
            })?,
        ),
        None => None,
    };
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| host("create pipe", e))?;
    let (go_r, go_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| host("create pipe", e))?;
    let fds = init::ChildFds {
        error_w: err_w.as_raw_fd(),
        go_r: go_r.as_raw_fd(),
        stdout_w: stdout_w.as_raw_fd(),
        stderr_w: stderr_w.as_raw_fd(),
        devnull: devnull.as_raw_fd(),
        netns: netns.as_ref().map(|f| f.as_raw_fd()),
        parent_ends: [err_r.as_raw_fd(), go_w.as_raw_fd(), -1, -1],
    };
    let mut flags = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if plan.new_netns {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: the caller (the shim) is single-threaded, so the child - a copy of this one
    // thread's memory (no CLONE_VM) - may allocate and call any library code without meeting a
    // lock held by another thread. The stack buffer lives until clone returns in the parent and
    // is copied, not shared, in the child; the init needs far less than its size.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(|| init::run(plan, filters, fds) as isize),
            &mut stack,
            flags,
            Some(Signal::SIGCHLD as i32),
        )
    }
    .map_err(|e| {
        let hint = if e == nix::errno::Errno::EPERM {
            " (creating namespaces needs root)"
        } else {
            ""
        };
        EngineError::Host(format!(
            "cannot create the container's namespaces: {e}{hint}"
        ))
    })?;
    drop((err_w, go_r, devnull, stdout_w, stderr_w, netns));

    if let Err(e) = before_go(pid) {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        return Err(e);
    }
    // The child waits for this byte before it may exec. If it already failed, the write fails
    // (EPIPE) and the error pipe below says why.
    let _ = nix::unistd::write(&go_w, &[1u8]);
    drop(go_w);
    let mut report = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut report);
    if report.is_empty() {
        return Ok(pid);
    }
    let _ = waitpid(pid, None);
    let (code, message) = report.split_once(' ').unwrap_or(("125", report.as_str()));
    Err(EngineError::StartFailed {
        message: message.to_string(),
        exit_code: code.parse().unwrap_or(125),
    })
}
