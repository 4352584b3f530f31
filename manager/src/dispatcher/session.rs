//! One node's session on the leader, and the dispatch state all sessions share while this
//! manager leads.
//!
//! A session lives exactly as long as its stream: Register makes the node READY, heartbeats
//! push its deadline, status updates go to the batcher, and the node is told what it must run
//! (Assignments), who the managers are (ManagerList) and how its own object changed (Node). A
//! newer session of the same node replaces the older one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_proto::{
    AgentMessage, Assignments, DispatcherMessage, ManagerList, ManagerPeer, Node, NodeStatus,
    ObjectKind, SessionStarted, Task, TaskState, agent_message, dispatcher_message, node_status,
    store_object,
};
use shoal_raft::{Action, By, Store, StoreError};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::liveness::Liveness;
use super::status::StatusBatcher;

/// How long a new stream may take to send Register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most task changes folded into one Assignments message.
const MAX_ASSIGNMENT_BATCH: usize = 512;

pub(super) type Outbound = mpsc::Sender<Result<DispatcherMessage, tonic::Status>>;

/// Dispatch state while this manager leads.
pub(super) struct Active {
    store: Store,
    period: Duration,
    /// node ID -> (serial, token ending its current session); the serial tells a session
    /// whether the entry is still its own.
    sessions: Mutex<HashMap<String, (u64, CancellationToken)>>,
    next_serial: std::sync::atomic::AtomicU64,
    liveness: Arc<Liveness>,
    status: StatusBatcher,
    closed: CancellationToken,
}

/// The leader-only loops behind `Active`.
pub(super) struct Loops {
    liveness: Arc<Liveness>,
    batcher: super::status::BatcherLoop,
    store: Store,
}

impl Loops {
    pub(super) async fn run(self) -> Result<(), StoreError> {
        tokio::select! {
            r = self.liveness.run(self.store.clone()) => r,
            r = self.batcher.run() => r,
        }
    }
}

impl Active {
    pub(super) fn start(store: Store, period: Duration) -> (Active, Loops) {
        let liveness = Arc::new(Liveness::new(period * super::GRACE_MULTIPLIER));
        // Every node that was up under the previous leader gets a full grace period to find us.
        for node in store.list::<Node>() {
            if node_state(&node) == node_status::State::Ready {
                liveness.beat(&node.id);
            }
        }
        let (status, batcher) = StatusBatcher::new(store.clone());
        let active = Active {
            store: store.clone(),
            period,
            sessions: Mutex::new(HashMap::new()),
            next_serial: std::sync::atomic::AtomicU64::new(1),
            liveness: liveness.clone(),
            status,
            closed: CancellationToken::new(),
        };
        let loops = Loops {
            liveness,
            batcher,
            store,
        };
        (active, loops)
    }

    /// Ends every session (leadership lost).
    pub(super) fn close(&self) {
        self.closed.cancel();
    }

    /// Runs one session until its stream ends, it is replaced, or leadership is lost.
    pub(super) async fn serve(
        self: Arc<Self>,
        node_id: String,
        mut inbound: impl Stream<Item = Result<AgentMessage, tonic::Status>> + Unpin,
        out: Outbound,
    ) {
        let register = match tokio::time::timeout(REGISTER_TIMEOUT, inbound.next()).await {
            Ok(Some(Ok(AgentMessage {
                message: Some(agent_message::Message::Register(r)),
            }))) => r,
            Ok(Some(Err(e))) => {
                debug!(node = %node_id, error = %e, "session stream failed before Register");
                return;
            }
            _ => {
                let _ = out
                    .send(Err(tonic::Status::invalid_argument(
                        "a session must start with Register",
                    )))
                    .await;
                return;
            }
        };
        let ended = CancellationToken::new();
        let serial = self
            .next_serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some((_, old)) = self
            .sessions
            .lock()
            .unwrap()
            .insert(node_id.clone(), (serial, ended.clone()))
        {
            old.cancel();
        }
        self.liveness.beat(&node_id);
        let node = match self.mark_ready(&node_id, register).await {
            Ok(node) => node,
            Err(e) => {
                let _ = out.send(Err(e)).await;
                self.forget(&node_id, serial);
                return;
            }
        };
        // A consistent snapshot plus every later change: nothing lost, nothing doubled (and
        // the READY just written is not echoed back).
        let (snapshot, mut watch) =
            self.store
                .view_and_watch(&[ObjectKind::Node, ObjectKind::Task, ObjectKind::Cluster]);
        let node = snapshot.get::<Node>(&node_id).unwrap_or(node);
        info!(node = %node_id, "session started");
        let mut managers = manager_peers(&snapshot.list::<Node>());
        let started = DispatcherMessage {
            message: Some(dispatcher_message::Message::Started(SessionStarted {
                session_id: shoal_proto::ids::new_id(),
                heartbeat_period: Some(self.period.into()),
                managers: managers.clone(),
                node: Some(node),
            })),
        };
        let full = Assignments {
            full: true,
            tasks: snapshot
                .find::<Task>(By::NodeId(&node_id))
                .into_iter()
                .filter(is_dispatchable)
                .collect(),
            removed_task_ids: Vec::new(),
        };
        if out.send(Ok(started)).await.is_err() || send_assignments(&out, full).await.is_err() {
            self.forget(&node_id, serial);
            return;
        }

        loop {
            tokio::select! {
                _ = ended.cancelled() => break,
                _ = self.closed.cancelled() => {
                    let _ = out.send(Err(tonic::Status::unavailable(
                        "this manager is no longer the leader; reconnect to a manager",
                    ))).await;
                    break;
                }
                msg = inbound.next() => match msg {
                    Some(Ok(AgentMessage { message: Some(m) })) => self.handle(&node_id, m).await,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        debug!(node = %node_id, error = %e, "session stream failed");
                        break;
                    }
                    None => break,
                },
                event = watch.next() => {
                    let Ok(first) = event else {
                        warn!(node = %node_id, "store watch ended; closing session");
                        break;
                    };
                    // Fold whatever else is already waiting into the same messages.
                    let mut events = vec![first];
                    while events.len() < MAX_ASSIGNMENT_BATCH {
                        // A zero timeout still polls once: it takes only what is ready now.
                        match tokio::time::timeout(Duration::ZERO, watch.next()).await {
                            Ok(Ok(e)) => events.push(e),
                            _ => break,
                        }
                    }
                    if self.forward(&node_id, &events, &mut managers, &out).await.is_err() {
                        break;
                    }
                }
            }
        }
        self.forget(&node_id, serial);
        info!(node = %node_id, "session ended");
    }

    async fn handle(&self, node_id: &str, message: agent_message::Message) {
        if let agent_message::Message::Register(_) = message {
            debug!(node = %node_id, "ignoring a second Register in one session");
            return;
        }
        // A node given up on (e.g. partitioned) whose stream survived: it is back.
        if self.liveness.beat(node_id)
            && let Err(e) = self.mark_up(node_id).await
        {
            warn!(node = %node_id, error = %e, "cannot mark the node ready again");
        }
        match message {
            agent_message::Message::Heartbeat(_) => {}
            agent_message::Message::TaskStatus(batch) => {
                for update in batch.updates {
                    self.status.submit(node_id.to_string(), update).await;
                }
            }
            agent_message::Message::Register(_) => {}
        }
    }

    /// READY again after a DOWN, keeping what the node registered with.
    async fn mark_up(&self, node_id: &str) -> Result<(), StoreError> {
        loop {
            let result = self
                .store
                .update(|tx| {
                    let Some(mut node) = tx.get::<Node>(node_id) else {
                        return Ok(());
                    };
                    let status = node.status.get_or_insert_with(Default::default);
                    if status.state == node_status::State::Ready as i32 {
                        return Ok(());
                    }
                    status.state = node_status::State::Ready as i32;
                    status.message.clear();
                    tx.update(node)
                })
                .await;
            match result {
                Err(StoreError::Conflict { .. }) => continue,
                r => return r.map(|_| ()),
            }
        }
    }

    /// Sends what the node must learn from a batch of store changes.
    async fn forward(
        &self,
        node_id: &str,
        events: &[shoal_raft::Event],
        managers: &mut Vec<ManagerPeer>,
        out: &Outbound,
    ) -> Result<(), ()> {
        let mut changes = Assignments::default();
        let mut managers_changed = false;
        for event in events {
            if let Some(task) = event.get::<Task>() {
                let was_ours = matches!(
                    event.old.as_deref().and_then(|o| o.object.as_ref()),
                    Some(store_object::Object::Task(old)) if old.node_id == node_id
                );
                let ours = task.node_id == node_id;
                if event.action == Action::Remove || (was_ours && !ours) {
                    if was_ours || ours {
                        changes.removed_task_ids.push(task.id.clone());
                    }
                } else if ours && is_dispatchable(task) {
                    changes.tasks.push(task.clone());
                }
            } else if let Some(node) = event.get::<Node>() {
                managers_changed |= node.manager_status.is_some()
                    || matches!(
                        event.old.as_deref().and_then(|o| o.object.as_ref()),
                        Some(store_object::Object::Node(old)) if old.manager_status.is_some()
                    );
                if node.id == node_id && event.action == Action::Update {
                    let msg = dispatcher_message::Message::Node(node.clone());
                    send(out, msg).await?;
                }
            }
        }
        if managers_changed {
            let now = manager_peers(&self.store.list::<Node>());
            if &now != managers {
                *managers = now.clone();
                send(
                    out,
                    dispatcher_message::Message::Managers(ManagerList { managers: now }),
                )
                .await?;
            }
        }
        if !changes.tasks.is_empty() || !changes.removed_task_ids.is_empty() {
            send_assignments(out, changes).await?;
        }
        Ok(())
    }

    /// Records what the node reported about itself and makes it READY.
    async fn mark_ready(
        &self,
        node_id: &str,
        register: shoal_proto::AgentRegister,
    ) -> Result<Node, tonic::Status> {
        let committed = self
            .store
            .update(|tx| {
                let Some(mut node) = tx.get::<Node>(node_id) else {
                    return Ok(false);
                };
                node.description = register.description.clone();
                node.status = Some(NodeStatus {
                    state: node_status::State::Ready as i32,
                    message: String::new(),
                    addr: register.advertise_addr.clone(),
                });
                tx.update(node)?;
                Ok::<_, StoreError>(true)
            })
            .await
            .map_err(status_of)?;
        if !committed.value {
            return Err(tonic::Status::not_found(format!(
                "node {node_id} is not a member of this cluster (it was removed); run `shoal \
                 cluster leave --force` on it, then join again"
            )));
        }
        committed
            .get::<Node>(node_id)
            .ok_or_else(|| tonic::Status::internal("node vanished while registering"))
    }

    fn forget(&self, node_id: &str, serial: u64) {
        let mut sessions = self.sessions.lock().unwrap();
        // Only if it is still ours: a newer session may have replaced it.
        if sessions.get(node_id).is_some_and(|(s, _)| *s == serial) {
            sessions.remove(node_id);
        }
    }
}

/// Tasks a node should know about: assigned to it and not yet forgotten.
fn is_dispatchable(task: &Task) -> bool {
    let state = task.status.as_ref().map(|s| s.state).unwrap_or_default();
    state >= TaskState::Assigned as i32 && task.desired_state != TaskState::Remove as i32
}

pub(super) fn node_state(node: &Node) -> node_status::State {
    node.status
        .as_ref()
        .and_then(|s| node_status::State::try_from(s.state).ok())
        .unwrap_or_default()
}

/// Managers as agents reach them, in a stable order.
pub fn manager_peers(nodes: &[Node]) -> Vec<ManagerPeer> {
    let mut peers: Vec<ManagerPeer> = nodes
        .iter()
        .filter_map(|n| {
            let m = n.manager_status.as_ref()?;
            Some(ManagerPeer {
                node_id: n.id.clone(),
                addr: m.addr.clone(),
                raft_id: m.raft_id,
            })
        })
        .collect();
    peers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    peers
}

async fn send(out: &Outbound, msg: dispatcher_message::Message) -> Result<(), ()> {
    out.send(Ok(DispatcherMessage { message: Some(msg) }))
        .await
        .map_err(|_| ())
}

async fn send_assignments(out: &Outbound, a: Assignments) -> Result<(), ()> {
    send(out, dispatcher_message::Message::Assignments(a)).await
}

/// Store errors as gRPC statuses for the agent.
pub(super) fn status_of(e: StoreError) -> tonic::Status {
    match e {
        StoreError::NoLeader(_) | StoreError::Shutdown => tonic::Status::unavailable(e.to_string()),
        StoreError::NotFound { .. } => tonic::Status::not_found(e.to_string()),
        _ => tonic::Status::aborted(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{AgentHeartbeat, AgentRegister, NodeDescription, TaskStatus};
    use tokio_stream::wrappers::ReceiverStream;

    const PERIOD: Duration = Duration::from_secs(1);

    async fn store_with_node(id: &str) -> Store {
        let store = Store::in_memory();
        store
            .update(|tx| {
                tx.create(Node {
                    id: id.into(),
                    ..Default::default()
                })
            })
            .await
            .unwrap();
        store
    }

    fn task(id: &str, node: &str, state: TaskState) -> Task {
        Task {
            id: id.into(),
            node_id: node.into(),
            desired_state: TaskState::Running as i32,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn register() -> AgentMessage {
        AgentMessage {
            message: Some(agent_message::Message::Register(AgentRegister {
                description: Some(NodeDescription {
                    hostname: "h1".into(),
                    ..Default::default()
                }),
                advertise_addr: "10.0.0.1".into(),
            })),
        }
    }

    type AgentSide = mpsc::Sender<Result<AgentMessage, tonic::Status>>;
    type DispatcherSide = mpsc::Receiver<Result<DispatcherMessage, tonic::Status>>;

    /// Starts a session for `node`; returns the agent's send side and the dispatcher's messages.
    fn open(active: &Arc<Active>, node: &str) -> (AgentSide, DispatcherSide) {
        let (agent_tx, agent_rx) = mpsc::channel(16);
        let (out_tx, out_rx) = mpsc::channel(16);
        tokio::spawn(
            active
                .clone()
                .serve(node.into(), ReceiverStream::new(agent_rx), out_tx),
        );
        (agent_tx, out_rx)
    }

    async fn next(
        rx: &mut mpsc::Receiver<Result<DispatcherMessage, tonic::Status>>,
    ) -> dispatcher_message::Message {
        rx.recv()
            .await
            .expect("stream open")
            .expect("not an error")
            .message
            .unwrap()
    }

    #[tokio::test]
    async fn register_makes_the_node_ready_and_sends_what_it_must_run() {
        let store = store_with_node("n1").await;
        store
            .update(|tx| {
                tx.create(task("assigned", "n1", TaskState::Assigned))?;
                tx.create(task("pending", "n1", TaskState::Pending))?;
                tx.create(task("elsewhere", "n2", TaskState::Running))
            })
            .await
            .unwrap();
        let (active, _loops) = Active::start(store.clone(), PERIOD);
        let active = Arc::new(active);
        let (agent, mut out) = open(&active, "n1");
        agent.send(Ok(register())).await.unwrap();

        let dispatcher_message::Message::Started(started) = next(&mut out).await else {
            panic!("first message must be Started");
        };
        assert_eq!(started.heartbeat_period.unwrap().to_std(), PERIOD);
        let dispatcher_message::Message::Assignments(full) = next(&mut out).await else {
            panic!("then the full assignment set");
        };
        assert!(full.full);
        let ids: Vec<&str> = full.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["assigned"], "only tasks assigned to this node");
        let node = store.get::<Node>("n1").unwrap();
        assert_eq!(node_state(&node), node_status::State::Ready);
        assert_eq!(node.description.unwrap().hostname, "h1");

        // A task assigned later arrives as a change; one moved away as a removal.
        store
            .update(|tx| tx.create(task("later", "n1", TaskState::Assigned)))
            .await
            .unwrap();
        let dispatcher_message::Message::Assignments(change) = next(&mut out).await else {
            panic!("expected assignments");
        };
        assert!(!change.full);
        assert_eq!(change.tasks[0].id, "later");
        store.update(|tx| tx.delete::<Task>("later")).await.unwrap();
        let dispatcher_message::Message::Assignments(change) = next(&mut out).await else {
            panic!("expected assignments");
        };
        assert_eq!(change.removed_task_ids, ["later"]);
    }

    #[tokio::test]
    async fn a_removed_node_is_told_to_rejoin() {
        let store = Store::in_memory();
        let (active, _loops) = Active::start(store, PERIOD);
        let (agent, mut out) = open(&Arc::new(active), "ghost");
        agent.send(Ok(register())).await.unwrap();
        let err = out.recv().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(err.message().contains("join again"), "{}", err.message());
    }

    #[tokio::test(start_paused = true)]
    async fn silence_makes_a_node_down_and_a_heartbeat_brings_it_back() {
        let store = store_with_node("n1").await;
        let (active, loops) = Active::start(store.clone(), PERIOD);
        let active = Arc::new(active);
        tokio::spawn(loops.run());
        let (agent, mut out) = open(&active, "n1");
        agent.send(Ok(register())).await.unwrap();
        next(&mut out).await;
        let state = || node_state(&store.get::<Node>("n1").unwrap());
        assert_eq!(state(), node_status::State::Ready);

        tokio::time::sleep(PERIOD * (super::super::GRACE_MULTIPLIER + 1)).await;
        assert_eq!(state(), node_status::State::Down);
        let beat = AgentMessage {
            message: Some(agent_message::Message::Heartbeat(AgentHeartbeat {})),
        };
        agent.send(Ok(beat)).await.unwrap();
        for _ in 0..100 {
            if state() == node_status::State::Ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(state(), node_status::State::Ready);
    }
}
