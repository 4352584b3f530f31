//! Scheduler behaviour over hand-built snapshots: one test per rule, asserting on decisions and
//! on the exact "why pending" text users will read.

use std::collections::HashMap;

use shoal_proto::{
    Annotations, Node, NodeAvailability, NodeDescription, NodeRole, NodeSpec, NodeStatus,
    Placement, PlacementPreference, Platform, ResourceRequirements, Resources, Task, TaskSpec,
    TaskState, TaskStatus, Timestamp, node_status,
};

use super::*;

const GIB: i64 = 1 << 30;
const CPU: i64 = 1_000_000_000;

fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        spec: Some(NodeSpec::default()),
        description: Some(NodeDescription {
            hostname: format!("host-{id}"),
            platform: Some(Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
            }),
            resources: Some(Resources {
                nano_cpus: 4 * CPU,
                memory_bytes: 8 * GIB,
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

fn labeled(id: &str, labels: &[(&str, &str)]) -> Node {
    let mut n = node(id);
    n.spec = Some(NodeSpec {
        annotations: Some(Annotations {
            name: String::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }),
        ..Default::default()
    });
    n
}

fn task(id: &str, service: &str, slot: u64) -> Task {
    Task {
        id: id.into(),
        service_id: service.into(),
        slot,
        spec: Some(TaskSpec::default()),
        status: Some(TaskStatus {
            state: TaskState::Pending as i32,
            ..Default::default()
        }),
        desired_state: TaskState::Running as i32,
        ..Default::default()
    }
}

/// `n` pending replicas of `service`, shaped by `edit`.
fn replicas(service: &str, n: u64, edit: impl Fn(&mut TaskSpec)) -> Vec<Task> {
    (1..=n)
        .map(|slot| {
            let mut t = task(&format!("{service}.{slot}"), service, slot);
            edit(t.spec.as_mut().unwrap());
            t
        })
        .collect()
}

/// A task already running on `node_id`.
fn running(id: &str, service: &str, node_id: &str) -> Task {
    let mut t = task(id, service, 0);
    t.node_id = node_id.into();
    t.status.as_mut().unwrap().state = TaskState::Running as i32;
    t
}

fn placement(spec: &mut TaskSpec) -> &mut Placement {
    spec.placement.get_or_insert_with(Placement::default)
}

fn reserve(memory: i64, cpus: i64) -> impl Fn(&mut TaskSpec) {
    move |s: &mut TaskSpec| {
        s.resources = Some(ResourceRequirements {
            limits: None,
            reservations: Some(Resources {
                nano_cpus: cpus,
                memory_bytes: memory,
                pids: 0,
            }),
        })
    }
}

fn constrain(exprs: &'static [&'static str]) -> impl Fn(&mut TaskSpec) {
    move |s: &mut TaskSpec| placement(s).constraints = exprs.iter().map(|e| e.to_string()).collect()
}

fn spread(keys: &'static [&'static str]) -> impl Fn(&mut TaskSpec) {
    move |s: &mut TaskSpec| {
        placement(s).preferences = keys
            .iter()
            .map(|k| PlacementPreference {
                spread: k.to_string(),
            })
            .collect()
    }
}

/// Node ID per assigned task; panics on an unplaceable one.
fn placed(decisions: &[Decision]) -> Vec<String> {
    decisions
        .iter()
        .map(|d| match d {
            Decision::Assigned { node_id, .. } => node_id.clone(),
            Decision::Unplaceable { task_id, reason } => panic!("{task_id} unplaced: {reason}"),
        })
        .collect()
}

/// Tasks per node.
fn spread_of(decisions: &[Decision]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for n in placed(decisions) {
        *counts.entry(n).or_default() += 1;
    }
    counts
}

fn reason(d: &Decision) -> &str {
    match d {
        Decision::Unplaceable { reason, .. } => reason,
        Decision::Assigned { task_id, node_id } => panic!("{task_id} was placed on {node_id}"),
    }
}

#[test]
fn spreads_evenly_by_service_count() {
    let nodes = [node("a"), node("b"), node("c")];
    let mut s = Scheduler::new(&nodes, &[]);
    let counts = spread_of(&s.schedule(&replicas("web", 9, |_| {})));
    assert_eq!(
        counts,
        HashMap::from([("a".into(), 3), ("b".into(), 3), ("c".into(), 3)])
    );
}

#[test]
fn ties_broken_by_total_tasks_then_node_id() {
    let nodes = [node("a"), node("b"), node("c")];
    // Node a runs two tasks of another service, node b one: a new service goes to c, then b.
    let existing = [
        running("x1", "other", "a"),
        running("x2", "other", "a"),
        running("x3", "other", "b"),
    ];
    let mut s = Scheduler::new(&nodes, &existing);
    assert_eq!(placed(&s.schedule(&replicas("web", 2, |_| {}))), ["c", "b"]);
    // Now a has 2, b 2, c 1 in total, and web has one on b and c: a comes first (no web task).
    assert_eq!(placed(&s.schedule(&replicas("web2", 1, |_| {}))), ["c"]);
    let mut s = Scheduler::new(&nodes, &[]);
    assert_eq!(
        placed(&s.schedule(&replicas("web", 3, |_| {}))),
        ["a", "b", "c"]
    );
}

#[test]
fn existing_tasks_of_the_service_count_first() {
    let nodes = [node("a"), node("b")];
    let existing = [
        running("w1", "web", "a"),
        running("w2", "web", "a"),
        // Finished and shutting-down tasks neither count nor (finished) reserve.
        {
            let mut t = running("w3", "web", "b");
            t.status.as_mut().unwrap().state = TaskState::Failed as i32;
            t
        },
        {
            let mut t = running("w4", "web", "b");
            t.desired_state = TaskState::Shutdown as i32;
            t
        },
    ];
    let mut s = Scheduler::new(&nodes, &existing);
    assert_eq!(s.node("b").unwrap().service_tasks("web"), 0);
    assert_eq!(
        placed(&s.schedule(&replicas("web", 3, |_| {}))),
        ["b", "b", "a"]
    );
}

#[test]
fn down_paused_and_drained_nodes_are_never_chosen() {
    let mut down = node("down");
    down.status.as_mut().unwrap().state = node_status::State::Down as i32;
    let mut paused = node("paused");
    paused.spec.as_mut().unwrap().availability = NodeAvailability::Pause as i32;
    let mut drained = node("drained");
    drained.spec.as_mut().unwrap().availability = NodeAvailability::Drain as i32;
    let nodes = [down.clone(), paused.clone(), drained.clone(), node("ok")];
    let mut s = Scheduler::new(&nodes, &[]);
    assert!(
        placed(&s.schedule(&replicas("web", 20, |_| {})))
            .iter()
            .all(|n| n == "ok")
    );

    let mut s = Scheduler::new(&[down, paused, drained], &[]);
    let d = s.schedule(&replicas("web", 1, |_| {}));
    assert_eq!(
        reason(&d[0]),
        "no suitable node (2 nodes are paused or drained; 1 node is not ready)"
    );
}

#[test]
fn constraint_filter_names_the_failing_expression() {
    let nodes = [
        labeled("a", &[("zone", "a")]),
        labeled("b", &[("zone", "b")]),
        labeled("c", &[]),
    ];
    let mut s = Scheduler::new(&nodes, &[]);
    let d = s.schedule(&replicas("web", 4, constrain(&["node.labels.zone==a"])));
    assert_eq!(placed(&d), ["a"; 4]);
    // Missing label + != matches, as in Swarm.
    let d = s.schedule(&replicas("api", 2, constrain(&["node.labels.zone!=a"])));
    assert_eq!(placed(&d), ["b", "c"]);
    let d = s.schedule(&replicas(
        "db",
        1,
        constrain(&[
            "node.role==worker",
            "node.hostname!=host-a",
            "node.labels.zone==z",
        ]),
    ));
    assert_eq!(
        reason(&d[0]),
        "no suitable node (2 nodes fail constraint node.labels.zone==z; \
         1 node fails constraint node.hostname!=host-a)"
    );
    let d = s.schedule(&replicas("mgr", 1, constrain(&["node.role==manager"])));
    assert_eq!(
        reason(&d[0]),
        "no suitable node (3 nodes fail constraint node.role==manager)"
    );
}

#[test]
fn platform_list_is_honoured_and_explained() {
    let mut arm = node("arm");
    arm.description
        .as_mut()
        .unwrap()
        .platform
        .as_mut()
        .unwrap()
        .architecture = "aarch64".into();
    let nodes = [node("x86"), arm];
    let only = |arch: &'static str| {
        move |s: &mut TaskSpec| {
            placement(s).platforms = vec![Platform {
                os: "linux".into(),
                architecture: arch.into(),
            }]
        }
    };
    let mut s = Scheduler::new(&nodes, &[]);
    assert_eq!(
        placed(&s.schedule(&replicas("a", 2, only("arm64")))),
        ["arm", "arm"]
    );
    assert_eq!(
        placed(&s.schedule(&replicas("b", 1, only("x86_64")))),
        ["x86"]
    );
    let d = s.schedule(&replicas("c", 1, only("riscv64")));
    assert_eq!(
        reason(&d[0]),
        "no suitable node (2 nodes are not linux/riscv64)"
    );
}

#[test]
fn reservations_exhaust_capacity_then_explain() {
    // 8GiB nodes: two 3GiB tasks fit on each, the fifth fits nowhere.
    let nodes = [node("a"), node("b")];
    let mut s = Scheduler::new(&nodes, &[]);
    let d = s.schedule(&replicas("db", 5, reserve(3 * GIB, 0)));
    assert_eq!(placed(&d[..4]), ["a", "b", "a", "b"]);
    assert_eq!(
        reason(&d[4]),
        "no suitable node (2 nodes lack 3GiB of unreserved memory)"
    );
    assert_eq!(s.node("a").unwrap().available().memory_bytes, 2 * GIB);
    // The view kept the reservations: a later batch sees them too.
    let d = s.schedule(&replicas("cache", 1, reserve(0, 5 * CPU)));
    assert_eq!(
        reason(&d[0]),
        "no suitable node (2 nodes lack 5 unreserved CPUs)"
    );
    let d = s.schedule(&replicas("small", 2, reserve(2 * GIB, CPU / 2)));
    assert_eq!(placed(&d), ["a", "b"]);
}

#[test]
fn reservations_of_running_tasks_are_subtracted() {
    let nodes = [node("a")];
    let mut big = running("big", "db", "a");
    reserve(6 * GIB, 3 * CPU)(big.spec.as_mut().unwrap());
    let mut s = Scheduler::new(&nodes, &[big]);
    assert_eq!(
        s.node("a").unwrap().available(),
        Amounts {
            nano_cpus: CPU,
            memory_bytes: 2 * GIB
        }
    );
    let d = s.schedule(&replicas("web", 1, reserve(0, 2 * CPU)));
    assert_eq!(
        reason(&d[0]),
        "no suitable node (1 node lacks 2 unreserved CPUs)"
    );
}

#[test]
fn issue_example_message() {
    let nodes = [
        labeled("a", &[("zone", "a")]),
        labeled("b", &[("zone", "a")]),
        labeled("c", &[("zone", "b")]),
    ];
    let mut s = Scheduler::new(&nodes, &[]);
    let d = s.schedule(&replicas("db", 1, |spec| {
        reserve(12 * GIB, 0)(spec);
        constrain(&["node.labels.zone==a"])(spec);
    }));
    assert_eq!(
        reason(&d[0]),
        "no suitable node (2 nodes lack 12GiB of unreserved memory; \
         1 node fails constraint node.labels.zone==a)"
    );
}

#[test]
fn max_replicas_per_node() {
    let nodes = [node("a"), node("b"), node("c")];
    let existing = [running("w0", "web", "a")];
    let mut s = Scheduler::new(&nodes, &existing);
    let d = s.schedule(&replicas("web", 6, |spec| placement(spec).max_replicas = 2));
    assert_eq!(
        spread_of(&d[..5]),
        HashMap::from([("a".into(), 1), ("b".into(), 2), ("c".into(), 2)])
    );
    assert_eq!(
        reason(&d[5]),
        "no suitable node (3 nodes have reached max replicas per node (2))"
    );
}

#[test]
fn spread_evenly_across_zones_then_within() {
    // Zone a has 3 nodes, zone b has 1: spread by zone puts half the tasks on b's single node.
    let nodes = [
        labeled("a1", &[("zone", "a")]),
        labeled("a2", &[("zone", "a")]),
        labeled("a3", &[("zone", "a")]),
        labeled("b1", &[("zone", "b")]),
    ];
    let mut s = Scheduler::new(&nodes, &[]);
    let d = s.schedule(&replicas("web", 6, spread(&["node.labels.zone"])));
    assert_eq!(
        spread_of(&d),
        HashMap::from([
            ("a1".into(), 1),
            ("a2".into(), 1),
            ("a3".into(), 1),
            ("b1".into(), 3)
        ])
    );
    // Without the preference, the same tasks spread over nodes.
    let mut s = Scheduler::new(&nodes, &[]);
    let d = s.schedule(&replicas("web", 8, |_| {}));
    assert!(spread_of(&d).values().all(|&n| n == 2));
}

#[test]
fn spread_counts_existing_tasks_and_nested_preferences() {
    let nodes = [
        labeled("a1", &[("zone", "a"), ("rack", "1")]),
        labeled("a2", &[("zone", "a"), ("rack", "2")]),
        labeled("b1", &[("zone", "b"), ("rack", "1")]),
        labeled("b2", &[("zone", "b"), ("rack", "1")]),
    ];
    // Zone a already runs 2 tasks (both on rack 1): the next 2 go to zone b, then evenly.
    let existing = [running("w1", "web", "a1"), running("w2", "web", "a1")];
    let mut s = Scheduler::new(&nodes, &existing);
    let d = s.schedule(&replicas(
        "web",
        4,
        spread(&["node.labels.zone", "node.labels.rack"]),
    ));
    let counts = spread_of(&d);
    assert_eq!(
        counts.get("b1").copied().unwrap_or(0) + counts.get("b2").copied().unwrap_or(0),
        3
    );
    // In zone a, rack 2 (no tasks yet) gets the task, not rack 1.
    assert_eq!(counts.get("a2"), Some(&1));
    assert_eq!(counts.get("a1"), None);
}

#[test]
fn nodes_missing_the_spread_label_form_their_own_group() {
    let nodes = [
        labeled("a1", &[("zone", "a")]),
        labeled("b1", &[("zone", "b")]),
        labeled("n1", &[]),
        labeled("n2", &[]),
    ];
    let mut s = Scheduler::new(&nodes, &[]);
    let d = s.schedule(&replicas("web", 6, spread(&["node.labels.zone"])));
    assert_eq!(
        spread_of(&d),
        HashMap::from([
            ("a1".into(), 2),
            ("b1".into(), 2),
            ("n1".into(), 1),
            ("n2".into(), 1)
        ])
    );
}

#[test]
fn full_spread_branch_gives_way_to_others() {
    // Zone b's only node can take one 6GiB task; the rest go to zone a.
    let nodes = [
        labeled("a1", &[("zone", "a")]),
        labeled("a2", &[("zone", "a")]),
        labeled("b1", &[("zone", "b")]),
    ];
    let mut s = Scheduler::new(&nodes, &[]);
    let d = s.schedule(&replicas("db", 4, |spec| {
        reserve(6 * GIB, 0)(spec);
        spread(&["node.labels.zone"])(spec);
    }));
    assert_eq!(
        spread_of(&d[..3]),
        HashMap::from([("a1".into(), 1), ("a2".into(), 1), ("b1".into(), 1)])
    );
    assert_eq!(
        reason(&d[3]),
        "no suitable node (3 nodes lack 6GiB of unreserved memory)"
    );
}

#[test]
fn placed_once_a_node_appears_or_gets_the_label() {
    let task = replicas("db", 1, constrain(&["node.labels.disk==ssd"]));
    let mut nodes = vec![node("a")];
    let d = Scheduler::new(&nodes, &[]).schedule(&task);
    assert_eq!(
        reason(&d[0]),
        "no suitable node (1 node fails constraint node.labels.disk==ssd)"
    );
    // The label is added to a: a new snapshot places the task there.
    nodes[0] = labeled("a", &[("disk", "ssd")]);
    assert_eq!(placed(&Scheduler::new(&nodes, &[]).schedule(&task)), ["a"]);

    // A reservation that fits nowhere is placed when a big enough node joins.
    let big = replicas("ml", 1, reserve(16 * GIB, 0));
    let d = Scheduler::new(&nodes, &[]).schedule(&big);
    assert_eq!(
        reason(&d[0]),
        "no suitable node (1 node lacks 16GiB of unreserved memory)"
    );
    let mut huge = node("huge");
    huge.description
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .memory_bytes = 64 * GIB;
    nodes.push(huge);
    assert_eq!(
        placed(&Scheduler::new(&nodes, &[]).schedule(&big)),
        ["huge"]
    );
}

#[test]
fn deterministic_whatever_the_input_order() {
    let nodes: Vec<Node> = (0..20)
        .map(|i| labeled(&format!("n{i:02}"), &[("zone", ["a", "b", "c"][i % 3])]))
        .collect();
    let mut pending = replicas("web", 30, spread(&["node.labels.zone"]));
    pending.extend(replicas("db", 10, reserve(3 * GIB, CPU)));
    pending.extend(replicas("api", 15, |_| {}));
    let first = Scheduler::new(&nodes, &[]).schedule(&pending);
    let mut shuffled: Vec<Task> = pending.clone();
    shuffled.reverse();
    shuffled.rotate_left(7);
    let mut reversed_nodes = nodes.clone();
    reversed_nodes.reverse();
    let again = Scheduler::new(&reversed_nodes, &[]).schedule(&shuffled);
    let by_task = |ds: &[Decision]| -> HashMap<String, Decision> {
        ds.iter()
            .map(|d| (d.task_id().to_string(), d.clone()))
            .collect()
    };
    assert_eq!(by_task(&first), by_task(&again));
    // Decisions come back in the order tasks were given.
    let ids: Vec<&str> = again.iter().map(Decision::task_id).collect();
    let want: Vec<&str> = shuffled.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, want);
}

#[test]
fn preassigned_tasks_are_checked_against_their_node() {
    let mut drained = node("drained");
    drained.spec.as_mut().unwrap().availability = NodeAvailability::Drain as i32;
    let nodes = [node("a"), drained];
    let global = |id: &str, node_id: &str| {
        let mut t = task(id, "agent", 0);
        t.node_id = node_id.into();
        reserve(5 * GIB, 0)(t.spec.as_mut().unwrap());
        t
    };
    let pending = [
        global("g1", "a"),
        global("g2", "a"),
        global("g3", "drained"),
        global("g4", "gone"),
    ];
    let d = Scheduler::new(&nodes, &[]).schedule(&pending);
    assert_eq!(
        d[0],
        Decision::Assigned {
            task_id: "g1".into(),
            node_id: "a".into()
        }
    );
    assert_eq!(
        reason(&d[1]),
        "no suitable node (1 node lacks 5GiB of unreserved memory)"
    );
    assert_eq!(
        reason(&d[2]),
        "no suitable node (1 node is paused or drained)"
    );
    assert_eq!(
        reason(&d[3]),
        "no suitable node (node gone is not in the cluster)"
    );
}

#[test]
fn preassigned_tasks_go_before_replicated_ones() {
    let nodes = [node("a")];
    let mut g = task("g1", "agent", 0);
    g.node_id = "a".into();
    reserve(6 * GIB, 0)(g.spec.as_mut().unwrap());
    let mut pending = replicas("web", 1, reserve(6 * GIB, 0));
    pending.push(g);
    let d = Scheduler::new(&nodes, &[]).schedule(&pending);
    assert!(reason(&d[0]).contains("1 node lacks 6GiB"));
    assert!(matches!(d[1], Decision::Assigned { .. }));
}

#[test]
fn invalid_placement_in_a_task_is_reported_not_ignored() {
    let nodes = [node("a")];
    let mut s = Scheduler::new(&nodes, &[]);
    let d = s.schedule(&replicas("web", 2, constrain(&["node.labels.zone=a"])));
    assert_eq!(
        reason(&d[1]),
        "invalid placement: constraint \"node.labels.zone=a\": expected an operator == or !=, \
         e.g. node.labels.zone==a"
    );
    let d = s.schedule(&replicas("api", 1, spread(&["zone"])));
    assert!(reason(&d[0]).starts_with("invalid placement: placement preference \"spread=zone\""));
}

#[test]
fn empty_cluster_says_so() {
    let d = Scheduler::new(&[], &[]).schedule(&replicas("web", 1, |_| {}));
    assert_eq!(reason(&d[0]), "no suitable node (the cluster has no nodes)");
}

#[test]
fn recently_failing_nodes_rank_last() {
    let nodes = [node("a"), node("b")];
    let now = Timestamp {
        seconds: 10_000,
        nanos: 0,
    };
    let failed: Vec<Task> = (0..5)
        .map(|i| {
            let mut t = running(&format!("f{i}"), "web", "a");
            let status = t.status.as_mut().unwrap();
            status.state = TaskState::Rejected as i32;
            status.timestamp = Some(Timestamp {
                seconds: 10_000 - 60 * i,
                nanos: 0,
            });
            t
        })
        .collect();
    // Node a rejected web 5 times in the last 5 minutes: b takes web's tasks even when busier.
    let existing: Vec<Task> = failed
        .iter()
        .cloned()
        .chain([running("w1", "web", "b"), running("w2", "web", "b")])
        .collect();
    let mut s = Scheduler::with_clock(&nodes, &existing, &now);
    assert_eq!(s.node("a").unwrap().recent_failures("web"), 5);
    assert_eq!(placed(&s.schedule(&replicas("web", 2, |_| {}))), ["b", "b"]);
    // Other services are not affected, and without a clock nothing is penalized.
    assert_eq!(placed(&s.schedule(&replicas("api", 1, |_| {}))), ["a"]);
    let mut s = Scheduler::new(&nodes, &existing);
    assert_eq!(placed(&s.schedule(&replicas("web", 1, |_| {}))), ["a"]);
    // Failures older than the window do not count.
    let later = Timestamp {
        seconds: 10_000 + FAILURE_WINDOW_SECS,
        nanos: 0,
    };
    let s = Scheduler::with_clock(&nodes, &existing, &later);
    assert_eq!(s.node("a").unwrap().recent_failures("web"), 1);
}

#[test]
fn manager_role_constraint_uses_the_certificate_role() {
    let mut m = node("m");
    m.role = NodeRole::Manager as i32;
    let nodes = [m, node("w")];
    let mut s = Scheduler::new(&nodes, &[]);
    assert_eq!(
        placed(&s.schedule(&replicas("x", 2, constrain(&["node.role==manager"])))),
        ["m", "m"]
    );
    assert_eq!(
        placed(&s.schedule(&replicas("y", 1, constrain(&["node.role!=manager"])))),
        ["w"]
    );
}

#[test]
fn batches_split_by_service_and_placement() {
    let nodes = [
        labeled("a", &[("zone", "a")]),
        labeled("b", &[("zone", "b")]),
    ];
    // One call with two services and, within web, two placements (an update in progress).
    let mut pending = replicas("web", 2, constrain(&["node.labels.zone==a"]));
    let mut newer = replicas("web", 2, |_| {});
    for (i, t) in newer.iter_mut().enumerate() {
        t.id = format!("web.new{i}");
    }
    pending.extend(newer);
    pending.extend(replicas("api", 2, |_| {}));
    let d = Scheduler::new(&nodes, &[]).schedule(&pending);
    // web's constrained tasks on a; the unconstrained web tasks then balance onto b.
    assert_eq!(placed(&d), ["a", "a", "b", "b", "a", "b"]);
}
