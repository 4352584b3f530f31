//! The node's end of `service logs`: listens at the leader for log subscriptions that involve
//! this node's tasks, reads those tasks' container logs from the local engine and publishes
//! them back, one publish stream per subscription.
//!
//! A task's container is found by name: the executor names it `<service>.<slot>.<task ID>`
//! (`<service>.<node ID>.<task ID>` for global services), so the task ID is the name's last
//! dot-separated part. A task whose container is gone (removed with its history) is reported
//! as a warning rather than silently missing.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_proto::log_broker_client::LogBrokerClient;
use shoal_proto::{
    ListenSubscriptionsRequest, LogContext, LogMessage, PublishLogsMessage, SubscriptionMessage,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, warn};

use crate::engine::{Engine, LogOptions};

/// At most this many lines per published message: one gRPC message per line would cost more
/// than the lines themselves.
const BATCH: usize = 256;

/// Serves subscriptions over `channel` (to the leader) until the listener stream ends (the
/// leader changed or went away) or `cancel` fires. Publishing for open subscriptions stops
/// with it.
pub async fn serve<E: Engine>(
    engine: Arc<E>,
    channel: Channel,
    cancel: CancellationToken,
) -> Result<(), tonic::Status> {
    let client = LogBrokerClient::new(channel);
    let mut listener = client
        .clone()
        .listen_subscriptions(ListenSubscriptionsRequest {})
        .await?
        .into_inner();
    let cancel = cancel.child_token();
    let _stop_all = cancel.clone().drop_guard();
    let mut open: HashMap<String, CancellationToken> = HashMap::new();
    loop {
        let message = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            m = listener.next() => match m {
                Some(m) => m?,
                None => return Ok(()),
            },
        };
        open.retain(|_, token| !token.is_cancelled());
        if message.close {
            if let Some(token) = open.remove(&message.id) {
                token.cancel();
            }
            continue;
        }
        let token = cancel.child_token();
        open.insert(message.id.clone(), token.clone());
        debug!(subscription = %message.id, "log subscription");
        tokio::spawn(publish(engine.clone(), client.clone(), message, token));
    }
}

/// Answers one subscription: every selected task's log, then close.
async fn publish<E: Engine>(
    engine: Arc<E>,
    mut client: LogBrokerClient<Channel>,
    subscription: SubscriptionMessage,
    cancel: CancellationToken,
) {
    let id = subscription.id.clone();
    let (out_tx, out_rx) = mpsc::channel::<PublishLogsMessage>(16);
    let publishing = tokio::spawn(async move {
        if let Err(e) = client.publish_logs(ReceiverStream::new(out_rx)).await {
            warn!(error = %e, "publishing logs failed");
        }
    });
    let warnings = read_all(&engine, &subscription, &out_tx, &cancel).await;
    let _ = out_tx
        .send(PublishLogsMessage {
            subscription_id: id,
            messages: vec![],
            close: true,
            warnings,
        })
        .await;
    drop(out_tx);
    let _ = publishing.await;
}

/// Streams the selected tasks' logs into `out`; returns warnings for tasks it could not read.
async fn read_all<E: Engine>(
    engine: &Arc<E>,
    subscription: &SubscriptionMessage,
    out: &mpsc::Sender<PublishLogsMessage>,
    cancel: &CancellationToken,
) -> Vec<String> {
    let options = subscription.options.unwrap_or_default();
    let wanted: Vec<String> = subscription
        .selector
        .as_ref()
        .map(|s| s.task_ids.clone())
        .unwrap_or_default();
    let mut warnings = Vec::new();
    let containers = match engine.list_containers(true).await {
        Ok(c) => c,
        Err(e) => return vec![format!("cannot list containers: {e}")],
    };
    // Every task's lines flow into one channel, so tasks are read concurrently (with follow,
    // each stream lasts as long as its container).
    let (lines_tx, mut lines_rx) = mpsc::channel::<LogMessage>(1024);
    for task_id in wanted {
        let Some(container) = containers.iter().find(|c| task_of(&c.name) == task_id) else {
            warnings.push(format!(
                "task {task_id}: its container is no longer on this node"
            ));
            continue;
        };
        let log_options = LogOptions {
            follow: options.follow,
            tail: usize::try_from(options.tail).ok(),
        };
        let mut entries = match engine.container_logs(&container.id, log_options).await {
            Ok(rx) => rx,
            Err(e) => {
                warnings.push(format!("task {task_id}: cannot read its log: {e}"));
                continue;
            }
        };
        let lines_tx = lines_tx.clone();
        tokio::spawn(async move {
            while let Some(entry) = entries.recv().await {
                let Ok(entry) = entry else { break };
                let message = LogMessage {
                    context: Some(LogContext {
                        task_id: task_id.clone(),
                        ..Default::default()
                    }),
                    entry: Some(entry),
                };
                if lines_tx.send(message).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(lines_tx);
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            m = lines_rx.recv() => match m { Some(m) => m, None => break },
        };
        let mut messages = vec![first];
        while messages.len() < BATCH {
            match lines_rx.try_recv() {
                Ok(m) => messages.push(m),
                Err(_) => break,
            }
        }
        let batch = PublishLogsMessage {
            subscription_id: subscription.id.clone(),
            messages,
            close: false,
            warnings: vec![],
        };
        if out.send(batch).await.is_err() {
            break;
        }
    }
    warnings
}

/// The task ID in a task container's name (its last dot-separated part).
fn task_of(container_name: &str) -> &str {
    container_name.rsplit('.').next().unwrap_or(container_name)
}

#[cfg(test)]
mod tests {
    use super::task_of;

    #[test]
    fn the_task_id_is_the_last_part_of_the_container_name() {
        assert_eq!(task_of("web.3.k2j4h5g6f7d8"), "k2j4h5g6f7d8");
        assert_eq!(task_of("agent.n0de.t4sk"), "t4sk");
        assert_eq!(task_of("plain"), "plain");
    }
}
