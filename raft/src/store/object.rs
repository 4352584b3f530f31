//! The typed face of the Store: which proto messages are stored objects, and how each is indexed.
//!
//! Tables hold `StoreObject` (the oneof of all kinds) so that applying, snapshotting and watching
//! are written once; the `Object` trait lets callers read and write their concrete types
//! (`store.get::<Service>(id)`) without matching on the oneof themselves.

use shoal_proto::store_object::Object as Any;
use shoal_proto::{
    Cluster, Config, Meta, Network, Node, ObjectKind, Secret, Service, StoreObject, Task,
};

/// The secondary indexes the manager queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Index {
    /// `spec.annotations.name`; unique among services, networks, secrets and configs.
    Name,
    /// A task's `service_id`.
    Service,
    /// A task's `node_id` (empty until scheduled, and then not indexed).
    Node,
    /// A node's `description.hostname` (not unique: two machines may share a hostname).
    Hostname,
}

/// A query on one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By<'a> {
    /// Every object of the kind.
    All,
    /// Objects whose ID starts with the prefix (the CLI's short IDs).
    IdPrefix(&'a str),
    /// By `spec.annotations.name`.
    Name(&'a str),
    /// Tasks of a service.
    ServiceId(&'a str),
    /// Tasks assigned to a node.
    NodeId(&'a str),
    /// Nodes by hostname.
    Hostname(&'a str),
}

impl By<'_> {
    /// Whether `obj` satisfies the query (used for objects written inside a transaction).
    pub(crate) fn matches(&self, obj: &StoreObject) -> bool {
        match self {
            By::All => true,
            By::IdPrefix(p) => obj.id().starts_with(p),
            By::Name(v) => index_key(obj, Index::Name).as_deref() == Some(*v),
            By::ServiceId(v) => index_key(obj, Index::Service).as_deref() == Some(*v),
            By::NodeId(v) => index_key(obj, Index::Node).as_deref() == Some(*v),
            By::Hostname(v) => index_key(obj, Index::Hostname).as_deref() == Some(*v),
        }
    }

    /// The index and key that answer the query, if one does.
    pub(crate) fn index(&self) -> Option<(Index, &str)> {
        match *self {
            By::Name(v) => Some((Index::Name, v)),
            By::ServiceId(v) => Some((Index::Service, v)),
            By::NodeId(v) => Some((Index::Node, v)),
            By::Hostname(v) => Some((Index::Hostname, v)),
            By::All | By::IdPrefix(_) => None,
        }
    }
}

/// Every kind that has a table, in table order.
pub const KINDS: [ObjectKind; 7] = [
    ObjectKind::Cluster,
    ObjectKind::Node,
    ObjectKind::Service,
    ObjectKind::Task,
    ObjectKind::Network,
    ObjectKind::Secret,
    ObjectKind::Config,
];

/// Position of a kind's table (`None` for `Unspecified`).
pub(crate) fn table_slot(kind: ObjectKind) -> Option<usize> {
    KINDS.iter().position(|k| *k == kind)
}

/// The word used in error messages ("service", "task").
pub fn kind_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Cluster => "cluster",
        ObjectKind::Node => "node",
        ObjectKind::Service => "service",
        ObjectKind::Task => "task",
        ObjectKind::Network => "network",
        ObjectKind::Secret => "secret",
        ObjectKind::Config => "config",
        ObjectKind::Unspecified => "object",
    }
}

/// Kinds whose `Name` index refuses duplicates (as Docker refuses two services named alike).
pub(crate) fn has_unique_name(kind: ObjectKind) -> bool {
    matches!(
        kind,
        ObjectKind::Service | ObjectKind::Network | ObjectKind::Secret | ObjectKind::Config
    )
}

/// The key `obj` has in `index`, if it is indexed there.
pub(crate) fn index_key(obj: &StoreObject, index: Index) -> Option<String> {
    let key = match (&obj.object, index) {
        (Some(Any::Service(s)), Index::Name) => s.spec.as_ref()?.annotations.as_ref()?.name.clone(),
        (Some(Any::Network(n)), Index::Name) => n.spec.as_ref()?.annotations.as_ref()?.name.clone(),
        (Some(Any::Secret(s)), Index::Name) => s.spec.as_ref()?.annotations.as_ref()?.name.clone(),
        (Some(Any::Config(c)), Index::Name) => c.spec.as_ref()?.annotations.as_ref()?.name.clone(),
        (Some(Any::Cluster(c)), Index::Name) => c.spec.as_ref()?.annotations.as_ref()?.name.clone(),
        (Some(Any::Node(n)), Index::Name) => n.spec.as_ref()?.annotations.as_ref()?.name.clone(),
        (Some(Any::Task(t)), Index::Service) => t.service_id.clone(),
        (Some(Any::Task(t)), Index::Node) => t.node_id.clone(),
        (Some(Any::Node(n)), Index::Hostname) => n.description.as_ref()?.hostname.clone(),
        _ => return None,
    };
    (!key.is_empty()).then_some(key)
}

/// All (index, key) pairs of an object.
pub(crate) fn index_keys(obj: &StoreObject) -> Vec<(Index, String)> {
    [Index::Name, Index::Service, Index::Node, Index::Hostname]
        .into_iter()
        .filter_map(|i| index_key(obj, i).map(|k| (i, k)))
        .collect()
}

/// The object's meta, if set.
pub(crate) fn meta_of(obj: &StoreObject) -> Option<&Meta> {
    match obj.object.as_ref()? {
        Any::Cluster(o) => o.meta.as_ref(),
        Any::Node(o) => o.meta.as_ref(),
        Any::Service(o) => o.meta.as_ref(),
        Any::Task(o) => o.meta.as_ref(),
        Any::Network(o) => o.meta.as_ref(),
        Any::Secret(o) => o.meta.as_ref(),
        Any::Config(o) => o.meta.as_ref(),
    }
}

/// The object's meta, created if absent (`None` only for an empty wrapper).
pub(crate) fn meta_mut(obj: &mut StoreObject) -> Option<&mut Meta> {
    Some(match obj.object.as_mut()? {
        Any::Cluster(o) => o.meta.get_or_insert_default(),
        Any::Node(o) => o.meta.get_or_insert_default(),
        Any::Service(o) => o.meta.get_or_insert_default(),
        Any::Task(o) => o.meta.get_or_insert_default(),
        Any::Network(o) => o.meta.get_or_insert_default(),
        Any::Secret(o) => o.meta.get_or_insert_default(),
        Any::Config(o) => o.meta.get_or_insert_default(),
    })
}

/// The stored version of an object (0 when it has no meta).
pub(crate) fn version_of(obj: &StoreObject) -> u64 {
    meta_of(obj).map_or(0, |m| m.version)
}

/// A proto message that is stored in its own table.
pub trait Object: prost::Message + Clone + Default + PartialEq + Send + Sync + 'static {
    /// The table it lives in.
    const KIND: ObjectKind;
    /// Its ID.
    fn id(&self) -> &str;
    /// Its bookkeeping (version, times); `None` until first stored.
    fn meta(&self) -> Option<&Meta>;
    /// `meta.version`: the log index of its last write (0 if never stored).
    fn version(&self) -> u64 {
        self.meta().map_or(0, |m| m.version)
    }
    /// Wraps it for the oneof.
    fn into_store(self) -> StoreObject;
    /// Unwraps it, if the oneof holds this kind.
    fn from_store(obj: StoreObject) -> Option<Self>;
    /// Borrows it, if the oneof holds this kind.
    fn from_store_ref(obj: &StoreObject) -> Option<&Self>;
}

macro_rules! object {
    ($ty:ident, $variant:ident, $kind:ident) => {
        impl Object for $ty {
            const KIND: ObjectKind = ObjectKind::$kind;
            fn id(&self) -> &str {
                &self.id
            }
            fn meta(&self) -> Option<&Meta> {
                self.meta.as_ref()
            }
            fn into_store(self) -> StoreObject {
                StoreObject {
                    object: Some(Any::$variant(self)),
                }
            }
            fn from_store(obj: StoreObject) -> Option<Self> {
                match obj.object {
                    Some(Any::$variant(o)) => Some(o),
                    _ => None,
                }
            }
            fn from_store_ref(obj: &StoreObject) -> Option<&Self> {
                match &obj.object {
                    Some(Any::$variant(o)) => Some(o),
                    _ => None,
                }
            }
        }
    };
}

object!(Cluster, Cluster, Cluster);
object!(Node, Node, Node);
object!(Service, Service, Service);
object!(Task, Task, Task);
object!(Network, Network, Network);
object!(Secret, Secret, Secret);
object!(Config, Config, Config);
