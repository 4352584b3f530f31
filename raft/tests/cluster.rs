//! Multi-node tests of the replicated Store over real TCP on loopback (issue 4, point 7).
//!
//! Nodes run in this process, each with its own sled directory and ephemeral port. "Killing" a
//! node shuts its Raft down and drops its server with every open connection, as a crash would;
//! restarting reopens the same directory on the same address. Every wait is a bounded
//! wait-until loop with a generous limit, so the tests hold on a loaded 2-core machine; no
//! assertion depends on timing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use shoal_proto::raft_transport_client::RaftTransportClient;
use shoal_proto::{ObjectKind, RaftStatusRequest, Service, Task};
use shoal_raft::{
    Action, MembershipError, NodeConfig, RaftNode, Store, StoreError, TcpDialer, TlsConfig,
};
use tempfile::TempDir;
use tokio::net::TcpListener;

/// Cluster tests run one at a time: on a 2-core machine, several 3-node clusters electing at
/// once would only test the scheduler.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Upper bound for anything a test waits for (elections, catch-up, snapshots).
const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `check` until it holds, or fails the test after `PATIENCE`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn task(id: &str) -> Task {
    Task {
        id: id.into(),
        service_id: "svc".into(),
        ..Default::default()
    }
}

/// An in-process cluster on loopback.
struct Cluster {
    nodes: BTreeMap<u64, Option<RaftNode>>,
    addrs: BTreeMap<u64, String>,
    dirs: BTreeMap<u64, TempDir>,
    tls: BTreeMap<u64, TlsConfig>,
    tweak: fn(&mut NodeConfig),
}

impl Cluster {
    /// Starts `n` nodes (IDs 1..=n) and bootstraps them as voters.
    async fn start(n: u64) -> Cluster {
        Cluster::start_with(n, BTreeMap::new(), |_| {}).await
    }

    async fn start_with(
        n: u64,
        tls: BTreeMap<u64, TlsConfig>,
        tweak: fn(&mut NodeConfig),
    ) -> Cluster {
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            addrs: BTreeMap::new(),
            dirs: BTreeMap::new(),
            tls,
            tweak,
        };
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            cluster
                .addrs
                .insert(id, listener.local_addr().unwrap().to_string());
            cluster.dirs.insert(id, tempfile::tempdir().unwrap());
            listeners.insert(id, listener);
        }
        for (id, listener) in listeners {
            let node = RaftNode::start(cluster.config(id), Some(listener))
                .await
                .unwrap();
            cluster.nodes.insert(id, Some(node));
        }
        cluster
            .node(1)
            .initialize(cluster.addrs.clone())
            .await
            .unwrap();
        cluster.leader().await;
        cluster
    }

    fn config(&self, id: u64) -> NodeConfig {
        let mut config = NodeConfig::new(id, self.addrs[&id].clone(), self.dirs[&id].path());
        config.tls = self.tls.get(&id).cloned();
        config.dialer = Arc::new(TcpDialer);
        (self.tweak)(&mut config);
        config
    }

    fn node(&self, id: u64) -> &RaftNode {
        self.nodes[&id].as_ref().expect("node is running")
    }

    fn store(&self, id: u64) -> Store {
        self.node(id).store()
    }

    fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Waits until every running node agrees on a running leader.
    async fn leader(&self) -> u64 {
        let mut agreed = 0;
        eventually("all running nodes agree on a running leader", || {
            let leaders: BTreeSet<Option<u64>> = self
                .running()
                .iter()
                .map(|id| self.node(*id).leader())
                .collect();
            match leaders.into_iter().collect::<Vec<_>>()[..] {
                [Some(l)] if self.running().contains(&l) && self.node(l).is_leader() => {
                    agreed = l;
                    true
                }
                _ => false,
            }
        })
        .await;
        agreed
    }

    async fn kill(&mut self, id: u64) {
        let node = self
            .nodes
            .get_mut(&id)
            .unwrap()
            .take()
            .expect("node was running");
        node.shutdown().await;
    }

    /// Restarts a killed node from its directory, on its address.
    async fn restart(&mut self, id: u64) {
        let listener = bind_again(&self.addrs[&id]).await;
        let node = RaftNode::start(self.config(id), Some(listener))
            .await
            .unwrap();
        self.nodes.insert(id, Some(node));
    }

    /// Waits until every running node has applied at least `index`.
    async fn converge(&self, index: u64) {
        for id in self.running() {
            let store = self.store(id);
            eventually(&format!("node {id} applies index {index}"), || {
                store.index() >= index
            })
            .await;
        }
    }

    async fn stop(mut self) {
        for id in self.running() {
            self.kill(id).await;
        }
    }
}

/// Binds an address just freed by a killed node.
async fn bind_again(addr: &str) -> TcpListener {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    }
}

/// Creates a task through `store`, retrying what failed for lack of a leader or with an
/// uncertain outcome (an object that then already exists was written by the earlier attempt).
async fn create_task(store: &Store, id: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match store.update(|tx| tx.create(task(id))).await {
            Ok(c) => return c.index,
            Err(StoreError::AlreadyExists { .. }) => {
                if let Ok(index) = store.read_barrier().await {
                    return index;
                }
            }
            Err(StoreError::NoLeader(_) | StoreError::Uncertain(_))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("creating {id}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_writes_through_any_node_are_readable_on_all() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    assert!((1..=3).contains(&leader));
    let status = cluster.node(leader).status();
    assert_eq!(status.members.iter().filter(|m| m.voter).count(), 3);

    let mut last = 0;
    for id in 1..=3 {
        last = last.max(create_task(&cluster.store(id), &format!("via-{id}")).await);
    }
    cluster.converge(last).await;
    for id in 1..=3 {
        let store = cluster.store(id);
        for via in 1..=3 {
            let t: Task = store.get(&format!("via-{via}")).expect("replicated");
            assert!(t.meta.unwrap().version > 0);
        }
        // A linearizable read on any node sees every write acknowledged before it.
        let n = store.linearizable(|v| v.count::<Task>()).await.unwrap();
        assert_eq!(n, 3);
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_yields_a_new_leader_and_writes_continue() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3).await;
    let old = cluster.leader().await;
    create_task(&cluster.store(old), "before").await;
    cluster.kill(old).await;
    let new = cluster.leader().await;
    assert_ne!(new, old);
    let follower = *cluster.running().iter().find(|id| **id != new).unwrap();
    let index = create_task(&cluster.store(follower), "after").await;
    cluster.converge(index).await;
    for id in cluster.running() {
        assert!(cluster.store(id).get::<Task>("before").is_some());
        assert!(cluster.store(id).get::<Task>("after").is_some());
    }
    // The old leader comes back as a follower and catches up.
    cluster.restart(old).await;
    cluster.converge(index).await;
    assert!(cluster.store(old).get::<Task>("after").is_some());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_catches_up_from_the_log_without_replaying_it() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let victim = *cluster.running().iter().find(|id| **id != leader).unwrap();
    let first = create_task(&cluster.store(leader), "early").await;
    cluster.converge(first).await;
    cluster.kill(victim).await;

    let mut last = 0;
    for i in 0..50 {
        last = create_task(&cluster.store(leader), &format!("missed-{i}")).await;
    }
    cluster.restart(victim).await;
    // The tables were persisted: the node starts where it stopped, not from index 0.
    let store = cluster.store(victim);
    assert!(store.index() >= first, "state machine was not persisted");
    assert!(store.get::<Task>("early").is_some());
    cluster.converge(last).await;
    for i in 0..50 {
        assert!(store.get::<Task>(&format!("missed-{i}")).is_some());
    }
    // Nothing was compacted, so it caught up from the log alone.
    assert!(
        cluster
            .node(victim)
            .raft()
            .metrics()
            .borrow()
            .snapshot
            .is_none()
    );
    cluster.stop().await;
}

/// Small snapshots, taken often, sent in many small chunks.
fn compact_often(c: &mut NodeConfig) {
    c.snapshot_interval = 40;
    c.keep_log_entries = 5;
    c.snapshot_chunk_size = 512;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_catches_up_from_a_snapshot_after_compaction() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start_with(3, BTreeMap::new(), compact_often).await;
    let leader = cluster.leader().await;
    let victim = *cluster.running().iter().find(|id| **id != leader).unwrap();
    cluster.kill(victim).await;
    let raft = cluster.node(leader).raft().clone();
    let mut last = 0;
    for i in 0..200 {
        last = create_task(&cluster.store(leader), &format!("t{i:03}")).await;
    }
    eventually("the leader purges its log", || {
        raft.metrics()
            .borrow()
            .purged
            .is_some_and(|p| p.index > 150)
    })
    .await;

    cluster.restart(victim).await;
    cluster.converge(last).await;
    let store = cluster.store(victim);
    assert_eq!(store.list::<Task>().len(), 200);
    let metrics = cluster.node(victim).raft().metrics().borrow().clone();
    assert!(
        metrics.snapshot.is_some_and(|s| s.index > 150),
        "the victim should have installed a snapshot: {metrics}"
    );
    // Replicas agree on versions, whether an object came from the log or from the snapshot.
    let on_leader: Task = cluster.store(leader).get("t150").unwrap();
    assert_eq!(store.get::<Task>("t150").unwrap(), on_leader);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_receives_the_store_as_a_streamed_snapshot() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start_with(3, BTreeMap::new(), compact_often).await;
    let leader = cluster.leader().await;
    let mut last = 0;
    for i in 0..200 {
        last = create_task(&cluster.store(leader), &format!("t{i:03}")).await;
    }
    let raft = cluster.node(leader).raft().clone();
    eventually("the leader purges its log", || {
        raft.metrics()
            .borrow()
            .purged
            .is_some_and(|p| p.index > 150)
    })
    .await;

    // A fourth, empty node joins as a learner: the log it needs is gone, so it gets the
    // snapshot (about 10 KiB here, in 512-byte chunks).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    cluster.addrs.insert(4, addr.clone());
    cluster.dirs.insert(4, tempfile::tempdir().unwrap());
    let node = RaftNode::start(cluster.config(4), Some(listener))
        .await
        .unwrap();
    cluster.nodes.insert(4, Some(node));
    cluster.node(leader).add_learner(4, addr).await.unwrap();
    cluster.converge(last).await;
    assert_eq!(cluster.store(4).list::<Task>().len(), 200);
    let metrics = cluster.node(4).raft().metrics().borrow().clone();
    assert!(
        metrics.snapshot.is_some(),
        "no snapshot installed: {metrics}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_state_was_wiped_can_be_removed_and_re_added() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let victim = *cluster.running().iter().find(|id| **id != leader).unwrap();
    create_task(&cluster.store(leader), "old").await;
    cluster.kill(victim).await;
    // Wipe its state directory.
    cluster.dirs.insert(victim, tempfile::tempdir().unwrap());

    let status = cluster.node(leader).remove_member(victim).await.unwrap();
    assert!(status.members.iter().all(|m| m.id != victim));
    let index = create_task(&cluster.store(leader), "while-away").await;

    // The same machine comes back empty and joins again: learner first, then voter.
    cluster.restart(victim).await;
    assert_eq!(cluster.store(victim).index(), 0);
    let addr = cluster.addrs[&victim].clone();
    cluster
        .node(leader)
        .add_learner(victim, addr)
        .await
        .unwrap();
    // Promotion may be asked of any node: a follower forwards it to the leader.
    let other = *cluster
        .running()
        .iter()
        .find(|id| **id != leader && **id != victim)
        .unwrap();
    let status = cluster.node(other).promote(victim).await.unwrap();
    assert!(status.members.iter().any(|m| m.id == victim && m.voter));
    cluster.converge(index).await;
    let store = cluster.store(victim);
    assert!(store.get::<Task>("old").is_some() && store.get::<Task>("while-away").is_some());
    let index = create_task(&store, "after-rejoin").await;
    cluster.converge(index).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_that_would_break_the_cluster_are_refused() {
    let _serial = SERIAL.lock().await;
    let single = Cluster::start(1).await;
    let err = single.node(1).remove_member(1).await.unwrap_err();
    assert!(matches!(err, MembershipError::LastVoter(1)), "{err}");
    assert!(err.to_string().contains("last voting manager"));
    single.stop().await;

    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let others: Vec<u64> = cluster
        .running()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let err = cluster.node(leader).promote(42).await.unwrap_err();
    assert!(matches!(err, MembershipError::NotAMember(42)), "{err}");
    let err = cluster
        .node(leader)
        .add_learner(others[0], "x:1")
        .await
        .unwrap_err();
    assert!(matches!(err, MembershipError::AlreadyVoter(_)), "{err}");

    // With one voter down, removing the other healthy one would leave {leader, dead}: no quorum.
    cluster.kill(others[1]).await;
    let leader = cluster.leader().await;
    let healthy = *cluster.running().iter().find(|id| **id != leader).unwrap();
    // The checks use what the leader knows: wait until it has noticed the dead member.
    let node = cluster.node(leader);
    eventually("the leader sees the killed member as unreachable", || {
        let status = node.status();
        status
            .members
            .iter()
            .any(|m| m.id == others[1] && !m.reachable)
            && status
                .members
                .iter()
                .any(|m| m.id == healthy && m.reachable)
    })
    .await;
    let err = cluster
        .node(leader)
        .remove_member(healthy)
        .await
        .unwrap_err();
    assert!(
        matches!(err, MembershipError::WouldLoseQuorum { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("fewer than the"), "{err}");
    // Removing the dead one is fine: the two reachable voters remain a quorum.
    cluster.node(leader).remove_member(others[1]).await.unwrap();
    create_task(&cluster.store(healthy), "still-writable").await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_versions_are_refused_across_nodes() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let index = create_task(&cluster.store(leader), "t").await;
    cluster.converge(index).await;
    let follower = *cluster.running().iter().find(|id| **id != leader).unwrap();

    // Two writers read the same version on different nodes; the second to commit loses.
    let mut a: Task = cluster.store(leader).get("t").unwrap();
    let mut b: Task = cluster.store(follower).get("t").unwrap();
    a.node_id = "n-a".into();
    b.node_id = "n-b".into();
    cluster
        .store(follower)
        .update(|tx| tx.update(b))
        .await
        .unwrap();
    let err = cluster
        .store(leader)
        .update(|tx| tx.update(a))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(err.is_refusal());
    let t: Task = cluster
        .store(leader)
        .linearizable(|v| v.get("t"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.node_id, "n-b");
    cluster.stop().await;
}

/// Concurrent transactions are gathered into shared log entries (group commit), yet each
/// caller gets its own transaction's result: all distinct creates land, and of many updates
/// read at the same version exactly one wins, whichever entry they share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_share_log_entries_and_each_gets_its_own_result() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let index = create_task(&cluster.store(leader), "hot").await;
    cluster.converge(index).await;

    let mut writers = tokio::task::JoinSet::new();
    for i in 0..64u64 {
        // Through every node, so forwarded and local proposals mix in the leader's batches.
        let store = cluster.store(1 + i % 3);
        writers.spawn(async move {
            let created = store
                .update(|tx| tx.create(task(&format!("c{i:02}"))))
                .await
                .map(|c| c.index);
            created.map(|index| (i, index))
        });
    }
    let hot: Task = cluster.store(leader).get("hot").unwrap();
    let mut updates = tokio::task::JoinSet::new();
    for i in 0..16 {
        let store = cluster.store(leader);
        let mut t = hot.clone();
        t.node_id = format!("n{i}");
        updates.spawn(async move { store.update(|tx| tx.update(t)).await.map(|c| c.index) });
    }

    let mut indexes = BTreeMap::<u64, usize>::new();
    while let Some(r) = writers.join_next().await {
        let (i, index) = r.unwrap().unwrap_or_else(|e| panic!("create: {e}"));
        assert!(index > 0, "c{i:02}");
        *indexes.entry(index).or_default() += 1;
    }
    let (mut won, mut refused, mut last) = (0, 0, 0);
    while let Some(r) = updates.join_next().await {
        match r.unwrap() {
            Ok(index) => {
                won += 1;
                last = index;
            }
            Err(e @ StoreError::Conflict { .. }) => {
                assert!(e.is_refusal());
                refused += 1;
            }
            Err(e) => panic!("update: {e}"),
        }
    }
    assert_eq!(
        (won, refused),
        (1, 15),
        "exactly one update read at one version wins"
    );
    assert!(
        indexes.values().any(|n| *n > 1),
        "64 concurrent creates never shared a log entry: {indexes:?}"
    );
    cluster
        .converge(last.max(*indexes.keys().last().unwrap()))
        .await;
    for id in cluster.running() {
        let store = cluster.store(id);
        for i in 0..64 {
            let t: Task = store.get(&format!("c{i:02}")).expect("replicated");
            // Objects of one entry share its index as their version.
            assert!(indexes.contains_key(&t.meta.unwrap().version));
        }
        let t: Task = store.get("hot").unwrap();
        assert_eq!(t.meta.unwrap().version, last);
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_every_commit_exactly_once_and_in_order_across_leader_changes() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let watcher = *cluster.running().iter().find(|id| **id != leader).unwrap();
    let store = cluster.store(watcher);
    create_task(&store, "pre-0").await;
    let (snapshot, mut watch) = store.view_and_watch(&[ObjectKind::Task]);

    let mut written = BTreeSet::from(["pre-0".to_string()]);
    for round in 0..3 {
        for i in 0..20 {
            let id = format!("r{round}-{i}");
            create_task(&store, &id).await;
            written.insert(id);
        }
        // Kill the current leader (never the watcher's node), then bring it back.
        let leader = cluster.leader().await;
        if leader != watcher {
            cluster.kill(leader).await;
            cluster.leader().await;
            cluster.restart(leader).await;
        }
    }
    let last = create_task(&store, "last").await;
    written.insert("last".into());

    let mut seen: Vec<String> = snapshot.list::<Task>().into_iter().map(|t| t.id).collect();
    let mut version = snapshot.index();
    loop {
        let event = tokio::time::timeout(PATIENCE, watch.next())
            .await
            .expect("watch stalled")
            .expect("watch ended");
        assert!(event.version > version, "events out of commit order");
        version = event.version;
        assert_eq!(event.action, Action::Create);
        seen.push(event.id().to_string());
        if event.version >= last {
            break;
        }
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a change was delivered twice");
    assert_eq!(unique, written, "a change was missed");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_leader_kills_with_a_writer_running_lose_nothing_and_double_nothing() {
    let _serial = SERIAL.lock().await;
    const KILLS: usize = 21;
    let mut cluster = Cluster::start(3).await;
    let stores: Arc<Mutex<BTreeMap<u64, Store>>> = Arc::new(Mutex::new(
        cluster
            .running()
            .iter()
            .map(|id| (*id, cluster.store(*id)))
            .collect(),
    ));
    // Seed the writer's counter: each write creates task w<i> and bumps the counter from i to
    // i+1 in one transaction, so an applied-twice write would be visible as a mismatch.
    let index = create_task(&cluster.store(1), "counter").await;
    cluster.converge(index).await;

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stores, acked, stop) = (stores.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i: u64 = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("w{i:05}");
                // Retry the same write until it is known to have landed.
                loop {
                    let store = {
                        let stores = stores.lock().unwrap();
                        let ids: Vec<u64> = stores.keys().copied().collect();
                        stores[&ids[rand::rng().random_range(0..ids.len())]].clone()
                    };
                    let result = store
                        .update(|tx| {
                            if tx.get::<Task>(&id).is_some() {
                                // An earlier attempt reported as uncertain did land.
                                return Ok(());
                            }
                            let mut counter: Task = tx.get("counter").expect("counter exists");
                            if counter.slot != i {
                                // This replica lags: retry once it catches up.
                                return Err(StoreError::Invalid("stale counter".into()));
                            }
                            counter.slot = i + 1;
                            tx.update(counter)?;
                            tx.create(task(&id))
                        })
                        .await;
                    match result {
                        Ok(_) => break,
                        // A previous uncertain attempt did land.
                        Err(StoreError::AlreadyExists { id: ref e, .. }) if *e == id => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                acked.lock().unwrap().push(id);
                i += 1;
            }
        })
    };

    let mut rng = rand::rng();
    for kill in 0..KILLS {
        // Let the writer make progress between kills.
        let before = acked.lock().unwrap().len();
        eventually(&format!("writes progress before kill {kill}"), || {
            acked.lock().unwrap().len() >= before + 3
        })
        .await;
        let leader = cluster.leader().await;
        stores.lock().unwrap().remove(&leader);
        cluster.kill(leader).await;
        cluster.leader().await;
        // Sometimes restart at once, sometimes after a few writes without it.
        if rng.random_bool(0.5) {
            let before = acked.lock().unwrap().len();
            eventually("writes continue with a node down", || {
                acked.lock().unwrap().len() > before
            })
            .await;
        }
        cluster.restart(leader).await;
        stores.lock().unwrap().insert(leader, cluster.store(leader));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::timeout(PATIENCE, writer)
        .await
        .expect("writer stops")
        .unwrap();

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > KILLS * 3);
    let leader = cluster.leader().await;
    let final_index = cluster.store(leader).read_barrier().await.unwrap();
    cluster.converge(final_index).await;
    for id in cluster.running() {
        let store = cluster.store(id);
        let tasks: Vec<Task> = store.list();
        let written: BTreeSet<&str> = tasks
            .iter()
            .map(|t| t.id.as_str())
            .filter(|id| id.starts_with('w'))
            .collect();
        for a in &acked {
            assert!(
                written.contains(a.as_str()),
                "node {id} lost acknowledged write {a}"
            );
        }
        let counter: Task = store.get("counter").unwrap();
        assert_eq!(
            counter.slot as usize,
            written.len(),
            "node {id}: a write was applied twice or partially"
        );
        assert_eq!(
            written.len(),
            acked.len(),
            "node {id}: an unacknowledged write appeared"
        );
    }
    cluster.stop().await;
}

/// A CA and node certificates made with rcgen, as issue 5's CA will make them.
struct Pki {
    ca_pem: String,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        Pki {
            ca_pem: issuer.pem(),
            issuer,
        }
    }

    /// mTLS settings for a manager whose certificate is signed by this CA.
    fn node(&self, cn: &str) -> TlsConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["shoal-manager".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        TlsConfig::mutual(
            self.ca_pem.as_bytes(),
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            "shoal-manager",
        )
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutual_tls_cluster_replicates_and_refuses_strangers() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new("shoal-test-ca");
    let tls: BTreeMap<u64, TlsConfig> = (1..=3)
        .map(|id| (id, pki.node(&format!("node-{id}"))))
        .collect();
    let cluster = Cluster::start_with(3, tls, |_| {}).await;
    let leader = cluster.leader().await;
    let follower = *cluster.running().iter().find(|id| **id != leader).unwrap();
    let index = create_task(&cluster.store(follower), "over-tls").await;
    cluster.converge(index).await;
    for id in 1..=3 {
        assert!(cluster.store(id).get::<Task>("over-tls").is_some());
    }

    let addr = cluster.addrs[&leader].clone();
    let status = |tls: Option<TlsConfig>| {
        let addr = addr.clone();
        async move {
            let channel = shoal_raft::network::tls::channel(
                &addr,
                tls,
                Arc::new(TcpDialer),
                Duration::from_secs(5),
            );
            let mut client = RaftTransportClient::new(channel);
            tokio::time::timeout(PATIENCE, client.status(RaftStatusRequest {}))
                .await
                .expect("answer or refusal")
        }
    };
    // A holder of a certificate from this CA gets an answer.
    let ok = status(Some(pki.node("operator")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.leader_id, leader);
    // A certificate from another CA is refused, and so is plaintext.
    let stranger = Pki::new("other-ca").node("intruder");
    assert!(status(Some(stranger)).await.is_err());
    assert!(status(None).await.is_err());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_a_cluster_without_quorum_fail_clearly() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start_with(3, BTreeMap::new(), |c| {
        c.propose_timeout = Duration::from_secs(2);
    })
    .await;
    let leader = cluster.leader().await;
    let others: Vec<u64> = cluster
        .running()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    for id in others {
        cluster.kill(id).await;
    }
    let err = cluster
        .store(leader)
        .update(|tx| {
            tx.create(Service {
                id: "s".into(),
                ..Default::default()
            })
        })
        .await
        .unwrap_err();
    // The old leader cannot commit: the outcome is reported as uncertain, never as success.
    assert!(
        matches!(err, StoreError::Uncertain(_) | StoreError::NoLeader(_)),
        "{err}"
    );
    cluster.stop().await;
}
