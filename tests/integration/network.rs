//! The node-local bridge for real: `shoal container run --network bridge` under a real daemon in
//! its node's namespace, where the bridge, veths, namespace files and nft table are made (and
//! vanish with the namespace at teardown). Proves addresses and routes, outbound NAT to another
//! node (which sees the first node's address), container-to-container traffic over the bridge,
//! that a host forward chain dropping by policy does not block it, that a daemon crash keeps
//! every attachment, and that removal leaves nothing behind.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::{TestNet, TestNode, run, wait_for};
use crate::images::images;

const LONG: Duration = Duration::from_secs(60);
const IMAGE: &str = "test/busybox:oci";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A started node with the busybox image imported.
fn node_with_image(net: &TestNet, label: &str) -> TestNode {
    let mut node = net.node(label);
    node.start(&[]);
    let out = node.shoal_ok(&["image", "import", images().oci.to_str().unwrap()]);
    assert!(out.contains("Loaded image: test/busybox:oci"), "{out}");
    node
}

/// `container run ARGS` expecting exit code 0; stdout.
fn run_ok(node: &TestNode, args: &[&str]) -> String {
    let mut full = vec!["container", "run"];
    full.extend_from_slice(args);
    let out: Output = node.shoal(&full);
    assert!(
        out.status.success(),
        "`shoal {}` failed ({}):\nstdout:\n{}\nstderr:\n{}\ndaemon log:\n{}",
        full.join(" "),
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        node.daemon_log()
    );
    text(&out.stdout)
}

/// `ip -n <node netns> ARGS`: the node's (daemon's) view of its network.
fn node_ip(node: &TestNode, args: &[&str]) -> String {
    let mut full = vec!["-n", node.netns()];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// A container's namespace file, from `container inspect`.
fn netns_of(node: &TestNode, container: &str) -> PathBuf {
    let info: serde_json::Value =
        serde_json::from_str(&node.shoal_ok(&["container", "inspect", container])).unwrap();
    PathBuf::from(info[0]["network_namespace"].as_str().unwrap())
}

/// The IPv4 address (CIDR) of eth0 in a namespace file, seen from outside the container.
fn address_in(netns: &Path) -> String {
    let out = run(
        "nsenter",
        &[
            &format!("--net={}", netns.display()),
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "eth0",
        ],
    );
    cidr_in(&out).unwrap_or_else(|| panic!("no IPv4 address on eth0 in {netns:?}: {out}"))
}

/// The first `inet A.B.C.D/N` in `ip addr` output.
fn cidr_in(ip_output: &str) -> Option<String> {
    let mut words = ip_output.split_whitespace();
    words.find(|w| *w == "inet")?;
    words.next().map(str::to_string)
}

/// The node's IPAM file (addresses held by containers and tasks).
fn ipam(node: &TestNode) -> serde_json::Value {
    let path = node.state_dir().join("network/ipam.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// Host-side veths of the bridge in the node's namespace.
fn veths(node: &TestNode) -> Vec<String> {
    node_ip(node, &["-o", "link", "show", "master", "shoal0"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect()
}

/// Namespace files the daemon has made (beside its socket).
fn netns_files(node: &TestNode) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(node.dir().join("netns"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(String::from))
        .filter(|m| m.starts_with(&d))
        .collect()
}

/// A one-shot TCP server inside `node`'s namespace (no daemon needed there): accepts one
/// connection, reads a line, answers `pong`, and reports the peer's address and the line.
fn tcp_server_in(node: &TestNode, port: u16) -> mpsc::Receiver<(SocketAddr, String)> {
    let ns = std::fs::File::open(format!("/run/netns/{}", node.netns())).unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    // A thread of its own: setns changes only the calling thread, which ends with the server.
    std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
        ready_tx.send(()).unwrap();
        let (mut conn, peer) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(conn.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        conn.write_all(b"pong\n").unwrap();
        let _ = tx.send((peer, line.trim().to_string()));
    });
    ready_rx.recv_timeout(LONG).unwrap();
    rx
}

#[test]
fn network_bridge_gives_address_route_and_outbound_nat() {
    let net = TestNet::new("network_bridge");
    let mut n1 = net.node("n1");
    // What Docker leaves on a host: a forward chain that drops by policy (iptables-nft). The
    // daemon must open it for its bridge, or nothing gets out.
    let script = n1.dir().join("docker-like.nft");
    std::fs::write(
        &script,
        "add table ip filter\n\
         add chain ip filter FORWARD { type filter hook forward priority filter; policy drop; }\n",
    )
    .unwrap();
    run(
        "ip",
        &[
            "netns",
            "exec",
            n1.netns(),
            "nft",
            "-f",
            script.to_str().unwrap(),
        ],
    );
    n1.start(&[]);
    let out = n1.shoal_ok(&["image", "import", images().oci.to_str().unwrap()]);
    assert!(out.contains("Loaded image"), "{out}");
    // The other end: a plain namespace on the test network, no daemon.
    let n2 = net.node("n2");

    // Nothing is made before a bridged container asks for it.
    assert!(
        !node_ip(&n1, &["-o", "link"]).contains("shoal0"),
        "bridge made too early"
    );

    // --network none (the default): loopback only, no route.
    let out = run_ok(
        &n1,
        &[
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "ip -o link; echo routes; ip route",
        ],
    );
    let links: Vec<&str> = out.lines().take_while(|l| *l != "routes").collect();
    assert_eq!(links.len(), 1, "{out}");
    assert!(links[0].contains(": lo:"), "{out}");
    assert!(out.trim_end().ends_with("routes"), "{out}");

    // --network bridge: an address in the subnet, a default route via the bridge, and a
    // connection to n2 that arrives from n1's address (masqueraded).
    let server = tcp_server_in(&n2, 7000);
    let cmd = format!(
        "ip -4 -o addr show eth0; ip route; cat /etc/resolv.conf; \
         echo ping-from-container | timeout 10 nc {} 7000",
        n2.addr()
    );
    let out = run_ok(
        &n1,
        &["--rm", "--network", "bridge", IMAGE, "sh", "-c", &cmd],
    );
    let cidr = cidr_in(&out).unwrap_or_else(|| panic!("no address: {out}"));
    let ip: Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
    assert!(
        cidr.ends_with("/16") && ip.octets()[..2] == [172, 29],
        "{out}"
    );
    assert!(out.contains("default via 172.29.0.1 dev eth0"), "{out}");
    assert!(out.contains("pong"), "the container got no answer: {out}");
    // Name servers it can reach from behind the NAT: none on the host's loopback.
    assert!(out.contains("nameserver "), "{out}");
    assert!(!out.contains("nameserver 127."), "{out}");
    let (peer, line) = server.recv_timeout(LONG).unwrap();
    assert_eq!(line, "ping-from-container");
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(n1.addr()),
        "n2 must see n1's address, not the container's"
    );

    // The node's side: bridge with the gateway, forwarding on, our nft table, and the foreign
    // dropping chain opened for the bridge only.
    assert!(
        node_ip(&n1, &["-4", "-o", "addr", "show", "shoal0"]).contains("172.29.0.1/16"),
        "bridge address"
    );
    let fwd = run(
        "ip",
        &[
            "netns",
            "exec",
            n1.netns(),
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ],
    );
    assert_eq!(fwd.trim(), "1");
    let netns = n1.netns().to_string();
    let nft = |args: &[&str]| {
        let mut full = vec!["netns", "exec", &netns, "nft"];
        full.extend_from_slice(args);
        run("ip", &full)
    };
    let ours = nft(&["list", "table", "ip", "shoal"]);
    assert!(
        ours.contains("ip saddr 172.29.0.0/16 oifname != \"shoal0\" masquerade"),
        "{ours}"
    );
    let docker = nft(&["list", "chain", "ip", "filter", "FORWARD"]);
    assert!(
        docker.contains("iifname \"shoal0\" accept comment \"shoal:shoal0\""),
        "{docker}"
    );
    // The rules are not piled up again by a restart.
    n1.stop();
    n1.start(&[]);
    let docker = nft(&["list", "chain", "ip", "filter", "FORWARD"]);
    assert_eq!(docker.matches("shoal:shoal0").count(), 2, "{docker}");

    // Two containers on the node talk over the bridge.
    n1.shoal_ok(&[
        "container",
        "run",
        "-d",
        "--name",
        "listener",
        "--network",
        "bridge",
        IMAGE,
        "sh",
        "-c",
        "ip -4 -o addr show eth0; nc -l -p 8000",
    ]);
    let listener_ip = wait_for("the listener's address", LONG, || {
        let logs = n1.shoal_ok(&["container", "logs", "listener"]);
        cidr_in(&logs).map(|c| c.split('/').next().unwrap().to_string())
    });
    assert_eq!(
        format!("{listener_ip}/16"),
        address_in(&netns_of(&n1, "listener"))
    );
    let cmd = format!(
        "for i in $(seq 100); do echo over-the-bridge | timeout 5 nc {listener_ip} 8000 && \
         break; sleep 0.1; done"
    );
    run_ok(
        &n1,
        &["--rm", "--network", "bridge", IMAGE, "sh", "-c", &cmd],
    );
    wait_for("the message to cross the bridge", LONG, || {
        n1.shoal_ok(&["container", "logs", "listener"])
            .contains("over-the-bridge")
            .then_some(())
    });

    // Bad input is refused with the fix.
    let err = n1.shoal_err(&["container", "run", "--network", "host", IMAGE, "true"]);
    assert!(err.contains("bridge") && err.contains("none"), "{err}");
    let err = n1.shoal_err(&[
        "container",
        "run",
        "--network",
        "bridge",
        "--netns",
        "/run/netns/x",
        IMAGE,
        "true",
    ]);
    assert!(err.contains("--netns"), "{err}");

    n1.shoal_ok(&["container", "rm", "-f", "listener"]);
    assert_eq!(netns_files(&n1), Vec::<String>::new());
    assert_eq!(veths(&n1), Vec::<String>::new());
}

#[test]
fn network_attachments_survive_a_daemon_crash_and_removal_leaves_nothing() {
    let net = TestNet::new("network_restart");
    let mut n1 = node_with_image(&net, "n1");
    n1.shoal_ok(&[
        "container",
        "run",
        "-d",
        "--name",
        "keep",
        "--network",
        "bridge",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let ns = netns_of(&n1, "keep");
    assert!(ns.starts_with(n1.dir().join("netns")), "{ns:?}");
    let addr = address_in(&ns);
    let key = ns.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(
        ipam(&n1)["allocations"][&key].as_str().unwrap(),
        addr.split('/').next().unwrap()
    );
    assert_eq!(veths(&n1).len(), 1);

    // A crash: the container runs on, and the restarted daemon finds its attachment as it was.
    n1.kill();
    n1.start(&[]);
    assert_eq!(address_in(&ns), addr);
    assert_eq!(veths(&n1).len(), 1);
    assert!(
        n1.shoal_ok(&["container", "ps"]).contains("keep"),
        "the container should still run"
    );
    // The address book survived: a new container gets a different address.
    n1.shoal_ok(&[
        "container",
        "run",
        "-d",
        "--name",
        "second",
        "--network",
        "bridge",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let second = address_in(&netns_of(&n1, "second"));
    assert_ne!(second, addr);
    assert_eq!(veths(&n1).len(), 2);
    assert_eq!(netns_files(&n1).len(), 2);

    // Removal: no veth, no namespace file or mount, no address held.
    n1.shoal_ok(&["container", "rm", "-f", "keep"]);
    n1.shoal_ok(&["container", "rm", "-f", "second"]);
    // A foreground --rm run goes the same way.
    run_ok(&n1, &["--rm", "--network", "bridge", IMAGE, "true"]);
    // So does one the engine removes by itself (-d --rm): its attachment is collected by the
    // sweep that follows the next bridged create.
    let id = n1.shoal_ok(&[
        "container",
        "run",
        "-d",
        "--rm",
        "--network",
        "bridge",
        IMAGE,
        "true",
    ]);
    wait_for("the -d --rm container to remove itself", LONG, || {
        (!n1.shoal_ok(&["container", "ps", "-aq"])
            .contains(&id.trim()[..12]))
        .then_some(())
    });
    run_ok(&n1, &["--rm", "--network", "bridge", IMAGE, "true"]);
    wait_for(
        "the self-removed container's attachment to go",
        LONG,
        || netns_files(&n1).is_empty().then_some(()),
    );
    assert_eq!(veths(&n1), Vec::<String>::new());
    assert_eq!(netns_files(&n1), Vec::<String>::new());
    let netns_dir = n1.dir().join("netns");
    assert_eq!(mounts_under(&netns_dir), Vec::<String>::new());
    let held = ipam(&n1)["allocations"].as_object().unwrap().len();
    assert_eq!(held, 0, "addresses still held: {}", ipam(&n1));
}

/// Runs `f` on a thread of its own inside `node`'s network namespace, with a tokio runtime of
/// that thread (so netlink sockets, nft and `ip` processes all act on the node's network).
fn in_node_netns<T: Send + 'static>(node: &TestNode, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(format!("/run/netns/{}", node.netns())).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// `f` on a current-thread runtime inside the node's namespace.
fn block_on_in<T: Send + 'static>(
    node: &TestNode,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    in_node_netns(node, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
}

/// What the task executor relies on, on the real kernel, without a daemon: attach is
/// idempotent and repairs a deleted veth with the same address; a new instance (a restarted
/// daemon) finds attachments as they were; two instances over one state are refused; a
/// flushed firewall is restored by reconcile; detach leaves nothing.
#[test]
fn network_task_attachments_on_the_real_kernel() {
    use shoal_overlay::{BridgeConfig, BridgeNetworks, TaskNetworks, host_veth};

    let net = TestNet::new("network_tasks");
    let n1 = net.node("n1");
    let config = BridgeConfig {
        netns_dir: n1.dir().join("netns"),
        ..BridgeConfig::new(n1.state_dir().join("network"))
    };
    let task = "x5kq2m9p0a1b2c3d4e5f6g7h8";
    let veth = host_veth(task);

    let cfg = config.clone();
    let (first, second) = block_on_in(&n1, async move {
        let nets = BridgeNetworks::open(cfg.clone()).await.unwrap();
        let first = nets.attach(task).await.unwrap();
        assert_eq!(nets.attach(task).await.unwrap(), first, "idempotent");
        let e = BridgeNetworks::open(cfg.clone()).await.err().unwrap();
        assert!(e.to_string().contains("already in use"), "{e}");
        // Someone deletes the host end: the next attach puts the pair back, same address.
        run("ip", &["link", "del", &host_veth(task)]);
        assert_eq!(nets.attach(task).await.unwrap(), first, "repaired");
        let second = nets.attach("other-task").await.unwrap();
        // Someone flushes the firewall: reconcile puts our table back.
        run("nft", &["delete", "table", "ip", "shoal"]);
        nets.reconcile().await.unwrap();
        let table = run("nft", &["list", "table", "ip", "shoal"]);
        assert!(table.contains("masquerade"), "{table}");
        (first, second)
    });
    assert_ne!(first.address, second.address);
    assert_eq!(first.gateway, "172.29.0.1");
    // Seen from outside: the namespace has eth0 with the address and the default route, and
    // the host end hangs on the bridge.
    assert_eq!(address_in(&first.netns_path), first.address);
    let routes = run(
        "nsenter",
        &[
            &format!("--net={}", first.netns_path.display()),
            "ip",
            "route",
        ],
    );
    assert!(
        routes.contains("default via 172.29.0.1 dev eth0"),
        "{routes}"
    );
    assert!(veths(&n1).contains(&veth), "{:?}", veths(&n1));

    // A new instance (the daemon after a restart) finds both as they were, then detaches.
    let cfg = config.clone();
    let (first_again, ns_path) = (first.clone(), first.netns_path.clone());
    block_on_in(&n1, async move {
        let nets = BridgeNetworks::open(cfg).await.unwrap();
        assert_eq!(nets.attach(task).await.unwrap(), first_again);
        nets.detach(task).await.unwrap();
        nets.detach(task).await.unwrap();
        nets.detach("other-task").await.unwrap();
    });
    assert!(!ns_path.exists(), "namespace file left: {ns_path:?}");
    assert_eq!(veths(&n1), Vec::<String>::new());
    assert_eq!(mounts_under(&config.netns_dir), Vec::<String>::new());
    assert_eq!(ipam(&n1)["allocations"].as_object().unwrap().len(), 0);
}
