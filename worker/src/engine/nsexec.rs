//! `shoal nsexec <container-dir> <request>` (hidden; the engine runs it): one command run inside
//! a running container, for health checks and `shoal container exec`.
//!
//! The engine spawns it per exec with pipes for stdout and stderr, which the command inherits;
//! the request (JSON) says what to run. The process is read from the container's runtime spec
//! (the same environment, user, capabilities, seccomp filter and limits the container's own
//! process got), with the request's command, extra environment, user and working directory.
//! It exits with the command's status; its own failures exit 125 with the reason on stderr.

use std::ffi::CString;
use std::io::Write;
use std::path::Path;

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::cgroups;
use super::containers::{ContainerDir, ShimConfig, Status, read_json};
use super::error::{EngineError, Result};
use super::runtime::{self, plan::Plan, seccomp};

/// What to run; the engine's `ExecOptions` without the timeout (the engine enforces that by
/// killing this process, and the command dies with it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub workdir: Option<String>,
}

/// Exit status of nsexec when it could not run the command at all (Docker's 125).
pub const SETUP_FAILED: i32 = 125;

/// Runs the request in the container of `dir`; returns the exit status for the process.
pub fn run(dir: &Path, request: &str) -> i32 {
    match enter(dir, request) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "shoal exec: {e}");
            SETUP_FAILED
        }
    }
}

fn enter(dir: &Path, request: &str) -> Result<i32> {
    let req: ExecRequest = serde_json::from_str(request)
        .map_err(|e| EngineError::InvalidArgument(format!("malformed exec request: {e}")))?;
    let cdir = ContainerDir::new(dir.to_path_buf());
    let cfg: ShimConfig = read_json(&cdir.shim_config())?;
    let state = cdir.read_state()?;
    if state.status != Status::Running || state.pid <= 0 {
        return Err(EngineError::Conflict(format!(
            "container {} is not running",
            cfg.id
        )));
    }
    let spec: Spec = read_json(&cdir.spec())?;
    let mut plan = Plan::from_spec(&spec, cfg.rootfs.clone())?;
    apply_request(&mut plan, &req)?;
    let filters = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => seccomp::compile(profile)?,
        None => Vec::new(),
    };
    let cgroup = cgroups::open(&cfg.cgroup)?;
    runtime::exec::enter_and_run(state.pid, &plan, &filters, || {
        cgroup.add_process(std::process::id() as i32)
    })
}

/// The container's process with the request's command, environment, user and directory.
fn apply_request(plan: &mut Plan, req: &ExecRequest) -> Result<()> {
    if req.cmd.is_empty() {
        return Err(EngineError::InvalidArgument(
            "no command given; name one, e.g. `shoal container exec web ls /`".into(),
        ));
    }
    plan.args = req
        .cmd
        .iter()
        .map(|a| {
            CString::new(a.as_str()).map_err(|_| {
                EngineError::InvalidArgument(format!("argument {a:?} contains a NUL byte"))
            })
        })
        .collect::<Result<_>>()?;
    plan.env = merge_env(&plan.env, &req.env);
    if let Some(user) = req.user.as_ref().filter(|u| !u.is_empty()) {
        plan.user = user.clone();
    }
    if let Some(dir) = req.workdir.as_ref().filter(|d| !d.is_empty()) {
        if !dir.starts_with('/') {
            return Err(EngineError::InvalidArgument(format!(
                "working directory {dir:?} must be an absolute path"
            )));
        }
        plan.cwd = dir.clone();
    }
    Ok(())
}

/// `base` with each KEY=VALUE of `extra` replacing the same KEY, or appended.
fn merge_env(base: &[String], extra: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut out: Vec<String> = base.to_vec();
    for e in extra {
        let k = key(e);
        match out.iter_mut().find(|b| key(b) == k) {
            Some(slot) => *slot = e.clone(),
            None => out.push(e.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_environment_overrides_by_key() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let out = merge_env(&base, &["A=2".into(), "B=3".into()]);
        assert_eq!(out, vec!["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn requests_round_trip_and_default_their_options() {
        let req: ExecRequest = serde_json::from_str(r#"{"cmd":["true"]}"#).unwrap();
        assert_eq!(req.cmd, vec!["true"]);
        assert!(req.env.is_empty() && req.user.is_none() && req.workdir.is_none());
        let back: ExecRequest =
            serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(back, req);
    }
}
