//! shoal-raft against etcd, on one machine, on loopback (issue 4, point 8).
//!
//! Starts a 3-member shoal-raft cluster (this binary, re-run in `node` mode, one process per
//! member) and a 3-member etcd cluster (Debian's `etcd`), and drives both the same way: one
//! gRPC connection to the leader, small-object updates (a ~150-byte Task; etcd gets a value of
//! the same bytes), first by one writer, then by 64 concurrent writers. Then measures leader
//! failover: SIGKILL the leader, time until the first write commits on a new leader; median of
//! 10. Prints one table; every process it starts is killed and every directory removed at the
//! end. Run with `cargo bench -p shoal-raft --bench raft_store` (see benches/README.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use shoal_proto::raft_transport_client::RaftTransportClient;
use shoal_proto::{
    Meta, ProposeRequest, RaftStatusRequest, StoreAction, StoreProposal, Task, TaskStatus,
    propose_response, store_action,
};
use shoal_raft::{NodeConfig, Object, RaftNode, TcpDialer};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

const SEQUENTIAL_OPS: usize = 1_000;
const WRITERS: usize = 64;
const OPS_PER_WRITER: usize = 150;
const FAILOVERS: usize = 10;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if args.get(1).map(String::as_str) == Some("node") {
        rt.block_on(node_main(&args[2..]));
        return;
    }
    rt.block_on(bench());
}

/// `node ID ADDR DIR PEERS [init]`: one shoal-raft member, until killed.
async fn node_main(args: &[String]) {
    let id: u64 = args[0].parse().expect("node id");
    let (addr, dir) = (&args[1], &args[2]);
    let peers: BTreeMap<u64, String> = args[3]
        .split(',')
        .map(|p| {
            let (id, addr) = p.split_once('=').expect("id=addr");
            (id.parse().expect("peer id"), addr.to_string())
        })
        .collect();
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let node = RaftNode::start(NodeConfig::new(id, addr.clone(), dir), Some(listener))
        .await
        .expect("start node");
    if args.get(4).map(String::as_str) == Some("init") {
        node.initialize(peers).await.expect("initialize");
    }
    std::future::pending::<()>().await;
}

/// Kills every child it holds when dropped, so nothing outlives the benchmark.
#[derive(Default)]
struct Children(BTreeMap<String, (Child, Vec<String>)>);

impl Children {
    fn spawn(&mut self, name: &str, program: &Path, args: Vec<String>) {
        let child = Command::new(program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        self.0.insert(name.to_string(), (child, args));
    }

    /// SIGKILL, and reap.
    fn kill(&mut self, name: &str) -> Vec<String> {
        let (mut child, args) = self.0.remove(name).expect("running child");
        let _ = child.kill();
        let _ = child.wait();
        args
    }

    /// User plus system CPU time of every running child (all three members), from /proc.
    fn cpu_time(&self) -> Duration {
        // Clock ticks are 100 per second on Linux (USER_HZ), whatever the kernel's HZ.
        let ticks: u64 = self
            .0
            .values()
            .filter_map(|(child, _)| {
                let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).ok()?;
                // Fields after the command name (which may hold spaces), from field 3 on.
                let rest = &stat[stat.rfind(')')? + 2..];
                let fields: Vec<&str> = rest.split(' ').collect();
                let utime: u64 = fields.get(11)?.parse().ok()?;
                let stime: u64 = fields.get(12)?.parse().ok()?;
                Some(utime + stime)
            })
            .sum();
        Duration::from_millis(ticks * 10)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (child, _) in self.0.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn channel(addr: &str) -> Channel {
    shoal_raft::network::tls::channel(addr, None, Arc::new(TcpDialer), Duration::from_secs(1))
}

/// The object both systems write: a Task of about 150 bytes encoded.
fn bench_task(id: &str, version: u64, n: usize) -> Task {
    Task {
        id: id.to_string(),
        meta: Some(Meta {
            version,
            ..Default::default()
        }),
        service_id: "bench-service-0000000000000".into(),
        slot: n as u64,
        status: Some(TaskStatus {
            message: format!("{n:0>90}"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Latencies of one run, and how long it took in all.
struct Run {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Run {
    fn summary(mut self) -> (f64, Duration, Duration) {
        self.latencies.sort();
        let pct = |p: f64| {
            self.latencies
                [((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1)]
        };
        (
            self.latencies.len() as f64 / self.wall.as_secs_f64(),
            pct(0.50),
            pct(0.99),
        )
    }
}

/// One system under test: how to write an object, given the writer's state.
trait Target: Clone + Send + Sync + 'static {
    /// Writes object `key`; returns the new version (for optimistic concurrency).
    fn write(
        &self,
        key: String,
        version: u64,
        n: usize,
    ) -> impl Future<Output = Result<u64, String>> + Send;
}

async fn drive<T: Target>(target: T, writers: usize, ops: usize) -> Run {
    // Create each writer's object first (not measured), then time the updates.
    let mut versions = Vec::new();
    for w in 0..writers {
        versions.push(
            target
                .write(format!("{writers}-w{w}"), 0, 0)
                .await
                .expect("first write"),
        );
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (w, mut version) in versions.into_iter().enumerate() {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(ops);
            for n in 1..=ops {
                let t = Instant::now();
                version = target
                    .write(format!("{writers}-w{w}"), version, n)
                    .await
                    .expect("write");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Run {
        latencies,
        wall: start.elapsed(),
    }
}

#[derive(Clone)]
struct Shoal(Channel);

impl Target for Shoal {
    async fn write(&self, key: String, version: u64, n: usize) -> Result<u64, String> {
        let kind = if version == 0 {
            store_action::Kind::Create
        } else {
            store_action::Kind::Update
        };
        let proposal = StoreProposal {
            actions: vec![StoreAction {
                kind: kind as i32,
                object: Some(bench_task(&key, version, n).into_store()),
            }],
        };
        let reply = RaftTransportClient::new(self.0.clone())
            .propose(ProposeRequest {
                proposal: Some(proposal),
            })
            .await
            .map_err(|s| s.to_string())?;
        match reply.into_inner().outcome {
            Some(propose_response::Outcome::Commit(c)) if c.failure.is_none() => Ok(c.index),
            other => Err(format!("{other:?}")),
        }
    }
}

/// Minimal copies of etcd's v3 messages (etcdserverpb), just what a Put and a Status need.
mod etcdpb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        #[prost(uint64, tag = "1")]
        pub cluster_id: u64,
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
        #[prost(int64, tag = "3")]
        pub revision: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusRequest {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(uint64, tag = "4")]
        pub leader: u64,
    }
}

async fn unary<Req, Resp>(channel: Channel, path: &'static str, req: Req) -> Result<Resp, String>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    grpc.unary(
        tonic::Request::new(req),
        PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(|r| r.into_inner())
    .map_err(|s| s.to_string())
}

#[derive(Clone)]
struct Etcd(Channel);

impl Target for Etcd {
    async fn write(&self, key: String, _version: u64, n: usize) -> Result<u64, String> {
        let req = etcdpb::PutRequest {
            key: format!("/bench/{key}").into_bytes(),
            value: bench_task(&key, 1, n).encode_to_vec(),
        };
        let resp: etcdpb::PutResponse = unary(self.0.clone(), "/etcdserverpb.KV/Put", req).await?;
        Ok(resp.header.map_or(0, |h| h.revision as u64).max(1))
    }
}

/// Polls `f` every 20 ms until it yields, for at most a minute.
async fn until<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct ShoalCluster {
    exe: PathBuf,
    addrs: BTreeMap<u64, String>,
    children: Children,
}

impl ShoalCluster {
    async fn start(root: &Path) -> ShoalCluster {
        let exe = std::env::current_exe().unwrap();
        let addrs: BTreeMap<u64, String> = (1..=3)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let peers = addrs
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Children::default();
        for (id, addr) in &addrs {
            let mut args = vec![
                "node".into(),
                id.to_string(),
                addr.clone(),
                root.join(format!("shoal-{id}")).display().to_string(),
                peers.clone(),
            ];
            if *id == 1 {
                args.push("init".into());
            }
            children.spawn(&id.to_string(), &exe, args);
        }
        let cluster = ShoalCluster {
            exe,
            addrs,
            children,
        };
        cluster.leader().await;
        cluster
    }

    /// The leader, once a running member reports one that answers as leader.
    async fn leader(&self) -> u64 {
        until("a shoal-raft leader", || async {
            for (id, addr) in &self.addrs {
                if !self.children.0.contains_key(&id.to_string()) {
                    continue;
                }
                let mut client = RaftTransportClient::new(channel(addr));
                let status = tokio::time::timeout(
                    Duration::from_millis(300),
                    client.status(RaftStatusRequest {}),
                )
                .await;
                if let Ok(Ok(s)) = status {
                    let s = s.into_inner();
                    if s.leader_id == *id {
                        return Some(*id);
                    }
                }
            }
            None
        })
        .await
    }

    /// SIGKILLs the leader; returns how long until a write committed on a new leader.
    async fn failover(&mut self, round: usize) -> Duration {
        let leader = self.leader().await;
        let args = self.children.kill(&leader.to_string());
        let start = Instant::now();
        let survivors: Vec<String> = self
            .addrs
            .iter()
            .filter(|(id, _)| **id != leader)
            .map(|(_, a)| a.clone())
            .collect();
        let mut attempt = 0;
        loop {
            let target = Shoal(channel(&survivors[attempt % survivors.len()]));
            attempt += 1;
            let write = target.write(format!("failover-{round}-{attempt}"), 0, attempt);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), write).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = start.elapsed();
        // Bring the member back and let it catch up before the next round.
        self.children.spawn(
            &leader.to_string(),
            &self.exe.clone(),
            args.into_iter().filter(|a| a != "init").collect(),
        );
        let addr = self.addrs[&leader].clone();
        until("the restarted member to catch up", || {
            let addr = addr.clone();
            async move {
                let s = RaftTransportClient::new(channel(&addr))
                    .status(RaftStatusRequest {})
                    .await
                    .ok()?
                    .into_inner();
                (s.leader_id != 0 && s.last_applied + 1 >= s.last_log_index && s.last_applied > 0)
                    .then_some(())
            }
        })
        .await;
        took
    }
}

struct EtcdCluster {
    etcd: PathBuf,
    clients: BTreeMap<String, String>,
    children: Children,
}

impl EtcdCluster {
    async fn start(root: &Path) -> EtcdCluster {
        let etcd = PathBuf::from(std::env::var("ETCD").unwrap_or_else(|_| "/usr/bin/etcd".into()));
        assert!(
            etcd.exists(),
            "{} not found: apt-get install etcd-server (see benches/README.md)",
            etcd.display()
        );
        let names = ["e1", "e2", "e3"];
        let peers: BTreeMap<&str, String> = names
            .iter()
            .map(|n| (*n, format!("http://127.0.0.1:{}", free_port())))
            .collect();
        let clients: BTreeMap<String, String> = names
            .iter()
            .map(|n| (n.to_string(), format!("127.0.0.1:{}", free_port())))
            .collect();
        let initial = peers
            .iter()
            .map(|(n, u)| format!("{n}={u}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Children::default();
        for name in names {
            let args = vec![
                format!("--name={name}"),
                format!("--data-dir={}", root.join(name).display()),
                format!("--listen-client-urls=http://{}", clients[name]),
                format!("--advertise-client-urls=http://{}", clients[name]),
                format!("--listen-peer-urls={}", peers[name]),
                format!("--initial-advertise-peer-urls={}", peers[name]),
                format!("--initial-cluster={initial}"),
                "--initial-cluster-state=new".into(),
                "--initial-cluster-token=shoal-bench".into(),
                "--log-level=error".into(),
            ];
            children.spawn(name, &etcd, args);
        }
        let cluster = EtcdCluster {
            etcd,
            clients,
            children,
        };
        cluster.leader().await;
        cluster
    }

    async fn leader(&self) -> String {
        until("an etcd leader", || async {
            for (name, addr) in &self.clients {
                if !self.children.0.contains_key(name) {
                    continue;
                }
                let status = tokio::time::timeout(
                    Duration::from_millis(300),
                    unary::<_, etcdpb::StatusResponse>(
                        channel(addr),
                        "/etcdserverpb.Maintenance/Status",
                        etcdpb::StatusRequest {},
                    ),
                )
                .await;
                if let Ok(Ok(s)) = status
                    && s.leader != 0
                    && s.header.as_ref().map(|h| h.member_id) == Some(s.leader)
                {
                    return Some(name.clone());
                }
            }
            None
        })
        .await
    }

    async fn failover(&mut self, round: usize) -> Duration {
        let leader = self.leader().await;
        let args = self.children.kill(&leader);
        let start = Instant::now();
        let survivors: Vec<String> = self
            .clients
            .iter()
            .filter(|(n, _)| **n != leader)
            .map(|(_, a)| a.clone())
            .collect();
        let mut attempt = 0;
        loop {
            let target = Etcd(channel(&survivors[attempt % survivors.len()]));
            attempt += 1;
            let write = target.write(format!("failover-{round}"), 0, attempt);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), write).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = start.elapsed();
        self.children.spawn(&leader, &self.etcd.clone(), args);
        let addr = self.clients[&leader].clone();
        until("the restarted etcd member", || {
            let addr = addr.clone();
            async move {
                let s: etcdpb::StatusResponse = unary(
                    channel(&addr),
                    "/etcdserverpb.Maintenance/Status",
                    etcdpb::StatusRequest {},
                )
                .await
                .ok()?;
                (s.leader != 0).then_some(())
            }
        })
        .await;
        took
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Which systems and parts to run: `RAFT_BENCH=shoal|etcd` runs one system only,
/// `RAFT_BENCH_FAILOVER=0` skips the failover rounds (handy while profiling).
fn wanted(system: &str) -> bool {
    std::env::var("RAFT_BENCH").map_or(true, |only| only == system)
}

fn failover_wanted() -> bool {
    std::env::var("RAFT_BENCH_FAILOVER").map_or(true, |v| v != "0")
}

/// One measured load: throughput, latencies, and the members' CPU time per write.
struct Row {
    system: &'static str,
    load: &'static str,
    tput: f64,
    p50: Duration,
    p99: Duration,
    cpu_per_write: Duration,
}

/// Runs one load against `target`, accounting the CPU time `children` spent meanwhile.
async fn measure<T: Target>(
    system: &'static str,
    load: &'static str,
    target: T,
    writers: usize,
    ops: usize,
    children: &Children,
) -> Row {
    let cpu_before = children.cpu_time();
    let run = drive(target, writers, ops).await;
    let cpu = children.cpu_time().saturating_sub(cpu_before);
    let writes = run.latencies.len() as u32;
    let (tput, p50, p99) = run.summary();
    Row {
        system,
        load,
        tput,
        p50,
        p99,
        cpu_per_write: cpu / writes,
    }
}

async fn bench() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut rows = Vec::new();
    let mut failovers = Vec::new();

    if wanted("shoal") {
        let mut shoal = ShoalCluster::start(root.path()).await;
        let leader = shoal.leader().await;
        let target = Shoal(channel(&shoal.addrs[&leader]));
        let c = &shoal.children;
        rows.push(
            measure(
                "shoal-raft",
                "sequential",
                target.clone(),
                1,
                SEQUENTIAL_OPS,
                c,
            )
            .await,
        );
        rows.push(
            measure(
                "shoal-raft",
                "64 writers",
                target,
                WRITERS,
                OPS_PER_WRITER,
                c,
            )
            .await,
        );
        if failover_wanted() {
            let mut times = Vec::new();
            for round in 0..FAILOVERS {
                times.push(shoal.failover(round).await);
            }
            failovers.push(("shoal-raft", times));
        }
    }

    if wanted("etcd") {
        let mut etcd = EtcdCluster::start(root.path()).await;
        let leader = etcd.leader().await;
        let target = Etcd(channel(&etcd.clients[&leader]));
        let c = &etcd.children;
        rows.push(measure("etcd", "sequential", target.clone(), 1, SEQUENTIAL_OPS, c).await);
        rows.push(measure("etcd", "64 writers", target, WRITERS, OPS_PER_WRITER, c).await);
        if failover_wanted() {
            let mut times = Vec::new();
            for round in 0..FAILOVERS {
                times.push(etcd.failover(round).await);
            }
            failovers.push(("etcd", times));
        }
    }

    let size = bench_task("w0", 1, 1).encode_to_vec().len();
    println!("3 members on loopback, {size}-byte objects, one gRPC connection to the leader");
    println!(
        "{:<11} {:<11} {:>10} {:>10} {:>10} {:>14}",
        "system", "load", "writes/s", "p50", "p99", "CPU/write"
    );
    for r in rows {
        println!(
            "{:<11} {:<11} {:>10.0} {:>10} {:>10} {:>14}",
            r.system,
            r.load,
            r.tput,
            ms(r.p50),
            ms(r.p99),
            format!("{:.0} us", r.cpu_per_write.as_secs_f64() * 1e6),
        );
    }
    for (system, times) in failovers {
        println!(
            "leader failover (SIGKILL to first committed write), {system}: median of {FAILOVERS} {} (max {})",
            ms(median(times.clone())),
            ms(*times.iter().max().unwrap()),
        );
    }
}
