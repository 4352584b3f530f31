//! The broker's gRPC faces: `Logs` for subscribers (admins, and managers forwarding for their
//! own admins) and `LogBroker` for nodes. Nodes are known by their verified certificate only.

use std::collections::HashSet;

use shoal_proto::log_broker_server::LogBroker as LogBrokerRpc;
use shoal_proto::logs_client::LogsClient;
use shoal_proto::logs_server::Logs as LogsRpc;
use shoal_proto::{
    ListenSubscriptionsRequest, LogBatch, PublishLogsMessage, PublishLogsResponse,
    SubscribeLogsRequest, SubscriptionMessage,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::{LogBroker, resolve};
use crate::ca::{Role, require_role};

/// `Logs`: what `shoal service logs` calls.
pub struct LogsService {
    broker: LogBroker,
}

impl LogsService {
    pub fn new(broker: LogBroker) -> LogsService {
        LogsService { broker }
    }
}

/// Ends the subscription when the subscriber's stream is dropped (it went away, or all was sent).
struct Unsubscribe {
    broker: LogBroker,
    id: String,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.broker.unsubscribe(&self.id);
    }
}

#[tonic::async_trait]
impl LogsRpc for LogsService {
    async fn subscribe_logs(
        &self,
        request: Request<SubscribeLogsRequest>,
    ) -> Result<Response<BoxStream<LogBatch>>, Status> {
        require_role(&request, &[Role::Admin, Role::Manager])?;
        if !self.broker.leads() {
            return forward(&self.broker, request.into_inner()).await;
        }
        let request = request.into_inner();
        let selector = request.selector.unwrap_or_default();
        let options = request.options.unwrap_or_default();
        let tasks = resolve::tasks(&self.broker.inner.store, &selector)?;
        let id = shoal_proto::ids::new_id();
        let (tx, rx) = mpsc::channel(256);
        let warnings = self.broker.subscribe(&id, tasks, options, tx.clone());
        if !warnings.is_empty() {
            let _ = tx.try_send(LogBatch {
                messages: vec![],
                warnings,
            });
        }
        drop(tx);
        // Nothing to wait for (no task ever ran, or no node could be asked).
        if self.broker.finished(&id) {
            self.broker.unsubscribe(&id);
        }
        let guard = Unsubscribe {
            broker: self.broker.clone(),
            id,
        };
        let stream = ReceiverStream::new(rx).map(move |batch| {
            let _keep = &guard;
            Ok(batch)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A follower passes the subscription to the leader, where the nodes listen.
async fn forward(
    broker: &LogBroker,
    request: SubscribeLogsRequest,
) -> Result<Response<BoxStream<LogBatch>>, Status> {
    let leader = broker.leader_addr();
    if leader.is_empty() {
        return Err(Status::unavailable(
            "no leader is known yet, and logs are brokered by the leader; retry shortly",
        ));
    }
    let dialer = broker.dialer().ok_or_else(|| {
        Status::unavailable(format!(
            "this manager cannot reach the leader at {leader} for logs; run the command on it"
        ))
    })?;
    let channel = dialer(leader.clone()).await.map_err(|e| {
        Status::unavailable(format!("cannot reach the leader at {leader} for logs: {e}"))
    })?;
    let stream = LogsClient::new(channel)
        .subscribe_logs(request)
        .await?
        .into_inner();
    Ok(Response::new(Box::pin(stream)))
}

/// `LogBroker`: what agents call.
pub struct LogBrokerService {
    broker: LogBroker,
}

impl LogBrokerService {
    pub fn new(broker: LogBroker) -> LogBrokerService {
        LogBrokerService { broker }
    }
}

fn node_of<T>(request: &Request<T>) -> Result<String, Status> {
    require_role(request, &[Role::Worker, Role::Manager])?
        .node()
        .map(|id| id.node_id.clone())
        .ok_or_else(|| Status::permission_denied("log publishing is for nodes"))
}

#[tonic::async_trait]
impl LogBrokerRpc for LogBrokerService {
    async fn listen_subscriptions(
        &self,
        request: Request<ListenSubscriptionsRequest>,
    ) -> Result<Response<BoxStream<SubscriptionMessage>>, Status> {
        let node = node_of(&request)?;
        if !self.broker.leads() {
            return Err(Status::unavailable(format!(
                "this manager is not the leader; listen at {}",
                self.broker.leader_addr()
            )));
        }
        debug!(node = %node, "log subscription listener up");
        let rx = self.broker.listen(&node);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }

    async fn publish_logs(
        &self,
        request: Request<Streaming<PublishLogsMessage>>,
    ) -> Result<Response<PublishLogsResponse>, Status> {
        let node = node_of(&request)?;
        let mut stream = request.into_inner();
        let mut open: HashSet<String> = HashSet::new();
        while let Some(message) = stream.next().await {
            let Ok(message) = message else { break };
            let id = message.subscription_id.clone();
            let close = message.close;
            let Some((to, batch)) = self.broker.accept(&node, message) else {
                continue; // the subscriber left; the close we sent may still be on its way
            };
            if !batch.messages.is_empty() || !batch.warnings.is_empty() {
                // Backpressure: a slow subscriber slows the publisher, nothing is dropped.
                let _ = to.send(batch).await;
            }
            drop(to);
            if close {
                open.remove(&id);
                if self.broker.finished(&id) {
                    self.broker.unsubscribe(&id);
                }
            } else {
                open.insert(id);
            }
        }
        // The node's stream ended without closing some subscriptions: they will get nothing
        // more from it, say so.
        for id in open {
            if let Some(to) = self.broker.publisher_gone(&node, &id) {
                let _ = to
                    .send(LogBatch {
                        messages: vec![],
                        warnings: vec![format!(
                            "node {node} stopped publishing; its logs may be incomplete"
                        )],
                    })
                    .await;
            }
            if self.broker.finished(&id) {
                self.broker.unsubscribe(&id);
            }
        }
        Ok(Response::new(PublishLogsResponse {}))
    }
}
