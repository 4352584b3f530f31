//! The log broker: routes `service logs` between the subscriber and the nodes that ran the tasks.
//!
//! ```text
//!  subscriber ──SubscribeLogs──▶ broker ──SubscriptionMessage──▶ listener of node A, node B
//!  subscriber ◀──LogBatch─────── broker ◀──PublishLogs (…, close)── node A, node B
//! ```
//!
//! Lines never enter the Raft log: they stay in each container's log file on its node, and the
//! broker only asks the right nodes and merges their answers. Only the leader brokers (agents
//! hold their listener with the leader, as their session); another manager forwards a
//! subscription to the leader. A subscription without `follow` ends once every asked node has
//! closed; with `follow`, when the subscriber goes away, which is also passed on to the nodes.

mod resolve;
mod service;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use shoal_proto::{LogBatch, LogSelector, LogSubscriptionOptions, SubscriptionMessage};
use shoal_raft::Store;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

pub use service::{LogBrokerService, LogsService};

/// Dials another manager's cluster port (mutual TLS, this manager's certificate); given by the
/// daemon, which holds the certificate.
pub type Dialer = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Channel, String>> + Send>> + Send + Sync,
>;

/// Shared by the gRPC services; cheap to clone.
#[derive(Clone)]
pub struct LogBroker {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// (leader's cluster address, whether this manager leads), kept by the leadership listener.
    leadership: watch::Sender<(String, bool)>,
    dialer: Mutex<Option<Dialer>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Each connected node's listener stream.
    listeners: HashMap<String, mpsc::Sender<SubscriptionMessage>>,
    subscriptions: HashMap<String, Subscription>,
}

struct Subscription {
    to_subscriber: mpsc::Sender<LogBatch>,
    /// Nodes asked that have not closed yet.
    pending: HashSet<String>,
    /// Task ID -> service ID, to stamp lines with their service and to refuse lines for tasks
    /// the subscription did not ask a node for.
    tasks: HashMap<String, (String, String)>,
    follow: bool,
}

impl LogBroker {
    pub fn new(store: Store) -> LogBroker {
        LogBroker {
            inner: Arc::new(Inner {
                store,
                leadership: watch::channel((String::new(), false)).0,
                dialer: Mutex::new(None),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// How to reach the leader when a subscription arrives at another manager.
    pub fn set_dialer(&self, dialer: Dialer) {
        *self.inner.dialer.lock().unwrap() = Some(dialer);
    }

    /// Called as leadership moves. Losing it ends every listener and subscription: agents
    /// re-listen at the new leader, subscribers see their stream end with a warning.
    pub fn leader_changed(&self, leader_addr: &str, this_node_leads: bool) {
        self.inner
            .leadership
            .send_replace((leader_addr.to_string(), this_node_leads));
        if !this_node_leads {
            let old = std::mem::take(&mut *self.inner.state.lock().unwrap());
            for (_, sub) in old.subscriptions {
                let _ = sub.to_subscriber.try_send(LogBatch {
                    messages: vec![],
                    warnings: vec![
                        "the manager serving this log stream lost leadership; the stream is \
                         incomplete, run the command again"
                            .into(),
                    ],
                });
            }
        }
    }

    fn leads(&self) -> bool {
        self.inner.leadership.borrow().1
    }

    fn leader_addr(&self) -> String {
        self.inner.leadership.borrow().0.clone()
    }

    fn dialer(&self) -> Option<Dialer> {
        self.inner.dialer.lock().unwrap().clone()
    }

    /// Registers a node's listener, replacing an older one (a reconnect).
    fn listen(&self, node_id: &str) -> mpsc::Receiver<SubscriptionMessage> {
        let (tx, rx) = mpsc::channel(64);
        self.inner
            .state
            .lock()
            .unwrap()
            .listeners
            .insert(node_id.to_string(), tx);
        rx
    }

    /// Starts a subscription for the resolved tasks: asks each node that ran one. Returns the
    /// warnings for nodes that could not be asked.
    fn subscribe(
        &self,
        id: &str,
        tasks: Vec<shoal_proto::Task>,
        options: LogSubscriptionOptions,
        to_subscriber: mpsc::Sender<LogBatch>,
    ) -> Vec<String> {
        let mut by_node: HashMap<String, Vec<String>> = HashMap::new();
        let mut task_map = HashMap::new();
        for t in &tasks {
            if t.node_id.is_empty() {
                continue; // never placed: nothing was logged
            }
            by_node
                .entry(t.node_id.clone())
                .or_default()
                .push(t.id.clone());
            task_map.insert(t.id.clone(), (t.service_id.clone(), t.node_id.clone()));
        }
        let mut warnings = Vec::new();
        let mut state = self.inner.state.lock().unwrap();
        let mut pending = HashSet::new();
        for (node, task_ids) in by_node {
            let message = SubscriptionMessage {
                id: id.to_string(),
                selector: Some(LogSelector {
                    service_ids: vec![],
                    task_ids,
                }),
                options: Some(options),
                close: false,
            };
            let sent = state
                .listeners
                .get(&node)
                .is_some_and(|l| l.try_send(message).is_ok());
            if sent {
                pending.insert(node);
            } else {
                warnings.push(format!(
                    "node {node} is not connected to the leader; logs of its tasks are missing"
                ));
            }
        }
        state.subscriptions.insert(
            id.to_string(),
            Subscription {
                to_subscriber,
                pending,
                tasks: task_map,
                follow: options.follow,
            },
        );
        warnings
    }

    /// Whether the subscription is over: not following and every asked node closed.
    fn finished(&self, id: &str) -> bool {
        let state = self.inner.state.lock().unwrap();
        match state.subscriptions.get(id) {
            None => true,
            Some(s) => !s.follow && s.pending.is_empty(),
        }
    }

    /// Ends a subscription and tells the nodes still publishing to stop.
    fn unsubscribe(&self, id: &str) {
        let mut state = self.inner.state.lock().unwrap();
        let Some(sub) = state.subscriptions.remove(id) else {
            return;
        };
        for node in sub.pending {
            if let Some(l) = state.listeners.get(&node) {
                let _ = l.try_send(SubscriptionMessage {
                    id: id.to_string(),
                    close: true,
                    ..Default::default()
                });
            }
        }
    }

    /// What a node published, checked against what it was asked for. Returns the subscriber's
    /// sender and the batch to pass on, or None when the subscription is gone.
    fn accept(
        &self,
        node_id: &str,
        message: shoal_proto::PublishLogsMessage,
    ) -> Option<(mpsc::Sender<LogBatch>, LogBatch)> {
        let mut state = self.inner.state.lock().unwrap();
        let sub = state.subscriptions.get_mut(&message.subscription_id)?;
        let mut batch = LogBatch {
            messages: Vec::with_capacity(message.messages.len()),
            warnings: message.warnings,
        };
        for mut m in message.messages {
            let Some(ctx) = m.context.as_mut() else {
                continue;
            };
            // A node speaks only for its own tasks of this subscription.
            match sub.tasks.get(&ctx.task_id) {
                Some((service, node)) if node == node_id => {
                    ctx.service_id = service.clone();
                    ctx.node_id = node.clone();
                    batch.messages.push(m);
                }
                _ => {}
            }
        }
        if message.close {
            sub.pending.remove(node_id);
        }
        Some((sub.to_subscriber.clone(), batch))
    }

    /// A node's publish stream ended without close: count it as closed, with a warning.
    fn publisher_gone(
        &self,
        node_id: &str,
        subscription_id: &str,
    ) -> Option<mpsc::Sender<LogBatch>> {
        let mut state = self.inner.state.lock().unwrap();
        let sub = state.subscriptions.get_mut(subscription_id)?;
        sub.pending
            .remove(node_id)
            .then(|| sub.to_subscriber.clone())
    }
}

#[cfg(test)]
mod tests {
    use shoal_proto::{LogContext, LogMessage, PublishLogsMessage, Task};

    use super::*;

    fn task(id: &str, service: &str, node: &str) -> Task {
        Task {
            id: id.into(),
            service_id: service.into(),
            node_id: node.into(),
            ..Default::default()
        }
    }

    fn line(task_id: &str) -> LogMessage {
        LogMessage {
            context: Some(LogContext {
                task_id: task_id.into(),
                ..Default::default()
            }),
            entry: Some(Default::default()),
        }
    }

    fn publish(id: &str, lines: Vec<LogMessage>, close: bool) -> PublishLogsMessage {
        PublishLogsMessage {
            subscription_id: id.into(),
            messages: lines,
            close,
            warnings: vec![],
        }
    }

    #[tokio::test]
    async fn asks_each_node_for_its_own_tasks_and_ends_when_all_closed() {
        let broker = LogBroker::new(Store::in_memory());
        broker.leader_changed("10.0.0.1:4242", true);
        let mut a = broker.listen("node-a");
        let mut b = broker.listen("node-b");
        let (tx, _rx) = mpsc::channel(8);
        let tasks = vec![
            task("t1", "svc", "node-a"),
            task("t2", "svc", "node-b"),
            task("t3", "svc", ""), // never placed: nobody is asked for it
            task("t4", "svc", "node-c"),
        ];
        let warnings = broker.subscribe("s1", tasks, LogSubscriptionOptions::default(), tx);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("node-c"), "{warnings:?}");
        let asked_a = a.recv().await.unwrap();
        assert_eq!(asked_a.selector.unwrap().task_ids, vec!["t1".to_string()]);
        let asked_b = b.recv().await.unwrap();
        assert_eq!(asked_b.selector.unwrap().task_ids, vec!["t2".to_string()]);

        // A node's lines are stamped with service and node; lines for another node's task are
        // dropped.
        let (_, batch) = broker
            .accept("node-a", publish("s1", vec![line("t1"), line("t2")], true))
            .unwrap();
        assert_eq!(batch.messages.len(), 1);
        let ctx = batch.messages[0].context.clone().unwrap();
        assert_eq!(
            (ctx.service_id.as_str(), ctx.node_id.as_str()),
            ("svc", "node-a")
        );
        assert!(!broker.finished("s1"), "node-b has not closed");
        broker
            .accept("node-b", publish("s1", vec![], true))
            .unwrap();
        assert!(broker.finished("s1"));
    }

    #[tokio::test]
    async fn a_subscriber_leaving_tells_the_nodes_still_publishing() {
        let broker = LogBroker::new(Store::in_memory());
        broker.leader_changed("", true);
        let mut a = broker.listen("node-a");
        let (tx, _rx) = mpsc::channel(8);
        let follow = LogSubscriptionOptions {
            follow: true,
            tail: -1,
        };
        broker.subscribe("s1", vec![task("t1", "svc", "node-a")], follow, tx);
        assert!(!a.recv().await.unwrap().close);
        broker.accept("node-a", publish("s1", vec![line("t1")], false));
        assert!(!broker.finished("s1"), "following never finishes by itself");
        broker.unsubscribe("s1");
        let closing = a.recv().await.unwrap();
        assert!(closing.close && closing.id == "s1");
        assert!(
            broker
                .accept("node-a", publish("s1", vec![], true))
                .is_none()
        );
    }

    #[tokio::test]
    async fn losing_leadership_ends_listeners_and_subscriptions() {
        let broker = LogBroker::new(Store::in_memory());
        broker.leader_changed("", true);
        let mut a = broker.listen("node-a");
        let (tx, mut rx) = mpsc::channel(8);
        broker.subscribe(
            "s1",
            vec![task("t1", "svc", "node-a")],
            Default::default(),
            tx,
        );
        let _ = a.recv().await;
        broker.leader_changed("10.0.0.2:4242", false);
        assert!(a.recv().await.is_none(), "the listener stream ends");
        let last = rx.recv().await.unwrap();
        assert!(last.warnings[0].contains("lost leadership"), "{last:?}");
        assert!(rx.recv().await.is_none(), "the subscriber's stream ends");
    }
}
