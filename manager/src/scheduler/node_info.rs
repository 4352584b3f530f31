//! The scheduler's view of one node: the node itself plus what its tasks already take.
//!
//! Two different tallies, as in SwarmKit: reservations count every non-terminal task, because a
//! task on its way out still holds its CPU and memory until it stops; task counts (used for
//! spreading and max replicas per node) count only tasks whose desired state is at most RUNNING,
//! so tasks being shut down (drain, scale down, rolling update) do not push replacements away.

use std::collections::HashMap;

use shoal_proto::{Node, Task, TaskState};

/// CPU and memory amounts (the part of `Resources` the scheduler reasons about).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    /// CPUs in units of 1e-9.
    pub nano_cpus: i64,
    pub memory_bytes: i64,
}

impl Amounts {
    /// What a task reserves (zero when it reserves nothing).
    pub fn reserved_by(task: &Task) -> Amounts {
        let r = task
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.reservations.as_ref());
        r.map_or_else(Amounts::default, |r| Amounts {
            nano_cpus: r.nano_cpus.max(0),
            memory_bytes: r.memory_bytes.max(0),
        })
    }
}

/// One node and the load already placed on it, updated as the scheduler assigns tasks.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Node,
    /// Active tasks (desired state <= RUNNING) per service ID.
    service_tasks: HashMap<String, u32>,
    active_tasks: u32,
    capacity: Amounts,
    reserved: Amounts,
    /// Failed or rejected tasks per service within the recent-failure window.
    recent_failures: HashMap<String, u32>,
}

impl NodeInfo {
    /// A node with nothing on it yet; add its tasks with [`NodeInfo::add_task`].
    pub fn new(node: Node) -> NodeInfo {
        let capacity = node
            .description
            .as_ref()
            .and_then(|d| d.resources.as_ref())
            .map_or_else(Amounts::default, |r| Amounts {
                nano_cpus: r.nano_cpus,
                memory_bytes: r.memory_bytes,
            });
        NodeInfo {
            node,
            service_tasks: HashMap::new(),
            active_tasks: 0,
            capacity,
            reserved: Amounts::default(),
            recent_failures: HashMap::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.node.id
    }

    /// Records a task placed on this node. Terminal tasks take nothing and are ignored. Returns
    /// true if this is the first active task of its service here (so the scheduler can index
    /// which nodes run which services).
    pub fn add_task(&mut self, task: &Task) -> bool {
        if task_state(task).is_terminal() {
            return false;
        }
        let r = Amounts::reserved_by(task);
        self.reserved.nano_cpus = self.reserved.nano_cpus.saturating_add(r.nano_cpus);
        self.reserved.memory_bytes = self.reserved.memory_bytes.saturating_add(r.memory_bytes);
        if !is_active(task) {
            return false;
        }
        self.active_tasks += 1;
        // Look up before inserting: cloning the ID on every call would cost an allocation.
        match self.service_tasks.get_mut(&task.service_id) {
            Some(n) => {
                *n += 1;
                *n == 1
            }
            None => {
                self.service_tasks.insert(task.service_id.clone(), 1);
                true
            }
        }
    }

    /// Active tasks of `service_id` on this node.
    pub fn service_tasks(&self, service_id: &str) -> u32 {
        self.service_tasks.get(service_id).copied().unwrap_or(0)
    }

    /// Active tasks of every service on this node.
    pub fn active_tasks(&self) -> u32 {
        self.active_tasks
    }

    /// What the node reported it has in total.
    pub fn capacity(&self) -> Amounts {
        self.capacity
    }

    /// What its non-terminal tasks reserve.
    pub fn reserved(&self) -> Amounts {
        self.reserved
    }

    /// Capacity minus reservations (negative if the node shrank under its tasks).
    pub fn available(&self) -> Amounts {
        Amounts {
            nano_cpus: self.capacity.nano_cpus - self.reserved.nano_cpus,
            memory_bytes: self.capacity.memory_bytes - self.reserved.memory_bytes,
        }
    }

    /// Recent failures of `service_id`'s tasks here (zero unless the scheduler has a clock).
    pub fn recent_failures(&self, service_id: &str) -> u32 {
        self.recent_failures.get(service_id).copied().unwrap_or(0)
    }

    /// Counts a recent failure; true if it is the service's first here.
    pub(crate) fn note_failure(&mut self, service_id: &str) -> bool {
        let n = self
            .recent_failures
            .entry(service_id.to_string())
            .or_default();
        *n += 1;
        *n == 1
    }
}

/// The task's observed state (NEW when unset or unknown).
pub(crate) fn task_state(task: &Task) -> TaskState {
    task.status.as_ref().map_or(TaskState::New, |s| s.state())
}

/// Whether the task is meant to keep running, and so counts toward spread and max replicas.
pub(crate) fn is_active(task: &Task) -> bool {
    task.desired_state() <= TaskState::Running
}
