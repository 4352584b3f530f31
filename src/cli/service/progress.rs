//! Live progress of `service create|scale` until the service converges, as `docker service
//! create` shows it: an overall count and one line per slot with its task's state. Where Swarm
//! waits forever on a task that cannot run, this ends with the reason (no suitable node, image
//! missing, the task keeps failing), and says the service stays and converges when it can.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use shoal_proto::control_client::ControlClient;
use shoal_proto::{ListTasksRequest, Service, Task, TaskState, list_tasks_request, service_spec};
use tonic::transport::Channel;

/// How often task states are read.
const POLL: Duration = Duration::from_millis(200);
/// A slot pending with a reason this long is reported as stuck.
const STUCK_PENDING: Duration = Duration::from_secs(5);
/// Failures of one slot while we watch before we call the service failing.
const FAILURES: usize = 3;
/// Running tasks must stay up this long before the service counts as converged (Docker
/// verifies for its monitor period, 5 s; a shorter check keeps the CLI responsive).
const VERIFY: Duration = Duration::from_secs(1);

/// States in the order the bars fill, as Docker draws them.
const STEPS: [TaskState; 8] = [
    TaskState::New,
    TaskState::Pending,
    TaskState::Assigned,
    TaskState::Accepted,
    TaskState::Preparing,
    TaskState::Ready,
    TaskState::Starting,
    TaskState::Running,
];

/// Where a task belongs: its slot (replicated, zero-padded so slots sort numerically) or its
/// node (global).
fn slot_key(t: &Task, global: bool) -> String {
    if global {
        t.node_id.clone()
    } else {
        format!("{:08}", t.slot)
    }
}

/// The latest task of each slot. A task with desired COMPLETE still stands for its slot: the
/// orchestrator stopped it for good (its restart policy allows no more), it is not replaced.
fn current_tasks(tasks: &[Task], global: bool) -> BTreeMap<String, &Task> {
    let mut by_slot: BTreeMap<String, &Task> = BTreeMap::new();
    for t in tasks {
        if t.desired_state > TaskState::Complete as i32 {
            continue;
        }
        let key = slot_key(t, global);
        let newer = by_slot
            .get(&key)
            .is_none_or(|cur| version(t) > version(cur));
        if newer {
            by_slot.insert(key, t);
        }
    }
    by_slot
}

fn version(t: &Task) -> u64 {
    t.meta.as_ref().map(|m| m.version).unwrap_or(0)
}

/// Whether the task is where it will stay: running, or ended for good.
fn settled(t: &Task) -> bool {
    let st = state(t);
    st == TaskState::Running || (t.desired_state == TaskState::Complete as i32 && st.is_terminal())
}

fn state(t: &Task) -> TaskState {
    TaskState::try_from(t.status.as_ref().map(|s| s.state).unwrap_or(0)).unwrap_or_default()
}

/// Why a task is not running, in the user's words.
fn reason(t: &Task) -> String {
    let s = t.status.clone().unwrap_or_default();
    if !s.err.is_empty() { s.err } else { s.message }
}

/// Watches service `id` until every slot runs; errors with the reason when it cannot.
pub async fn converge(control: &mut ControlClient<Channel>, id: &str) -> Result<()> {
    let tty = std::io::stdout().is_terminal();
    let multi = MultiProgress::new();
    let overall = multi.add(ProgressBar::new_spinner());
    let style = ProgressStyle::with_template("{prefix:>5}: {msg:<10} {bar:50}")
        .expect("static template")
        .progress_chars("=> ");
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let mut pending_since: BTreeMap<String, std::time::Instant> = BTreeMap::new();
    let mut failures: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    // Failures already in the history when we started (e.g. before a scale) are not ours.
    let mut seen_failed: Option<std::collections::BTreeSet<String>> = None;
    let mut last_line = String::new();
    let mut running_since: Option<std::time::Instant> = None;
    loop {
        let service = super::get(control, id).await?;
        let global = matches!(
            service.spec.as_ref().and_then(|s| s.mode.as_ref()),
            Some(service_spec::Mode::Global(_))
        );
        let tasks = control
            .list_tasks(ListTasksRequest {
                filters: Some(list_tasks_request::Filters {
                    service_ids: vec![service.id.clone()],
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .tasks;
        let failed_now = tasks
            .iter()
            .filter(|t| matches!(state(t), TaskState::Failed | TaskState::Rejected));
        let baseline =
            seen_failed.get_or_insert_with(|| failed_now.clone().map(|t| t.id.clone()).collect());
        for t in failed_now.filter(|t| !baseline.contains(&t.id)) {
            failures
                .entry(slot_key(t, global))
                .or_default()
                .insert(t.id.clone());
        }
        let current = current_tasks(&tasks, global);
        let desired = match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
            Some(service_spec::Mode::Replicated(r)) => r.replicas as usize,
            _ => current.len(),
        };
        let running = current
            .values()
            .filter(|t| state(t) == TaskState::Running)
            .count();
        let line = format!("overall progress: {running} out of {desired} tasks");
        if tty {
            overall.set_message(line.clone());
            for (i, (key, t)) in current.iter().enumerate() {
                let bar = bars.entry(key.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(STEPS.len() as u64 - 1));
                    b.set_style(style.clone());
                    b
                });
                let st = state(t);
                bar.set_prefix(if global {
                    crate::cli::service::short(&t.node_id).to_string()
                } else {
                    format!("{}/{desired}", i + 1)
                });
                bar.set_message(st.display_name().to_lowercase());
                bar.set_position(STEPS.iter().position(|s| *s == st).unwrap_or(0) as u64);
            }
        } else if line != last_line {
            println!("{line}");
        }
        last_line = line;

        // A slot ended for good by its restart policy, on a failure: nothing more will come.
        if let Some(t) = current.values().find(|t| {
            t.desired_state == TaskState::Complete as i32
                && matches!(state(t), TaskState::Failed | TaskState::Rejected)
        }) {
            multi.clear().ok();
            bail!(
                "service {} did not converge: task {} failed and its restart policy allows no                  more restarts: {}. See `shoal service ps {}`",
                name(&service),
                task_label(&service, t),
                reason(t),
                name(&service)
            );
        }

        // Converged: every slot running (or complete for good), and still so a moment later.
        let settled_count = current.values().filter(|t| settled(t)).count();
        if settled_count == desired && current.len() == desired {
            let since = *running_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= VERIFY || desired == 0 {
                overall.finish_and_clear();
                for b in bars.values() {
                    b.finish();
                }
                println!("verify: Service {} converged", name(&service));
                return Ok(());
            }
        } else {
            running_since = None;
        }

        // Stuck: a slot pending with a reason, or one that keeps failing.
        for (key, t) in &current {
            if state(t) == TaskState::Pending && !reason(t).is_empty() {
                let since = pending_since
                    .entry(t.id.clone())
                    .or_insert_with(std::time::Instant::now);
                if since.elapsed() >= STUCK_PENDING {
                    multi.clear().ok();
                    bail!(
                        "service {} did not converge: task {}: {}. The service stays and its \
                         tasks start when a node fits (see `shoal service ps {}`)",
                        name(&service),
                        task_label(&service, t),
                        reason(t),
                        name(&service)
                    );
                }
            }
            let failed = failures.get(key).map_or(0, |f| f.len());
            if failed >= FAILURES {
                let last = tasks
                    .iter()
                    .filter(|x| matches!(state(x), TaskState::Failed | TaskState::Rejected))
                    .max_by_key(|x| version(x))
                    .map(reason)
                    .unwrap_or_default();
                multi.clear().ok();
                bail!(
                    "service {} did not converge: its tasks keep failing ({failed} times for \
                     one slot), last: {last}. See `shoal service ps {}`",
                    name(&service),
                    name(&service)
                );
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

fn name(s: &Service) -> &str {
    s.spec
        .as_ref()
        .and_then(|sp| sp.annotations.as_ref())
        .map(|a| a.name.as_str())
        .unwrap_or(&s.id)
}

fn task_label(s: &Service, t: &Task) -> String {
    if t.slot > 0 {
        format!("{}.{}", name(s), t.slot)
    } else {
        format!("{}.{}", name(s), t.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Meta, TaskStatus};

    fn task(id: &str, slot: u64, version: u64, state: TaskState, desired: TaskState) -> Task {
        Task {
            id: id.into(),
            slot,
            meta: Some(Meta {
                version,
                ..Default::default()
            }),
            desired_state: desired as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_newest_task_wanted_running_stands_for_its_slot() {
        let tasks = vec![
            task("old", 1, 5, TaskState::Failed, TaskState::Shutdown),
            task("new", 1, 9, TaskState::Starting, TaskState::Running),
            task("b", 2, 7, TaskState::Running, TaskState::Running),
            task("gone", 3, 8, TaskState::Running, TaskState::Shutdown),
            task("done", 4, 6, TaskState::Complete, TaskState::Complete),
        ];
        let cur = current_tasks(&tasks, false);
        let ids: Vec<&str> = cur.values().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["new", "b", "done"]);
        assert!(settled(cur["00000004"]) && settled(cur["00000002"]));
        assert!(!settled(cur["00000001"]));
    }
}
