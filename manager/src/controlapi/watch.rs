//! The Control API's Watch: store changes streamed to the CLI for live progress (`service
//! create` without --detach). Secrets' data and the CA key never go out.

use shoal_proto::{ObjectKind, WatchEvent, WatchRequest, store_object, watch_event};
use shoal_raft::Store;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

pub type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;

pub(super) fn start(store: &Store, req: WatchRequest) -> WatchStream {
    let kinds: Vec<ObjectKind> = req
        .kinds
        .iter()
        .filter_map(|k| ObjectKind::try_from(*k).ok())
        .collect();
    let (snapshot, mut watch) = store.view_and_watch(&kinds);
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        if req.include_existing {
            for object in snapshot.view().all() {
                if !kinds.is_empty() && !kinds.contains(&object.kind()) {
                    continue;
                }
                let event = WatchEvent {
                    action: watch_event::Action::Existing as i32,
                    object: Some(object.clone()),
                    version: snapshot.index(),
                };
                if tx.send(Ok(redact(event))).await.is_err() {
                    return;
                }
            }
        }
        // Ends when the client goes away (send fails) or the store's watch ends.
        loop {
            let next = tokio::select! {
                e = watch.next() => e,
                _ = tx.closed() => return,
            };
            let item = match next {
                Ok(e) => Ok(redact(e.to_proto())),
                Err(e) => Err(Status::aborted(format!(
                    "the watch fell behind and was closed ({e}); start it again"
                ))),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

fn redact(mut event: WatchEvent) -> WatchEvent {
    match event.object.as_mut().and_then(|o| o.object.as_mut()) {
        Some(store_object::Object::Secret(s)) => {
            if let Some(spec) = s.spec.as_mut() {
                spec.data.clear();
            }
        }
        Some(store_object::Object::Cluster(c)) => {
            if let Some(root) = c.root_ca.as_mut() {
                root.ca_key_pem.clear();
            }
        }
        _ => {}
    }
    event
}
