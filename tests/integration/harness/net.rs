//! TestNet: one test's private L2 network, a bridge in its own "switch" namespace that every
//! node of the test plugs into with a veth pair.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};

use super::{TestNode, cleanup, require_root, run, unique_name};

/// Subnet every test network uses; namespaces keep tests apart, so they can all share it.
pub const SUBNET_PREFIX: [u8; 3] = [10, 88, 0];
pub const PREFIX_LEN: u8 = 24;

pub struct TestNet {
    name: String,
    switch_ns: String,
    dir: PathBuf,
    next_host: AtomicU8,
}

impl TestNet {
    /// Makes the switch namespace and its bridge. `test` only labels logs and temp dirs.
    pub fn new(test: &str) -> TestNet {
        require_root();
        cleanup::sweep_stale_once();
        let name = unique_name();
        let switch_ns = format!("{name}-sw");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("create test dir");
        std::fs::write(dir.join("test-name"), test).expect("write test name");
        run("ip", &["netns", "add", &switch_ns]);
        let net = TestNet {
            name,
            switch_ns,
            dir,
            next_host: AtomicU8::new(1),
        };
        net.ip(&["link", "set", "lo", "up"]);
        net.ip(&["link", "add", "br0", "type", "bridge"]);
        net.ip(&["link", "set", "br0", "up"]);
        net
    }

    /// A new node plugged into this network, not yet started.
    pub fn node(&self, label: &str) -> TestNode {
        let host = self.next_host.fetch_add(1, Ordering::Relaxed);
        assert!(host < 250, "too many nodes in one test network");
        let [a, b, c] = SUBNET_PREFIX;
        let addr = Ipv4Addr::new(a, b, c, host);
        let netns = format!("{}-{label}", self.name);
        let port = format!("p{host}");
        run("ip", &["netns", "add", &netns]);
        // Make the pair inside the switch namespace, its far end named eth0 inside the node's.
        self.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        self.ip(&["link", "set", &port, "master", "br0"]);
        self.ip(&["link", "set", &port, "up"]);
        let cidr = format!("{addr}/{PREFIX_LEN}");
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", &cidr, "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            // A default route, so "the address of the default route's interface" means eth0.
            vec!["route", "add", "default", "dev", "eth0"],
        ] {
            let mut full = vec!["-n", &netns];
            full.extend(args);
            run("ip", &full);
        }
        TestNode::new(label, netns, addr, self.dir.join(label))
    }

    /// Cuts a node off the network (its switch port goes down) or reconnects it.
    pub fn set_link(&self, node: &TestNode, up: bool) {
        let port = format!("p{}", node.addr().octets()[3]);
        self.ip(&["link", "set", &port, if up { "up" } else { "down" }]);
    }

    fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.switch_ns];
        full.extend_from_slice(args);
        run("ip", &full);
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        cleanup::delete_netns(&self.switch_ns);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
