//! The task state machine: SwarmKit's exec.Do. One call advances a task by at most one state,
//! so the caller reports every transition and a restart resumes from the last one reported.
//!
//! ```text
//!  NEW..ASSIGNED ─> ACCEPTED ─> PREPARING ─prepare─> READY ─> STARTING ─start─> RUNNING ─wait─>
//!                                   └─ error: REJECTED            └─ error: FAILED    COMPLETE (0)
//!  desired >= SHUTDOWN, not yet terminal: shutdown(grace) ─> SHUTDOWN               FAILED (else)
//! ```
//!
//! Failures before STARTING mean the node could not take the task (REJECTED: the scheduler
//! may place it elsewhere); from STARTING on it ran and failed (FAILED).

use std::time::Duration;

use shoal_proto::{Task, TaskState, TaskStatus, Timestamp};
use tracing::{debug, info, warn};

use super::controller::{Controller, ControllerError, Exit};

/// Docker's default time between the stop signal and SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// The task's stop grace period: its spec's, else Docker's 10 s.
pub fn stop_grace(task: &Task) -> Duration {
    task.spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .and_then(|c| c.stop_grace_period.as_ref())
        .map(|d| d.to_std())
        .unwrap_or(DEFAULT_STOP_GRACE)
}

/// Advances `task` from `current` by one state (or returns `current` when there is nothing to
/// do: terminal, or already where a desired state below RUNNING asks it to wait).
pub async fn step<C: Controller>(task: &Task, current: &TaskStatus, ctlr: &mut C) -> TaskStatus {
    let state = current.state();
    let desired = task.desired_state();
    let to = |next: TaskState, message: &str| {
        let mut s = current.clone();
        s.set_state(next);
        s.message = message.to_string();
        s.timestamp = Some(Timestamp::now());
        s
    };
    let fatal = |err: ControllerError| {
        // Before STARTING nothing ran: the node refuses the task; from STARTING on it failed.
        let next = if state < TaskState::Starting {
            TaskState::Rejected
        } else {
            TaskState::Failed
        };
        warn!(task = %task.id, state = ?state, error = %err, "task error");
        let mut s = to(next, current.message.as_str());
        s.err = err.to_string();
        s
    };
    if state.is_terminal() {
        return current.clone();
    }
    if desired >= TaskState::Shutdown {
        info!(task = %task.id, "shutting down");
        return match ctlr.shutdown(stop_grace(task)).await {
            Ok(()) => to(TaskState::Shutdown, "shutdown"),
            Err(e) => fatal(e),
        };
    }
    // A desired state below RUNNING (READY, for start-first updates) is a place to wait.
    if desired < TaskState::Running && state >= desired {
        return current.clone();
    }
    match state {
        TaskState::New | TaskState::Pending | TaskState::Assigned => {
            to(TaskState::Accepted, "accepted")
        }
        TaskState::Accepted => to(TaskState::Preparing, "preparing"),
        TaskState::Preparing => match ctlr.prepare().await {
            Ok(()) => to(TaskState::Ready, "prepared"),
            Err(e) => fatal(e),
        },
        TaskState::Ready => to(TaskState::Starting, "starting"),
        TaskState::Starting => match ctlr.start().await {
            Ok(container) => {
                let mut s = to(TaskState::Running, "started");
                s.started_at = s.timestamp;
                s.container = Some(container);
                s
            }
            Err(e) => {
                // Never leave a half-started (e.g. unhealthy) container running.
                let _ = ctlr.shutdown(stop_grace(task)).await;
                fatal(e)
            }
        },
        TaskState::Running => match ctlr.wait().await {
            Ok(exit) => exited(current, &exit, to),
            Err(e) => {
                if matches!(e, ControllerError::Unhealthy(_)) {
                    // Stop it so the orchestrator's replacement is not competing with it.
                    let _ = ctlr.shutdown(stop_grace(task)).await;
                }
                fatal(e)
            }
        },
        other => {
            debug!(task = %task.id, state = ?other, "no step for this state");
            current.clone()
        }
    }
}

/// COMPLETE on exit 0, FAILED otherwise, with the exit recorded in status.container.
fn exited(
    current: &TaskStatus,
    exit: &Exit,
    to: impl Fn(TaskState, &str) -> TaskStatus,
) -> TaskStatus {
    let mut s = if exit.exit_code == 0 && exit.error.is_empty() && !exit.oom_killed {
        to(TaskState::Complete, "finished")
    } else {
        let mut s = to(TaskState::Failed, "started");
        s.err = if !exit.error.is_empty() {
            exit.error.clone()
        } else if exit.oom_killed {
            format!(
                "task: non-zero exit ({}): killed by the kernel's OOM killer (memory limit reached)",
                exit.exit_code
            )
        } else {
            format!("task: non-zero exit ({})", exit.exit_code)
        };
        s
    };
    let mut container = current.container.clone().unwrap_or_default();
    container.exit_code = exit.exit_code;
    container.oom_killed = exit.oom_killed;
    container.pid = 0;
    s.container = Some(container);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::testing::{FakeController, task};

    fn status(state: TaskState) -> TaskStatus {
        let mut s = TaskStatus::default();
        s.set_state(state);
        s
    }

    /// Steps until nothing changes, returning every state passed through.
    async fn run(task: &Task, from: TaskState, ctlr: &mut FakeController) -> Vec<TaskStatus> {
        let mut out = Vec::new();
        let mut cur = status(from);
        loop {
            let next = step(task, &cur, ctlr).await;
            if next.state() == cur.state() {
                return out;
            }
            out.push(next.clone());
            cur = next;
        }
    }

    fn states(v: &[TaskStatus]) -> Vec<TaskState> {
        v.iter().map(|s| s.state()).collect()
    }

    #[tokio::test]
    async fn a_task_runs_to_completion_one_state_per_step() {
        let mut c = FakeController::default();
        let t = task("t1", TaskState::Running);
        let seen = run(&t, TaskState::Assigned, &mut c).await;
        use TaskState::*;
        assert_eq!(
            states(&seen),
            vec![Accepted, Preparing, Ready, Starting, Running, Complete]
        );
        assert_eq!(c.calls, vec!["prepare", "start", "wait"]);
        let running = &seen[4];
        assert!(running.started_at.is_some());
        assert_eq!(running.container.as_ref().unwrap().container_id, "c-t1");
        assert_eq!(seen[5].container.as_ref().unwrap().exit_code, 0);
    }

    #[tokio::test]
    async fn a_missing_image_rejects_the_task() {
        let mut c = FakeController {
            prepare_err: Some("image web:1 not found on node n1".into()),
            ..Default::default()
        };
        let t = task("t1", TaskState::Running);
        let seen = run(&t, TaskState::Assigned, &mut c).await;
        let last = seen.last().unwrap();
        assert_eq!(last.state(), TaskState::Rejected);
        assert_eq!(last.err, "image web:1 not found on node n1");
    }

    #[tokio::test]
    async fn a_start_failure_fails_the_task() {
        let mut c = FakeController {
            start_err: Some("exec: \"nope\": executable file not found".into()),
            ..Default::default()
        };
        let t = task("t1", TaskState::Running);
        let seen = run(&t, TaskState::Ready, &mut c).await;
        assert_eq!(seen.last().unwrap().state(), TaskState::Failed);
        assert!(
            seen.last()
                .unwrap()
                .err
                .contains("executable file not found")
        );
    }

    #[tokio::test]
    async fn non_zero_and_oom_exits_fail_with_the_reason() {
        let t = task("t1", TaskState::Running);
        let mut c = FakeController {
            exit: Exit {
                exit_code: 3,
                ..Default::default()
            },
            ..Default::default()
        };
        let s = step(&t, &status(TaskState::Running), &mut c).await;
        assert_eq!(s.state(), TaskState::Failed);
        assert_eq!(s.err, "task: non-zero exit (3)");
        assert_eq!(s.container.unwrap().exit_code, 3);

        let mut c = FakeController {
            exit: Exit {
                exit_code: 137,
                oom_killed: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let s = step(&t, &status(TaskState::Running), &mut c).await;
        assert_eq!(s.state(), TaskState::Failed);
        assert!(s.err.contains("OOM"), "{}", s.err);
        assert!(s.container.unwrap().oom_killed);
    }

    #[tokio::test]
    async fn unhealthy_fails_and_stops_the_container() {
        let t = task("t1", TaskState::Running);
        let mut c = FakeController {
            wait_err: Some(ControllerError::Unhealthy("connection refused".into())),
            ..Default::default()
        };
        let s = step(&t, &status(TaskState::Running), &mut c).await;
        assert_eq!(s.state(), TaskState::Failed);
        assert_eq!(s.err, "unhealthy: connection refused");
        assert_eq!(c.calls, vec!["wait", "shutdown 10s"]);
    }

    #[tokio::test]
    async fn desired_shutdown_stops_with_the_grace_period() {
        let mut t = task("t1", TaskState::Shutdown);
        t.spec
            .as_mut()
            .unwrap()
            .container
            .as_mut()
            .unwrap()
            .stop_grace_period = Some(Duration::from_secs(3).into());
        let mut c = FakeController::default();
        let s = step(&t, &status(TaskState::Running), &mut c).await;
        assert_eq!(s.state(), TaskState::Shutdown);
        assert_eq!(c.calls, vec!["shutdown 3s"]);
        // Terminal states stay put, whatever is desired.
        let again = step(&t, &s, &mut c).await;
        assert_eq!(again, s);
        assert_eq!(c.calls.len(), 1);
    }

    #[tokio::test]
    async fn desired_ready_prepares_but_does_not_start() {
        let t = task("t1", TaskState::Ready);
        let mut c = FakeController::default();
        let seen = run(&t, TaskState::Assigned, &mut c).await;
        assert_eq!(seen.last().unwrap().state(), TaskState::Ready);
        assert_eq!(c.calls, vec!["prepare"]);
    }
}
