//! Helpers for the controllers' tests: an in-memory Store with services and nodes, controllers
//! run in the background on paused time, and wait-until loops instead of timed assertions.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_proto::{
    Annotations, ContainerSpec, GlobalService, Node, NodeAvailability, NodeDescription, NodeSpec,
    NodeStatus, Platform, ReplicatedService, Resources, RestartPolicy, Service, ServiceSpec, Task,
    TaskSpec, TaskState, TaskStatus, node_status, service_spec,
};
use shoal_raft::{By, Store, StoreError};
use tokio_util::sync::CancellationToken;

use super::fills_slot;
use crate::clock::Clock;
use crate::leader::Controller;

/// The wall-clock time tests start at.
pub fn start_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// A virtual clock starting at [`start_time`] (with paused tokio time).
pub fn clock() -> Clock {
    Clock::starting_at(start_time())
}

/// A controller running in the background; cancelled (and awaited) when dropped.
pub struct Running {
    cancel: CancellationToken,
    handle: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

pub fn spawn(c: impl Controller) -> Running {
    let c: Arc<dyn Controller> = Arc::new(c);
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(c.run(cancel.clone()));
    Running {
        cancel,
        handle: Some(handle),
    }
}

/// Waits (on virtual time) until `cond` holds; panics after a generous virtual minute.
pub async fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 60 s of virtual time");
}

/// Lets the controllers run until idle for a while (virtual time).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

pub fn replicated(n: u64) -> service_spec::Mode {
    service_spec::Mode::Replicated(ReplicatedService { replicas: n })
}

pub fn global() -> service_spec::Mode {
    service_spec::Mode::Global(GlobalService::default())
}

pub fn spec(name: &str, mode: service_spec::Mode) -> ServiceSpec {
    ServiceSpec {
        annotations: Some(Annotations {
            name: name.to_string(),
            ..Default::default()
        }),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "busybox".to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(mode),
        ..Default::default()
    }
}

pub async fn create_service(store: &Store, name: &str, mode: service_spec::Mode) -> String {
    create_service_spec(store, spec(name, mode)).await
}

pub async fn create_service_spec(store: &Store, spec: ServiceSpec) -> String {
    let id = shoal_proto::ids::new_id();
    let service = Service {
        id: id.clone(),
        spec: Some(spec),
        ..Default::default()
    };
    store.update(|tx| tx.create(service)).await.unwrap();
    id
}

/// A spec whose tasks restart under `policy`.
pub fn with_restart(mut spec: ServiceSpec, policy: RestartPolicy) -> ServiceSpec {
    spec.task.as_mut().unwrap().restart = Some(policy);
    spec
}

pub async fn update_service(store: &Store, id: &str, f: impl Fn(&mut ServiceSpec)) {
    store
        .update(|tx| {
            let mut s = tx.get::<Service>(id).unwrap();
            f(s.spec.as_mut().unwrap());
            tx.update(s)
        })
        .await
        .unwrap();
}

pub async fn set_replicas(store: &Store, id: &str, n: u64) {
    update_service(store, id, |s| s.mode = Some(replicated(n))).await;
}

/// Tasks filling a slot, by slot (then node).
pub fn live_tasks(store: &Store, service_id: &str) -> Vec<Task> {
    let mut tasks: Vec<Task> = store
        .find::<Task>(By::ServiceId(service_id))
        .into_iter()
        .filter(fills_slot)
        .collect();
    tasks.sort_by(|a, b| (a.slot, &a.node_id).cmp(&(b.slot, &b.node_id)));
    tasks
}

pub fn live_slots(store: &Store, service_id: &str) -> Vec<u64> {
    live_tasks(store, service_id)
        .iter()
        .map(|t| t.slot)
        .collect()
}

/// A READY, ACTIVE linux/amd64 node with 4 CPUs and 8 GiB.
pub fn node(hostname: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        id: shoal_proto::ids::new_id(),
        spec: Some(NodeSpec {
            annotations: Some(Annotations {
                name: String::new(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<_, _>>(),
            }),
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: hostname.to_string(),
            platform: Some(Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
            }),
            resources: Some(Resources {
                nano_cpus: 4_000_000_000,
                memory_bytes: 8 << 30,
                pids: 0,
            }),
            engine: None,
        }),
        status: Some(NodeStatus {
            state: node_status::State::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn add_node(store: &Store, hostname: &str, labels: &[(&str, &str)]) -> String {
    let n = node(hostname, labels);
    let id = n.id.clone();
    store.update(|tx| tx.create(n)).await.unwrap();
    id
}

pub async fn update_node(store: &Store, id: &str, f: impl Fn(&mut Node)) {
    store
        .update(|tx| {
            let mut n = tx.get::<Node>(id).unwrap();
            f(&mut n);
            tx.update(n)
        })
        .await
        .unwrap();
}

pub async fn set_node_state(store: &Store, id: &str, state: node_status::State) {
    update_node(store, id, |n| {
        n.status.get_or_insert_with(Default::default).state = state as i32
    })
    .await;
}

pub async fn set_availability(store: &Store, id: &str, a: NodeAvailability) {
    update_node(store, id, |n| {
        n.spec.get_or_insert_with(Default::default).availability = a as i32
    })
    .await;
}

/// Reports a task's state as a worker would (through the dispatcher), stamped `clock.now()`.
pub async fn report(store: &Store, task_id: &str, state: TaskState, exit_code: i32, clock: &Clock) {
    let ts = clock.now();
    let r: Result<_, StoreError> = store
        .update(|tx| {
            let mut t = tx.get::<Task>(task_id).unwrap();
            let status = t.status.get_or_insert_with(TaskStatus::default);
            status.state = state as i32;
            status.timestamp = Some(ts);
            status.message = format!("{state:?}");
            status
                .container
                .get_or_insert_with(Default::default)
                .exit_code = exit_code;
            tx.update(t)
        })
        .await;
    r.unwrap();
}
