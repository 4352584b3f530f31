//! The test harness: disposable networks and nodes for integration tests.
//!
//! ```text
//!   switch netns (per TestNet)          node netns (per TestNode)
//!   ┌──────────────────────────┐        ┌────────────────────────────────┐
//!   │ br0 ── n1 ═══ veth ═══════════════ eth0 10.88.0.1/24  shoal daemon │
//!   │     └─ n2 ═══ veth ═══════════╗   └────────────────────────────────┘
//!   └──────────────────────────┘    ╚══ eth0 10.88.0.2/24 (next node) ...
//! ```
//!
//! The bridge lives in its own namespace, not the host's, so the host's firewall (Docker's
//! FORWARD DROP with br_netfilter) never sees test traffic, and every test can use the same
//! addresses. Daemons enter their node's netns with setns (not `ip netns exec`, which would also
//! give each process a private mount namespace and hide one daemon's mounts from the next).
//!
//! Everything a test makes is named after the test process's PID, so teardown is exact even when
//! a test panics (Drop), and the next run sweeps what a killed run left behind.

// Each test module uses part of the harness; what one build does not call is still its API.
#![allow(dead_code)]

mod cleanup;
pub mod cluster;
mod net;
mod node;

pub use net::TestNet;
pub use node::TestNode;

use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every network namespace, temp dir and cgroup the harness makes.
pub const PREFIX: &str = "shoaltest";

/// Path of the binary under test, built by cargo for this test crate.
pub fn shoal_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shoal")
}

/// Fails the test with instructions when not root: these tests must never skip silently.
pub fn require_root() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!(
            "integration tests need root: they create network namespaces, mounts and cgroups. \
             Run them as root (CI does), e.g. `sudo -E cargo test --test integration`"
        );
    }
}

/// A name unique within this machine for this test process: `<PREFIX>-<pid>-<n>`.
pub fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}-{}-{n}", std::process::id())
}

/// Runs a command and panics with its output if it fails (harness plumbing only).
pub fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"));
    if !out.status.success() {
        panic!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` until it returns Some or `timeout` passes; panics with `what` on timeout.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if std::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
