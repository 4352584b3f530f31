//! Helpers for tests that form clusters: init, join with tokens, and read `node ls` the way a
//! user would, through the CLI.

use std::time::Duration;

use super::{TestNode, wait_for};

/// How long a cluster may take to settle after a change (joins, failover, restarts).
pub const SETTLE: Duration = Duration::from_secs(30);

/// `cluster init` on `node` (heartbeat shortened so DOWN comes in seconds); returns the
/// (worker, manager) join tokens.
pub fn init(node: &TestNode, extra: &[&str]) -> (String, String) {
    let mut args = vec!["cluster", "init", "--dispatcher-heartbeat", "1s"];
    args.extend_from_slice(extra);
    node.shoal_ok(&args);
    let worker = node.shoal_ok(&["cluster", "join-token", "-q", "worker"]);
    let manager = node.shoal_ok(&["cluster", "join-token", "-q", "manager"]);
    (worker.trim().to_string(), manager.trim().to_string())
}

/// `cluster join` of `node` with `token` through the manager `via`.
pub fn join(node: &TestNode, token: &str, via: &TestNode) -> String {
    node.shoal_ok(&[
        "cluster",
        "join",
        "--token",
        token,
        &format!("{}:2377", via.addr()),
    ])
}

/// One row of `node ls`, by column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub id: String,
    pub is_self: bool,
    pub status: String,
    pub availability: String,
    pub manager_status: String,
}

/// `node ls` on `node`, parsed.
pub fn node_ls(node: &TestNode) -> Vec<NodeRow> {
    parse_node_ls(&node.shoal_ok(&["node", "ls"]))
}

pub fn parse_node_ls(text: &str) -> Vec<NodeRow> {
    let mut lines = text.lines();
    let header = lines.next().expect("node ls header");
    let col = |name: &str| header.find(name).expect("node ls column");
    let (hostname, status, avail, mgr, engine) = (
        col("HOSTNAME"),
        col("STATUS"),
        col("AVAILABILITY"),
        col("MANAGER STATUS"),
        col("ENGINE VERSION"),
    );
    lines
        .map(|l| {
            let cell =
                |a: usize, b: usize| l.get(a..b.min(l.len())).unwrap_or("").trim().to_string();
            let id_cell = cell(0, hostname);
            let first = id_cell.split_whitespace().next().unwrap_or("").to_string();
            NodeRow {
                is_self: id_cell.ends_with('*'),
                id: first,
                status: cell(status, avail),
                availability: cell(avail, mgr),
                manager_status: cell(mgr, engine),
            }
        })
        .collect()
}

/// This node's ID as the daemon reports it.
pub fn node_id(node: &TestNode) -> String {
    let info: serde_json::Value =
        serde_json::from_str(&node.shoal_ok(&["info", "--format", "json"])).unwrap();
    info["node_id"].as_str().unwrap().to_string()
}

/// Waits until `node ls` on `on` satisfies `check`, returning the rows.
pub fn wait_node_ls(on: &TestNode, what: &str, check: impl Fn(&[NodeRow]) -> bool) -> Vec<NodeRow> {
    wait_for(what, SETTLE, || {
        let out = on.shoal(&["node", "ls"]);
        if !out.status.success() {
            return None;
        }
        let rows = parse_node_ls(&String::from_utf8_lossy(&out.stdout));
        check(&rows).then_some(rows)
    })
}

/// The row for `id`.
pub fn row<'a>(rows: &'a [NodeRow], id: &str) -> &'a NodeRow {
    rows.iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("node {id} not in node ls: {rows:?}"))
}

/// Splits a node's stored credentials into the files a remote CLI reads (ca.pem, cert.pem,
/// key.pem), to call a manager with that node's certificate.
pub fn export_node_certs(node: &TestNode, out: &std::path::Path) {
    let certs = node.state_dir().join("certificates");
    let ca = std::fs::read_to_string(certs.join("ca.crt")).expect("node CA file");
    let both = std::fs::read_to_string(certs.join("node.pem")).expect("node cert file");
    let split = both
        .find("-----BEGIN")
        .and_then(|first| both[first + 1..].find("-----BEGIN").map(|i| i + first + 1));
    let (cert, key) = both.split_at(split.expect("node.pem holds a certificate and a key"));
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join("ca.pem"), ca).unwrap();
    std::fs::write(out.join("cert.pem"), cert).unwrap();
    std::fs::write(out.join("key.pem"), key).unwrap();
}
