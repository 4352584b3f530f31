//! The scheduler: which node each pending task should run on, or why none can take it.
//!
//! Pure logic over a snapshot, so every placement rule is unit-tested without a Store, a clock
//! or a network; the scheduler controller owns the Store, builds a [`Scheduler`] from the nodes
//! and tasks it sees, and writes back the decisions. A task that fits nowhere is reported with
//! the reason built from every filter's own explanation, which becomes its "why pending" status;
//! it is placed on a later pass once a new snapshot (a node joined, got a label, freed capacity)
//! lets it fit.
//!
//! ```text
//! pending tasks ─ group by service + placement ─┐
//!                                               v
//! nodes ─ static filters (ready, active, platform, constraints) ─> candidates + failure counts
//!                                               v
//!          spread tree + least-loaded heaps ─ dynamic filters (max replicas, memory, CPU)
//!                                               v
//!                        Decision::Assigned | Decision::Unplaceable { reason }
//! ```
//!
//! Tasks of one service with identical placement are scheduled together (as SwarmKit does), so
//! constraints are parsed and static filters run once per node per batch, not per task.

pub mod constraint;
pub mod explain;
pub mod filters;
pub mod node_info;
mod spread;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use shoal_proto::{Node, Placement, ResourceRequirements, Task, TaskState, Timestamp};

pub use constraint::{
    Constraint, ConstraintError, Key, KeyError, Operator, SpreadError, VALID_KEYS,
    parse_constraints, parse_spread,
};
pub use filters::{Filter, Pipeline, PlacementError, satisfies_placement};
pub use node_info::{Amounts, NodeInfo};

use node_info::task_state;
use spread::{Column, Rank, Tree, spread_keys};

/// Failures of a service's tasks on one node within this window count against the node.
pub const FAILURE_WINDOW_SECS: i64 = 5 * 60;
/// From this many recent failures on, a node ranks after every node with fewer (as SwarmKit),
/// so a node that keeps rejecting a service's tasks (e.g. its image is missing there) stops
/// attracting them while others can take them.
pub const MAX_RECENT_FAILURES: u32 = 5;

/// What became of one pending task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run the task on this node (move it to ASSIGNED with `node_id` set).
    Assigned { task_id: String, node_id: String },
    /// Leave it PENDING with `reason` as its status message, and try again on a later pass.
    Unplaceable { task_id: String, reason: String },
}

impl Decision {
    pub fn task_id(&self) -> &str {
        match self {
            Decision::Assigned { task_id, .. } | Decision::Unplaceable { task_id, .. } => task_id,
        }
    }
}

/// The snapshot of nodes and their load that decisions are made against; it takes in its own
/// decisions, so each task of a batch sees the reservations and counts of those before it.
pub struct Scheduler {
    /// Sorted by node ID: index order is the final, deterministic tie-break.
    nodes: Vec<NodeInfo>,
    by_id: HashMap<String, usize>,
    /// Per service, the nodes running its tasks, and those where it failed recently: a batch
    /// reads its counts from these few nodes instead of hashing its service ID once per node.
    service_nodes: HashMap<String, Vec<u32>>,
    failing_nodes: HashMap<String, Vec<u32>>,
    /// Static filter outcomes per distinct (constraints, platforms). They never change for a
    /// snapshot, so services with the same placement (often none) share one pass over the nodes.
    static_passes: HashMap<String, StaticPass>,
    /// Each node's branch per spread descriptor, also fixed for a snapshot.
    spread_columns: HashMap<Key, Column>,
}

/// The outcome of the static filters on every node, for one set of constraints and platforms.
struct StaticPass {
    /// Per node: `None` if it passed, else the index of the first filter that refused it.
    refused_by: Vec<Option<usize>>,
    /// Nodes refused per static filter.
    failed: Vec<usize>,
}

impl Scheduler {
    /// A scheduler over `nodes`, loaded with `tasks`: those with a node and in a state from
    /// ASSIGNED up to RUNNING count; unassigned, pending and finished tasks are ignored, so the
    /// caller may pass every task it has.
    pub fn new<'a>(
        nodes: impl IntoIterator<Item = &'a Node>,
        tasks: impl IntoIterator<Item = &'a Task>,
    ) -> Scheduler {
        Scheduler::build(nodes, tasks, None)
    }

    /// As [`Scheduler::new`], also ranking last the nodes where a service's tasks failed or were
    /// rejected [`MAX_RECENT_FAILURES`] times within [`FAILURE_WINDOW_SECS`] before `now`
    /// (which needs the failed tasks among `tasks`).
    pub fn with_clock<'a>(
        nodes: impl IntoIterator<Item = &'a Node>,
        tasks: impl IntoIterator<Item = &'a Task>,
        now: &Timestamp,
    ) -> Scheduler {
        Scheduler::build(nodes, tasks, Some(now))
    }

    fn build<'a>(
        nodes: impl IntoIterator<Item = &'a Node>,
        tasks: impl IntoIterator<Item = &'a Task>,
        now: Option<&Timestamp>,
    ) -> Scheduler {
        let mut nodes: Vec<NodeInfo> = nodes.into_iter().cloned().map(NodeInfo::new).collect();
        nodes.sort_by(|a, b| a.node.id.cmp(&b.node.id));
        nodes.dedup_by(|a, b| a.node.id == b.node.id);
        let by_id: HashMap<String, usize> = (nodes.iter().enumerate())
            .map(|(i, n)| (n.node.id.clone(), i))
            .collect();
        let mut service_nodes: HashMap<String, Vec<u32>> = HashMap::new();
        let mut failing_nodes: HashMap<String, Vec<u32>> = HashMap::new();
        for task in tasks {
            let Some(&i) = by_id.get(&task.node_id) else {
                continue;
            };
            let state = task_state(task);
            let index = if state >= TaskState::Assigned && !state.is_terminal() {
                nodes[i].add_task(task).then_some(&mut service_nodes)
            } else if matches!(state, TaskState::Failed | TaskState::Rejected)
                && now.is_some_and(|now| failed_recently(task, now))
            {
                nodes[i]
                    .note_failure(&task.service_id)
                    .then_some(&mut failing_nodes)
            } else {
                None
            };
            if let Some(index) = index {
                let list = index.entry(task.service_id.clone()).or_default();
                list.push(i as u32);
            }
        }
        Scheduler {
            nodes,
            by_id,
            service_nodes,
            failing_nodes,
            static_passes: HashMap::new(),
            spread_columns: HashMap::new(),
        }
    }

    /// The nodes as the scheduler now sees them, in ID order.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, id: &str) -> Option<&NodeInfo> {
        self.by_id.get(id).map(|&i| &self.nodes[i])
    }

    /// Decides where each task waiting for a node goes, in the order of `pending`.
    ///
    /// Tasks that already name a node (a global service's, made for that node) are only checked
    /// against it, and go first so that global services get their resources before replicated
    /// ones. The rest are batched per service and placement. The outcome does not depend on the
    /// order of `pending`: batches run in service ID order and tasks within one in slot order.
    pub fn schedule(&mut self, pending: &[Task]) -> Vec<Decision> {
        let mut out: Vec<(usize, Decision)> = Vec::with_capacity(pending.len());
        let (mut preassigned, unassigned): (Vec<usize>, Vec<usize>) =
            (0..pending.len()).partition(|&i| !pending[i].node_id.is_empty());
        preassigned.sort_by(|&a, &b| pending[a].id.cmp(&pending[b].id));
        for i in preassigned {
            out.push((i, self.confirm(&pending[i])));
        }
        for batch in batches(pending, unassigned) {
            self.schedule_batch(pending, &batch, &mut out);
        }
        out.sort_by_key(|&(i, _)| i);
        out.into_iter().map(|(_, d)| d).collect()
    }

    /// Checks a task that names its node against that node only.
    fn confirm(&mut self, task: &Task) -> Decision {
        let Some(&n) = self.by_id.get(&task.node_id) else {
            let reason = format!(
                "no suitable node (node {} is not in the cluster)",
                task.node_id
            );
            return unplaceable(task, reason);
        };
        let pipeline = match Pipeline::for_task(task) {
            Ok(p) => p,
            Err(e) => return unplaceable(task, invalid(&e)),
        };
        match pipeline.check(&self.nodes[n]) {
            Ok(()) => {
                if self.nodes[n].add_task(task) {
                    let list = self.service_nodes.entry(task.service_id.clone());
                    list.or_default().push(n as u32);
                }
                assigned(task, &self.nodes[n])
            }
            Err(f) => {
                let mut failed = vec![0; pipeline.filters().len()];
                failed[f] = 1;
                unplaceable(task, pipeline.explain(&failed))
            }
        }
    }

    /// Places one batch (same service, same placement), `batch` being indices into `pending`.
    fn schedule_batch(
        &mut self,
        pending: &[Task],
        batch: &[usize],
        out: &mut Vec<(usize, Decision)>,
    ) {
        let first = &pending[batch[0]];
        let plan = Pipeline::for_task(first).and_then(|p| Ok((p, spread_keys(first)?)));
        let (pipeline, keys) = match plan {
            Ok(plan) => plan,
            Err(e) => {
                let reason = invalid(&e);
                out.extend(
                    batch
                        .iter()
                        .map(|&i| (i, unplaceable(&pending[i], reason.clone()))),
                );
                return;
            }
        };
        let service = first.service_id.as_str();
        // Static filters once per node and placement; refused nodes are charged to the first
        // filter that refused them.
        let pass = static_pass(&mut self.static_passes, &self.nodes, first, &pipeline);
        let mut failed = pass.failed.clone();
        failed.resize(pipeline.filters().len(), 0);
        let mut service_tasks = vec![0u32; self.nodes.len()];
        for &i in self.service_nodes.get(service).into_iter().flatten() {
            service_tasks[i as usize] = self.nodes[i as usize].service_tasks(service);
        }
        let mut penalties = vec![0u32; self.nodes.len()];
        for &i in self.failing_nodes.get(service).into_iter().flatten() {
            penalties[i as usize] = penalty(&self.nodes[i as usize], service);
        }
        let ranks: Vec<Option<Rank>> = (self.nodes.iter().enumerate())
            .map(|(i, n)| {
                let rank = (penalties[i], service_tasks[i], n.active_tasks(), i as u32);
                pass.refused_by[i].is_none().then_some(rank)
            })
            .collect();
        for key in &keys {
            if !self.spread_columns.contains_key(key) {
                let column = Column::new(&self.nodes, key);
                self.spread_columns.insert(key.clone(), column);
            }
        }
        let columns: Vec<&Column> = keys
            .iter()
            .filter_map(|k| self.spread_columns.get(k))
            .collect();
        let mut tree = Tree::build(&columns, &service_tasks, &ranks);

        let nodes = &mut self.nodes;
        let mut newly_running = Vec::new();
        for (pos, &i) in batch.iter().enumerate() {
            let task = &pending[i];
            let mut try_node = |n: usize| match pipeline.check_dynamic(&nodes[n]) {
                Ok(()) => {
                    if nodes[n].add_task(task) {
                        newly_running.push(n as u32);
                    }
                    true
                }
                Err(f) => {
                    failed[f] += 1;
                    false
                }
            };
            match tree.place(&mut try_node) {
                Some(n) => out.push((i, assigned(task, &nodes[n]))),
                None => {
                    // Every candidate has now been refused once and counted: the reason is
                    // complete, and the same for the rest of the batch.
                    let reason = pipeline.explain(&failed);
                    let rest = batch[pos..].iter();
                    out.extend(rest.map(|&j| (j, unplaceable(&pending[j], reason.clone()))));
                    break;
                }
            }
        }
        if !newly_running.is_empty() {
            let list = self.service_nodes.entry(service.to_string()).or_default();
            list.extend(newly_running);
        }
    }
}

/// The static filters' outcome on every node for `task`'s constraints and platforms,
/// computed once per distinct placement.
fn static_pass<'c>(
    cache: &'c mut HashMap<String, StaticPass>,
    nodes: &[NodeInfo],
    task: &Task,
    pipeline: &Pipeline,
) -> &'c StaticPass {
    let placement = task.spec.as_ref().and_then(|s| s.placement.as_ref());
    // Debug quotes and escapes every string, so distinct lists cannot make the same key.
    let key = placement.map_or_else(String::new, |p| {
        format!("{:?} {:?}", p.constraints, p.platforms)
    });
    cache.entry(key).or_insert_with(|| {
        let mut failed = vec![0; pipeline.filters().len()];
        let refused_by = (nodes.iter())
            .map(|n| {
                let refused = pipeline.check_static(n).err();
                if let Some(f) = refused {
                    failed[f] += 1;
                }
                refused
            })
            .collect();
        StaticPass { refused_by, failed }
    })
}

/// Groups unassigned tasks by service and placement (the fields the scheduler reads), ordered
/// by service ID and then by slot and task ID, so the outcome does not depend on input order.
fn batches(pending: &[Task], unassigned: Vec<usize>) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut by_service: HashMap<&str, Vec<usize>> = HashMap::new();
    for i in unassigned {
        let task = &pending[i];
        let same_placement =
            |j: &usize| scheduled_parts(task) == scheduled_parts(&pending[batches[*j][0]]);
        let candidates = by_service.entry(task.service_id.as_str()).or_default();
        match candidates.iter().find(|j| same_placement(j)) {
            Some(&j) => batches[j].push(i),
            None => {
                candidates.push(batches.len());
                batches.push(vec![i]);
            }
        }
    }
    let order = |i: &usize| (pending[*i].slot, pending[*i].id.as_str());
    for batch in &mut batches {
        batch.sort_by(|a, b| order(a).cmp(&order(b)));
    }
    batches.sort_by(|a, b| {
        let (x, y) = (&pending[a[0]], &pending[b[0]]);
        (x.service_id.as_str(), order(&a[0])).cmp(&(y.service_id.as_str(), order(&b[0])))
    });
    batches
}

/// The parts of a task's spec the scheduler reads: equal parts, equal decisions.
fn scheduled_parts(task: &Task) -> (Option<&Placement>, Option<&ResourceRequirements>) {
    let spec = task.spec.as_ref();
    (
        spec.and_then(|s| s.placement.as_ref()),
        spec.and_then(|s| s.resources.as_ref()),
    )
}

/// The ranking penalty of a node for a service: its recent failures once they reach the limit.
fn penalty(node: &NodeInfo, service_id: &str) -> u32 {
    let failures = node.recent_failures(service_id);
    if failures >= MAX_RECENT_FAILURES {
        failures
    } else {
        0
    }
}

/// Whether a failed task's last status is within the failure window before `now`.
fn failed_recently(task: &Task, now: &Timestamp) -> bool {
    let at = task.status.as_ref().and_then(|s| s.timestamp.as_ref());
    at.is_some_and(|t| (0..=FAILURE_WINDOW_SECS).contains(&(now.seconds - t.seconds)))
}

fn assigned(task: &Task, node: &NodeInfo) -> Decision {
    Decision::Assigned {
        task_id: task.id.clone(),
        node_id: node.node.id.clone(),
    }
}

fn unplaceable(task: &Task, reason: String) -> Decision {
    Decision::Unplaceable {
        task_id: task.id.clone(),
        reason,
    }
}

/// The reason for a task whose placement cannot be parsed (it bypassed create's validation).
fn invalid(e: &PlacementError) -> String {
    format!("invalid placement: {e}")
}
