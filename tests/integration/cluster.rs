//! Cluster lifecycle with real daemons, each node in its own network namespace: forming a
//! cluster with tokens, mutual TLS and roles, node management, failover, restarts and recovery.

use crate::harness::cluster::{
    NodeRow, export_node_certs, init, join, node_id, node_ls, row, wait_node_ls,
};
use crate::harness::{TestNet, TestNode};

/// Starts nodes m1..m{managers} and w1..w{workers}, forms the cluster, waits until every node
/// is Ready and every manager voting.
fn form(net: &TestNet, managers: usize, workers: usize) -> (Vec<TestNode>, Vec<TestNode>) {
    let mut ms: Vec<TestNode> = (1..=managers).map(|i| net.node(&format!("m{i}"))).collect();
    let mut ws: Vec<TestNode> = (1..=workers).map(|i| net.node(&format!("w{i}"))).collect();
    for n in ms.iter_mut().chain(ws.iter_mut()) {
        n.start(&[]);
    }
    let (worker_token, manager_token) = init(&ms[0], &[]);
    for m in &ms[1..] {
        assert!(join(m, &manager_token, &ms[0]).contains("as a manager"));
    }
    for w in &ws {
        assert!(join(w, &worker_token, &ms[0]).contains("as a worker"));
    }
    let total = managers + workers;
    wait_node_ls(
        &ms[0],
        "every node Ready and every manager voting",
        |rows| {
            rows.len() == total
                && rows.iter().all(|r| r.status == "Ready")
                && rows.iter().filter(|r| r.manager_status == "Leader").count() == 1
                && rows
                    .iter()
                    .filter(|r| r.manager_status == "Reachable")
                    .count()
                    == managers - 1
        },
    );
    (ms, ws)
}

/// `node ls` without the local-node marker, which rightly differs between managers.
fn shared_view(rows: &[NodeRow]) -> Vec<NodeRow> {
    rows.iter()
        .map(|r| NodeRow {
            is_self: false,
            ..r.clone()
        })
        .collect()
}

#[test]
fn three_managers_and_two_workers_form_a_cluster_with_one_view() {
    let net = TestNet::new("form");
    let (ms, ws) = form(&net, 3, 2);

    // Every manager shows the same nodes with the same statuses.
    let views: Vec<Vec<NodeRow>> = ms.iter().map(|m| shared_view(&node_ls(m))).collect();
    assert_eq!(views[0], views[1]);
    assert_eq!(views[0], views[2]);
    for m in &ms {
        let me = node_id(m);
        let rows = node_ls(m);
        assert!(
            row(&rows, &me).is_self,
            "{} is not marked with *: {rows:?}",
            m.label()
        );
    }
    // Workers cannot read cluster state.
    let err = ws[0].shoal_err(&["node", "ls"]);
    assert!(err.contains("not a cluster manager"), "{err}");
    // `cluster info` names the managers and the certificate's lifetime.
    let info = ws[1].shoal_ok(&["cluster", "info"]);
    assert!(info.contains("Role:             worker"), "{info}");
    assert!(info.contains(&format!("{}:2377", ms[0].addr())), "{info}");
    assert!(info.contains("expires in 89 days"), "{info}");
}

#[test]
fn certificates_decide_who_may_call_the_control_api() {
    let net = TestNet::new("mtls");
    let (ms, ws) = form(&net, 1, 1);
    let manager = format!("tcp://{}:2377", ms[0].addr());

    let remote = |tls_dir: &str| {
        let out = ws[0].cli(&["--tls-dir", tls_dir, "-H", &manager, "node", "ls"]);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };

    // A worker's own certificate reaches the manager but may not call the Control API.
    let worker_certs = ws[0].dir().join("worker-certs");
    export_node_certs(&ws[0], &worker_certs);
    let (ok, _, err) = remote(worker_certs.to_str().unwrap());
    assert!(!ok);
    assert!(err.contains("may not make this call"), "{err}");
    assert!(err.contains("worker"), "{err}");

    // An admin certificate from `cluster ca issue-client` may, from another machine.
    let admin = ws[0].dir().join("admin-certs");
    ms[0].shoal_ok(&[
        "cluster",
        "ca",
        "issue-client",
        "--out",
        admin.to_str().unwrap(),
    ]);
    let (ok, rows, err) = remote(admin.to_str().unwrap());
    assert!(ok, "{err}");
    assert_eq!(rows.lines().count(), 3, "{rows}");

    // Without a certificate the CLI says how to get one.
    let (ok, _, err) = remote("/nonexistent");
    assert!(!ok);
    assert!(err.contains("issue-client"), "{err}");
}

#[test]
fn bad_joins_are_refused_and_change_nothing() {
    let net = TestNet::new("refusals");
    let mut m1 = net.node("m1");
    let mut w1 = net.node("w1");
    let mut other = net.node("other");
    for n in [&mut m1, &mut w1, &mut other] {
        n.start(&[]);
    }
    let (worker_token, _) = init(&m1, &[]);
    let (foreign_token, _) = init(&other, &[]);
    let addr = format!("{}:2377", m1.addr());
    let join_err = |token: &str, to: &str| w1.shoal_err(&["cluster", "join", "--token", token, to]);

    let err = join_err("not-a-token", &addr);
    assert!(err.contains("invalid join token"), "{err}");
    assert!(err.contains("SHOAL-1-"), "{err}");

    // Right CA, wrong secret.
    let (prefix, secret) = worker_token.rsplit_once('-').unwrap();
    let wrong = format!("{prefix}-{}", "z".repeat(secret.len()));
    let err = join_err(&wrong, &addr);
    assert!(err.contains("refused"), "{err}");

    // A token of another cluster: its CA digest does not match this manager's CA.
    let err = join_err(&foreign_token, &addr);
    assert!(err.contains("digest"), "{err}");

    // Nobody listening.
    let err = join_err(&worker_token, "10.88.0.250:2377");
    assert!(err.contains("cannot reach a manager"), "{err}");

    // A rotated token stops working; the new one works.
    m1.shoal_ok(&["cluster", "join-token", "--rotate", "worker"]);
    let err = join_err(&worker_token, &addr);
    assert!(err.contains("refused"), "{err}");
    assert_eq!(node_ls(&m1).len(), 1, "refused joins must not add nodes");
    let fresh = m1.shoal_ok(&["cluster", "join-token", "-q", "worker"]);
    join(&w1, fresh.trim(), &m1);
    wait_node_ls(&m1, "the worker Ready", |rows| {
        rows.len() == 2 && rows.iter().all(|r| r.status == "Ready")
    });

    // A node already in a cluster cannot join or init another.
    let err = w1.shoal_err(&["cluster", "join", "--token", fresh.trim(), &addr]);
    assert!(err.contains("already part of a cluster"), "{err}");
    let err = w1.shoal_err(&["cluster", "init"]);
    assert!(err.contains("already part of a cluster"), "{err}");
}

#[test]
fn node_management_promote_demote_drain_labels_and_removal() {
    let net = TestNet::new("nodes");
    let (ms, mut ws) = form(&net, 3, 1);
    let m3 = node_id(&ms[2]);
    let w1 = node_id(&ws[0]);

    let out = ms[0].shoal_ok(&["node", "demote", &m3]);
    assert!(out.contains("demoted"), "{out}");
    wait_node_ls(&ms[0], "m3 to be a worker", |rows| {
        row(rows, &m3).manager_status.is_empty()
    });
    wait_for_role(&ms[2], "worker");
    let out = ms[0].shoal_ok(&["node", "promote", &m3]);
    assert!(out.contains("promoted"), "{out}");
    wait_node_ls(&ms[0], "m3 to vote again", |rows| {
        row(rows, &m3).manager_status == "Reachable"
    });
    wait_for_role(&ms[2], "manager");

    // Demoting would leave no manager: refused with the reason.
    let solo_net = TestNet::new("solo");
    let mut solo = solo_net.node("s1");
    solo.start(&[]);
    init(&solo, &[]);
    let err = solo.shoal_err(&["node", "demote", "self"]);
    assert!(err.contains("last manager"), "{err}");

    ms[0].shoal_ok(&[
        "node",
        "update",
        "--availability",
        "drain",
        "--label-add",
        "zone=a",
        &w1,
    ]);
    let rows = node_ls(&ms[1]);
    assert_eq!(row(&rows, &w1).availability, "Drain");
    let inspect: serde_json::Value =
        serde_json::from_str(&ms[2].shoal_ok(&["node", "inspect", &w1])).unwrap();
    assert_eq!(inspect[0]["spec"]["annotations"]["labels"]["zone"], "a");
    assert_eq!(inspect[0]["spec"]["availability"], "drain");
    let pretty = ms[0].shoal_ok(&["node", "inspect", "--pretty", &w1]);
    assert!(pretty.contains("zone=a"), "{pretty}");

    // A node that is up needs --force to be removed; a down one does not.
    let err = ms[0].shoal_err(&["node", "rm", &w1]);
    assert!(err.contains("--force"), "{err}");
    let err = ms[0].shoal_err(&["node", "rm", &m3]);
    assert!(err.contains("demote it first"), "{err}");
    ws[0].stop();
    wait_node_ls(&ms[0], "the stopped worker Down", |rows| {
        row(rows, &w1).status == "Down"
    });
    ms[0].shoal_ok(&["node", "rm", &w1]);
    assert!(node_ls(&ms[0]).iter().all(|r| r.id != w1));
}

/// Waits until `shoal cluster info` on `node` reports `role`.
fn wait_for_role(node: &TestNode, role: &str) {
    crate::harness::wait_for(
        &format!("{} to become a {role}", node.label()),
        crate::harness::cluster::SETTLE,
        || {
            let out = node.shoal(&["cluster", "info"]);
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!("Role:             {role}"))
                .then_some(())
        },
    );
}

#[test]
fn a_stopped_worker_goes_down_and_comes_back_ready() {
    let net = TestNet::new("heartbeat");
    let (ms, mut ws) = form(&net, 1, 1);
    let w1 = node_id(&ws[0]);
    ws[0].kill();
    wait_node_ls(&ms[0], "the killed worker Down", |rows| {
        row(rows, &w1).status == "Down"
    });
    ws[0].start(&[]);
    wait_node_ls(&ms[0], "the worker Ready again", |rows| {
        row(rows, &w1).status == "Ready"
    });
    // Cut off by the network rather than killed: the same.
    net.set_link(&ws[0], false);
    wait_node_ls(&ms[0], "the cut-off worker Down", |rows| {
        row(rows, &w1).status == "Down"
    });
    net.set_link(&ws[0], true);
    wait_node_ls(&ms[0], "the reconnected worker Ready", |rows| {
        row(rows, &w1).status == "Ready"
    });
}

#[test]
fn killing_the_leader_keeps_the_cluster_answering() {
    let net = TestNet::new("failover");
    let (mut ms, ws) = form(&net, 3, 1);
    let leader = node_id(&ms[0]);
    ms[0].kill();
    let rows = wait_node_ls(&ms[1], "a new leader and the old one Unreachable", |rows| {
        row(rows, &leader).manager_status == "Unreachable"
            && rows.iter().any(|r| r.manager_status == "Leader")
    });
    assert_eq!(
        rows.iter().filter(|r| r.manager_status == "Leader").count(),
        1
    );
    // Writes continue, through either surviving manager.
    let w1 = node_id(&ws[0]);
    ms[2].shoal_ok(&["node", "update", "--label-add", "after=failover", &w1]);
    let inspect = ms[1].shoal_ok(&["node", "inspect", &w1]);
    assert!(inspect.contains("failover"), "{inspect}");
    // The worker's session moved to a surviving manager, and it stays Ready past the grace
    // period the new leader gave it.
    let dead = format!("{}:2377", ms[0].addr());
    crate::harness::wait_for(
        "the worker to reconnect elsewhere",
        crate::harness::cluster::SETTLE,
        || {
            let info = ws[0].shoal_ok(&["cluster", "info"]);
            let line = info
                .lines()
                .find(|l| l.starts_with("Session:"))?
                .to_string();
            (line.contains("with ") && !line.contains(&dead)).then_some(())
        },
    );
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(row(&node_ls(&ms[1]), &w1).status, "Ready");
}

#[test]
fn leaving_a_cluster() {
    let net = TestNet::new("leave");
    let (ms, ws) = form(&net, 1, 1);
    let w1 = node_id(&ws[0]);
    assert!(ws[0].shoal_ok(&["cluster", "leave"]).contains("left"));
    assert!(
        ws[0]
            .shoal_ok(&["info"])
            .contains("Cluster:          inactive")
    );
    wait_node_ls(&ms[0], "the departed worker Down", |rows| {
        row(rows, &w1).status == "Down"
    });
    // The last manager may leave only with --force: it takes the cluster's state with it.
    let err = ms[0].shoal_err(&["cluster", "leave"]);
    assert!(
        err.contains("last manager") && err.contains("--force"),
        "{err}"
    );
    ms[0].shoal_ok(&["cluster", "leave", "--force"]);
    assert!(!ms[0].state_dir().join("cluster.json").exists());
    assert!(!ms[0].state_dir().join("certificates").exists());
    // And a node that left can start a new cluster.
    init(&ms[0], &[]);
}

#[test]
fn restarting_every_daemon_keeps_the_cluster() {
    let net = TestNet::new("restart");
    let (mut ms, mut ws) = form(&net, 3, 1);
    let before = shared_view(&node_ls(&ms[0]));
    for n in ms.iter_mut().chain(ws.iter_mut()) {
        n.stop();
    }
    for n in ms.iter_mut().chain(ws.iter_mut()) {
        n.start(&[]);
    }
    wait_node_ls(
        &ms[0],
        "the same nodes Ready with a leader after restart",
        |rows| {
            let now = shared_view(rows);
            now.len() == before.len()
                && now.iter().all(|r| r.status == "Ready")
                && now.iter().filter(|r| r.manager_status == "Leader").count() == 1
                && now
                    .iter()
                    .filter(|r| r.manager_status == "Reachable")
                    .count()
                    == 2
                && now.iter().map(|r| &r.id).eq(before.iter().map(|r| &r.id))
        },
    );
}

#[test]
fn force_new_cluster_recovers_the_state_after_quorum_loss() {
    let net = TestNet::new("recover");
    let (mut ms, ws) = form(&net, 3, 1);
    let w1 = node_id(&ws[0]);
    ms[0].shoal_ok(&["node", "update", "--label-add", "keep=me", &w1]);
    ms[1].kill();
    ms[2].kill();
    // Without a quorum nothing can be written.
    let err = ms[0].shoal_err(&["node", "update", "--label-add", "lost=quorum", &w1]);
    assert!(!err.is_empty());
    ms[0].shoal_ok(&["cluster", "init", "--force-new-cluster"]);
    let rows = wait_node_ls(&ms[0], "one manager leading again", |rows| {
        rows.iter().filter(|r| r.manager_status == "Leader").count() == 1
            && row(rows, &w1).status == "Ready"
    });
    assert_eq!(
        rows.iter().filter(|r| !r.manager_status.is_empty()).count(),
        1,
        "{rows:?}"
    );
    let inspect = ms[0].shoal_ok(&["node", "inspect", &w1]);
    assert!(inspect.contains("\"keep\": \"me\""), "{inspect}");
    // And the cluster grows again.
    ms[0].shoal_ok(&["node", "update", "--label-add", "after=recovery", &w1]);
}
