//! The built-in OCI runtime: no external binary. The engine writes a runtime spec per container
//! (spec.rs), the shim turns it into a plan (plan.rs) and calls [`spawn`], which clones a child
//! into new namespaces; the child runs the init (init.rs) up to exec.
//!
//! ```text
//! shim (single-threaded)                         child (PID 1 in new pid/mnt/uts/ipc/net ns)
//!  clone(NEWPID|NEWNS|NEWUTS|NEWIPC[|NEWNET]) ──> init: mounts, pivot_root, masks, rlimits
//!  join child to cgroup; write 1 byte "go" ─────> read "go"
//!                                                  user, caps, no_new_privs, seccomp, execve
//!  read error pipe: EOF = exec happened <──────── (pipe is O_CLOEXEC; on failure: "code msg")
//! ```
//!
//! Forking is only ever done here, by the shim or by `shoal nsexec` (exec.rs), each a fresh
//! single-threaded process (the daemon never forks: a fork of a multi-threaded tokio process
//! may deadlock in the child).
//! Only the submodules that must make raw calls are allowed unsafe code.

#[allow(unsafe_code)]
pub mod caps;
#[allow(unsafe_code)]
pub mod exec;
#[allow(unsafe_code)]
mod init;
pub mod paths;
pub mod plan;
#[allow(unsafe_code)]
mod process;
pub mod seccomp;
pub mod spec;
pub mod users;

pub use process::spawn;
