//! The manager side of services with real daemons: the leader's orchestrator, allocator and
//! scheduler turn a created service into tasks placed on nodes, follow scaling, global mode and
//! drain. It checks placement only (where tasks go and which are meant to run), not containers
//! running (tasks run `sleep`, so with an executor they keep running and are never restarted);
//! restart supervision is checked with a task that fails.

use crate::harness::cluster::{SETTLE, init, join, node_id, wait_node_ls};
use crate::harness::{TestNet, TestNode, wait_for};
use crate::images::images;

/// The test image every node imports (see images.rs).
const IMAGE: &str = "test/busybox:oci";

/// Imports the test image on `node`.
fn import_image(node: &TestNode) {
    node.shoal_ok(&["image", "import", images().oci.to_str().unwrap()]);
}

/// The tasks of `service` that are meant to run (desired RUNNING), as (task ID, node ID).
fn live(m: &TestNode, service: &str) -> Vec<(String, String)> {
    let out = m.shoal_ok(&["service", "ps", "--format", "json", service]);
    let tasks: Vec<serde_json::Value> = serde_json::from_str(&out).expect("ps --format json");
    tasks
        .iter()
        .filter(|t| t["desired_state"] == "running")
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
            (s("id"), s("node_id"))
        })
        .collect()
}

/// Waits until the live tasks of `service` are all placed and their nodes, sorted, are `want`.
fn wait_placed(m: &TestNode, service: &str, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    wait_for(
        &format!("{service}'s tasks placed on {want:?}"),
        SETTLE,
        || {
            let mut nodes: Vec<String> = live(m, service).into_iter().map(|(_, n)| n).collect();
            nodes.sort();
            (nodes == want).then_some(())
        },
    );
}

#[test]
fn services_are_placed_scaled_and_drained() {
    let net = TestNet::new("orch");
    let mut m = net.node("m1");
    let mut w = net.node("w1");
    m.start(&[]);
    w.start(&[]);
    let (worker_token, _) = init(&m, &[]);
    join(&w, &worker_token, &m);
    wait_node_ls(&m, "both nodes Ready", |rows| {
        rows.len() == 2 && rows.iter().all(|r| r.status == "Ready")
    });
    let (mid, wid) = (node_id(&m), node_id(&w));
    import_image(&m);
    import_image(&w);

    // Three replicas spread over both nodes.
    m.shoal_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        "3",
        IMAGE,
        "sleep",
        "600",
    ]);
    wait_for("web's 3 tasks placed on both nodes", SETTLE, || {
        let tasks = live(&m, "web");
        let on = |n: &str| tasks.iter().filter(|(_, t)| t == n).count();
        (tasks.len() == 3 && on(&mid) + on(&wid) == 3 && on(&mid) >= 1 && on(&wid) >= 1)
            .then_some(())
    });

    // A global service: one task per node.
    m.shoal_ok(&[
        "service", "create", "--detach", "--name", "agent", "--mode", "global", IMAGE, "sleep",
        "600",
    ]);
    wait_placed(&m, "agent", &[&mid, &wid]);

    // Scale down to one.
    m.shoal_ok(&["service", "scale", "--detach", "web=1"]);
    wait_for("web scaled to 1", SETTLE, || {
        (live(&m, "web").len() == 1).then_some(())
    });

    // Drain the worker: everything leaves it.
    m.shoal_ok(&["node", "update", "--availability", "drain", &wid]);
    wait_placed(&m, "web", &[&mid]);
    wait_placed(&m, "agent", &[&mid]);

    // Removing the services leaves nothing meant to run.
    m.shoal_ok(&["service", "rm", "web", "agent"]);
    wait_for("services removed", SETTLE, || {
        let out = m.shoal_ok(&["service", "ls", "-q"]);
        out.trim().is_empty().then_some(())
    });
}

#[test]
fn tasks_of_a_lost_node_are_replaced_at_once() {
    let net = TestNet::new("orch-loss");
    let mut m = net.node("m1");
    let mut w1 = net.node("w1");
    let mut w2 = net.node("w2");
    for n in [&mut m, &mut w1, &mut w2] {
        n.start(&[]);
    }
    let (worker_token, _) = init(&m, &[]);
    join(&w1, &worker_token, &m);
    join(&w2, &worker_token, &m);
    wait_node_ls(&m, "three nodes Ready", |rows| {
        rows.len() == 3 && rows.iter().all(|r| r.status == "Ready")
    });
    let (w1id, w2id) = (node_id(&w1), node_id(&w2));
    for n in [&m, &w1, &w2] {
        import_image(n);
    }
    // Kept off the manager, so the lost worker's tasks have exactly one place to go.
    m.shoal_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        "4",
        "--constraint",
        "node.role==worker",
        IMAGE,
        "sleep",
        "600",
    ]);
    wait_placed(&m, "web", &[&w1id, &w1id, &w2id, &w2id]);
    let before: Vec<String> = live(&m, "web").into_iter().map(|(id, _)| id).collect();

    // w2 dies: once it is marked down (3 missed 1 s heartbeats), its two tasks are replaced on
    // w1 in the same slots, without waiting for a restart delay.
    w2.kill();
    wait_node_ls(&m, "w2 Down", |rows| {
        rows.iter().any(|r| r.id == w2id && r.status == "Down")
    });
    wait_placed(&m, "web", &[&w1id, &w1id, &w1id, &w1id]);
    let after: Vec<String> = live(&m, "web").into_iter().map(|(id, _)| id).collect();
    assert_eq!(after.iter().filter(|id| before.contains(id)).count(), 2);
}

/// `service ps --format json` of `service`, parsed.
fn tasks(m: &TestNode, service: &str) -> Vec<serde_json::Value> {
    let out = m.shoal_ok(&["service", "ps", "--format", "json", service]);
    serde_json::from_str(&out).expect("ps --format json")
}

#[test]
fn failing_tasks_restart_in_their_slot_until_max_attempts() {
    let net = TestNet::new("orch-restart");
    let mut m = net.node("m1");
    m.start(&[]);
    init(&m, &[]);
    wait_node_ls(&m, "the node Ready", |rows| {
        rows.len() == 1 && rows[0].status == "Ready"
    });
    import_image(&m);

    // A task that keeps running runs.
    m.shoal_ok(&[
        "service", "create", "--detach", "--name", "ok", IMAGE, "sleep", "600",
    ]);
    wait_for("ok's task running", SETTLE, || {
        let t = tasks(&m, "ok");
        (t.len() == 1 && t[0]["status"]["state"] == "running").then_some(())
    });

    // One that exits 3 is restarted in slot 1 after 1 s, twice, then left failed.
    m.shoal_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "crash",
        "--restart-delay",
        "1s",
        "--restart-max-attempts",
        "2",
        IMAGE,
        "sh",
        "-c",
        "exit 3",
    ]);
    let settled = |t: &[serde_json::Value]| {
        t.len() == 3
            && t.iter()
                .all(|t| t["slot"] == 1 && t["status"]["state"] == "failed")
            && t.iter()
                .filter(|t| t["desired_state"] == "complete")
                .count()
                == 1
            && t.iter()
                .filter(|t| t["desired_state"] == "shutdown")
                .count()
                == 2
    };
    wait_for("crash restarted twice then given up", SETTLE, || {
        settled(&tasks(&m, "crash")).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    let t = tasks(&m, "crash");
    assert!(settled(&t), "no further restart: {t:#?}");
}

#[test]
fn a_new_leader_keeps_the_tasks_and_orchestrates() {
    let net = TestNet::new("orch-failover");
    let mut ms: Vec<TestNode> = (1..=3).map(|i| net.node(&format!("m{i}"))).collect();
    let mut w = net.node("w1");
    for n in ms.iter_mut().chain([&mut w]) {
        n.start(&[]);
    }
    let (worker_token, manager_token) = init(&ms[0], &[]);
    for m in &ms[1..] {
        join(m, &manager_token, &ms[0]);
    }
    join(&w, &worker_token, &ms[0]);
    wait_node_ls(&ms[0], "four nodes Ready, three managers", |rows| {
        rows.len() == 4
            && rows.iter().all(|r| r.status == "Ready")
            && rows
                .iter()
                .filter(|r| r.manager_status == "Reachable")
                .count()
                == 2
    });
    import_image(&w);
    let wid = node_id(&w);
    // On the worker only, so killing the leader does not take tasks with it.
    ms[0].shoal_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        "4",
        "--constraint",
        "node.role==worker",
        IMAGE,
        "sleep",
        "600",
    ]);
    wait_placed(&ms[0], "web", &[&wid, &wid, &wid, &wid]);
    let mut before: Vec<String> = live(&ms[0], "web").into_iter().map(|(id, _)| id).collect();
    before.sort();

    let leader = node_id(&ms[0]);
    ms[0].kill();
    wait_node_ls(&ms[1], "a new leader", |rows| {
        rows.iter()
            .any(|r| r.manager_status == "Leader" && r.id != leader)
    });
    // The new leader reconciles from the store: a scale it is asked for happens, and the tasks
    // that were running are kept, not duplicated.
    ms[1].shoal_ok(&["service", "scale", "--detach", "web=5"]);
    wait_placed(&ms[1], "web", &[&wid, &wid, &wid, &wid, &wid]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let live_now = live(&ms[1], "web");
    assert_eq!(live_now.len(), 5);
    assert_eq!(
        live_now
            .iter()
            .filter(|(id, _)| before.contains(id))
            .count(),
        4,
        "the running tasks were kept"
    );
}
