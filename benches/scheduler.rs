//! Scheduler benchmark (issue 6, point 11): places 10,000 tasks — 10 services x 1,000 replicas,
//! some with constraints, reservations, spread preferences and max replicas per node — on 1,000
//! synthetic nodes, and prints the median of several runs. The target is well under 1 s.
//!
//! Run with `cargo bench --bench scheduler` (release profile). Each run builds a fresh
//! `Scheduler` from the snapshot, as the scheduler controller does on each pass, so the figure
//! includes building the per-node view. A second figure schedules the same 10,000 tasks again
//! on top of the first 10,000, so the snapshot the scheduler starts from is loaded, and a third
//! the worst case for batching: 10,000 services of one replica each.

use std::time::{Duration, Instant};

use shoal_manager::scheduler::{Decision, Scheduler};
use shoal_proto::{
    Annotations, Node, NodeAvailability, NodeDescription, NodeRole, NodeSpec, NodeStatus,
    Placement, PlacementPreference, Platform, ResourceRequirements, Resources, Task, TaskSpec,
    TaskState, TaskStatus, node_status,
};

const NODES: usize = 1_000;
const SERVICES: usize = 10;
const REPLICAS: usize = 1_000;
const RUNS: usize = 9;
const GIB: i64 = 1 << 30;
const CPU: i64 = 1_000_000_000;

fn main() {
    let nodes = synthetic_nodes();
    let pending = synthetic_tasks("");
    let first = measure(|| Scheduler::new(&nodes, &[]).schedule(&pending));
    let placed = assigned(&pending, &Scheduler::new(&nodes, &[]).schedule(&pending));
    // The second wave starts from a cluster already running the first one.
    let second_wave = synthetic_tasks("b-");
    let loaded = measure(|| Scheduler::new(&nodes, &placed).schedule(&second_wave));
    // Worst case for batching: every task its own service, so every batch visits every node.
    let singles: Vec<Task> = (pending.iter().enumerate())
        .map(|(i, t)| Task {
            service_id: format!("single-{i}"),
            slot: 1,
            ..t.clone()
        })
        .collect();
    let single = measure(|| Scheduler::new(&nodes, &[]).schedule(&singles));
    println!(
        "scheduler: {} tasks ({SERVICES} services x {REPLICAS} replicas) on {NODES} nodes: \
         median {} (min {}, max {}) over {RUNS} runs; {} placed, {} unplaceable",
        pending.len(),
        ms(first.median),
        ms(first.min),
        ms(first.max),
        first.placed,
        pending.len() - first.placed,
    );
    println!(
        "scheduler: the same again on a cluster already running them: median {} \
         (min {}, max {}); {} placed, {} unplaceable",
        ms(loaded.median),
        ms(loaded.min),
        ms(loaded.max),
        loaded.placed,
        second_wave.len() - loaded.placed,
    );
    println!(
        "scheduler: {} one-replica services (no batching possible): median {} (min {}, max {}); \
         {} placed, {} unplaceable",
        singles.len(),
        ms(single.median),
        ms(single.min),
        ms(single.max),
        single.placed,
        singles.len() - single.placed,
    );
}

struct Figures {
    median: Duration,
    min: Duration,
    max: Duration,
    placed: usize,
}

/// Runs `f` once to warm up, then `RUNS` times, timing each.
fn measure(mut f: impl FnMut() -> Vec<Decision>) -> Figures {
    let placed = count_placed(&f());
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let decisions = f();
            let took = start.elapsed();
            assert_eq!(count_placed(&decisions), placed, "runs must agree");
            took
        })
        .collect();
    times.sort();
    Figures {
        median: times[RUNS / 2],
        min: times[0],
        max: times[RUNS - 1],
        placed,
    }
}

fn count_placed(decisions: &[Decision]) -> usize {
    (decisions.iter())
        .filter(|d| matches!(d, Decision::Assigned { .. }))
        .count()
}

/// The pending tasks as they would be once assigned and running.
fn assigned(pending: &[Task], decisions: &[Decision]) -> Vec<Task> {
    (pending.iter().zip(decisions))
        .filter_map(|(t, d)| match d {
            Decision::Assigned { node_id, .. } => {
                let mut t = t.clone();
                t.node_id = node_id.clone();
                t.status.as_mut()?.state = TaskState::Running as i32;
                Some(t)
            }
            Decision::Unplaceable { .. } => None,
        })
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// 1,000 nodes in 10 zones and 4 racks each; every 4th has an SSD; 3 managers; 1% drained and
/// 1% down; 8 CPUs and 32GiB each.
fn synthetic_nodes() -> Vec<Node> {
    (0..NODES)
        .map(|i| {
            let mut labels = vec![
                ("zone".to_string(), format!("z{}", i % 10)),
                ("rack".to_string(), format!("r{}", (i / 10) % 4)),
            ];
            if i % 4 == 0 {
                labels.push(("disk".to_string(), "ssd".to_string()));
            }
            let availability = if i % 100 == 7 {
                NodeAvailability::Drain
            } else {
                NodeAvailability::Active
            };
            let state = if i % 100 == 42 {
                node_status::State::Down
            } else {
                node_status::State::Ready
            };
            Node {
                id: format!("node{i:04}-{:x}", i * 7919),
                role: if i < 3 {
                    NodeRole::Manager
                } else {
                    NodeRole::Worker
                } as i32,
                spec: Some(NodeSpec {
                    annotations: Some(Annotations {
                        name: String::new(),
                        labels: labels.into_iter().collect(),
                    }),
                    availability: availability as i32,
                    ..Default::default()
                }),
                description: Some(NodeDescription {
                    hostname: format!("host{i}"),
                    platform: Some(Platform {
                        os: "linux".into(),
                        architecture: "amd64".into(),
                    }),
                    resources: Some(Resources {
                        nano_cpus: 8 * CPU,
                        memory_bytes: 32 * GIB,
                        pids: 0,
                    }),
                    engine: None,
                }),
                status: Some(NodeStatus {
                    state: state as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect()
}

/// 10 services of 1,000 pending replicas each, with a mix of placement rules.
fn synthetic_tasks(prefix: &str) -> Vec<Task> {
    let mut tasks = Vec::with_capacity(SERVICES * REPLICAS);
    for s in 0..SERVICES {
        let mut placement = Placement::default();
        let mut reservations = None;
        let spread = |keys: &[&str]| {
            keys.iter()
                .map(|k| PlacementPreference {
                    spread: k.to_string(),
                })
                .collect()
        };
        match s {
            1 => placement.constraints = vec!["node.labels.disk==ssd".into()],
            2 => reservations = Some((CPU / 4, GIB / 2)),
            3 => placement.preferences = spread(&["node.labels.zone"]),
            4 => {
                placement.preferences = spread(&["node.labels.zone"]);
                reservations = Some((CPU, GIB));
            }
            5 => {
                placement.constraints = vec!["node.role!=manager".into()];
                placement.max_replicas = 2;
            }
            6 => {
                placement.constraints = vec!["node.labels.zone!=z0".into()];
                placement.platforms = vec![Platform {
                    os: "linux".into(),
                    architecture: "amd64".into(),
                }];
            }
            8 => reservations = Some((0, 2 * GIB)),
            9 => placement.preferences = spread(&["node.labels.zone", "node.labels.rack"]),
            _ => {}
        }
        let spec = TaskSpec {
            placement: Some(placement),
            resources: reservations.map(|(nano_cpus, memory_bytes)| ResourceRequirements {
                limits: None,
                reservations: Some(Resources {
                    nano_cpus,
                    memory_bytes,
                    pids: 0,
                }),
            }),
            ..Default::default()
        };
        for slot in 1..=REPLICAS as u64 {
            tasks.push(Task {
                id: format!("{prefix}task-{s}-{slot}"),
                service_id: format!("{prefix}service-{s}"),
                slot,
                spec: Some(spec.clone()),
                status: Some(TaskStatus {
                    state: TaskState::Pending as i32,
                    ..Default::default()
                }),
                desired_state: TaskState::Running as i32,
                spec_version: 1,
                ..Default::default()
            });
        }
    }
    tasks
}
