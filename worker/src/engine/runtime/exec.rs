//! Entering a running container for `exec` (health checks, `shoal container exec`): the join
//! half of the runtime, run by a fresh single-threaded `shoal nsexec` process.
//!
//! ```text
//! nsexec (host)                                   child (in the container's pid namespace)
//!  open /proc/<init>/ns/{ipc,uts,net,pid,mnt}
//!  join the container's cgroup
//!  setns ipc, uts, net, pid, mnt (mnt last: /proc changes with it)
//!  fork ─────────────────────────────────────────> rlimits, user, caps, no_new_privs,
//!  waitpid, exit with the child's status            seccomp, execve  (as the init does)
//! ```
//!
//! Why a process of its own: setns into a mount namespace is refused to a multi-threaded
//! process (its threads share one root), so the daemon cannot do it; and a pid namespace only
//! applies to children, hence the fork. The fork is safe because nsexec is single-threaded.

use std::io::Write;
use std::os::fd::OwnedFd;

use nix::fcntl::{OFlag, open};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::ForkResult;
use seccompiler::BpfProgram;

use super::init;
use super::plan::Plan;
use crate::engine::error::{EngineError, Result};

/// The namespaces a container has of its own, in the order they are joined.
const NAMESPACES: [(&str, CloneFlags); 5] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Joins the namespaces of the container whose init is `pid` (after `join_cgroup`), runs
/// `plan`'s process there and returns its exit status (128 + signal when a signal ended it).
/// Errors before the fork are returned; the child reports its own (exec failures: 126/127)
/// on stderr, as the status it exits with.
pub fn enter_and_run(
    pid: i32,
    plan: &Plan,
    filters: &[BpfProgram],
    join_cgroup: impl FnOnce() -> Result<()>,
) -> Result<i32> {
    let host = |what: String, e: nix::Error| EngineError::Host(format!("{what}: {e}"));
    // Refuse to "enter" namespaces we are already in: that would run the command on the host,
    // which is what a PID reused by a host process would otherwise lead to.
    let ours = std::fs::read_link("/proc/self/ns/mnt").ok();
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    if theirs.is_none() || theirs == ours {
        return Err(EngineError::Conflict(format!(
            "the container's process (pid {pid}) is gone; is the container still running?"
        )));
    }
    let mut fds: Vec<(OwnedFd, CloneFlags)> = Vec::new();
    for (name, flag) in NAMESPACES {
        let path = format!("/proc/{pid}/ns/{name}");
        let fd = open(
            path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| host(format!("open {path}"), e))?;
        fds.push((fd, flag));
    }
    join_cgroup()?;
    for (fd, flag) in &fds {
        nix::sched::setns(fd, *flag).map_err(|e| host(format!("join namespace {flag:?}"), e))?;
    }
    drop(fds);
    // SAFETY: this process is single-threaded (nsexec runs before any runtime starts threads),
    // so the child may allocate and run any code without meeting a lock held by another thread.
    match unsafe { nix::unistd::fork() }.map_err(|e| host("fork".into(), e))? {
        ForkResult::Child => {
            let code = child(plan, filters);
            // SAFETY: _exit ends the child at once, without running the parent's atexit
            // handlers or flushing buffers it shares with the parent.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(host("wait for the command".into(), e)),
            }
        },
    }
}

/// The child: limits and identity as the container's init had them, then exec.
fn child(plan: &Plan, filters: &[BpfProgram]) -> i32 {
    // Die with nsexec: the daemon kills it when a health check times out.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    for (res, soft, hard) in &plan.rlimits {
        let _ = nix::sys::resource::setrlimit(*res, *soft, *hard);
    }
    let err = match init::finish_and_exec(plan, filters) {
        Ok(()) => init::InitError {
            code: 126,
            message: "exec returned".into(),
        },
        Err(e) => e,
    };
    // stderr is the command's: the caller sees why it did not run where its output would be.
    let _ = writeln!(std::io::stderr(), "shoal exec: {}", err.message);
    err.code
}
