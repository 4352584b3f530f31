//! One session with one manager, from connect to its end. Returns why it ended so the agent
//! loop can pick the next manager (or follow a redirect to the leader).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use shoal_proto::dispatcher_client::DispatcherClient;
use shoal_proto::{
    AgentHeartbeat, AgentMessage, AgentRegister, ManagerPeer, TaskStatusUpdate, TaskStatusUpdates,
    agent_message, dispatcher_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{AgentConfig, AgentEvent, AgentStatus, Connector};

/// How long the dispatcher may take to start a session.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Most status updates sent in one message.
const MAX_STATUS_BATCH: usize = 256;

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    Cancelled,
    /// The manager is not the leader and named it: go there next.
    Redirect(String),
    Ended {
        reason: String,
        was_up: bool,
    },
}

fn ended(reason: impl Into<String>, was_up: bool) -> SessionEnd {
    SessionEnd::Ended {
        reason: reason.into(),
        was_up,
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    config: &AgentConfig,
    connector: &dyn Connector,
    addr: &str,
    events: &mpsc::Sender<AgentEvent>,
    statuses: &mut mpsc::Receiver<TaskStatusUpdate>,
    reported: &mut HashMap<String, TaskStatusUpdate>,
    cancel: &CancellationToken,
    status: &Mutex<AgentStatus>,
    managers: &mut Vec<ManagerPeer>,
) -> SessionEnd {
    let channel = tokio::select! {
        _ = cancel.cancelled() => return SessionEnd::Cancelled,
        c = connector.connect(addr) => match c {
            Ok(c) => c,
            Err(e) => return ended(format!("cannot reach manager {addr}: {e}"), false),
        },
    };
    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    let register = AgentMessage {
        message: Some(agent_message::Message::Register(AgentRegister {
            description: Some(config.description.clone()),
            advertise_addr: config.advertise_addr.clone(),
        })),
    };
    let _ = tx.send(register).await;
    let mut client = DispatcherClient::new(channel);
    let opened = tokio::time::timeout(START_TIMEOUT, client.session(ReceiverStream::new(rx)));
    let mut inbound = match opened.await {
        Err(_) => {
            return ended(
                format!("manager {addr} did not answer in {START_TIMEOUT:?}"),
                false,
            );
        }
        Ok(Err(status)) => {
            if let Some(leader) = status
                .metadata()
                .get(shoal_proto::LEADER_ADDR_METADATA)
                .and_then(|v| v.to_str().ok())
                .filter(|l| *l != addr)
            {
                return SessionEnd::Redirect(leader.to_string());
            }
            return ended(format!("manager {addr}: {}", status.message()), false);
        }
        Ok(Ok(response)) => response.into_inner(),
    };
    let started = match tokio::time::timeout(START_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(shoal_proto::DispatcherMessage {
            message: Some(dispatcher_message::Message::Started(s)),
        }))) => s,
        Ok(Err(status)) => return ended(format!("manager {addr}: {}", status.message()), false),
        _ => return ended(format!("manager {addr} did not start the session"), false),
    };
    let period = started
        .heartbeat_period
        .map(|d| d.to_std())
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(5));
    if !started.managers.is_empty() {
        *managers = started.managers.clone();
        let _ = events.send(AgentEvent::Managers(managers.clone())).await;
    }
    {
        let mut s = status.lock().unwrap();
        s.connected_to = Some(addr.to_string());
        s.last_error = None;
    }
    let _ = events
        .send(AgentEvent::Connected {
            manager_addr: addr.to_string(),
        })
        .await;
    if let Some(node) = started.node {
        let _ = events.send(AgentEvent::Node(Box::new(node))).await;
    }
    // A new leader may have missed updates the old one never committed: say everything again.
    if !reported.is_empty() {
        let all: Vec<TaskStatusUpdate> = reported.values().cloned().collect();
        for chunk in all.chunks(MAX_STATUS_BATCH) {
            if send_status(&tx, chunk.to_vec()).await.is_err() {
                return ended("the session closed while resending task status", true);
            }
        }
    }

    // Beat at a third of the period: two lost beats still leave the node alive.
    let mut ticker = tokio::time::interval(period / 3);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return SessionEnd::Cancelled,
            _ = ticker.tick() => {
                let beat = AgentMessage {
                    message: Some(agent_message::Message::Heartbeat(AgentHeartbeat {})),
                };
                if tx.send(beat).await.is_err() {
                    return ended("the session's send side closed", true);
                }
            }
            Some(first) = statuses.recv() => {
                let mut batch = vec![first];
                while batch.len() < MAX_STATUS_BATCH {
                    match statuses.try_recv() {
                        Ok(u) => batch.push(u),
                        Err(_) => break,
                    }
                }
                for u in &batch {
                    reported.insert(u.task_id.clone(), u.clone());
                }
                if send_status(&tx, batch).await.is_err() {
                    return ended("the session's send side closed", true);
                }
            }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => match m.message {
                    Some(dispatcher_message::Message::Assignments(a)) => {
                        // Forget reports of tasks the node no longer has.
                        if a.full {
                            let keep: std::collections::HashSet<&str> =
                                a.tasks.iter().map(|t| t.id.as_str()).collect();
                            reported.retain(|id, _| keep.contains(id.as_str()));
                        }
                        for id in &a.removed_task_ids {
                            reported.remove(id);
                        }
                        let _ = events.send(AgentEvent::Assignments(a)).await;
                    }
                    Some(dispatcher_message::Message::Managers(list)) => {
                        *managers = list.managers.clone();
                        let _ = events.send(AgentEvent::Managers(list.managers)).await;
                    }
                    Some(dispatcher_message::Message::Node(node)) => {
                        let _ = events.send(AgentEvent::Node(Box::new(node))).await;
                    }
                    Some(dispatcher_message::Message::Started(_)) | None => {}
                },
                Ok(None) => return ended(format!("manager {addr} closed the session"), true),
                Err(status) => {
                    return ended(format!("manager {addr}: {}", status.message()), true);
                }
            },
        }
    }
}

async fn send_status(
    tx: &mpsc::Sender<AgentMessage>,
    updates: Vec<TaskStatusUpdate>,
) -> Result<(), ()> {
    let msg = AgentMessage {
        message: Some(agent_message::Message::TaskStatus(TaskStatusUpdates {
            updates,
        })),
    };
    tx.send(msg).await.map_err(|_| ())
}
