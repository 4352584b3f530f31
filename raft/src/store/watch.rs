//! Watch streams: every committed change, in commit order, to whoever asked.
//!
//! Changes are published by the apply path while it still holds the tables' write lock, and a
//! watcher is registered while holding the same lock; that is what makes view-and-watch exact
//! (the snapshot ends at index N, the stream starts at N+1). Publishing never waits: a watcher
//! whose buffer is full is cut off with `WatchError::Lagged` rather than slowing every write,
//! and then takes a fresh view-and-watch (as SwarmKit's watch queue closes slow consumers).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use shoal_proto::{ObjectKind, StoreObject, WatchEvent, watch_event};
use tokio::sync::mpsc;
use tokio_stream::Stream;

use super::object::{Object, table_slot};
use super::tables::Change;

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Remove,
}

/// One committed change.
#[derive(Clone, Debug)]
pub struct Event {
    /// Raft log index of the commit: the object's new `meta.version` for Create and Update.
    pub version: u64,
    pub action: Action,
    /// The object as stored by this commit (for `Remove`, as it was before).
    pub object: Arc<StoreObject>,
    /// The version it replaced, for `Update`.
    pub old: Option<Arc<StoreObject>>,
}

impl Event {
    pub fn kind(&self) -> ObjectKind {
        self.object.kind()
    }

    pub fn id(&self) -> &str {
        self.object.id()
    }

    /// The object as its concrete type, if it is of that kind.
    pub fn get<T: Object>(&self) -> Option<&T> {
        T::from_store_ref(&self.object)
    }

    /// As the Control API's `WatchEvent`.
    pub fn to_proto(&self) -> WatchEvent {
        let action = match self.action {
            Action::Create => watch_event::Action::Create,
            Action::Update => watch_event::Action::Update,
            Action::Remove => watch_event::Action::Remove,
        };
        WatchEvent {
            action: action as i32,
            object: Some((*self.object).clone()),
            version: self.version,
        }
    }
}

/// Why a watch ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error(
        "the watcher fell more than {0} changes behind and was cut off so writes are not slowed; \
         take a new view_and_watch to resynchronise"
    )]
    Lagged(usize),
    #[error("the store stopped (its node shut down); nothing more will be published")]
    Closed,
}

/// Which kinds a watcher wants, as a bit set (empty = all).
#[derive(Clone, Copy, Debug, Default)]
struct KindMask(u8);

impl KindMask {
    fn new(kinds: &[ObjectKind]) -> Self {
        KindMask(
            kinds
                .iter()
                .filter_map(|k| table_slot(*k))
                .fold(0, |m, s| m | (1 << s)),
        )
    }

    fn wants(self, kind: ObjectKind) -> bool {
        self.0 == 0 || table_slot(kind).is_some_and(|s| self.0 & (1 << s) != 0)
    }
}

struct Subscriber {
    kinds: KindMask,
    tx: mpsc::Sender<Event>,
    lagged: Arc<AtomicBool>,
}

/// The registered watchers of one Store.
pub(crate) struct Subscribers {
    list: Vec<Subscriber>,
    capacity: usize,
}

impl Subscribers {
    pub(crate) fn new(capacity: usize) -> Self {
        Subscribers {
            list: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn subscribe(&mut self, kinds: &[ObjectKind]) -> Watch {
        let (tx, rx) = mpsc::channel(self.capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        self.list.push(Subscriber {
            kinds: KindMask::new(kinds),
            tx,
            lagged: lagged.clone(),
        });
        Watch {
            rx,
            lagged,
            capacity: self.capacity,
            done: false,
        }
    }

    /// Hands the changes of commit `version` to every interested watcher, without waiting.
    pub(crate) fn publish(&mut self, version: u64, changes: &[Change]) {
        if self.list.is_empty() || changes.is_empty() {
            return;
        }
        self.list.retain(|sub| {
            for change in changes {
                if !sub.kinds.wants(change.object.kind()) {
                    continue;
                }
                let event = Event {
                    version,
                    action: change.action,
                    object: change.object.clone(),
                    old: change.old.clone(),
                };
                match sub.tx.try_send(event) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        sub.lagged.store(true, Ordering::Release);
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }
}

/// A stream of committed changes, in commit order.
///
/// Yields `Ok(event)` until the store stops (the stream ends) or the watcher lags (one
/// `Err(WatchError::Lagged)`, then the end).
pub struct Watch {
    rx: mpsc::Receiver<Event>,
    lagged: Arc<AtomicBool>,
    capacity: usize,
    done: bool,
}

impl Watch {
    /// The next change; `Err` once the watch is over (and on every call after).
    pub async fn next(&mut self) -> Result<Event, WatchError> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, WatchError>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(e)) => Poll::Ready(Ok(e)),
            Poll::Ready(None) if self.lagged.load(Ordering::Acquire) => {
                Poll::Ready(Err(WatchError::Lagged(self.capacity)))
            }
            Poll::Ready(None) => Poll::Ready(Err(WatchError::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Stream for Watch {
    type Item = Result<Event, WatchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.poll_event(cx) {
            Poll::Ready(Err(WatchError::Closed)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Ok(e)) => Poll::Ready(Some(Ok(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}
