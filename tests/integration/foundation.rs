//! The foundation: a daemon in its own namespace answers the CLI over its socket, guards its
//! state dir, shuts down cleanly, and the harness itself networks and tears down for real.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::harness::{TestNet, shoal_bin};

#[test]
fn info_and_version_answer_over_the_root_only_socket() {
    let net = TestNet::new("info");
    let mut node = net.node("n1");
    node.start(&[]);

    let node_id = std::fs::read_to_string(node.state_dir().join("node-id")).unwrap();
    let text = node.shoal_ok(&["info"]);
    assert!(
        text.contains(&format!("Node ID:          {}", node_id.trim())),
        "{text}"
    );
    assert!(text.contains("Cluster:          inactive"), "{text}");
    assert!(
        text.contains(&node.state_dir().display().to_string()),
        "{text}"
    );
    assert!(
        text.contains(&format!("Listen Address:   {}:2377", node.addr())),
        "{text}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&node.shoal_ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(json["node_id"], node_id.trim());
    let cgroup_mode = json["cgroup_mode"].as_str().unwrap();
    assert!(
        ["v1", "v2", "hybrid"].contains(&cgroup_mode),
        "{cgroup_mode}"
    );
    assert!(!json["kernel_version"].as_str().unwrap().is_empty());

    let version = node.shoal_ok(&["version"]);
    assert!(
        version.contains("Client:") && version.contains("Server:"),
        "{version}"
    );
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");

    let meta = std::fs::metadata(node.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "socket owner");
}

#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused() {
    let net = TestNet::new("lock");
    let mut node = net.node("n1");
    node.start(&[]);
    let state_dir = node.state_dir();
    let other_socket = node.dir().join("other.sock");
    let out = node
        .command(
            shoal_bin(),
            &[
                "daemon",
                "--state-dir",
                state_dir.to_str().unwrap(),
                "--socket",
                other_socket.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already using state directory"), "{err}");
    assert!(err.contains("--state-dir"), "{err}");
    assert!(node.is_running(), "the first daemon must be untouched");
}

#[test]
fn sigterm_stops_cleanly_and_a_restart_keeps_the_identity() {
    let net = TestNet::new("restart");
    let mut node = net.node("n1");
    node.start(&[]);
    let before: serde_json::Value =
        serde_json::from_str(&node.shoal_ok(&["info", "--format", "json"])).unwrap();

    let status = node.stop();
    assert!(status.success(), "daemon exited with {status}");
    assert!(!node.socket().exists(), "socket file left behind");
    assert!(node.daemon_log().contains("received SIGTERM"));
    let err = node.shoal_err(&["info"]);
    assert!(err.contains("Is the daemon running?"), "{err}");
    assert!(err.contains("shoal daemon"), "{err}");

    // A crash leaves the socket file; the next daemon replaces it.
    node.start(&[]);
    node.kill();
    assert!(node.socket().exists());
    node.start(&[]);
    let after: serde_json::Value =
        serde_json::from_str(&node.shoal_ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(before["node_id"], after["node_id"]);
}

#[test]
fn nodes_have_their_own_addresses_and_reach_each_other() {
    let net = TestNet::new("network");
    let a = net.node("a");
    let b = net.node("b");
    assert_ne!(a.addr(), b.addr());

    // Each node sees only loopback and its eth0, with its own address.
    let links = String::from_utf8(
        a.command("ip", &["-brief", "addr"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(links.contains(&a.addr().to_string()), "{links}");
    assert!(!links.contains(&b.addr().to_string()), "{links}");
    assert_eq!(links.lines().count(), 2, "{links}");

    // TCP from b's namespace to a listener in a's namespace, across the test bridge.
    let a_addr = a.addr();
    let listener = in_netns(a.netns(), move || {
        std::net::TcpListener::bind((a_addr, 7000))
    });
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.unwrap().accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        buf
    });
    let mut client = in_netns(b.netns(), move || {
        std::net::TcpStream::connect((a_addr, 7000))
    })
    .expect("connect across the test bridge");
    client.write_all(b"hello").unwrap();
    assert_eq!(&server.join().unwrap(), b"hello");

    // Cutting b's link isolates it.
    net.set_link(&b, false);
    let cut = in_netns(b.netns(), move || {
        std::net::TcpStream::connect_timeout(
            &(a_addr, 7000).into(),
            std::time::Duration::from_millis(500),
        )
    });
    assert!(cut.is_err(), "b still reached a with its link down");
}

#[test]
fn teardown_removes_namespaces_processes_and_files() {
    let (netns, dir, pid);
    {
        let net = TestNet::new("teardown");
        let mut node = net.node("n1");
        node.start(&[]);
        netns = node.netns().to_string();
        dir = node.dir().to_path_buf();
        pid = std::fs::read_to_string(node.state_dir().join("shoal.lock")).unwrap();
    }
    assert!(!Path::new("/run/netns").join(&netns).exists(), "netns left");
    assert!(!dir.exists(), "node dir left");
    assert!(
        !Path::new("/proc").join(pid.trim()).exists(),
        "daemon left running"
    );
}

#[test]
fn completion_scripts_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(shoal_bin())
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("shoal") && script.contains("daemon"),
            "{shell}: {script}"
        );
    }
}

/// Runs `f` on a thread that has entered `netns`; sockets made there stay in that namespace.
fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(format!("/run/netns/{netns}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}
