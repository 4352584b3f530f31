//! The worker's executor for real: `container exec` into a running container (the health
//! checks' mechanism), and service tasks run as containers that survive a daemon restart
//! without being restarted, fail on a failing health check, and go with their service.

use std::time::Duration;

use crate::harness::cluster::{SETTLE, init};
use crate::harness::{TestNet, TestNode, wait_for};
use crate::images::images;

const IMAGE: &str = "test/busybox:oci";
const LONG: Duration = Duration::from_secs(60);

fn node_with_image(net: &TestNet, label: &str) -> TestNode {
    let mut node = net.node(label);
    node.start(&[]);
    node.shoal_ok(&["image", "import", images().oci.to_str().unwrap()]);
    node
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `container ps -a --format json`.
fn containers(node: &TestNode) -> Vec<serde_json::Value> {
    let out = node.shoal_ok(&["container", "ps", "-a", "--format", "json"]);
    serde_json::from_str(&out).expect("container ps --format json")
}

/// The containers carrying a task label, as (task ID, container ID, status).
fn task_containers(node: &TestNode) -> Vec<(String, String, String)> {
    containers(node)
        .iter()
        .filter_map(|c| {
            let task = c["labels"]["shoal.task.id"].as_str()?;
            Some((
                task.to_string(),
                c["id"].as_str().unwrap_or_default().to_string(),
                c["status"].to_string(),
            ))
        })
        .collect()
}

/// `service ps --format json`.
fn tasks(node: &TestNode, service: &str) -> Vec<serde_json::Value> {
    let out = node.shoal_ok(&["service", "ps", "--format", "json", service]);
    serde_json::from_str(&out).expect("service ps --format json")
}

fn task_state(t: &serde_json::Value) -> String {
    t["status"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn exec_runs_a_command_inside_a_running_container() {
    let net = TestNet::new("exec");
    let node = node_with_image(&net, "n1");
    node.shoal_ok(&[
        "container",
        "run",
        "-d",
        "--name",
        "box",
        "-e",
        "FROM_RUN=1",
        IMAGE,
        "sleep",
        "600",
    ]);
    // The container's pid namespace (its PID 1 is sleep), environment and root filesystem.
    let out = node.shoal_ok(&[
        "container",
        "exec",
        "-e",
        "EXTRA=2",
        "box",
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $FROM_RUN$EXTRA; ls /bin/busybox",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first().map(|l| l.trim()), Some("sleep 600"), "{out}");
    assert!(lines.contains(&"12"), "{out}");
    assert!(lines.contains(&"/bin/busybox"), "{out}");
    // Exit codes pass through; a missing program is 127 as in Docker.
    let failed = node.shoal(&[
        "container",
        "exec",
        "box",
        "sh",
        "-c",
        "echo oops >&2; exit 3",
    ]);
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed.stderr));
    assert!(text(&failed.stderr).contains("oops"));
    let missing = node.shoal(&["container", "exec", "box", "no-such-program"]);
    assert_eq!(
        missing.status.code(),
        Some(127),
        "{}",
        text(&missing.stderr)
    );
    // A stopped container cannot be entered.
    node.shoal_ok(&["container", "stop", "-t", "1", "box"]);
    let err = node.shoal_err(&["container", "exec", "box", "true"]);
    assert!(err.contains("not running"), "{err}");
    node.shoal_ok(&["container", "rm", "box"]);
}

#[test]
fn tasks_run_as_containers_and_are_adopted_after_a_daemon_restart() {
    let net = TestNet::new("adopt");
    let mut node = node_with_image(&net, "n1");
    init(&node, &[]);
    node.shoal_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        "2",
        IMAGE,
        "sleep",
        "600",
    ]);
    let running = wait_for("web's 2 tasks running", LONG, || {
        let t = tasks(&node, "web");
        (t.len() == 2 && t.iter().all(|t| task_state(t) == "running")).then_some(t)
    });
    let before = task_containers(&node);
    assert_eq!(before.len(), 2, "{before:?}");
    for t in &running {
        let id = t["id"].as_str().unwrap();
        assert!(before.iter().any(|(task, _, _)| task == id), "{before:?}");
    }
    let names: Vec<String> = containers(&node)
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("web.")), "{names:?}");
    // Each task is on the node's bridge: an eth0 with the default route.
    let routes = node.shoal_ok(&["container", "exec", &before[0].1, "cat", "/proc/net/route"]);
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("eth0") && l.contains("00000000")),
        "{routes}"
    );
    let started: Vec<String> = before
        .iter()
        .map(|(_, id, _)| {
            let out = node.shoal_ok(&["container", "inspect", id]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            v[0]["state"]["started_at"].to_string()
        })
        .collect();

    // Kill the daemon: the containers live on, and the next daemon adopts them as they are.
    node.kill();
    node.start(&[]);
    wait_for("the session back and tasks still running", SETTLE, || {
        let t = tasks(&node, "web");
        (t.len() == 2 && t.iter().all(|t| task_state(t) == "running")).then_some(())
    });
    // Give the executor time to (wrongly) act, then check nothing was restarted or replaced.
    std::thread::sleep(Duration::from_secs(3));
    let after = task_containers(&node);
    assert_eq!(
        after.iter().map(|c| &c.1).collect::<Vec<_>>(),
        before.iter().map(|c| &c.1).collect::<Vec<_>>(),
        "same containers"
    );
    for ((_, id, _), was) in before.iter().zip(&started) {
        let out = node.shoal_ok(&["container", "inspect", id]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            &v[0]["state"]["started_at"].to_string(),
            was,
            "{id} restarted"
        );
    }
    assert_eq!(tasks(&node, "web").len(), 2, "no replacement tasks");

    // A container that exits while the daemon is down is reported when it is back.
    node.kill();
    let (victim_task, victim, _) = before[0].clone();
    node.start(&[]);
    node.shoal_ok(&["container", "kill", &victim]);
    wait_for("the killed task FAILED", SETTLE, || {
        let t = tasks(&node, "web");
        t.iter()
            .any(|t| t["id"] == victim_task.as_str() && task_state(t) == "failed")
            .then_some(())
    });

    // Removing the service removes its containers.
    node.shoal_ok(&["service", "rm", "web"]);
    wait_for("web's containers removed", SETTLE, || {
        task_containers(&node).is_empty().then_some(())
    });
}

#[test]
fn a_failing_health_check_fails_the_task() {
    let net = TestNet::new("health");
    let node = node_with_image(&net, "n1");
    init(&node, &[]);
    node.shoal_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "sick",
        "--restart-condition",
        "none",
        "--health-cmd",
        "test -e /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        IMAGE,
        "sh",
        "-c",
        "touch /tmp/ok; sleep 3; rm /tmp/ok; sleep 600",
    ]);
    let failed = wait_for("the task FAILED as unhealthy", LONG, || {
        tasks(&node, "sick")
            .into_iter()
            .find(|t| task_state(t) == "failed")
    });
    let err = failed["status"]["err"].as_str().unwrap_or_default();
    assert!(err.starts_with("unhealthy"), "{failed}");
    // And its container was stopped.
    wait_for("the unhealthy container stopped", SETTLE, || {
        task_containers(&node)
            .iter()
            .all(|(_, _, s)| !s.contains("running"))
            .then_some(())
    });
    node.shoal_ok(&["service", "rm", "sick"]);
}

#[test]
fn leaving_the_cluster_removes_task_containers() {
    let net = TestNet::new("exleave");
    let node = node_with_image(&net, "n1");
    init(&node, &[]);
    node.shoal_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        "2",
        IMAGE,
        "sleep",
        "600",
    ]);
    wait_for("web's containers running", LONG, || {
        let c = task_containers(&node);
        (c.len() == 2 && c.iter().all(|(_, _, s)| s.contains("running"))).then_some(())
    });
    // A container of its own is none of the executor's business.
    node.shoal_ok(&[
        "container",
        "run",
        "-d",
        "--name",
        "mine",
        IMAGE,
        "sleep",
        "600",
    ]);
    // Removing the service just before leaving catches its tasks mid-shutdown (sleep ignores
    // SIGTERM as PID 1, so they sit in their grace period): leave must still finish the job,
    // network attachments included.
    node.shoal_ok(&["service", "rm", "web"]);
    node.shoal_ok(&["cluster", "leave", "--force"]);
    assert!(
        task_containers(&node).is_empty(),
        "{:?}",
        task_containers(&node)
    );
    let netns_dir = node.socket().parent().unwrap().join("netns");
    let attached: Vec<_> = std::fs::read_dir(&netns_dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(attached.is_empty(), "attachments left: {attached:?}");
    let left: Vec<String> = containers(&node)
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(left, vec!["mine"]);
    node.shoal_ok(&["container", "rm", "-f", "mine"]);
}
