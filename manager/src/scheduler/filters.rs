//! The filters a node must pass to take a task, each able to say why it refused.
//!
//! A filter is built once per batch of identical tasks (so constraints are parsed once, not per
//! node) and then asked about nodes. Static filters look only at the node (state, availability,
//! labels, platform) and are asked once per node per batch; dynamic ones depend on what is already
//! placed there (reservations, max replicas per node) and are asked again whenever the node comes
//! up as the best choice, since the batch itself fills nodes up. Each filter phrases its own
//! failure with the count of nodes it refused, and `explain` assembles those phrases into the
//! task's "why pending" message.

use shoal_proto::{Node, NodeAvailability, Task, node_status};
use thiserror::Error;

use super::constraint::{Constraint, ConstraintError, SpreadError, normalize_arch};
use super::explain::{self, human_bytes, human_cpus, nodes, verb};
use super::node_info::{Amounts, NodeInfo};

/// Decides whether one node can take the task the filter was built for.
pub trait Filter: Send + Sync {
    /// True if the node passes.
    fn check(&self, node: &NodeInfo) -> bool;
    /// Why `failed` nodes did not pass, e.g. "2 nodes lack 4GiB of unreserved memory".
    fn explain(&self, failed: usize) -> String;
    /// True if the answer can change as tasks are placed on the node during a batch.
    fn dynamic(&self) -> bool {
        false
    }
}

/// Only nodes whose status is READY take tasks.
pub struct ReadyFilter;

impl Filter for ReadyFilter {
    fn check(&self, node: &NodeInfo) -> bool {
        node.node.status.as_ref().map(|s| s.state()) == Some(node_status::State::Ready)
    }
    fn explain(&self, failed: usize) -> String {
        format!("{} {} not ready", nodes(failed), verb(failed, "is", "are"))
    }
}

/// Paused and drained nodes get no new tasks.
pub struct ActiveFilter;

impl Filter for ActiveFilter {
    fn check(&self, node: &NodeInfo) -> bool {
        let availability = node.node.spec.as_ref().map(|s| s.availability());
        // A node without a spec has never been paused or drained: the default is active.
        availability.unwrap_or(NodeAvailability::Active) == NodeAvailability::Active
    }
    fn explain(&self, failed: usize) -> String {
        format!(
            "{} {} paused or drained",
            nodes(failed),
            verb(failed, "is", "are")
        )
    }
}

/// The node's platform must be one the task lists (an empty part matches anything).
pub struct PlatformFilter {
    /// (os, normalized arch) pairs as lowercase strings.
    platforms: Vec<(String, String)>,
}

impl PlatformFilter {
    fn for_task(task: &Task) -> Option<PlatformFilter> {
        let listed = &task.spec.as_ref()?.placement.as_ref()?.platforms;
        let platforms: Vec<(String, String)> = listed
            .iter()
            .map(|p| {
                (
                    p.os.trim().to_ascii_lowercase(),
                    normalize_arch(&p.architecture),
                )
            })
            .collect();
        (!platforms.is_empty()).then_some(PlatformFilter { platforms })
    }
}

impl Filter for PlatformFilter {
    fn check(&self, node: &NodeInfo) -> bool {
        let platform = node
            .node
            .description
            .as_ref()
            .and_then(|d| d.platform.as_ref());
        let (os, arch) = platform.map_or((String::new(), String::new()), |p| {
            (p.os.to_ascii_lowercase(), normalize_arch(&p.architecture))
        });
        self.platforms
            .iter()
            .any(|(o, a)| (o.is_empty() || *o == os) && (a.is_empty() || *a == arch))
    }
    fn explain(&self, failed: usize) -> String {
        let names: Vec<String> = self
            .platforms
            .iter()
            .map(|(o, a)| match (o.is_empty(), a.is_empty()) {
                (false, false) => format!("{o}/{a}"),
                (true, _) => a.clone(),
                (false, true) => o.clone(),
            })
            .collect();
        format!(
            "{} {} not {}",
            nodes(failed),
            verb(failed, "is", "are"),
            names.join(" or ")
        )
    }
}

/// One `--constraint` expression; one filter per expression so the message names the one that
/// failed.
pub struct ConstraintFilter {
    pub constraint: Constraint,
}

impl Filter for ConstraintFilter {
    fn check(&self, node: &NodeInfo) -> bool {
        self.constraint.matches(&node.node)
    }
    fn explain(&self, failed: usize) -> String {
        format!(
            "{} {} constraint {}",
            nodes(failed),
            verb(failed, "fails", "fail"),
            self.constraint
        )
    }
}

/// `--replicas-max-per-node`: at most `max` active tasks of the service on one node.
pub struct MaxReplicasFilter {
    service_id: String,
    max: u64,
}

impl Filter for MaxReplicasFilter {
    fn check(&self, node: &NodeInfo) -> bool {
        u64::from(node.service_tasks(&self.service_id)) < self.max
    }
    fn explain(&self, failed: usize) -> String {
        format!(
            "{} {} max replicas per node ({})",
            nodes(failed),
            verb(failed, "has reached", "have reached"),
            self.max
        )
    }
    fn dynamic(&self) -> bool {
        true
    }
}

/// `--reserve-memory` against what the node has left unreserved.
pub struct MemoryFilter {
    bytes: i64,
}

impl Filter for MemoryFilter {
    fn check(&self, node: &NodeInfo) -> bool {
        node.available().memory_bytes >= self.bytes
    }
    fn explain(&self, failed: usize) -> String {
        format!(
            "{} {} {} of unreserved memory",
            nodes(failed),
            verb(failed, "lacks", "lack"),
            human_bytes(self.bytes)
        )
    }
    fn dynamic(&self) -> bool {
        true
    }
}

/// `--reserve-cpu` against what the node has left unreserved.
pub struct CpuFilter {
    nano_cpus: i64,
}

impl Filter for CpuFilter {
    fn check(&self, node: &NodeInfo) -> bool {
        node.available().nano_cpus >= self.nano_cpus
    }
    fn explain(&self, failed: usize) -> String {
        format!(
            "{} {} {}",
            nodes(failed),
            verb(failed, "lacks", "lack"),
            human_cpus(self.nano_cpus, "unreserved")
        )
    }
    fn dynamic(&self) -> bool {
        true
    }
}

/// A task spec whose placement cannot be understood (it bypassed validation at create).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlacementError {
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
    #[error(transparent)]
    Spread(#[from] SpreadError),
}

/// The filters one task must pass, static ones first, in the order failures are attributed.
pub struct Pipeline {
    filters: Vec<Box<dyn Filter>>,
    /// Index of the first dynamic filter.
    first_dynamic: usize,
}

impl Pipeline {
    /// The filters that apply to `task`; those it does not need (no reservation, no constraint)
    /// are left out so each node is asked only what matters.
    pub fn for_task(task: &Task) -> Result<Pipeline, PlacementError> {
        let mut filters: Vec<Box<dyn Filter>> = vec![Box::new(ReadyFilter), Box::new(ActiveFilter)];
        if let Some(f) = PlatformFilter::for_task(task) {
            filters.push(Box::new(f));
        }
        let placement = task.spec.as_ref().and_then(|s| s.placement.as_ref());
        for expr in placement.map_or(&[][..], |p| &p.constraints[..]) {
            let constraint = Constraint::parse(expr)?;
            filters.push(Box::new(ConstraintFilter { constraint }));
        }
        let first_dynamic = filters.len();
        let max = placement.map_or(0, |p| p.max_replicas);
        if max > 0 {
            let service_id = task.service_id.clone();
            filters.push(Box::new(MaxReplicasFilter { service_id, max }));
        }
        let Amounts {
            nano_cpus,
            memory_bytes,
        } = Amounts::reserved_by(task);
        if memory_bytes > 0 {
            filters.push(Box::new(MemoryFilter {
                bytes: memory_bytes,
            }));
        }
        if nano_cpus > 0 {
            filters.push(Box::new(CpuFilter { nano_cpus }));
        }
        Ok(Pipeline {
            filters,
            first_dynamic,
        })
    }

    pub fn filters(&self) -> &[Box<dyn Filter>] {
        &self.filters
    }

    /// Every filter; `Err(i)` names the first that refused the node.
    pub fn check(&self, node: &NodeInfo) -> Result<(), usize> {
        self.check_range(node, 0..self.filters.len())
    }

    /// Only the filters whose answer cannot change during a batch.
    pub(crate) fn check_static(&self, node: &NodeInfo) -> Result<(), usize> {
        self.check_range(node, 0..self.first_dynamic)
    }

    /// Only the filters that depend on what is already placed on the node.
    pub(crate) fn check_dynamic(&self, node: &NodeInfo) -> Result<(), usize> {
        self.check_range(node, self.first_dynamic..self.filters.len())
    }

    fn check_range(&self, node: &NodeInfo, range: std::ops::Range<usize>) -> Result<(), usize> {
        match range.into_iter().find(|&i| !self.filters[i].check(node)) {
            Some(i) => Err(i),
            None => Ok(()),
        }
    }

    /// The "no suitable node (...)" message from failure counts indexed like the filters.
    pub fn explain(&self, failed: &[usize]) -> String {
        let parts = failed
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(i, &n)| (n, i, self.filters[i].explain(n)))
            .collect();
        explain::no_suitable_node(parts)
    }
}

/// Whether `node` satisfies the task's platforms and constraints, whatever its state,
/// availability and load: the test a task already placed must keep passing (the constraint
/// enforcer's), and the one deciding which nodes a global service belongs on.
pub fn satisfies_placement(task: &Task, node: &Node) -> Result<bool, PlacementError> {
    let info = NodeInfo::new(node.clone());
    if PlatformFilter::for_task(task).is_some_and(|f| !f.check(&info)) {
        return Ok(false);
    }
    let placement = task.spec.as_ref().and_then(|s| s.placement.as_ref());
    for expr in placement.map_or(&[][..], |p| &p.constraints[..]) {
        if !Constraint::parse(expr)?.matches(node) {
            return Ok(false);
        }
    }
    Ok(true)
}
