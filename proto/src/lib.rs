//! shoal-proto: Shoal's one domain model and every gRPC service, generated from `proto/`.
//!
//! The .proto files are the contract between the CLI, managers and workers: Cluster, Node,
//! Service, Task, Network, Secret and Config, each with `id`, `meta`, `spec` and `status`, as in
//! SwarmKit. This crate adds only small helpers that belong to the model itself (IDs, time
//! conversions, task-state order, enum names for JSON). It must not depend on any other Shoal
//! crate, nor on anything that touches the kernel or the network beyond tonic's generated code.

#![forbid(unsafe_code)]

pub mod ids;
pub mod serde_enum;
pub mod time;

/// Generated code of package `shoal.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("shoal.v1");
}

pub use v1::*;

/// Version of the gRPC API; bumped when a change breaks older clients.
pub const API_VERSION: u32 = 1;

/// gRPC metadata key carrying the Raft leader's cluster address when a manager that does not
/// lead refuses a call only the leader serves (worker sessions): callers follow it.
pub const LEADER_ADDR_METADATA: &str = "shoal-leader-addr";

/// Ulimits by Docker's names: what the API accepts and what the engine maps to RLIMIT_*.
pub const ULIMIT_NAMES: [&str; 16] = [
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

impl TaskState {
    /// A task in one of these states has stopped for good and will never run again.
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }

    /// The word Docker prints in `service ps` (e.g. "Running", "Pending").
    pub fn display_name(self) -> &'static str {
        match self {
            TaskState::New => "New",
            TaskState::Pending => "Pending",
            TaskState::Assigned => "Assigned",
            TaskState::Accepted => "Accepted",
            TaskState::Preparing => "Preparing",
            TaskState::Ready => "Ready",
            TaskState::Starting => "Starting",
            TaskState::Running => "Running",
            TaskState::Complete => "Complete",
            TaskState::Shutdown => "Shutdown",
            TaskState::Failed => "Failed",
            TaskState::Rejected => "Rejected",
            TaskState::Remove => "Remove",
            TaskState::Orphaned => "Orphaned",
        }
    }
}

impl StoreObject {
    /// The kind of the object inside, for routing to its table.
    pub fn kind(&self) -> ObjectKind {
        use store_object::Object;
        match &self.object {
            Some(Object::Cluster(_)) => ObjectKind::Cluster,
            Some(Object::Node(_)) => ObjectKind::Node,
            Some(Object::Service(_)) => ObjectKind::Service,
            Some(Object::Task(_)) => ObjectKind::Task,
            Some(Object::Network(_)) => ObjectKind::Network,
            Some(Object::Secret(_)) => ObjectKind::Secret,
            Some(Object::Config(_)) => ObjectKind::Config,
            None => ObjectKind::Unspecified,
        }
    }

    /// The stored object's ID ("" for an empty wrapper).
    pub fn id(&self) -> &str {
        use store_object::Object;
        match &self.object {
            Some(Object::Cluster(o)) => &o.id,
            Some(Object::Node(o)) => &o.id,
            Some(Object::Service(o)) => &o.id,
            Some(Object::Task(o)) => &o.id,
            Some(Object::Network(o)) => &o.id,
            Some(Object::Secret(o)) => &o.id,
            Some(Object::Config(o)) => &o.id,
            None => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_states_order_as_the_lifecycle() {
        assert!(TaskState::New < TaskState::Pending);
        assert!(TaskState::Assigned < TaskState::Running);
        assert!(!TaskState::Running.is_terminal());
        assert!(TaskState::Complete.is_terminal());
        assert!(TaskState::Orphaned.is_terminal());
    }

    #[test]
    fn enums_serialize_as_short_names_and_round_trip() {
        let task = Task {
            id: "t1".into(),
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: TaskState::Pending as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = serde_json::to_value(&task).unwrap();
        assert_eq!(json["desired_state"], "running");
        assert_eq!(json["status"]["state"], "pending");
        let back: Task = serde_json::from_value(json).unwrap();
        assert_eq!(back, task);
    }

    #[test]
    fn oneof_mode_serializes_by_name() {
        let spec = ServiceSpec {
            mode: Some(service_spec::Mode::Replicated(ReplicatedService {
                replicas: 3,
            })),
            ..Default::default()
        };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["mode"]["replicated"]["replicas"], 3);
    }

    #[test]
    fn store_object_reports_kind_and_id() {
        let o = StoreObject {
            object: Some(store_object::Object::Service(Service {
                id: "s1".into(),
                ..Default::default()
            })),
        };
        assert_eq!(o.kind(), ObjectKind::Service);
        assert_eq!(o.id(), "s1");
    }
}
